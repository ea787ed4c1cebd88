#!/usr/bin/env python3
"""Benchmark cni-ipam against Debian's host-local, measured in the same run, and judge issue 14's goals.

Not a test: it prints tables, the goals with MET / NOT MET, writes ``bench-results/bench-<time>.json``
(and ``latest.json``).  Subjects: host-local, the PyInstaller build (``dist/cni-ipam/cni-ipam``, or
``--built``) and the source entry point (``python3 -m cni_ipam``); ``--extra name=command`` adds more
(e.g. a onefile or stock build).  Every call is a fresh process, as a runtime makes it.

Scenarios (subjects are interleaved and their order rotates every repetition, so drift in machine
load hits all of them alike; CPU time, user+sys from ``wait4``, is recorded beside wall time):

* ``empty``   ADD, CHECK, DEL, VERSION on an empty /16 network, call by call; medians over ``--runs``.
* ``first``   the first call on a directory host-local wrote: ``--big`` (60,000) reservations in
              host-local's format (``<ip>`` files holding ``id\\r\\nifname``) prefilled once and copied
              (``cp -a``, synced) once per cni-ipam subject; per repetition (``--first-reps``) the copy is
              reset to what host-local alone leaves (everything else removed), host-local ADDs (timed)
              and then the subject makes its first ADD (timed; it rebuilds its owner index here).  Peak
              RSS of both under GNU time.  Ratio: first call / host-local's ADD, per repetition.
* ``big``     ADD, CHECK, DEL, VERSION at ``--big`` reservations, steady state (after the first call),
              medians over ``--big-runs``.
* ``after``   the call right after a host-local write: host-local ADDs (even repetitions) or DELs (odd)
              one address in a directory the subject has already indexed, then the subject ADDs
              (timed), DELs, and ADDs again (timed: its steady ADD).  ``--after-reps`` repetitions.
* ``storm``   ``--storm-sizes`` (16, 64, 110 = kubelet's default max pods) ADDs started at once into a
              fresh network, then a churn storm on it: as many concurrent DEL-then-ADD pairs (each pair
              deletes one of the reservations and adds a new container).  ``--storm-reps`` repetitions.
              Per storm: wall time from the first spawn to the last exit, the summed CPU time of all the
              calls, the load average; every call must succeed, every address must be distinct and the
              files on disk must be exactly the ADDs' answers.
* ``gc``      ``cni-ipam gc`` dry run and ``--apply`` over ``--gc`` (10,000) prefilled reservations, half
              of them stranded; then the CNI GC verb over the same number, half the attachments valid.
* ``pool``    (``--pool`` / ``--pool-only``; needs Debian's etcd-server, started on loopback for the run)
              cluster pools: held-block ADD/DEL vs node-local vs host-local, block claims with their etcd
              round trips, and a storm of ``--pool-nodes`` simulated nodes x ``--parallel`` ADDs.

On a 2-vCPU VM the default run took 502-640 s (plus up to 115 s removing its data) with other jobs
using a third to half of the CPUs; ``--quick`` (fewer repetitions, 20,000 reservations) 107 s (plus 22 s) on an idle machine.
Most of a run is the first calls and the storms, both shorter as cni-ipam gets faster.
Data directories are made under ``--workdir`` (default /tmp/bench-<pid>) and removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_LOCAL = os.environ.get("HOST_LOCAL", "/usr/lib/cni/host-local")
BUILT_DEFAULT = os.path.join(ROOT, "dist", "cni-ipam", "cni-ipam")
NETNS = "/var/run/netns/bench-none"  # never exists: host-local ignores it, cni-ipam records it

# Issue 14's goals: ratios to host-local in the same run (see goals()).
GOAL_ADD_CPU = 3.5  # built cold ADD, CPU time, empty network
GOAL_ADD_CPU_MOONSHOT = 3.0
GOAL_DEL_CPU = 3.0
GOAL_VERSION_CPU = 2.0
GOAL_STORM_WALL = 3.5  # ADD storms and churn storms of every size
GOAL_FIRST_WALL = 1.5  # first call at 60,000 / host-local's ADD on the same directory
GOAL_FIRST_RSS_KB = 20 * 1024
GOAL_AFTER_WRITE = 2.0  # call after a host-local write / the subject's steady ADD, at 60,000
# Kept from the earlier benchmark: the steady state at 60,000 reservations.
TARGET_BIG_RATIO = 0.05  # built ADD+DEL at 60k / host-local ADD+DEL at 60k, at most
TARGET_BIG_VS_EMPTY = 2.0  # built ADD+DEL at 60k / built ADD+DEL empty, at most

# --------------------------------------------------------------------------- process runner
class Call:
    __slots__ = ("rc", "out", "err", "ms", "cpu_ms", "maxrss_kb", "sys_ms")

    def __init__(self, rc, out, err, ms, cpu_ms, maxrss_kb, sys_ms=None):
        self.rc, self.out, self.err, self.ms, self.cpu_ms, self.maxrss_kb = rc, out, err, ms, cpu_ms, maxrss_kb
        self.sys_ms = sys_ms  # the kernel's share of cpu_ms

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            return None


TIME = "/usr/bin/time"  # GNU time, for peak RSS (Debian package "time")


def spawn(argv: list, env: dict, stdin: bytes = b"", rss: bool = False) -> Call:
    """Run one process; wall time from spawn to reaped, and its own CPU time (wait4 rusage).

    Peak RSS cannot come from our own wait4: posix_spawn (vfork) makes the kernel count this
    benchmark's memory as the child's high-water mark.  With ``rss=True`` the call runs under GNU
    time, which forks from a small process, and maxrss_kb is its %M (the call's time is then not
    comparable and is not recorded)."""
    rss_file = None
    if rss:
        rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False)
        rss_file.close()
        argv = [TIME, "-f", "%M", "-o", rss_file.name] + list(argv)
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    errf = tempfile.TemporaryFile()
    actions = [
        (os.POSIX_SPAWN_DUP2, r_in, 0),
        (os.POSIX_SPAWN_DUP2, w_out, 1),
        (os.POSIX_SPAWN_DUP2, errf.fileno(), 2),
    ]
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    finally:
        os.close(r_in)
        os.close(w_out)
    try:
        if stdin:
            os.write(w_in, stdin)  # configs are far below the pipe buffer
    except BrokenPipeError:
        pass
    finally:
        os.close(w_in)
    chunks = []
    while True:
        data = os.read(r_out, 1 << 16)
        if not data:
            break
        chunks.append(data)
    os.close(r_out)
    _, status, ru = os.wait4(pid, 0)
    ms = (time.perf_counter() - t0) * 1000
    errf.seek(0)
    err = errf.read().decode("utf-8", "replace")
    errf.close()
    rc = os.waitstatus_to_exitcode(status)
    maxrss = None
    if rss_file is not None:
        try:
            with open(rss_file.name) as fh:
                maxrss = int(fh.read().split()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = None
        os.unlink(rss_file.name)
    return Call(rc, b"".join(chunks).decode("utf-8", "replace"), err, ms, (ru.ru_utime + ru.ru_stime) * 1000, maxrss,
                ru.ru_stime * 1000)


class Subject:
    def __init__(self, name: str, argv: list, ours: bool, env: "dict | None" = None) -> None:
        self.name = name
        self.argv = list(argv)
        exe = shutil.which(self.argv[0])
        if exe is None:
            raise SystemExit(f"bench: {name}: {self.argv[0]} not found")
        self.argv[0] = exe
        self.ours = ours
        self.env = env or {}

    def cni_env(self, command: str, cid: str = "", ifname: str = "eth0") -> dict:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_PATH": os.path.dirname(HOST_LOCAL)}
        if command not in ("VERSION", "GC", "STATUS"):
            env.update({"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_NETNS": NETNS})
        env.update(self.env)
        return env

    def cni(self, command: str, conf: dict, cid: str = "", ifname: str = "eth0", rss: bool = False) -> Call:
        data = b"" if command == "VERSION" else json.dumps(conf).encode()
        return spawn(self.argv, self.cni_env(command, cid, ifname), data, rss)

    def admin(self, args: list, rss: bool = False) -> Call:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update(self.env)
        return spawn(self.argv + args, env, b"", rss)


def rotate(items: list, k: int) -> list:
    k %= len(items) or 1
    return items[k:] + items[:k]


def load1() -> float:
    return round(os.getloadavg()[0], 2)


class OtherCpu:
    """How much of the machine's CPU other jobs used over an interval: the busy time of all CPUs
    (/proc/stat) minus this process's and its reaped children's CPU time (os.times).  Unlike the
    load average, our own storms do not count.  ``share()``: fraction of all CPUs' time, 0..1."""

    def __init__(self) -> None:
        self.t0 = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        t = os.times()
        return (sum(v) - v[3] - v[4]) / hz, sum(v) / hz, t.user + t.system + t.children_user + t.children_system

    def share(self) -> "float | None":
        t1 = self._sample()
        if t1 is None or self.t0 is None or t1[1] <= self.t0[1]:
            return None
        busy, total, ours = (b - a for a, b in zip(self.t0, t1))
        return round(min(1.0, max(0.0, (busy - ours) / total)), 3)


