#!/usr/bin/env python3
"""What the namespace scan (cni_ipam/plugin/nsscan.py) costs with N processes on the node.

Runs itself as the init of a fresh PID namespace (so the scan is sure and only our processes count),
starts N sleepers (every 10th in its own network namespace, like a pod's pause process; each holding
a few fds), then times:

* found-first: an identity held by the first process looked at (our own namespace): the early stop;
* found-last:  an identity held only by the last sleeper started;
* gone:        an identity held by nothing: a full walk, twice (the confirmation pass) -> the price
               of a netns-gone / netns-replaced verdict, paid once per network per gc pass.

Usage (root): python3 scripts/bench_nsscan.py [N] [repeats]   (default 1000 5)
"""

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inner(n: int, repeats: int) -> None:
    sys.path.insert(0, ROOT)
    from cni_ipam.plugin import nsscan

    procs = []
    try:
        for i in range(n):
            argv = ["unshare", "--net", "sleep", "3600"] if i % 10 == 0 else ["sleep", "3600"]
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        me = os.stat("/proc/self/ns/net")
        time.sleep(1.0)  # let every unshare exec its sleep
        last = next(p for p in reversed(procs) if p.args[0] == "unshare")
        st = os.stat(f"/proc/{last.pid}/ns/net")
        cases = {
            "found-first": [(me.st_dev, me.st_ino)],
            "found-last": [(st.st_dev, st.st_ino)],
            "gone": [(me.st_dev, 4026000001)],
        }
        tasks = sum(len(os.listdir(f"/proc/{p}/task")) for p in os.listdir("/proc") if p.isdigit())
        fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in os.listdir("/proc") if p.isdigit())
        print(f"{len([p for p in os.listdir('/proc') if p.isdigit()])} processes, {tasks} threads, {fds} fds, "
              f"{n // 10} extra network namespaces")
        for name, idents in cases.items():
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = nsscan.scan(idents, node_pidns=True)
                times.append(time.perf_counter() - t0)
            held = "held" if r.held else ("gone" if r.gone(idents[0]) else "unsure: " + "; ".join(r.problems[:2]))
            print(f"  {name:<12} {held:<5} median {statistics.median(times) * 1000:7.1f} ms  "
                  f"min {min(times) * 1000:7.1f} ms  max {max(times) * 1000:7.1f} ms")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if os.environ.get("NSSCAN_BENCH_INNER"):
        inner(n, repeats)
        return 0
    if os.geteuid() != 0:
        print("needs root (PID and network namespaces)", file=sys.stderr)
        return 2
    env = dict(os.environ, NSSCAN_BENCH_INNER="1")
    return subprocess.call(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, __file__, str(n), str(repeats)], env=env
    )


if __name__ == "__main__":
    sys.exit(main())
