#!/usr/bin/env python3
"""Cluster-pool benchmark: what fencing every allocation in etcd costs, and how claims scale.

Scenarios (etcd on loopback, data in /dev/shm when writable):

1. held: ADD and DEL in a held block (pool) vs the same plugin node-local vs host-local, one
   process per call, interleaved call by call; median wall ms and the pool/node-local ratio.
2. claim: ADDs that claim a /32 block and DELs that release it (keepBlocks 0), as processes; and
   etcd requests per call counted in-process (writes = txns; every pool ADD writes one record).
3. storm: N nodes x M ADDs at once (processes) on one single-member etcd: ADD/s, duplicates.
4. scale: S simulated nodes (threads, one data dir and node name each) claiming their first block
   concurrently against a 3-member etcd: claims/s, p50/p99 claim latency, etcd CPU seconds.

Usage: python3 scripts/bench_pool.py [--runs 30] [--claims 20] [--storm-nodes 4] [--storm-adds 64]
       [--scale-nodes 200] [--json FILE].  Plugin calls run ``python3 -m cni_ipam`` from this tree
(or ``$CNI_IPAM_EXE``); host-local from /usr/lib/cni.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ETCD = os.environ.get("CNI_IPAM_ETCD", "/usr/bin/etcd")
HOST_LOCAL = os.environ.get("CNI_HOST_LOCAL", "/usr/lib/cni/host-local")
PLUGIN = shlex.split(os.environ.get("CNI_IPAM_EXE", "")) or [sys.executable, "-m", "cni_ipam"]
NETNS = "/var/run/netns/bench-none"


def _port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


class Etcd:
    """``size`` etcd members on loopback, each in its own process group."""

    def __init__(self, size: int) -> None:
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="bench-pool-etcd-", dir=shm)
        ports = [(_port(), _port()) for _ in range(size)]
        self.endpoints = [f"http://127.0.0.1:{c}" for c, _ in ports]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        self.procs = []
        self.log = open(os.path.join(self.dir, "log"), "wb")
        for i, (cport, pport) in enumerate(ports):
            argv = [ETCD, "--name", f"m{i}", "--data-dir", os.path.join(self.dir, f"m{i}"),
                    "--listen-client-urls", f"http://127.0.0.1:{cport}",
                    "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                    "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                    "--initial-cluster", cluster, "--initial-cluster-token", os.path.basename(self.dir),
                    "--log-level", "error", "--logger", "zap"]
            self.procs.append(subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
        from cni_ipam.cluster.etcd import EtcdClient, EtcdError, EtcdUnavailable

        end = time.monotonic() + 30
        for ep in self.endpoints:
            c = EtcdClient([ep], timeout=0.5)
            while True:
                try:
                    c.get(b"/bench-probe")
                    break
                except (EtcdUnavailable, EtcdError):
                    if time.monotonic() > end:
                        self.close()
                        raise SystemExit("bench: etcd did not start") from None
                    time.sleep(0.05)
            c.close()

    def cpu_seconds(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in self.procs:
            with open(f"/proc/{p.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, 9)
                p.wait(10)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def netconf(data_dir: str, kind: str, endpoints=None, node: str = "n", block: int = 24, keep: int = 1,
            subnet: str = "10.128.0.0/16", prefix: str = "/bench") -> dict:
    ipam: dict = {"type": "host-local" if kind == "host-local" else "cni-ipam", "dataDir": data_dir,
                  "ranges": [[{"subnet": subnet}]]}
    if kind == "pool":
        ipam["pool"] = {"name": "bench", "blockSize": block, "nodeName": node, "keepBlocks": keep,
                        "etcd": {"endpoints": endpoints, "prefix": prefix, "timeout": 2}}
    return {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": ipam}


def cni(argv: list, command: str, conf: dict, cid: str) -> tuple[float, int, str]:
    """(wall ms, exit status, stdout) of one plugin process."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT, "CNI_COMMAND": command,
           "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_NETNS": NETNS, "CNI_PATH": os.path.dirname(HOST_LOCAL)}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=120)
    return (time.perf_counter() - t0) * 1000, proc.returncode, proc.stdout.decode("utf-8", "replace")


def must(got: tuple[float, int, str], what: str) -> float:
    if got[1] != 0:
        raise SystemExit(f"bench: {what} failed: {got[2][:300]}")
    return got[0]