# --------------------------------------------------------------------------- concurrent calls (storms)
def run_concurrent(chains: list) -> "tuple[float, list]":
    """Start the first step of every chain at once; when a step's process exits, start that chain's
    next step.  A chain is a list of (subject, command, conf, cid).  Returns (wall seconds from the
    first spawn to the last exit, [[Call per step] per chain]).

    One thread spawns and reaps (``wait4(-1)``): no thread pool competes with the calls for the two
    cores, and the per-process rusage is exact.  stdout and stderr go to memfds (no pipe can fill up
    while nobody reads it), stdin is a pipe written at spawn, as a runtime does."""
    results = [[None] * len(chain) for chain in chains]
    running: dict = {}
    prepared = {}
    for i, chain in enumerate(chains):  # the first wave's payloads and files before the clock starts
        s, command, conf, cid = chain[0]
        prepared[i] = (s.argv, s.cni_env(command, cid), json.dumps(conf).encode(),
                       os.memfd_create("bench-out", os.MFD_CLOEXEC), os.memfd_create("bench-err", os.MFD_CLOEXEC))

    def launch(i: int, step: int, pre=None) -> None:
        if pre is None:
            s, command, conf, cid = chains[i][step]
            pre = (s.argv, s.cni_env(command, cid), json.dumps(conf).encode(),
                   os.memfd_create("bench-out", os.MFD_CLOEXEC), os.memfd_create("bench-err", os.MFD_CLOEXEC))
        argv, env, data, out_fd, err_fd = pre
        r_in, w_in = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, r_in, 0), (os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, err_fd, 2)]
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
        finally:
            os.close(r_in)
        try:
            os.write(w_in, data)  # configs are far below the pipe buffer
        except BrokenPipeError:
            pass
        finally:
            os.close(w_in)
        running[pid] = (i, step, out_fd, err_fd)

    t0 = time.perf_counter()
    for i in range(len(chains)):
        launch(i, 0, prepared.pop(i))
    t_end = t0
    while running:
        pid, status, ru = os.wait4(-1, 0)
        t_end = time.perf_counter()
        if pid not in running:
            continue  # not one of ours (nothing else should be running)
        i, step, out_fd, err_fd = running.pop(pid)
        if step + 1 < len(chains[i]):
            launch(i, step + 1)
        out = os.pread(out_fd, 1 << 20, 0).decode("utf-8", "replace")
        err = os.pread(err_fd, 1 << 16, 0).decode("utf-8", "replace")
        os.close(out_fd)
        os.close(err_fd)
        results[i][step] = Call(os.waitstatus_to_exitcode(status), out, err, None, (ru.ru_utime + ru.ru_stime) * 1000, None)
    return t_end - t0, results

def have_time() -> bool:
    return os.access(TIME, os.X_OK)


def netconf(data_dir: str, name: str = "bench", subnet: str = "10.128.0.0/16", version: str = "1.0.0") -> dict:
    return {
        "cniVersion": version,
        "name": name,
        "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]},
    }


def ips_of(result: "dict | None") -> list:
    if not isinstance(result, dict):
        return []
    return [ip.get("address", "").split("/")[0] for ip in result.get("ips", []) if isinstance(ip, dict)]


class Failure(Exception):
    pass


def must(call: Call, what: str) -> Call:
    if call.rc != 0:
        raise Failure(f"{what} failed (exit {call.rc}): {call.out.strip()[:400]} {call.err.strip()[-400:]}")
    return call


def med(values: list) -> "float | None":
    return round(statistics.median(values), 3) if values else None


def ratio(a, b) -> "float | None":
    return round(a / b, 3) if a is not None and b else None


def spread(values: list) -> "list | None":
    """[min, max] of the values, rounded; None when there are none."""
    return [round(min(values), 3), round(max(values), 3)] if values else None


def stats(values: list) -> dict:
    """median, [min, max] and, from four values on, the interquartile range."""
    out = {"median": med(values), "range": spread(values), "n": len(values)}
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        out["iqr"] = [round(q[0], 3), round(q[2], 3)]
    return out


# --------------------------------------------------------------------------- prefill, copies
def prefill(net_dir: str, count: int, subnet: str, prefix: str) -> list:
    """Reservations as host-local writes them: file <ip> holding "id\\r\\nifname"; returns the IDs."""
    os.makedirs(net_dir, exist_ok=True)
    net = ipaddress.ip_network(subnet)
    if net.version != 4 or count > net.num_addresses - 4:
        raise SystemExit(f"bench: {count} reservations do not fit in {subnet}")
    base = int(net.network_address) + 2  # .1 is the gateway
    ids = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    dfd = os.open(net_dir, os.O_RDONLY | os.O_DIRECTORY)
    last = None
    try:
        for i in range(count):
            a = base + i
            last = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
            cid = f"{prefix}{i:06d}"
            fd = os.open(last, flags, 0o600, dir_fd=dfd)
            os.write(fd, f"{cid}\r\neth0".encode())
            os.close(fd)
            ids.append(cid)
    finally:
        os.close(dfd)
    if last:
        with open(os.path.join(net_dir, "last_reserved_ip.0"), "w") as fh:
            fh.write(last)
    return ids


class Template:
    """A prefilled data directory (one network, host-local's format), copied for each measurement with
    ``cp -a``: a real copy.  A hard-link farm would be faster but is not a copy for cni-ipam: its
    index identifies a file by (inode, ctime), and linking or unlinking another copy's names changes
    the shared inodes' ctime (tried: every call after a host-local write then re-read all 60,000
    files, 75 s instead of 0.5 s).  After a copy the file system is synced, so the measured call does
    not pay for the copy's writeback (an fsync commits the whole ext4 journal)."""

    def __init__(self, path: str, network: str, count: int, subnet: str, prefix: str) -> None:
        self.path, self.network = path, network
        self.ids = prefill(os.path.join(path, network), count, subnet, prefix)

    def clone(self, dest: str) -> str:
        if os.path.exists(dest):
            raise SystemExit(f"bench: {dest} exists")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        subprocess.run(["cp", "-a", self.path, dest], check=True)
        os.sync()
        return dest

    def take(self, dest: str) -> str:
        """The template itself, moved to ``dest`` (no copy; the template is gone afterwards)."""
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(self.path, dest)
        self.path = None
        return dest


def count_reserved(net_dir: str) -> int:
    return sum(1 for n in os.listdir(net_dir) if n[0].isdigit() and not n.startswith("last_"))


def on_disk(net_dir: str) -> dict:
    """{ip: container id} of the reservation files in a network directory."""
    out = {}
    for n in os.listdir(net_dir):
        if n[0].isdigit() and not n.startswith("last_"):
            with open(os.path.join(net_dir, n), "rb") as fh:
                out[n] = fh.read().split(b"\r\n", 1)[0].decode("utf-8", "replace").strip()
    return out


# --------------------------------------------------------------------------- scenarios
class Recorder:
    def __init__(self) -> None:
        self.times: dict = {}  # (scenario, subject, op) -> [ms]
        self.cpu: dict = {}
        self.rss: dict = {}  # (scenario, subject) -> max KiB
        self.lock = threading.Lock()

    def add(self, scenario: str, subject: str, op: str, call: Call) -> None:
        with self.lock:
            self.times.setdefault((scenario, subject, op), []).append(call.ms)
            self.cpu.setdefault((scenario, subject, op), []).append(call.cpu_ms)

    def add_rss(self, scenario: str, subject: str, call: Call) -> None:
        if call.maxrss_kb is not None:
            key = (scenario, subject)
            self.rss[key] = max(self.rss.get(key, 0), call.maxrss_kb)

    def median(self, scenario, subject, op):
        return med(self.times.get((scenario, subject, op), []))

    def cpu_median(self, scenario, subject, op):
        return med(self.cpu.get((scenario, subject, op), []))


def lifecycle_round(rec: Recorder, scenario: str, subjects: list, dirs: dict, run: int, cid_prefix: str, conf_kw: dict) -> None:
    """One interleaved ADD, CHECK, DEL, VERSION round over every subject (order rotates by run)."""
    order = subjects[run % len(subjects):] + subjects[: run % len(subjects)]
    results = {}
    cid = f"{cid_prefix}{run:05d}"
    for s in order:
        conf = netconf(dirs[s.name], **conf_kw)
        call = must(s.cni("ADD", conf, cid), f"{scenario} {s.name} ADD")
        rec.add(scenario, s.name, "ADD", call)
        results[s.name] = call.json()
        if not ips_of(results[s.name]):
            raise Failure(f"{scenario} {s.name} ADD returned no address: {call.out[:300]}")
    for s in reversed(order):
        conf = netconf(dirs[s.name], **conf_kw)
        conf["prevResult"] = results[s.name]
        rec.add(scenario, s.name, "CHECK", must(s.cni("CHECK", conf, cid), f"{scenario} {s.name} CHECK"))
    for s in order:
        conf = netconf(dirs[s.name], **conf_kw)
        rec.add(scenario, s.name, "DEL", must(s.cni("DEL", conf, cid), f"{scenario} {s.name} DEL"))
    for s in reversed(order):
        rec.add(scenario, s.name, "VERSION", must(s.cni("VERSION", {}), f"{scenario} {s.name} VERSION"))


def bench_empty(rec, subjects, work, runs, log) -> dict:
    dirs = {s.name: os.path.join(work, "empty", s.name) for s in subjects}
    for s in subjects:  # one untimed warm-up each (page cache, directory creation)
        conf = netconf(dirs[s.name])
        must(s.cni("ADD", conf, "bench-warm"), f"warm-up {s.name}")
        must(s.cni("DEL", conf, "bench-warm"), f"warm-up {s.name}")
    for run in range(runs):
        lifecycle_round(rec, "empty", subjects, dirs, run, "bench-e-", {})
    sample_rss(rec, "empty", subjects, dirs)
    log(f"  empty: {runs} rounds done")
    return {}


def sample_rss(rec, scenario, subjects, dirs) -> None:
    """Peak RSS of one ADD and one DEL per subject, under GNU time (not timed)."""
    if not have_time():
        return
    for s in subjects:
        conf = netconf(dirs[s.name])
        rec.add_rss(scenario, s.name, must(s.cni("ADD", conf, "bench-rss", rss=True), f"{scenario} {s.name} ADD (rss)"))
        rec.add_rss(scenario, s.name, must(s.cni("DEL", conf, "bench-rss", rss=True), f"{scenario} {s.name} DEL (rss)"))


