#!/usr/bin/env python3
"""Benchmark ``cni-ipam pool show`` and ``pool metrics`` over a big pool, keys written as a real pool
writes them (``cni_ipam.cluster.keys``): ``--nodes`` nodes (default 1,000) of ``--blocks`` claimed
blocks each (default 4) of ``--subnet`` (default 10.0.0.0/10) cut in ``--block-size`` blocks
(default /26); per node a node record (instance id, host name, Node UID), per block a claim (node,
instance, random claim id, network, Node UID) and ``--fill`` (default 0.5: half of each block) of
its addresses recorded (``addrs/4/<hex>``: node, instance, claim id, network, a 64-hex container
id, ``eth0``), from the block's second address on.

etcd: a fresh single member (Debian's, started the way the test fixtures start it, data in
/dev/shm, with ``--max-txn-ops 1000`` so the fill goes in big txns), removed at the end; or
``--endpoints`` of an etcd you run, under ``--prefix`` (default: a fresh one, deleted afterwards).
``--keep`` leaves the keys there (and ``--no-populate`` reuses them) to time changes against the
same data.

Prints the populate time, an in-process split (etcd reads, building the view, rendering; median of
``--runs``), then ``pool show``, ``--json``, ``--summary`` and ``pool metrics`` as the admin runs
them, a fresh ``python -m cni_ipam`` process each (or ``--exe``, a built executable), ``--runs``
times: median and range of wall time, CPU (user+sys) of the command, CPU of etcd meanwhile (when
started here), peak RSS of the command, and the load average around the runs.

    scripts/bench_pool_show.py [--nodes 1000] [--blocks 4] [--fill 0.5] [--runs 3]
                               [--endpoints http://127.0.0.1:2379 [--prefix /p] [--keep] [--no-populate]]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

POOL, NETWORK = "bench", "benchnet"


def _cpu_of(pid: int) -> float:
    """user+sys seconds of a running process (etcd), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(argv: list, env: dict, etcd_pid: int | None) -> dict:
    """A fresh process, reaped with wait4 for its own CPU time and peak RSS."""
    etcd0 = _cpu_of(etcd_pid) if etcd_pid else 0.0
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=out_f, stderr=err_f)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    etcd_cpu = (_cpu_of(etcd_pid) - etcd0) if etcd_pid else 0.0
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    out_f.close()
    err_f.close()
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss, "etcd_cpu": etcd_cpu,
            "rc": proc.returncode, "out": out, "err": err}


def populate(client, prefix: str, net, args, batch: int) -> tuple:
    """Write the pool; (keys written, seconds)."""
    from cni_ipam.cluster import keys
    from cni_ipam.cluster.etcd import op_put

    step = 1 << (32 - args.block_size)
    used = int(step * args.fill)
    base = int(net.network_address)
    ops: list = []
    written = 0
    t0 = time.monotonic()

    def flush() -> None:
        nonlocal ops, written
        if ops:
            client.txn([], ops, [])
            written += len(ops)
            ops = []

    def put(key: bytes, value: bytes) -> None:
        if len(ops) >= batch:
            flush()
        ops.append(op_put(key, value))

    for n in range(args.nodes):
        node = f"node-{n:05d}"
        instance, uid = keys.random_id(), str(uuid.UUID(int=n))
        for b in range(args.blocks):
            first = base + (n * args.blocks + b) * step
            cidr = f"{ipaddress.ip_address(first)}/{args.block_size}"
            claim = keys.ClaimRecord(node, instance, keys.random_id(), NETWORK, uid)
            put(keys.block_key(prefix, POOL, cidr), claim.encode())
            for k in range(1, used + 1):
                rec = keys.AddrRecord(node, instance, claim.claim, NETWORK, os.urandom(32).hex(), "eth0")
                put(keys.addr_key(prefix, POOL, 4, first + k), rec.encode())
        record = keys.NodeRecord(instance, f"host-{n:05d}.example.internal", uid)
        put(keys.node_key(prefix, POOL, node), record.encode())
    flush()
    grid = keys.grid_key(prefix, POOL, 4)
    client.txn([], [op_put(grid, str(args.block_size).encode())], [])
    return written + 1, time.monotonic() - t0