def inproc(command: str, conf: dict, cid: str) -> tuple[int, str]:
    from cni_ipam.__main__ import VERBS
    from cni_ipam.plugin.skel import plugin_main

    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_NETNS": NETNS,
           "CNI_PATH": os.path.dirname(HOST_LOCAL)}
    out = io.StringIO()
    rc = plugin_main(VERBS, env, json.dumps(conf).encode(), out)
    return rc, out.getvalue()


def counted(conf: dict, command: str, cid: str) -> dict:
    """etcd requests of one in-process call: {"requests": n, "writes": txns, "paths": [...]}."""
    from cni_ipam.cluster import etcd

    paths: list = []
    real = etcd.EtcdClient._call

    def counting(self, path, body):
        paths.append(path)
        return real(self, path, body)

    etcd.EtcdClient._call = counting  # type: ignore[method-assign]
    try:
        rc, out = inproc(command, conf, cid)
    finally:
        etcd.EtcdClient._call = real  # type: ignore[method-assign]
    if rc != 0:
        raise SystemExit(f"bench: in-process {command} failed: {out[:300]}")
    return {"requests": len(paths), "txns": paths.count("/v3/kv/txn"), "reads": paths.count("/v3/kv/range")}


def median(xs: list) -> float:
    return round(statistics.median(xs), 2) if xs else 0.0