def is_host_local_name(name: str) -> bool:
    """A name host-local itself writes in a network directory: an address, last_reserved_ip.N, lock."""
    if name == "lock" or name.startswith("last_reserved_ip."):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def reset_to_host_local(data_dir: str, network: str) -> int:
    """Make a data directory again what host-local alone would have left: remove every entry of the
    data directory but the network's, every entry of the network directory host-local does not
    write (cni-ipam's index, state, temp files, whatever their name) and any extended attribute of
    it; then sync.  The reservation files are left as they are.  Returns the number of entries
    removed.  This is how a repetition gets a never-indexed directory without a fresh 60,000-file
    copy (which costs more than the call it prepares: about 240 MB to write back on ext4)."""
    removed = 0

    def drop(path: str) -> None:
        nonlocal removed
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        removed += 1

    for name in os.listdir(data_dir):
        if name != network:
            drop(os.path.join(data_dir, name))
    net = os.path.join(data_dir, network)
    for name in os.listdir(net):
        if not is_host_local_name(name):
            drop(os.path.join(net, name))
    for attr in os.listxattr(net, follow_symlinks=False):
        os.removexattr(net, attr, follow_symlinks=False)
        removed += 1
    os.sync()
    return removed


def bench_first(subjects, work, template: Template, reps: int, log) -> "tuple[dict, dict]":
    """First call on a host-local directory, per repetition and cni-ipam subject: host-local's ADD
    there (timed, peak RSS), then the subject's first ADD (timed, peak RSS), then its DEL (untimed).
    Each subject gets one real copy of the template (``cp -a``); before every repetition it is
    reset to what host-local alone would have left (``reset_to_host_local``), so the subject finds no
    index of its own.  Returns (results, {subject: its directory}); those directories, now indexed,
    become the subjects' ``big`` directories."""
    hl = next(s for s in subjects if not s.ours)
    ours = [s for s in subjects if s.ours]
    rss = have_time()
    samples = {s.name: {"ms": [], "cpu_ms": [], "sys_ms": [], "rss_kb": [], "hl_ms": [], "hl_cpu_ms": [], "hl_rss_kb": [],
                        "x_wall": [], "x_cpu": [], "load": []} for s in ours}
    dirs = {s.name: template.clone(os.path.join(work, "first", s.name)) for s in ours}
    for rep in range(reps):
        for s in rotate(ours, rep):
            d = dirs[s.name]
            if rep:
                reset_to_host_local(d, "bench")
            conf = netconf(d)
            load = load1()
            h = must(hl.cni("ADD", conf, f"bench-hl-first-{rep:03d}", rss=rss), f"first: host-local ADD before {s.name}")
            f = must(s.cni("ADD", conf, "bench-first", rss=rss), f"first: {s.name} first ADD")
            if not ips_of(f.json()):
                raise Failure(f"first: {s.name} ADD returned no address: {f.out[:300]}")
            must(s.cni("DEL", conf, "bench-first"), f"first: {s.name} DEL after its first ADD")
            row = samples[s.name]
            for key, v in (("ms", f.ms), ("cpu_ms", f.cpu_ms), ("sys_ms", f.sys_ms), ("rss_kb", f.maxrss_kb), ("hl_ms", h.ms),
                           ("hl_cpu_ms", h.cpu_ms),
                           ("hl_rss_kb", h.maxrss_kb), ("x_wall", f.ms / h.ms), ("x_cpu", f.cpu_ms / h.cpu_ms if h.cpu_ms else None),
                           ("load", load)):
                if v is not None:
                    row[key].append(v)
            log(f"  first call rep {rep + 1}/{reps} {s.name}: {f.ms:.0f} ms (CPU {f.cpu_ms:.0f}, of it sys {f.sys_ms:.0f}; {mb(f.maxrss_kb)}); "
                f"host-local ADD {h.ms:.0f} ms ({mb(h.maxrss_kb)}); load {load}")
    out = {}
    for name, row in samples.items():
        out[name] = {
            "reps": len(row["ms"]),
            "ADD_ms": stats(row["ms"]), "ADD_cpu_ms": stats(row["cpu_ms"]), "ADD_sys_ms": stats(row["sys_ms"]),
            "ADD_ms_all": [round(x, 1) for x in row["ms"]], "ADD_cpu_ms_all": [round(x, 1) for x in row["cpu_ms"]],
            "maxrss_kb": max(row["rss_kb"]) if row["rss_kb"] else None, "maxrss_kb_all": row["rss_kb"],
            "host_local_ADD_ms": stats(row["hl_ms"]), "host_local_ADD_cpu_ms": stats(row["hl_cpu_ms"]),
            "host_local_maxrss_kb": max(row["hl_rss_kb"]) if row["hl_rss_kb"] else None,
            "x_host_local": stats(row["x_wall"]), "x_host_local_cpu": stats(row["x_cpu"]),
            "load": row["load"],
        }
    return out, dirs


def bench_big(rec, subjects, work, template: Template, dirs: dict, runs, log) -> None:
    """Steady state at the template's size: interleaved lifecycle rounds.  ``dirs`` holds the cni-ipam
    subjects' directories (already indexed by their first call); the others get a copy (the last
    one the template itself, which is not needed any more)."""
    missing = [s for s in subjects if s.name not in dirs]
    for i, s in enumerate(missing):
        dest = os.path.join(work, "big", s.name)
        dirs[s.name] = template.take(dest) if i == len(missing) - 1 else template.clone(dest)
        conf = netconf(dirs[s.name])
        must(s.cni("ADD", conf, "bench-first"), f"big: {s.name} first ADD (untimed)")
        must(s.cni("DEL", conf, "bench-first"), f"big: {s.name} first DEL (untimed)")
    for s in subjects:
        if not s.ours:
            continue
        conf = netconf(dirs[s.name])
        must(s.cni("ADD", conf, "bench-warm"), f"big warm-up {s.name}")
        must(s.cni("DEL", conf, "bench-warm"), f"big warm-up {s.name}")
    for run in range(runs):
        lifecycle_round(rec, "big", subjects, dirs, run, "bench-b-", {})
    sample_rss(rec, "big", subjects, dirs)
    log(f"  big: {runs} rounds done")


def bench_after_write(subjects, dirs: dict, reps: int, log) -> dict:
    """The call right after a host-local write in a directory the subject has indexed, against the
    subject's steady ADD in the same directory a moment later."""
    hl = next(s for s in subjects if not s.ours)
    ours = [s for s in subjects if s.ours]
    rows = {s.name: {"after_ms": [], "after_cpu_ms": [], "steady_ms": [], "steady_cpu_ms": [], "x_wall": [], "x_cpu": [],
                     "host_local_write": [], "load": []} for s in ours}
    for rep in range(reps):
        for s in rotate(ours, rep):
            conf = netconf(dirs[s.name])
            load = load1()
            if rep % 2 == 0:
                must(hl.cni("ADD", conf, f"bench-hw-{rep:03d}"), f"after: host-local ADD in {s.name}'s directory")
                what = "ADD"
            else:
                must(hl.cni("DEL", conf, f"bench-hw-{rep - 1:03d}"), f"after: host-local DEL in {s.name}'s directory")
                what = "DEL"
            a = must(s.cni("ADD", conf, f"bench-aw-{rep:03d}"), f"after: {s.name} ADD after host-local {what}")
            must(s.cni("DEL", conf, f"bench-aw-{rep:03d}"), f"after: {s.name} DEL")
            st = must(s.cni("ADD", conf, f"bench-st-{rep:03d}"), f"after: {s.name} steady ADD")
            must(s.cni("DEL", conf, f"bench-st-{rep:03d}"), f"after: {s.name} DEL")
            row = rows[s.name]
            row["after_ms"].append(a.ms)
            row["after_cpu_ms"].append(a.cpu_ms)
            row["steady_ms"].append(st.ms)
            row["steady_cpu_ms"].append(st.cpu_ms)
            row["x_wall"].append(a.ms / st.ms)
            row["x_cpu"].append(a.cpu_ms / st.cpu_ms if st.cpu_ms else 0.0)
            row["host_local_write"].append(what)
            row["load"].append(load)
    out = {}
    for name, row in rows.items():
        r = {"reps": len(row["after_ms"]), "load": row["load"]}
        worst = None
        for what in ("ADD", "DEL"):  # a host-local ADD and a host-local DEL are caught up differently: apart
            idx = [i for i, w in enumerate(row["host_local_write"]) if w == what]
            if not idx:
                continue
            pick = lambda key: [row[key][i] for i in idx]  # noqa: E731
            k = {"n": len(idx), "after_ms": stats(pick("after_ms")), "after_cpu_ms": stats(pick("after_cpu_ms")),
                 "steady_ms": stats(pick("steady_ms")), "steady_cpu_ms": stats(pick("steady_cpu_ms")),
                 "x_steady": ratio(med(pick("after_ms")), med(pick("steady_ms"))),
                 "x_steady_cpu": ratio(med(pick("after_cpu_ms")), med(pick("steady_cpu_ms"))),
                 "x_steady_paired": stats(pick("x_wall"))}
            r[f"after_host_local_{what}"] = k
            if worst is None or k["x_steady"] > r[f"after_host_local_{worst}"]["x_steady"]:
                worst = what
        r["worst"] = worst
        r["x_steady"] = r[f"after_host_local_{worst}"]["x_steady"]
        r["x_steady_cpu"] = r[f"after_host_local_{worst}"]["x_steady_cpu"]
        out[name] = r
        log(f"  after host-local write {name}: " + "; ".join(
            f"after {w} {r[f'after_host_local_{w}']['after_ms']['median']:.1f} ms vs steady "
            f"{r[f'after_host_local_{w}']['steady_ms']['median']:.1f} ms ({r[f'after_host_local_{w}']['x_steady']}x)"
            for w in ("ADD", "DEL") if f"after_host_local_{w}" in r))
    return out