def summary(values: list, unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    vals = [v * scale for v in values]
    return f"{statistics.median(vals):.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f}){unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=4, help="blocks per node")
    ap.add_argument("--fill", type=float, default=0.5, help="share of each block's addresses recorded")
    ap.add_argument("--subnet", default="10.0.0.0/10")
    ap.add_argument("--block-size", type=int, default=26)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--endpoints", help="an etcd to use instead of starting one (comma-separated URLs)")
    ap.add_argument("--prefix", help="key prefix (default: a fresh one)")
    ap.add_argument("--keep", action="store_true", help="leave the keys in the etcd given with --endpoints")
    ap.add_argument("--no-populate", action="store_true", help="the keys are there already (--prefix)")
    ap.add_argument("--exe", help="a built cni-ipam executable to time instead of python -m cni_ipam")
    ap.add_argument("--commands", default="show,json,summary,metrics")
    ap.add_argument("--etcd-pid", type=int, help="pid of the etcd given with --endpoints (for its CPU time)")
    ap.add_argument("--batch", type=int, help="puts per txn (default 1000 in the etcd started here, else 100)")
    args = ap.parse_args()

    from cni_ipam.admin import poolconf, poolread, poolview
    from cni_ipam.cluster.etcd import EtcdClient, op_delete
    from tests.cluster.conftest import Cluster, Member

    net = ipaddress.ip_network(args.subnet)
    step = 1 << (32 - args.block_size)
    total_blocks = net.num_addresses // step
    if args.nodes * args.blocks > total_blocks:
        print(f"{args.nodes} x {args.blocks} blocks do not fit in {net} cut in /{args.block_size} ({total_blocks})",
              file=sys.stderr)
        return 2

    class BigTxnMember(Member):
        def argv(self, state: str) -> list:
            return super().argv(state) + ["--max-txn-ops", "1000", "--max-request-bytes", str(8 << 20),
                                          "--quota-backend-bytes", str(8 << 30)]

    cluster = None
    etcd_pid = None
    if args.endpoints:
        endpoints = args.endpoints.split(",")
        batch = args.batch or 100  # etcd's default --max-txn-ops is 128
        etcd_pid = args.etcd_pid
    else:
        cluster = Cluster(1)
        cluster.members = [BigTxnMember(cluster, "m0")]
        cluster.start()
        endpoints = cluster.endpoints
        etcd_pid = cluster.members[0].proc.pid
        batch = args.batch or 1000
        print(f"etcd {endpoints[0]} started in {cluster.startup_seconds:.2f} s (data in {cluster.root})")
    prefix = args.prefix or f"/cni-ipam-bench-{uuid.uuid4().hex[:8]}"
    work = tempfile.mkdtemp(prefix="bench-pool-show-")
    client = EtcdClient(endpoints, timeout=60)
    try:
        conf = {"cniVersion": "1.1.0", "name": NETWORK, "type": "macvlan", "master": "eth0",
                "ipam": {"type": "cni-ipam", "dataDir": work, "ranges": [[{"subnet": str(net)}]],
                         "pool": {"name": POOL, "blockSize": args.block_size, "nodeName": "node-00000",
                                  "etcd": {"endpoints": endpoints, "prefix": prefix, "timeout": 60}}}}
        conf_file = os.path.join(work, "bench.conf")
        with open(conf_file, "w") as fh:
            json.dump(conf, fh)
        cpu_model = ""
        try:
            with open("/proc/cpuinfo") as fh:
                cpu_model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
        except OSError:
            pass
        print(f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} {platform.node()}: {cpu_model}, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
        if not args.no_populate:
            written, seconds = populate(client, prefix, net, args, batch)
            print(f"populated {args.nodes} nodes x {args.blocks} blocks, {int(step * args.fill)} address records "
                  f"per block: {written} keys in {seconds:.1f} s")

        target = poolconf.load_pools([conf_file], "")[0][0]
        trips = client.round_trips
        splits = []
        for _ in range(args.runs):
            t0 = time.monotonic()
            sets = poolview.set_views(target)
            snap = poolread.read_snapshot(client, target)
            t1 = time.monotonic()
            view = poolview.build_view(target, snap, sets=sets)
            t2 = time.monotonic()
            text = poolview.render([view])
            t3 = time.monotonic()
            splits.append((t1 - t0, t2 - t1, t3 - t2))
        assert len(view.nodes) == args.nodes and view.sets[0].held == args.nodes * args.blocks, (
            len(view.nodes), view.sets[0].held)
        assert view.sets[0].used == args.nodes * args.blocks * int(step * args.fill), view.sets[0].used
        assert text.count("\n") > args.nodes
        med = [statistics.median(s[i] for s in splits) for i in range(3)]
        print(f"in process (median of {args.runs}): etcd reads + parsing {med[0]:.2f} s, view {med[1]:.2f} s, "
              f"render {med[2]:.2f} s; {(client.round_trips - trips) // args.runs} etcd requests per read")

        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1")
        base = [args.exe] if args.exe else [sys.executable, "-m", "cni_ipam"]
        commands = {"show": ("pool show", ["show"]), "json": ("pool show --json", ["show", "--json"]),
                    "summary": ("pool show --summary", ["show", "--summary"]), "metrics": ("pool metrics", ["metrics"])}
        rows = []
        for name in args.commands.split(","):
            label, argv = commands[name]
            load0 = os.getloadavg()[0]
            runs = []
            for _ in range(args.runs):
                r = run_measured(base + ["pool"] + argv + ["--conf", conf_file], env, etcd_pid)
                if r["rc"] not in (0, 1, 2, 3):
                    print(r["err"].decode(), file=sys.stderr)
                    return 1
                runs.append(r)
            load1 = os.getloadavg()[0]
            rows.append((label, runs, len(runs[-1]["out"]), load0, load1))
        print(f"\n{'command (fresh process)':<22} {'wall s':>18} {'CPU s':>18} {'etcd CPU s':>18} "
              f"{'peak RSS MiB':>20} {'output':>9} {'load':>9}")
        for label, runs, size, load0, load1 in rows:
            print(f"{label:<22} {summary([r['wall'] for r in runs]):>18} {summary([r['cpu'] for r in runs]):>18} "
                  f"{summary([r['etcd_cpu'] for r in runs]):>18} "
                  f"{summary([r['rss'] for r in runs], '', 1 / 1024, 0):>20} {size:>8}B {load0:>4.1f}-{load1:.1f}")
        return 0
    finally:
        if not args.keep:
            try:  # an etcd given with --endpoints keeps nothing of the run
                client.txn([], [op_delete(prefix.encode() + b"/", prefix=True)], [])
            except Exception:
                pass
        client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