def pct(xs: list, q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else 0.0


def held(work: str, etcd: Etcd, runs: int, log) -> dict:
    lanes = {"host-local": ([HOST_LOCAL], netconf(os.path.join(work, "hl"), "host-local")),
             "node-local": (PLUGIN, netconf(os.path.join(work, "nl"), "node-local")),
             "pool": (PLUGIN, netconf(os.path.join(work, "pool"), "pool", etcd.endpoints, "held", 24,
                                      prefix="/bench-held"))}
    times: dict = {name: {"ADD": [], "DEL": []} for name in lanes}
    for name, (argv, conf) in lanes.items():  # warm-up: the pool lane claims its /24 here
        must(cni(argv, "ADD", conf, "warm"), f"{name} warm-up ADD")
        must(cni(argv, "DEL", conf, "warm"), f"{name} warm-up DEL")
    names = list(lanes)
    for run in range(runs):
        order = names[run % 3:] + names[:run % 3]
        for name in order:
            argv, conf = lanes[name]
            times[name]["ADD"].append(must(cni(argv, "ADD", conf, f"r{run}"), f"{name} ADD"))
        for name in reversed(order):
            argv, conf = lanes[name]
            times[name]["DEL"].append(must(cni(argv, "DEL", conf, f"r{run}"), f"{name} DEL"))
    out: dict = {name: {op: median(v) for op, v in t.items()} for name, t in times.items()}
    nl, p = out["node-local"], out["pool"]
    out["pool_x_node_local"] = {"ADD": round(p["ADD"] / nl["ADD"], 2), "DEL": round(p["DEL"] / nl["DEL"], 2),
                                "ADD+DEL": round((p["ADD"] + p["DEL"]) / (nl["ADD"] + nl["DEL"]), 2)}
    out["runs"] = runs
    log(f"held: {out}")
    return out


def claims(work: str, etcd: Etcd, n: int, log) -> dict:
    conf = netconf(os.path.join(work, "claim"), "pool", etcd.endpoints, "claimer", 32, keep=0, prefix="/bench-claim")
    add, rel = [], []
    for i in range(n):
        add.append(must(cni(PLUGIN, "ADD", conf, f"c{i}"), "claiming ADD"))
        rel.append(must(cni(PLUGIN, "DEL", conf, f"c{i}"), "releasing DEL"))
    c32 = netconf(os.path.join(work, "count32"), "pool", etcd.endpoints, "counter", 32, keep=0, prefix="/bench-count")
    c24 = netconf(os.path.join(work, "count24"), "pool", etcd.endpoints, "counter24", 24, prefix="/bench-count24")
    rt = {"first claim of the pool": counted(c32, "ADD", "rt-1"), "claiming ADD": counted(c32, "ADD", "rt-2"),
          "releasing DEL": counted(c32, "DEL", "rt-2")}
    counted(c24, "ADD", "rt-3")
    rt["ADD in a held block"] = counted(c24, "ADD", "rt-4")
    rt["DEL keeping its block"] = counted(c24, "DEL", "rt-4")
    out = {"n": n, "claiming_ADD_ms": median(add), "releasing_DEL_ms": median(rel), "etcd_requests": rt}
    log(f"claim: {out}")
    return out


def storm(work: str, etcd: Etcd, nodes: int, adds: int, workers: int, log) -> dict:
    confs = [netconf(os.path.join(work, "storm", f"n{i}"), "pool", etcd.endpoints, f"storm-{i}", 28,
                     prefix="/bench-storm") for i in range(nodes)]
    results: list = [None] * (nodes * adds)

    def one(i: int) -> None:
        results[i] = cni(PLUGIN, "ADD", confs[i % nodes], f"s{i:05d}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(one, range(len(results))))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[1] == 0]
    addrs = [ip["address"] for r in ok for ip in json.loads(r[2])["ips"]]
    out = {"nodes": nodes, "adds": len(results), "concurrent_processes": workers, "wall_s": round(wall, 2),
           "adds_per_s": round(len(results) / wall, 1), "failed": len(results) - len(ok),
           "duplicates": len(addrs) - len(set(addrs)), "p99_ms": pct([r[0] for r in results], 0.99),
           "first_failure": next((r[2].strip()[:300] for r in results if r[1] != 0), None)}
    log(f"storm: {out}")
    return out


def scale(work: str, n: int, log) -> dict:
    etcd = Etcd(3)
    try:
        confs = [netconf(os.path.join(work, "scale", f"n{i}"), "pool", etcd.endpoints, f"node-{i}", 28,
                         prefix="/bench-scale") for i in range(n)]
        inproc("ADD", confs[0], "pin")  # the pool's first claim pins the grid; not counted
        lat: list = [None] * n
        rcs: list = [None] * n
        barrier = threading.Barrier(n)

        def one(i: int) -> None:
            barrier.wait()
            t0 = time.perf_counter()
            rcs[i], _ = inproc("ADD", confs[i], f"first-{i}")
            lat[i] = (time.perf_counter() - t0) * 1000

        cpu0 = etcd.cpu_seconds()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(1, n)]
        barrier = threading.Barrier(n - 1)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = etcd.cpu_seconds() - cpu0
        from cni_ipam.cluster.etcd import EtcdClient

        c = EtcdClient(etcd.endpoints)
        blocks = c.range_prefix(b"/bench-scale/pools/bench/blocks/", keys_only=True)
        c.close()
        done = [x for x in lat[1:] if x is not None]
        out = {"nodes": n - 1, "members": 3, "wall_s": round(wall, 2), "claims_per_s": round((n - 1) / wall, 1),
               "p50_ms": pct(done, 0.5), "p99_ms": pct(done, 0.99), "failed": sum(1 for r in rcs[1:] if r != 0),
               "blocks": len(blocks), "etcd_cpu_s": round(cpu, 2)}
        log(f"scale: {out}")
        return out
    finally:
        etcd.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--storm-nodes", type=int, default=4)
    ap.add_argument("--storm-adds", type=int, default=64)
    ap.add_argument("--storm-workers", type=int, default=16)
    ap.add_argument("--scale-nodes", type=int, default=200)
    ap.add_argument("--scenarios", default="held,claim,storm,scale", help="comma-separated subset to run")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if not os.access(ETCD, os.X_OK):
        raise SystemExit(f"bench: {ETCD} missing (apt-get install etcd-server)")

    def log(msg: str) -> None:
        print(msg, flush=True)

    work = tempfile.mkdtemp(prefix="bench-pool-")
    report: dict = {"cpus": os.cpu_count(), "plugin": " ".join(PLUGIN)}
    try:
        want = set(args.scenarios.split(","))
        etcd = Etcd(1)
        try:
            if "held" in want:
                report["held"] = held(work, etcd, args.runs, log)
            if "claim" in want:
                report["claim"] = claims(work, etcd, args.claims, log)
            if "storm" in want:
                report["storm"] = storm(work, etcd, args.storm_nodes, args.storm_adds, args.storm_workers, log)
        finally:
            etcd.close()
        if "scale" in want:
            report["scale"] = scale(work, args.scale_nodes + 1, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, sort_keys=True)
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