def _check_storm(net_dir: str, calls: list, cids: list, what: str) -> dict:
    """Every call succeeded, every address is distinct, and the files on disk are the ADDs' answers."""
    failed = [c for c in calls if c.rc != 0]
    answers = {}
    for c, cid in zip(calls, cids):
        for ip in ips_of(c.json()):
            answers.setdefault(ip, []).append(cid)
    addrs = [ip for c in calls for ip in ips_of(c.json())]
    dupes = len(addrs) - len(set(addrs))
    disk = on_disk(net_dir)
    expected = {ip: owners[0] for ip, owners in answers.items()}
    ok = not failed and dupes == 0 and len(addrs) == len(cids) and disk == expected
    return {"failed": len(failed), "first_failure": (failed[0].out.strip()[:300] + " " + failed[0].err.strip()[-300:]) if failed else None,
            "duplicates": dupes, "reserved_on_disk": len(disk), "disk_matches_answers": disk == expected, "ok": ok}


def bench_storms(subjects, work, sizes: list, reps: int, log) -> dict:
    """ADD storms and churn storms of every size, interleaved across subjects, repeated."""
    hl = next(s for s in subjects if not s.ours)
    raw: dict = {}  # (kind, size, subject) -> {"wall": [], "cpu": []}; kind: add | churn
    loads: dict = {}  # size -> [load per rep]
    others: dict = {}  # size -> [other jobs' CPU share during each storm]
    checks: list = []
    for rep in range(reps):
        for k, n in enumerate(sizes):
            loads.setdefault(n, []).append(load1())
            order = rotate(subjects, rep + k)
            dirs = {}
            for s in order:  # a fresh network each time; one untimed ADD+DEL creates it (and cni-ipam's index)
                d = os.path.join(work, "storm", f"{rep}-{n}-{s.name}")
                conf = netconf(d, name="storm")
                must(s.cni("ADD", conf, "bench-warm"), f"storm warm-up {s.name}")
                must(s.cni("DEL", conf, "bench-warm"), f"storm warm-up {s.name}")
                dirs[s.name] = (d, conf)
            for kind in ("add", "churn"):
                for s in order:
                    d, conf = dirs[s.name]
                    new = [f"bench-{kind}-{i:04d}" for i in range(n)]
                    if kind == "add":
                        chains = [[(s, "ADD", conf, cid)] for cid in new]
                    else:  # each pair: DEL one of the n reservations the ADD storm made, ADD a new container
                        chains = [[(s, "DEL", conf, f"bench-add-{i:04d}"), (s, "ADD", conf, cid)] for i, cid in enumerate(new)]
                    other = OtherCpu()
                    wall, results = run_concurrent(chains)
                    others.setdefault(n, []).append(other.share())
                    calls = [c for chain in results for c in chain]
                    adds = [chain[-1] for chain in results]
                    check = _check_storm(os.path.join(d, "storm"), adds, new, f"{kind} {n} {s.name}")
                    if any(c.rc != 0 for c in calls):
                        check["ok"] = False
                        check["failed"] = sum(1 for c in calls if c.rc != 0)
                        bad = next(c for c in calls if c.rc != 0)
                        check["first_failure"] = bad.out.strip()[:300] + " " + bad.err.strip()[-300:]
                    r = raw.setdefault((kind, n, s.name), {"wall": [], "cpu": []})
                    r["wall"].append(wall)
                    r["cpu"].append(sum(c.cpu_ms for c in calls) / 1000)
                    if not check["ok"]:
                        checks.append({"kind": kind, "size": n, "subject": s.name, "rep": rep, **check})
                        log(f"  storm {kind} {n} {s.name}: FAILED {check}")
            for s in order:
                shutil.rmtree(dirs[s.name][0], ignore_errors=True)
            log(f"  storms of {n}, rep {rep + 1}/{reps} (load {loads[n][-1]}): " + "; ".join(
                f"{s.name} {raw[('add', n, s.name)]['wall'][-1]:.2f}s/{raw[('churn', n, s.name)]['wall'][-1]:.2f}s" for s in subjects))
    out: dict = {"sizes": sizes, "reps": reps, "load_per_rep": {str(n): loads[n] for n in sizes},
                 "other_cpu_share": {str(n): stats([x for x in others[n] if x is not None]) for n in sizes}, "failures": checks,
                 "ok": not checks, "add": {}, "churn": {}}
    for kind in ("add", "churn"):
        for n in sizes:
            h = raw[(kind, n, hl.name)]
            rows = {}
            for s in subjects:
                r = raw[(kind, n, s.name)]
                rows[s.name] = {
                    "wall_s": stats(r["wall"]), "cpu_s": stats(r["cpu"]),
                    "per_s": round(n / statistics.median(r["wall"]), 1),
                    "x_wall": stats([a / b for a, b in zip(r["wall"], h["wall"])]),
                    "x_cpu": stats([a / b for a, b in zip(r["cpu"], h["cpu"])]),
                    "wall_all": [round(x, 4) for x in r["wall"]], "cpu_all": [round(x, 4) for x in r["cpu"]],
                }
            out[kind][str(n)] = rows
    return out


def bench_gc(rec, ours: Subject, work, count, log) -> dict:
    probe = ours.admin(["gc", "--help"])
    if probe.rc != 0:
        log(f"  gc: skipped ({ours.name} has no gc command)")
        return {"skipped": "no cni-ipam gc command in this build"}
    out: dict = {"subject": ours.name, "reservations": count}
    data_dir = os.path.join(work, "gc")
    ids = prefill(os.path.join(data_dir, "gcnet"), count, "10.200.0.0/16", "bench-gc-")
    valid = os.path.join(work, "gc-valid-ids")
    with open(valid, "w") as fh:
        fh.write("\n".join(ids[::2]) + "\n")
    stranded_expected = count - len(ids[::2])
    args = ["gc", "--data-dir", data_dir, "--network", "gcnet", "--include-unknown", "--grace", "0",
            "--valid-ids-file", valid, "--json"]

    def run(tag, extra, rss=False):
        call = ours.admin(args + extra, rss=rss and have_time())
        rec.add("gc", ours.name, tag, call)
        if call.rc not in (0, 1):
            raise Failure(f"gc {tag} failed (exit {call.rc}): {call.out[:300]} {call.err[-300:]}")
        return call, _gc_counts(call.json())

    first, c1 = run("dry-run (first, rebuilds index)", [], rss=True)
    dry, c2 = run("dry-run", [])
    apply, c3 = run("apply", ["--apply"])
    after, c4 = run("dry-run after apply", [], rss=True)
    left = sum(1 for n in os.listdir(os.path.join(data_dir, "gcnet")) if n[0].isdigit() and not n.startswith("last_"))
    out["admin"] = {
        "dry_run_first_ms": round(first.ms, 1),
        "dry_run_ms": round(dry.ms, 1),
        "apply_ms": round(apply.ms, 1),
        "stranded_found": c2.get("stranded"),
        "released": c3.get("released"),
        "stranded_after_apply": c4.get("stranded"),
        "left_on_disk": left,
        "ok": c2.get("stranded") == stranded_expected and left == count - stranded_expected and c4.get("stranded") == 0,
        "maxrss_kb": first.maxrss_kb,
    }
    log(f"  gc admin: dry run {dry.ms:.0f} ms (first {first.ms:.0f} ms), apply {apply.ms:.0f} ms, "
        f"released {c3.get('released')} of {stranded_expected}")

    # The CNI GC verb (spec 1.1.0): everything not in cni.dev/valid-attachments is released.
    verb_dir = os.path.join(work, "gcverb")
    ids = prefill(os.path.join(verb_dir, "gcverb"), count, "10.201.0.0/16", "bench-gv-")
    conf = netconf(verb_dir, name="gcverb", subnet="10.201.0.0/16", version="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": "eth0"} for cid in ids[::2]]
    call = ours.cni("GC", conf, rss=have_time())
    rec.add("gc", ours.name, "GC verb", call)
    left = sum(1 for n in os.listdir(os.path.join(verb_dir, "gcverb")) if n[0].isdigit() and not n.startswith("last_"))
    out["verb"] = {"ms": round(call.ms, 1), "rc": call.rc, "left_on_disk": left, "ok": call.rc == 0 and left == len(ids[::2]),
                   "maxrss_kb": call.maxrss_kb, "error": None if call.rc == 0 else call.out.strip()[:300]}
    log(f"  gc verb: {call.ms:.0f} ms, {count - left} released (expected {count - len(ids[::2])})")
    return out


def _gc_counts(report) -> dict:
    """Counts from `cni-ipam gc --json`, whatever nesting it uses: sum the totals we recognise."""
    if not isinstance(report, dict):
        return {}
    totals = report.get("totals") or report.get("total") or report.get("summary")
    if isinstance(totals, dict):
        return {k: totals.get(k) for k in ("live", "stranded", "unknown", "released", "errors")}
    out = {"stranded": 0, "released": 0}
    for net in (report.get("networks") or {}).values():
        findings = net.get("findings", [])
        out["stranded"] += sum(1 for f in findings if isinstance(f, dict) and f.get("state") == "stranded")
        out["released"] += len(net.get("released", []))
    return out


# --------------------------------------------------------------------------- cluster pools (issue 12)
ETCD = os.environ.get("CNI_IPAM_ETCD", "/usr/bin/etcd")


