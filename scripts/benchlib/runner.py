"""Running the subjects: one call as a fresh process (CPU time and peak RSS), the subjects, the
concurrent chains of the storms and the statistics every scenario uses."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
HOST_LOCAL = os.environ.get("HOST_LOCAL", "/usr/lib/cni/host-local")
BUILT_DEFAULT = os.path.join(ROOT, "dist", "cni-ipam")
NETNS = "/var/run/netns/bench-none"  # never exists: host-local ignores it, cni-ipam records it


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
    return Call(
        rc,
        b"".join(chunks).decode("utf-8", "replace"),
        err,
        ms,
        (ru.ru_utime + ru.ru_stime) * 1000,
        maxrss,
        ru.ru_stime * 1000,
    )


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
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": os.path.dirname(HOST_LOCAL),
        }
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
        prepared[i] = (
            s.argv,
            s.cni_env(command, cid),
            json.dumps(conf).encode(),
            os.memfd_create("bench-out", os.MFD_CLOEXEC),
            os.memfd_create("bench-err", os.MFD_CLOEXEC),
        )

    def launch(i: int, step: int, pre=None) -> None:
        if pre is None:
            s, command, conf, cid = chains[i][step]
            pre = (
                s.argv,
                s.cni_env(command, cid),
                json.dumps(conf).encode(),
                os.memfd_create("bench-out", os.MFD_CLOEXEC),
                os.memfd_create("bench-err", os.MFD_CLOEXEC),
            )
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
        results[i][step] = Call(
            os.waitstatus_to_exitcode(status), out, err, None, (ru.ru_utime + ru.ru_stime) * 1000, None
        )
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
