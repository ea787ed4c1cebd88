#!/usr/bin/env python3
"""Benchmark cni-ipam against Debian's host-local, measured in the same run.

Not a test: it prints a table, writes ``bench-results/bench-<time>.json`` (and ``latest.json``) and
says where we stand against the targets.  Subjects: host-local, the PyInstaller build
(``dist/cni-ipam/cni-ipam``, or ``--built``) and the source entry point (``python3 -m cni_ipam``);
``--extra name=command`` adds more (e.g. a onefile or stock build).

Scenarios (each call is a fresh process, as a runtime makes it; subjects are interleaved call by
call and the order rotates every run, so drift in machine load hits all of them alike):

* ``empty``   ADD, CHECK, DEL, VERSION on an empty /16 network; medians over ``--runs``.
* ``big``     the same at ``--big`` reservations (default 60,000) prefilled in host-local's format
              (``<ip>`` files holding ``id\\r\\nifname``) in a /16.  cni-ipam's first call on a
              directory someone else wrote rebuilds its owner index once (O(n)); that call is
              reported separately as ``first call``, the medians are the steady state after it.
* ``storm``   ``--storm`` ADDs (default 128), ``--parallel`` (16) at a time, into one network:
              throughput, and every address must be distinct and every call must succeed.
* ``gc``      ``cni-ipam gc`` dry run and ``--apply`` over ``--gc`` (10,000) prefilled
              reservations, half of them stranded (not in the valid-ID list); then the CNI GC verb
              over the same number with half the attachments valid.
* memory     peak RSS of every call (``wait4`` rusage per process), max per subject and scenario.
* ``pool``    (``--pool`` / ``--pool-only``; needs Debian's etcd-server: a single member is started on
              loopback for the run) cluster pools: ADD/DEL from a held block vs the same cni-ipam on
              a node-local network vs host-local, interleaved (goal: pool within 1.2x of node-local);
              ADDs that must claim a block and DELs that return one, with their etcd round trips
              counted (in-process, by wrapping the client); a storm of ``--pool-nodes`` simulated
              nodes x ``--parallel`` concurrent ADDs each into one pool.

``--quick`` runs a smaller set (under two minutes on a 2-core VM).  Data directories are made under
``--workdir`` (default /tmp/bench-<pid>) and removed at the end unless ``--keep``.
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

TARGET_ADD_RATIO = 8.0  # built ADD (empty) / host-local ADD, at most
TARGET_ADD_RATIO_IDEAL = 5.0
TARGET_BIG_RATIO = 0.05  # built ADD+DEL at 60k / host-local ADD+DEL at 60k, at most
TARGET_BIG_VS_EMPTY = 2.0  # built ADD+DEL at 60k / built ADD+DEL empty, at most


# --------------------------------------------------------------------------- process runner
class Call:
    __slots__ = ("rc", "out", "err", "ms", "cpu_ms", "maxrss_kb")

    def __init__(self, rc, out, err, ms, cpu_ms, maxrss_kb):
        self.rc, self.out, self.err, self.ms, self.cpu_ms, self.maxrss_kb = rc, out, err, ms, cpu_ms, maxrss_kb

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
    return Call(rc, b"".join(chunks).decode("utf-8", "replace"), err, ms, (ru.ru_utime + ru.ru_stime) * 1000, maxrss)


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

    def cni(self, command: str, conf: dict, cid: str = "", ifname: str = "eth0", rss: bool = False) -> Call:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_PATH": os.path.dirname(HOST_LOCAL)}
        if command not in ("VERSION", "GC", "STATUS"):
            env.update({"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_NETNS": NETNS})
        env.update(self.env)
        data = b"" if command == "VERSION" else json.dumps(conf).encode()
        return spawn(self.argv, env, data, rss)

    def admin(self, args: list, rss: bool = False) -> Call:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update(self.env)
        return spawn(self.argv + args, env, b"", rss)


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


# --------------------------------------------------------------------------- prefill
def prefill(net_dir: str, count: int, subnet: str, prefix: str) -> list:
    """Reservations as host-local writes them: file <ip> holding "id\\r\\nifname"; returns the IDs."""
    os.makedirs(net_dir, exist_ok=True)
    net = ipaddress.ip_network(subnet)
    if count > net.num_addresses - 4:
        raise SystemExit(f"bench: {count} reservations do not fit in {subnet}")
    base = int(net.network_address) + 2  # .1 is the gateway
    ids = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    last = None
    for i in range(count):
        ip = str(ipaddress.ip_address(base + i))
        cid = f"{prefix}{i:06d}"
        fd = os.open(os.path.join(net_dir, ip), flags, 0o600)
        os.write(fd, f"{cid}\r\neth0".encode())
        os.close(fd)
        ids.append(cid)
        last = ip
    if last:
        with open(os.path.join(net_dir, "last_reserved_ip.0"), "w") as fh:
            fh.write(last)
    return ids


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


def bench_big(rec, subjects, work, count, runs, log) -> dict:
    dirs = {s.name: os.path.join(work, "big", s.name) for s in subjects}
    t0 = time.perf_counter()
    for s in subjects:
        prefill(os.path.join(dirs[s.name], "bench"), count, "10.128.0.0/16", "bench-pre-")
    log(f"  big: prefilled {count} reservations x {len(subjects)} in {time.perf_counter() - t0:.1f}s")
    first = {}
    for s in subjects:  # first call: cni-ipam rebuilds its owner index here (once)
        conf = netconf(dirs[s.name])
        add = must(s.cni("ADD", conf, "bench-first", rss=have_time()), f"big first ADD {s.name}")
        dele = must(s.cni("DEL", conf, "bench-first"), f"big first DEL {s.name}")
        first[s.name] = {"ADD_ms": round(add.ms, 1), "DEL_ms": round(dele.ms, 1), "maxrss_kb": add.maxrss_kb}
        log(f"  big: first ADD {s.name} {add.ms:.0f} ms (then DEL {dele.ms:.0f} ms)")
    for run in range(runs):
        lifecycle_round(rec, "big", subjects, dirs, run, "bench-b-", {})
    sample_rss(rec, "big", subjects, dirs)
    log(f"  big: {runs} rounds done")
    return {"reservations": count, "first_call": first}


def bench_storm(rec, subjects, work, count, parallel, log) -> dict:
    out = {}
    for s in subjects:
        data_dir = os.path.join(work, "storm", s.name)
        conf = netconf(data_dir, name="storm")
        must(s.cni("ADD", conf, "bench-warm"), f"storm warm-up {s.name}")
        must(s.cni("DEL", conf, "bench-warm"), f"storm warm-up {s.name}")
        calls = [None] * count

        def one(i, s=s, conf=conf):
            calls[i] = s.cni("ADD", conf, f"bench-s-{i:05d}")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(one, range(count)))
        wall = time.perf_counter() - t0
        failed = [c for c in calls if c.rc != 0]
        addrs = [ip for c in calls if c.rc == 0 for ip in ips_of(c.json())]
        dupes = len(addrs) - len(set(addrs))
        on_disk = sum(1 for n in os.listdir(os.path.join(data_dir, "storm")) if n[0].isdigit() and not n.startswith("last_"))
        for c in calls:
            rec.add("storm", s.name, "ADD", c)
        out[s.name] = {
            "adds": count,
            "parallel": parallel,
            "wall_s": round(wall, 3),
            "adds_per_s": round(count / wall, 1),
            "failed": len(failed),
            "first_failure": (failed[0].out.strip()[:300] if failed else None),
            "duplicates": dupes,
            "reserved_on_disk": on_disk,
            "ok": not failed and dupes == 0 and on_disk == count,
        }
        log(f"  storm {s.name}: {count / wall:.0f} ADD/s, {len(failed)} failed, {dupes} duplicates")
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


# --------------------------------------------------------------------------- report
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


def targets(summary: dict, built: str) -> list:
    out = []
    e, b = summary.get("empty", {}), summary.get("big", {})
    if built in e and "host-local" in e:
        r = e[built]["ADD"]["x_host_local"]
        out.append({"target": f"{built} ADD (empty) <= {TARGET_ADD_RATIO:g}x host-local (ideally {TARGET_ADD_RATIO_IDEAL:g}x)",
                    "value": r, "met": r is not None and r <= TARGET_ADD_RATIO, "ideal": r is not None and r <= TARGET_ADD_RATIO_IDEAL,
                    "cpu_ratio": ratio(e[built]["ADD"]["cpu_ms"], e["host-local"]["ADD"]["cpu_ms"])})
    if built in b and "host-local" in b:
        r = ratio(b[built]["ADD+DEL_ms"], b["host-local"]["ADD+DEL_ms"])
        out.append({"target": f"{built} ADD+DEL (big) <= {TARGET_BIG_RATIO:g}x host-local's", "value": r,
                    "met": r is not None and r <= TARGET_BIG_RATIO})
        if built in e:
            r = ratio(b[built]["ADD+DEL_ms"], e[built]["ADD+DEL_ms"])
            out.append({"target": f"{built} ADD+DEL (big) <= {TARGET_BIG_VS_EMPTY:g}x its own empty-network time", "value": r,
                        "met": r is not None and r <= TARGET_BIG_VS_EMPTY})
    return out


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
    if data.get("big", {}).get("first_call"):
        p("\nfirst call on a directory written by someone else (cni-ipam rebuilds its owner index once):")
        for name, fc in data["big"]["first_call"].items():
            p(f"  {name:<12} ADD {fc['ADD_ms']:9.1f} ms   DEL {fc['DEL_ms']:8.1f} ms   max RSS {mb(fc['maxrss_kb'])}")
    if data.get("storm"):
        p(f"\n{data['params']['parallel']}-way parallel ADD storm:")
        for name, st in data["storm"].items():
            p(f"  {name:<12} {st['adds']} ADDs in {st['wall_s']:.2f}s = {st['adds_per_s']:7.1f} ADD/s; failed {st['failed']}, "
              f"duplicates {st['duplicates']}, on disk {st['reserved_on_disk']}  {'OK' if st['ok'] else 'FAIL'}")
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
    if data.get("targets"):
        p("\ntargets:")
        for t in data["targets"]:
            extra = "" if "ideal" not in t else ("  (ideal met)" if t["ideal"] else "  (ideal not met)")
            cpu = f"  [CPU-time ratio {t['cpu_ratio']}]" if t.get("cpu_ratio") is not None else ""
            p(f"  {'MET ' if t['met'] else 'MISS'} {t['target']}: {t['value']}{extra}{cpu}")


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a run takes under two minutes")
    ap.add_argument("--runs", type=int, help="rounds on the empty network (default 30, quick 15)")
    ap.add_argument("--big", type=int, help="reservations for the big scenario (default 60000; 0 skips)")
    ap.add_argument("--big-runs", type=int, help="rounds at --big reservations (default 5, quick 3)")
    ap.add_argument("--storm", type=int, help="ADDs in the parallel storm (default 128, quick 48; 0 skips)")
    ap.add_argument("--parallel", type=int, default=16, help="storm parallelism (default 16)")
    ap.add_argument("--gc", type=int, help="reservations for the GC scenario (default 10000; 0 skips)")
    ap.add_argument("--built", default=BUILT_DEFAULT, help="the PyInstaller binary (default dist/cni-ipam/cni-ipam)")
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
    a = ap.parse_args(argv)
    runs = a.runs or (15 if a.quick else 30)
    big = a.big if a.big is not None else 60000
    big_runs = a.big_runs or (3 if a.quick else 5)
    storm = a.storm if a.storm is not None else (48 if a.quick else 128)
    gc_n = a.gc if a.gc is not None else 10000

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
        argv, env = shlex.split(cmd), {}
        while argv and "=" in argv[0] and not argv[0].startswith("/"):  # leading VAR=value settings
            key, _, value = argv.pop(0).partition("=")
            env[key] = value
        subjects.append(Subject(name, argv, ours=True, env=env))
    ours = next((s for s in subjects if s.ours), None)

    work = a.workdir or f"/tmp/bench-{os.getpid()}"
    os.makedirs(work, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rec = Recorder()
    data: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "subjects": {s.name: " ".join(s.argv) for s in subjects},
        "params": {"empty_runs": runs, "big_runs": big_runs, "big": big, "storm": storm, "parallel": a.parallel, "gc": gc_n},
    }
    t_start = time.perf_counter()
    status = 0
    try:
        log(f"bench: subjects {', '.join(s.name for s in subjects)}; data under {work}")
        if not a.pool_only:
            bench_empty(rec, subjects, work, runs, log)
            if big:
                data["big"] = bench_big(rec, subjects, work, big, big_runs, log)
            if storm:
                data["storm"] = bench_storm(rec, subjects, work, storm, a.parallel, log)
            if gc_n and ours is not None:
                data["gc"] = bench_gc(rec, next((s for s in subjects if s.name == built_name), ours), work, gc_n, log)
        if a.pool or a.pool_only:
            data["pool"] = bench_pool(rec, subjects, work, a.pool_runs or (15 if a.quick else 30), a.pool_claims,
                                      a.pool_nodes, a.pool_storm, a.parallel, log)
    except Failure as exc:
        log(f"bench: FAILED: {exc}")
        data["failure"] = str(exc)
        status = 1
    except BaseException:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    data["summary"] = summarise(rec, subjects, data)
    data["targets"] = targets(data["summary"], built_name if any(s.name == built_name for s in subjects) else "source")
    data["seconds"] = round(time.perf_counter() - t_start, 1)
    data["samples_ms"] = {f"{k[0]}/{k[1]}/{k[2]}": [round(x, 3) for x in v] for k, v in rec.times.items()}
    print_report(data)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    for target in (path, os.path.join(a.out, "latest.json")):
        with open(target, "w") as fh:
            json.dump(data, fh, indent=2)
    print(f"\nwrote {path} ({data['seconds']}s)", flush=True)
    if a.keep:
        log(f"bench: data kept under {work}")
    else:
        log(f"bench: removing {work} ...")
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