class BenchEtcd:
    """One etcd member on loopback for the pool scenarios (data in /dev/shm when it exists)."""

    def __init__(self) -> None:
        import socket

        def port():
            with socket.socket() as sk:
                sk.bind(("127.0.0.1", 0))
                return sk.getsockname()[1]

        self.dir = tempfile.mkdtemp(prefix="bench-etcd-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        self.client, peer = port(), port()
        self.endpoint = f"http://127.0.0.1:{self.client}"
        argv = [ETCD, "--name", "bench", "--data-dir", os.path.join(self.dir, "d"),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"bench=http://127.0.0.1:{peer}", "--log-level", "error", "--logger", "zap"]
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        sys.path.insert(0, ROOT)
        from cni_ipam.cluster.etcd import EtcdClient, EtcdUnavailable

        c = EtcdClient([self.endpoint], timeout=0.5)
        end = time.monotonic() + 20
        while True:
            try:
                c.get(b"/bench-probe")
                break
            except EtcdUnavailable:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.close()
                    raise SystemExit("bench: etcd did not start")
                time.sleep(0.05)
        c.close()

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        except OSError:
            pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def pool_netconf(data_dir: str, endpoint: str, node: str, block: int, keep: int = 1, name: str = "bench",
                 subnet: str = "10.128.0.0/16", prefix: str = "/bench") -> dict:
    conf = netconf(data_dir, name=name, subnet=subnet)
    conf["ipam"]["type"] = "cni-ipam"
    conf["ipam"]["pool"] = {"name": "bench", "blockSize": block, "nodeName": node, "keepBlocks": keep,
                            "etcd": {"endpoints": [endpoint], "prefix": prefix, "timeout": 2}}
    return conf


def count_round_trips(conf: dict, command: str, cid: str) -> "tuple[int, list]":
    """Run one call in this process with the etcd client wrapped: (round trips, request paths)."""
    from cni_ipam.cluster import etcd
    from cni_ipam.__main__ import VERBS
    from cni_ipam.plugin.skel import plugin_main
    import io

    paths: list = []
    real = etcd.EtcdClient._call

    def counting(self, path, body):
        paths.append(path)
        return real(self, path, body)

    etcd.EtcdClient._call = counting
    try:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_NETNS": NETNS, "CNI_PATH": os.path.dirname(HOST_LOCAL)}
        out = io.StringIO()
        if plugin_main(VERBS, env, json.dumps(conf).encode(), out) != 0:
            raise Failure(f"in-process {command} failed: {out.getvalue()[:300]}")
    finally:
        etcd.EtcdClient._call = real
    return len(paths), paths


def bench_pool(rec, subjects, work, runs, claims, nodes, per_node, parallel, log) -> dict:
    out: dict = {}
    ours = [s for s in subjects if s.ours]
    if not os.access(ETCD, os.X_OK):
        return {"skipped": f"{ETCD} missing (apt-get install etcd-server)"}
    etcd = BenchEtcd()
    try:
        # 1. held block vs node-local vs host-local, interleaved call by call
        lanes = [("host-local", s, lambda d: netconf(d)) for s in subjects if not s.ours]
        for s in ours:
            lanes.append((f"{s.name} node-local", s, lambda d: dict(netconf(d), ipam=dict(netconf(d)["ipam"], type="cni-ipam"))))
            lanes.append((f"{s.name} pool", s, lambda d, s=s: pool_netconf(d, etcd.endpoint, f"held-{s.name}", 24, prefix="/bench-held")))
        dirs = {name: os.path.join(work, "pool-held", name.replace(" ", "-")) for name, _, _ in lanes}
        for name, s, make in lanes:  # warm-up: the pool lane claims its /24 here, once
            must(s.cni("ADD", make(dirs[name]), "bench-warm"), f"pool warm-up {name}")
            must(s.cni("DEL", make(dirs[name]), "bench-warm"), f"pool warm-up {name}")
        for run in range(runs):
            order = lanes[run % len(lanes):] + lanes[: run % len(lanes)]
            cid = f"bench-p-{run:05d}"
            for name, s, make in order:
                rec.add("pool-held", name, "ADD", must(s.cni("ADD", make(dirs[name]), cid), f"pool {name} ADD"))
            for name, s, make in reversed(order):
                rec.add("pool-held", name, "DEL", must(s.cni("DEL", make(dirs[name]), cid), f"pool {name} DEL"))
        held = {}
        for name, _, _ in lanes:
            held[name] = {op: {"median_ms": rec.median("pool-held", name, op), "cpu_ms": rec.cpu_median("pool-held", name, op)}
                          for op in ("ADD", "DEL")}
        for s in ours:
            p, n = held[f"{s.name} pool"], held[f"{s.name} node-local"]
            held[f"{s.name} pool"]["x_node_local"] = {
                op: ratio(p[op]["median_ms"], n[op]["median_ms"]) for op in ("ADD", "DEL")}
            held[f"{s.name} pool"]["x_node_local"]["ADD+DEL"] = ratio(
                p["ADD"]["median_ms"] + p["DEL"]["median_ms"], n["ADD"]["median_ms"] + n["DEL"]["median_ms"])
            held[f"{s.name} pool"]["x_node_local_cpu"] = {
                op: ratio(p[op]["cpu_ms"], n[op]["cpu_ms"]) for op in ("ADD", "DEL")}
        out["held"] = {"runs": runs, "lanes": held}
        log(f"  pool: held-block rounds done ({runs})")

        # 2. ADDs that claim, DELs that release (/32 blocks, keepBlocks 0): timed as processes ...
        s = ours[0] if ours else None
        if s is not None:
            d = os.path.join(work, "pool-claim")
            conf = pool_netconf(d, etcd.endpoint, "claimer", 32, keep=0, prefix="/bench-claim")
            for i in range(claims):
                rec.add("pool-claim", s.name, "ADD", must(s.cni("ADD", conf, f"bench-c-{i}"), "claiming ADD"))
                rec.add("pool-claim", s.name, "DEL", must(s.cni("DEL", conf, f"bench-c-{i}"), "releasing DEL"))
            # ... and counted in-process
            d2 = os.path.join(work, "pool-count")
            c32 = pool_netconf(d2, etcd.endpoint, "counter", 32, keep=0, prefix="/bench-count")
            c24 = pool_netconf(os.path.join(work, "pool-count24"), etcd.endpoint, "counter24", 24, prefix="/bench-count24")
            first = count_round_trips(c32, "ADD", "rt-1")  # the pool's first claim also pins the block grid
            claim = count_round_trips(c32, "ADD", "rt-2")
            release = count_round_trips(c32, "DEL", "rt-2")
            count_round_trips(c24, "ADD", "rt-3")
            held_add = count_round_trips(c24, "ADD", "rt-4")
            held_del = count_round_trips(c24, "DEL", "rt-4")
            out["claim"] = {
                "subject": s.name, "n": claims,
                "claiming_ADD_ms": rec.median("pool-claim", s.name, "ADD"), "releasing_DEL_ms": rec.median("pool-claim", s.name, "DEL"),
                "round_trips": {"first claim of the pool": first, "claiming ADD": claim, "releasing DEL": release,
                                "ADD in a held block": held_add, "DEL keeping its block": held_del},
            }
            log(f"  pool: {claims} claiming ADDs and releasing DELs done")

            # 3. storm: nodes x parallel ADDs, one pool, /28 blocks (so nodes claim as they go), then
            #    the same storm on node-local networks (one per simulated node) for comparison
            confs = [pool_netconf(os.path.join(work, "pool-storm", f"n{i}"), etcd.endpoint, f"storm-{i}", 28, prefix="/bench-storm")
                     for i in range(nodes)]
            plain = [dict(netconf(os.path.join(work, "plain-storm", f"n{i}"), subnet=f"10.{130 + i}.0.0/16"), type="bridge")
                     for i in range(nodes)]
            for c in plain:
                c["ipam"]["type"] = "cni-ipam"
            walls = {}
            for label, cset in (("pool", confs), ("node-local", plain)):
                calls: list = [None] * (nodes * per_node)

                def one(i, cset=cset, calls=calls, label=label):
                    calls[i] = s.cni("ADD", cset[i % nodes], f"bench-{label}-{i:05d}")

                t0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=nodes * parallel) as pool:
                    list(pool.map(one, range(len(calls))))
                walls[label] = time.perf_counter() - t0
                walls[label + " cpu"] = sum(c.cpu_ms for c in calls) / 1000
                if label == "pool":
                    pool_calls = calls
            wall, calls = walls["pool"], pool_calls
            failed = [c for c in calls if c.rc != 0]
            addrs = [ip for c in calls if c.rc == 0 for ip in ips_of(c.json())]
            from cni_ipam.cluster.etcd import EtcdClient

            ec = EtcdClient([etcd.endpoint])
            blocks = ec.range_prefix(b"/bench-storm/pools/bench/blocks/")
            ec.close()
            owners = [json.loads(v)["node"] for _, v, _, _ in blocks]
            out["storm"] = {"subject": s.name, "nodes": nodes, "parallel_per_node": parallel, "adds": len(calls),
                            "wall_s": round(wall, 3), "adds_per_s": round(len(calls) / wall, 1), "failed": len(failed),
                            "node_local_adds_per_s": round(len(calls) / walls["node-local"], 1),
                            "cpu_s": round(walls["pool cpu"], 2), "node_local_cpu_s": round(walls["node-local cpu"], 2),
                            "cpu_x_node_local": ratio(walls["pool cpu"], walls["node-local cpu"]),
                            "first_failure": failed[0].out.strip()[:300] if failed else None,
                            "duplicates": len(addrs) - len(set(addrs)), "blocks_claimed": len(blocks),
                            "blocks_per_node": {n: owners.count(n) for n in sorted(set(owners))},
                            "ok": not failed and len(addrs) == len(set(addrs))}
            log(f"  pool storm: {len(calls) / wall:.0f} ADD/s over {nodes} nodes, {len(failed)} failed")
    finally:
        etcd.close()
    return out


def print_pool(pool: dict, p) -> None:
    if pool.get("skipped"):
        p(f"\ncluster pool: skipped ({pool['skipped']})")
        return
    h = pool.get("held")
    if h:
        p(f"\ncluster pool, ADD/DEL in a held block vs node-local vs host-local: median ms (CPU ms)   [runs: {h['runs']}]")
        for name, row in h["lanes"].items():
            x = row.get("x_node_local")
            extra = f"   pool/node-local: ADD {x['ADD']}x, DEL {x['DEL']}x, ADD+DEL {x['ADD+DEL']}x" if x else ""
            p(f"  {name:<22} ADD {row['ADD']['median_ms']:8.2f} ({row['ADD']['cpu_ms']:6.2f})   "
              f"DEL {row['DEL']['median_ms']:8.2f} ({row['DEL']['cpu_ms']:6.2f}){extra}")
    c = pool.get("claim")
    if c:
        p(f"\ncluster pool, block claims ({c['subject']}, /32 blocks, keepBlocks 0, n={c['n']}): claiming ADD {c['claiming_ADD_ms']:.2f} ms, "
          f"releasing DEL {c['releasing_DEL_ms']:.2f} ms (medians)")
        for what, (n, paths) in c["round_trips"].items():
            p(f"  etcd round trips, {what:<24} {n}  {' '.join(x.rsplit('/', 1)[-1] for x in paths)}")
    st = pool.get("storm")
    if st:
        p(f"\ncluster pool storm: {st['nodes']} nodes x {st['parallel_per_node']}-way, {st['adds']} ADDs in {st['wall_s']:.2f}s = "
          f"{st['adds_per_s']:.1f} ADD/s; failed {st['failed']}, duplicates {st['duplicates']}, blocks {st['blocks_claimed']} "
          f"{st['blocks_per_node']}  {'OK' if st['ok'] else 'FAIL'}")
        p(f"  the same storm on node-local networks (one per node): {st['node_local_adds_per_s']:.1f} ADD/s; CPU time of all "
          f"calls: pool {st['cpu_s']:.1f} s, node-local {st['node_local_cpu_s']:.1f} s ({st['cpu_x_node_local']}x)")


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f"{int(fh.readline().split()[1]) // 1024} MiB"
    except (OSError, ValueError, IndexError):
        pass
    fs = subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()], capture_output=True, text=True).stdout.strip()
    hl = ""
    try:
        hl = spawn([HOST_LOCAL], {"CNI_COMMAND": "VERSION"}).out.strip().replace("\n", " ")
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "filesystem": fs,
        "loadavg_at_start": os.getloadavg(),
        "host_local": HOST_LOCAL,
        "host_local_version": hl[:200],
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def summarise(rec: Recorder, subjects: list, results: dict) -> dict:
    ops = ("ADD", "CHECK", "DEL", "VERSION")
    summary: dict = {}
    for scenario in ("empty", "big"):
        if not any(k[0] == scenario for k in rec.times):
            continue
        sc = {}
        hl = {op: rec.median(scenario, "host-local", op) for op in ops}
        for s in subjects:
            row = {}
            for op in ops:
                m = rec.median(scenario, s.name, op)
                row[op] = {"median_ms": m, "cpu_ms": rec.cpu_median(scenario, s.name, op),
                           "n": len(rec.times.get((scenario, s.name, op), [])), "x_host_local": ratio(m, hl[op])}
            add, dele = row["ADD"]["median_ms"], row["DEL"]["median_ms"]
            row["ADD+DEL_ms"] = round(add + dele, 3) if add is not None and dele is not None else None
            row["maxrss_kb"] = rec.rss.get((scenario, s.name))
            sc[s.name] = row
        summary[scenario] = sc
    return summary


def goals(data: dict, subjects: list) -> dict:
    """Issue 14's goals, judged for every cni-ipam subject; the first (the built binary when there is
    one) is the one the issue is about."""
    ours = [s.name for s in subjects if s.ours]
    summ, storm, first, after = data["summary"], data.get("storm") or {}, data.get("first") or {}, data.get("after") or {}
    e, b = summ.get("empty", {}), summ.get("big", {})
    lines = []

    def line(goal: str, metric: str, limit: float, value_of, moonshot: "float | None" = None) -> None:
        per = {}
        for name in ours:
            got = value_of(name)
            if got is None:
                continue
            value, beside = got
            if value is None:
                continue
            per[name] = {"value": round(value, 3), "met": value <= limit, "beside": beside}
            if moonshot is not None:
                per[name]["moonshot_met"] = value <= moonshot
        lines.append({"goal": goal, "metric": metric, "limit": limit, "moonshot": moonshot, "subjects": per})

    def single(op):
        def f(name):
            if name not in e or "host-local" not in e:
                return None
            return (ratio(e[name][op]["cpu_ms"], e["host-local"][op]["cpu_ms"]),
                    {"wall_x": e[name][op]["x_host_local"], "cpu_ms": e[name][op]["cpu_ms"], "host_local_cpu_ms": e["host-local"][op]["cpu_ms"]})
        return f

    line(f"cold ADD, CPU <= {GOAL_ADD_CPU:g}x host-local (moonshot {GOAL_ADD_CPU_MOONSHOT:g}x)", "cpu", GOAL_ADD_CPU, single("ADD"),
         GOAL_ADD_CPU_MOONSHOT)
    line(f"cold DEL, CPU <= {GOAL_DEL_CPU:g}x host-local", "cpu", GOAL_DEL_CPU, single("DEL"))
    line(f"cold VERSION, CPU <= {GOAL_VERSION_CPU:g}x host-local", "cpu", GOAL_VERSION_CPU, single("VERSION"))
    for kind, label in (("add", "ADD storm"), ("churn", "churn storm (DEL+ADD pairs)")):
        for n in (storm.get("sizes") or []):
            def f(name, kind=kind, n=n):
                row = storm[kind][str(n)].get(name)
                if row is None:
                    return None
                return (row["x_wall"]["median"], {"wall_x_range": row["x_wall"]["range"], "cpu_x": row["x_cpu"]["median"],
                                                  "wall_s": row["wall_s"]["median"]})
            line(f"{label} of {n}, wall <= {GOAL_STORM_WALL:g}x host-local", "wall", GOAL_STORM_WALL, f)

    def first_wall(name):
        row = first.get(name)
        if row is None:
            return None
        return (row["x_host_local"]["median"], {"wall_x_range": row["x_host_local"]["range"], "cpu_x": row["x_host_local_cpu"]["median"],
                                                "ms": row["ADD_ms"]["median"], "host_local_ms": row["host_local_ADD_ms"]["median"]})

    def first_rss(name):
        row = first.get(name)
        if row is None or row["maxrss_kb"] is None:
            return None
        return (row["maxrss_kb"] / 1024, {"host_local_mb": round((row["host_local_maxrss_kb"] or 0) / 1024, 1)})

    def after_write(name):
        row = after.get(name)
        if row is None:
            return None
        k = row[f"after_host_local_{row['worst']}"]
        return (row["x_steady"], {"cpu_x": row["x_steady_cpu"], "after": f"host-local {row['worst']}", "ms": k["after_ms"]["median"],
                                  "steady_ms": k["steady_ms"]["median"]})

    big_n = (data.get("params") or {}).get("big")
    line(f"first call on a host-local directory at {big_n:,} reservations, wall <= {GOAL_FIRST_WALL:g}x host-local's ADD there",
         "wall", GOAL_FIRST_WALL, first_wall)
    line(f"first call at {big_n:,}, peak RSS <= {GOAL_FIRST_RSS_KB // 1024} MB", "MB", GOAL_FIRST_RSS_KB / 1024, first_rss)
    line(f"call right after a host-local write at {big_n:,} (the worse of ADD, DEL), wall <= {GOAL_AFTER_WRITE:g}x own steady ADD", "wall",
         GOAL_AFTER_WRITE,
         after_write)

    def big_vs_hl(name):
        if name not in b or "host-local" not in b:
            return None
        return ratio(b[name]["ADD+DEL_ms"], b["host-local"]["ADD+DEL_ms"]), {}

    def big_vs_empty(name):
        if name not in b or name not in e:
            return None
        return ratio(b[name]["ADD+DEL_ms"], e[name]["ADD+DEL_ms"]), {}

    if big_n and big_n >= 60000:  # the earlier targets were set for 60,000 reservations
        line(f"(earlier target) ADD+DEL at {big_n:,}, wall <= {TARGET_BIG_RATIO:g}x host-local's", "wall", TARGET_BIG_RATIO, big_vs_hl)
        line(f"(earlier target) ADD+DEL at {big_n:,}, wall <= {TARGET_BIG_VS_EMPTY:g}x its own empty-network time", "wall",
             TARGET_BIG_VS_EMPTY, big_vs_empty)
    lines = [ln for ln in lines if ln["subjects"]]
    return {"primary": ours[0] if ours else None, "lines": lines}


def _fmt_goal_value(metric: str, v: dict) -> str:
    if metric == "MB":
        return f"{v['value']:.1f} MB"
    return f"{v['value']:.2f}x"


def print_goals(g: dict, p) -> None:
    if not g or not g.get("lines"):
        return
    primary = g["primary"]
    p(f"\ngoals (issue 14; ratios to host-local in this run), judged for {primary}; other cni-ipam subjects in brackets:")
    for ln in g["lines"]:
        v = ln["subjects"].get(primary)
        head = ("MET    " if v["met"] else "NOT MET") if v else "n/a    "
        fig = _fmt_goal_value(ln["metric"], v) if v else "-"
        extra = []
        if v:
            bs = v["beside"]
            if "wall_x" in bs and bs["wall_x"] is not None:
                extra.append(f"wall {bs['wall_x']:.2f}x")
            if bs.get("cpu_x") is not None:
                extra.append(f"CPU {bs['cpu_x']:.2f}x")
            if bs.get("wall_x_range"):
                extra.append(f"range {bs['wall_x_range'][0]:.2f}-{bs['wall_x_range'][1]:.2f}x")
            if bs.get("after"):
                extra.append(f"worse case: after {bs['after']}")
            if "moonshot_met" in v:
                extra.append("moonshot met" if v["moonshot_met"] else "moonshot not met")
        others = [f"{n} {_fmt_goal_value(ln['metric'], x)} {'MET' if x['met'] else 'NOT MET'}" for n, x in ln["subjects"].items() if n != primary]
        p(f"  {head} {ln['goal']}: {fig}" + (f" ({', '.join(extra)})" if extra else "") + (f"  [{'; '.join(others)}]" if others else ""))


def mb(kb) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f}MB"


def print_report(data: dict, out=sys.stdout) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    m = data["machine"]
    p(f"\nmachine: {m['cpu']}, {m['cpus']} CPUs, {m['memory']}, {m['os']}, kernel {m['kernel']}, "
      f"Python {m['python']}, {m['filesystem']} for data dirs, load {m['loadavg_at_start'][0]:.2f}")
    for scenario, title in (("empty", "empty /16 network"), ("big", f"{data.get('big', {}).get('reservations', '?')} reservations in a /16 (steady state)")):
        sc = data["summary"].get(scenario)
        if not sc:
            continue
        p(f"\n{title}: median ms per cold process call (x host-local)   [runs: {data['params'][scenario + '_runs']}]")
        p(f"{'subject':<12} {'ADD':>16} {'CHECK':>16} {'DEL':>16} {'VERSION':>16} {'ADD+DEL':>9} {'max RSS':>9}")
        for name, row in sc.items():
            cells = []
            for op in ("ADD", "CHECK", "DEL", "VERSION"):
                c = row[op]
                cells.append(f"{c['median_ms']:8.2f} ({c['x_host_local']:5.2f}x)" if c["median_ms"] is not None else f"{'-':>16}")
            p(f"{name:<12} {' '.join(f'{c:>16}' for c in cells)} {row['ADD+DEL_ms']:9.2f} {mb(row['maxrss_kb']):>9}")
        p("CPU time (user+sys) of the same calls, median ms (less sensitive to machine load):")
        hl = sc.get("host-local")
        for name, row in sc.items():
            cells = []
            for op in ("ADD", "CHECK", "DEL", "VERSION"):
                c, h = row[op]["cpu_ms"], (hl[op]["cpu_ms"] if hl else None)
                r = ratio(c, h)
                cells.append(f"{c:8.2f} ({r:5.2f}x)" if c is not None and r is not None else f"{'-':>16}")
            p(f"{name:<12} {' '.join(f'{c:>16}' for c in cells)}")
    fr = data.get("first")
    if fr:
        p(f"\nfirst call on a host-local directory at {data['params']['big']:,} reservations (the subject's copy reset to "
          f"host-local's files before each repetition; host-local ADDs, then the subject's first ADD rebuilds its owner index)   [reps: {data['params']['first_reps']}]")
        p(f"  {'subject':<12} {'first ADD ms':>22} {'CPU ms':>9} {'max RSS':>9}   {'host-local ADD ms':>22} {'RSS':>8}   "
          f"{'x host-local (range)':>22} {'CPU x':>6}   load")
        for name, r in fr.items():
            a, h, x = r["ADD_ms"], r["host_local_ADD_ms"], r["x_host_local"]
            p(f"  {name:<12} {a['median']:9.1f} ({a['range'][0]:.0f}-{a['range'][1]:.0f}) {r['ADD_cpu_ms']['median']:9.1f} "
              f"{mb(r['maxrss_kb']):>9}   {h['median']:9.1f} ({h['range'][0]:.0f}-{h['range'][1]:.0f}) {mb(r['host_local_maxrss_kb']):>8}   "
              f"{x['median']:8.2f}x ({x['range'][0]:.2f}-{x['range'][1]:.2f}) {r['x_host_local_cpu']['median']:6.2f}   "
              f"{' '.join(f'{v:.1f}' for v in r['load'])}")
    af = data.get("after")
    if af:
        p(f"\ncall right after a host-local write (ADD or DEL, alternating) in an indexed directory at {data['params']['big']:,}, "
          f"vs the subject's steady ADD there   [reps: {data['params']['after_reps']}]")
        for name, r in af.items():
            for w in ("ADD", "DEL"):
                k = r.get(f"after_host_local_{w}")
                if not k:
                    continue
                a, s = k["after_ms"], k["steady_ms"]
                p(f"  {name:<12} after host-local {w}: {a['median']:8.1f} ms ({a['range'][0]:.1f}-{a['range'][1]:.1f}), CPU "
                  f"{k['after_cpu_ms']['median']:7.1f}; steady {s['median']:7.1f} ms ({s['range'][0]:.1f}-{s['range'][1]:.1f}), CPU "
                  f"{k['steady_cpu_ms']['median']:6.1f}; {k['x_steady']:.2f}x (CPU {k['x_steady_cpu']:.2f}x), n={k['n']}")
            p(f"  {'':<12} load per rep: {' '.join(f'{v:.1f}' for v in r['load'])}; the goal takes the worse: after host-local {r['worst']}")
    st = data.get("storm")
    if st:
        p(f"\nstorms, {st['reps']} interleaved repetitions per size: median wall s (min-max), ADD/s, summed CPU s of all calls, "
          "and per-repetition ratios to host-local (median, min-max)")
        for kind, title in (("add", "concurrent ADDs into a fresh network"),
                            ("churn", "concurrent DEL+ADD pairs on a network holding as many reservations")):
            for n in st["sizes"]:
                oc = (st.get("other_cpu_share") or {}).get(str(n)) or {}
                occ = (f"; other jobs used {oc['median'] * 100:.0f}% ({oc['range'][0] * 100:.0f}-{oc['range'][1] * 100:.0f}%) of the CPUs during "
                       "the storms" if oc.get("median") is not None else "")
                p(f"  {n} {title} (load per rep: {' '.join(f'{v:.1f}' for v in st['load_per_rep'][str(n)])}{occ})")
                for name, r in st[kind][str(n)].items():
                    w, c, xw, xc = r["wall_s"], r["cpu_s"], r["x_wall"], r["x_cpu"]
                    unit = "ADD/s" if kind == "add" else "pairs/s"
                    p(f"    {name:<12} wall {w['median']:7.3f} s ({w['range'][0]:.3f}-{w['range'][1]:.3f}) {r['per_s']:7.1f} {unit:<7} "
                      f"CPU {c['median']:7.3f} s   x host-local: wall {xw['median']:5.2f}x ({xw['range'][0]:.2f}-{xw['range'][1]:.2f}) "
                      f"CPU {xc['median']:5.2f}x ({xc['range'][0]:.2f}-{xc['range'][1]:.2f})")
        if st["ok"]:
            p("  every call succeeded, every address distinct, the files on disk are exactly the ADDs' answers")
        else:
            for f in st["failures"]:
                p(f"  FAIL {f}")
    gc = data.get("gc")
    if gc:
        if gc.get("skipped"):
            p(f"\nGC: skipped ({gc['skipped']})")
        else:
            a, v = gc["admin"], gc["verb"]
            p(f"\nGC over {gc['reservations']} reservations ({gc['subject']}), half stranded:")
            p(f"  cni-ipam gc dry run  {a['dry_run_ms']:8.1f} ms (first run, rebuilding the index: {a['dry_run_first_ms']:.1f} ms); "
              f"stranded found {a['stranded_found']}")
            p(f"  cni-ipam gc --apply  {a['apply_ms']:8.1f} ms; released {a['released']}, left {a['left_on_disk']}, "
              f"stranded after {a['stranded_after_apply']}  {'OK' if a['ok'] else 'FAIL'}  (max RSS of the first dry run {mb(a['maxrss_kb'])})")
            p(f"  CNI GC verb          {v['ms']:8.1f} ms; left {v['left_on_disk']}  {'OK' if v['ok'] else 'FAIL ' + str(v['error'])}"
              f"  (max RSS {mb(v['maxrss_kb'])})")
    if data.get("pool"):
        print_pool(data["pool"], p)
    if not have_time():
        p(f"\npeak memory: n/a - {TIME} (GNU time, Debian package 'time') is needed to measure it per process")
    print_goals(data.get("goals"), p)


def goals_table(paths: list, out=sys.stdout) -> int:
    """The goal table of docs/performance.md in Markdown, one column per run (JSON written by this
    script): ``scripts/bench.py --goals-table before.json after.json``."""
    runs = []
    for path in paths:
        with open(path) as fh:
            runs.append(json.load(fh))
    p = lambda *a: print(*a, file=out)  # noqa: E731
    heads = []
    for r in runs:
        m, oc = r["machine"], (r.get("other_cpu_share") or {}).get("run")
        la0, la1 = m["loadavg_at_start"][0], (r.get("loadavg_at_end") or [None])[0]
        heads.append(f"{r['when'][:16]}Z, load {la0:.1f}" + (f"-{la1:.1f}" if la1 is not None else "")
                     + (f", others {oc * 100:.0f}% CPU" if oc is not None else ""))
    p("| goal (ratio to host-local in the same run) | " + " | ".join(heads) + " |")
    p("|---|" + "---|" * len(runs))
    order = []
    for r in runs:
        for ln in r["goals"]["lines"]:
            if ln["goal"] not in order:
                order.append(ln["goal"])
    for goal in order:
        cells = []
        for r in runs:
            ln = next((x for x in r["goals"]["lines"] if x["goal"] == goal), None)
            v = ln["subjects"].get(r["goals"]["primary"]) if ln else None
            if not v:
                cells.append("-")
                continue
            bs, extra = v["beside"], []
            if bs.get("wall_x") is not None:
                extra.append(f"wall {bs['wall_x']:.2f}x")
            if bs.get("cpu_x") is not None:
                extra.append(f"CPU {bs['cpu_x']:.2f}x")
            if bs.get("wall_x_range"):
                extra.append(f"{bs['wall_x_range'][0]:.2f}-{bs['wall_x_range'][1]:.2f}x")
            cells.append(f"**{_fmt_goal_value(ln['metric'], v)}** {'met' if v['met'] else 'not met'}"
                         + (f" ({', '.join(extra)})" if extra else ""))
        p(f"| {goal} | " + " | ".join(cells) + " |")
    return 0


# --------------------------------------------------------------------------- main
def sizes_arg(text: str) -> list:
    if text.strip() in ("", "0"):
        return []
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r}") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 20,000 reservations: about two minutes")
    ap.add_argument("--runs", type=int, help="rounds on the empty network (default 30, quick 15)")
    ap.add_argument("--big", type=int, help="reservations for the first-call, big and after-write scenarios (default 60000, quick 20000; 0 skips them)")
    ap.add_argument("--big-runs", type=int, help="steady rounds at --big reservations (default 5, quick 3)")
    ap.add_argument("--first-reps", type=int, help="first calls per cni-ipam subject, its copy reset to host-local's files each time (default 3, quick 1; 0 skips)")
    ap.add_argument("--after-reps", type=int, help="calls after a host-local write, per cni-ipam subject (default 6, quick 2; 0 skips)")
    ap.add_argument("--storm-sizes", type=sizes_arg, default=[16, 64, 110], metavar="N,N,...",
                    help="concurrent ADDs per storm (default 16,64,110; 0 skips the storms)")
    ap.add_argument("--storm", type=int, choices=(0,), help=argparse.SUPPRESS)  # the old option: only "--storm 0" (no storms) is kept
    ap.add_argument("--storm-reps", type=int, help="repetitions of every storm (default 5, quick 2)")
    ap.add_argument("--gc", type=int, help="reservations for the GC scenario (default 10000, quick 3000; 0 skips)")
    ap.add_argument("--built", default=BUILT_DEFAULT, help="the built binary under test (default dist/cni-ipam/cni-ipam)")
    ap.add_argument("--no-source", action="store_true", help="leave out python3 -m cni_ipam")
    ap.add_argument("--no-built", action="store_true", help="leave out the built binary")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=COMMAND", help="another cni-ipam command to measure (may start with VAR=value settings)")
    ap.add_argument("--workdir", help="where the data directories go (default /tmp/bench-<pid>)")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results"), help="where the JSON goes (default bench-results/)")
    ap.add_argument("--pool", action="store_true", help="also run the cluster-pool scenarios (starts an etcd on loopback)")
    ap.add_argument("--pool-only", action="store_true", help="run only the cluster-pool scenarios")
    ap.add_argument("--pool-runs", type=int, help="interleaved held-block rounds (default 30, quick 15)")
    ap.add_argument("--pool-claims", type=int, default=10, help="claiming ADD + releasing DEL pairs (default 10)")
    ap.add_argument("--pool-nodes", type=int, default=4, help="simulated nodes in the pool storm (default 4)")
    ap.add_argument("--pool-storm", type=int, default=32, help="ADDs per node in the pool storm (default 32)")
    ap.add_argument("--parallel", type=int, default=16, help="concurrent ADDs per node in the pool storm (default 16)")
    ap.add_argument("--goals-table", nargs="+", metavar="JSON", help="print the goal table (Markdown) of earlier runs and exit")
    a = ap.parse_args(argv)
    if a.goals_table:
        return goals_table(a.goals_table)
    runs = a.runs or (15 if a.quick else 30)
    big = a.big if a.big is not None else (20000 if a.quick else 60000)
    big_runs = a.big_runs or (3 if a.quick else 5)
    first_reps = a.first_reps if a.first_reps is not None else (1 if a.quick else 3)
    after_reps = a.after_reps if a.after_reps is not None else (2 if a.quick else 6)
    storm_reps = a.storm_reps or (2 if a.quick else 5)
    if a.storm == 0:
        a.storm_sizes = []
    gc_n = a.gc if a.gc is not None else (3000 if a.quick else 10000)

    if not os.access(HOST_LOCAL, os.X_OK):
        print(f"bench: {HOST_LOCAL} not found (apt-get install containernetworking-plugins)", file=sys.stderr)
        return 2
    subjects = [Subject("host-local", [HOST_LOCAL], ours=False)]
    built_name = "built"
    if not a.no_built:
        if os.access(a.built, os.X_OK):
            subjects.append(Subject(built_name, [a.built], ours=True))
        else:
            print(f"bench: no built binary at {a.built} (scripts/build.sh); measuring the source only", file=sys.stderr)
    if not a.no_source:
        py_path = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        subjects.append(Subject("source", [sys.executable, "-m", "cni_ipam"], ours=True, env={"PYTHONPATH": py_path}))
    for item in a.extra:
        name, _, cmd = item.partition("=")
        words, env = shlex.split(cmd), {}
        while words and "=" in words[0] and not words[0].startswith("/"):  # leading VAR=value settings
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        subjects.append(Subject(name, words, ours=True, env=env))
    ours = next((s for s in subjects if s.ours), None)

    work = a.workdir or f"/tmp/bench-{os.getpid()}"
    os.makedirs(work, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rec = Recorder()
    data: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0], ROOT)] + (sys.argv[1:] if argv is None else list(argv))),
        "machine": machine(),
        "subjects": {s.name: " ".join(s.argv) for s in subjects},
        "params": {"empty_runs": runs, "big_runs": big_runs, "big": big, "first_reps": first_reps,
                   "after_reps": after_reps, "storm_sizes": a.storm_sizes, "storm_reps": storm_reps, "gc": gc_n,
                   "quick": a.quick},
        "phases_s": {},
        "other_cpu_share": {},
    }
    t_start, run_other = time.perf_counter(), OtherCpu()
    status = 0

    def phase(name, fn, *args):
        t0, other = time.perf_counter(), OtherCpu()
        result = fn(*args)
        data["phases_s"][name] = round(time.perf_counter() - t0, 1)
        data["other_cpu_share"][name] = other.share()
        log(f"  ({name}: {data['phases_s'][name]} s, load {load1()}, other jobs' share of the CPUs {data['other_cpu_share'][name]})")
        return result

    try:
        log(f"bench: subjects {', '.join(s.name for s in subjects)}; data under {work}; load {load1()}")
        if not a.pool_only:
            phase("empty", bench_empty, rec, subjects, work, runs, log)
            if big:
                t0 = time.perf_counter()
                template = Template(os.path.join(work, "template"), "bench", big, "10.128.0.0/16", "bench-pre-")
                os.sync()
                data["phases_s"]["prefill"] = round(time.perf_counter() - t0, 1)
                log(f"  prefilled {big} reservations in {data['phases_s']['prefill']} s")
                dirs: dict = {}
                if first_reps and ours is not None:
                    data["first"], dirs = phase("first", bench_first, subjects, work, template, first_reps, log)
                phase("big", bench_big, rec, subjects, work, template, dirs, big_runs, log)
                data["big"] = {"reservations": big}
                if after_reps and ours is not None:
                    data["after"] = phase("after", bench_after_write, subjects, dirs, after_reps, log)
            if a.storm_sizes and storm_reps:
                data["storm"] = phase("storm", bench_storms, subjects, work, a.storm_sizes, storm_reps, log)
            if gc_n and ours is not None:
                data["gc"] = phase("gc", bench_gc, rec, next((s for s in subjects if s.name == built_name), ours), work, gc_n, log)
        if a.pool or a.pool_only:
            data["pool"] = phase("pool", bench_pool, rec, subjects, work, a.pool_runs or (15 if a.quick else 30), a.pool_claims,
                                 a.pool_nodes, a.pool_storm, a.parallel, log)
    except Failure as exc:
        log(f"bench: FAILED: {exc}")
        data["failure"] = str(exc)
        status = 1
    except BaseException:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if data.get("storm") and not data["storm"]["ok"]:
        status = 1
    data["summary"] = summarise(rec, subjects, data)
    data["goals"] = goals(data, subjects)
    data["loadavg_at_end"] = os.getloadavg()
    data["other_cpu_share"]["run"] = run_other.share()
    data["seconds"] = round(time.perf_counter() - t_start, 1)
    data["samples_ms"] = {f"{k[0]}/{k[1]}/{k[2]}": [round(x, 3) for x in v] for k, v in rec.times.items()}
    data["samples_cpu_ms"] = {f"{k[0]}/{k[1]}/{k[2]}": [round(x, 3) for x in v] for k, v in rec.cpu.items()}
    print_report(data)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    for target in (path, os.path.join(a.out, "latest.json")):
        with open(target, "w") as fh:
            json.dump(data, fh, indent=2)
    la = data["loadavg_at_end"]
    oc = data["other_cpu_share"]["run"]
    print(f"\nwrote {path}; the run took {data['seconds']} s; load average at the end {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; "
          f"other jobs used {'n/a' if oc is None else f'{oc * 100:.0f}%'} of the CPUs during the run", flush=True)
    if a.keep:
        log(f"bench: data kept under {work}")
    else:
        t0 = time.perf_counter()
        shutil.rmtree(work, ignore_errors=True)
        log(f"bench: removed {work} in {time.perf_counter() - t0:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
