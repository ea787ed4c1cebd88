#!/usr/bin/env python3
"""Benchmark ``cni-ipam pool show`` over a big pool: ``--nodes`` nodes (default 1,000) holding
``--blocks`` blocks each (default 4) of a /14 cut in /26 blocks, with a usage record per node,
written into a fresh Debian etcd on a loopback port (the test fixtures' etcd; or ``--endpoints``
of an etcd you started, under a fresh key prefix that is deleted afterwards).

Not a test: prints the populate time, then the wall time of ``pool show`` (table), ``--json`` and
``pool metrics`` as the admin runs them (a fresh ``python -m cni_ipam`` process each, ``--runs``
times, median and max), plus an in-process split: etcd read (``range_prefix`` of the whole pool,
pages of 1,000 keys), building the view, rendering.

    scripts/bench_pool_show.py [--nodes 1000] [--blocks 4] [--runs 5] [--endpoints http://127.0.0.1:2379]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=4, help="blocks per node")
    ap.add_argument("--subnet", default="10.0.0.0/14")
    ap.add_argument("--block-size", type=int, default=26)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--endpoints", help="an etcd to use instead of starting one (comma-separated URLs)")
    args = ap.parse_args()

    from cni_ipam.cluster import admin
    from cni_ipam.cluster.etcd import EtcdClient
    from tests.cluster.conftest import Cluster, seed_node

    net = ipaddress.ip_network(args.subnet)
    step = 1 << (32 - args.block_size)
    total_blocks = net.num_addresses // step
    if args.nodes * args.blocks > total_blocks:
        print(
            f"{args.nodes} x {args.blocks} blocks do not fit in {net} cut in /{args.block_size} ({total_blocks})",
            file=sys.stderr,
        )
        return 2
    cluster = None
    if args.endpoints:
        endpoints = args.endpoints.split(",")
    else:
        cluster = Cluster(1)
        cluster.start()
        endpoints = cluster.endpoints
        print(f"etcd {endpoints[0]} started in {cluster.startup_seconds:.2f} s (data in {cluster.root})")
    prefix = f"/cni-ipam-bench-{uuid.uuid4().hex[:8]}"
    work = tempfile.mkdtemp(prefix="bench-pool-show-")
    client = EtcdClient(endpoints, timeout=10)
    try:
        conf = {"cniVersion": "1.1.0", "name": "benchnet", "type": "macvlan", "master": "eth0",
                "ipam": {"type": "cni-ipam", "dataDir": work, "ranges": [[{"subnet": str(net)}]],
                         "pool": {"name": "bench", "blockSize": args.block_size, "nodeName": "node-00000",
                                  "etcd": {"endpoints": endpoints, "prefix": prefix, "timeout": 10}}}}
        conf_file = os.path.join(work, "bench.conf")
        with open(conf_file, "w") as fh:
            json.dump(conf, fh)
        t0 = time.monotonic()
        now = time.time()
        base = int(net.network_address)
        for n in range(args.nodes):
            blocks = [
                f"{ipaddress.ip_address(base + (n * args.blocks + b) * step)}/{args.block_size}"
                for b in range(args.blocks)
            ]
            used = {c: (n * 7 + i * 13) % (step - 1) for i, c in enumerate(blocks)}
            silent = n % 50 == 0  # a few silent nodes, as in life
            seed_node(client, prefix, "bench", f"node-{n:05d}", blocks, used=used,
                      last_seen=now - (7200 if silent else n % 300), network="benchnet",
                      capacity={c: step for c in blocks})
        populate = time.monotonic() - t0
        keys = args.nodes * (args.blocks + 1)
        print(f"populated {args.nodes} nodes x {args.blocks} blocks ({keys} keys) in {populate:.2f} s")

        # in process: where the time goes
        target = admin.load_pools([conf_file], None)[0][0]
        splits = []
        for _ in range(args.runs):
            t0 = time.monotonic()
            sets = admin.set_views(target)
            snap = admin.read_snapshot(client, target, {c for s in sets for c in s.grid})
            t1 = time.monotonic()
            view = admin.build_view(target, snap, time.time(), sets=sets)
            t2 = time.monotonic()
            text = admin.render([view], time.time())
            t3 = time.monotonic()
            splits.append((t1 - t0, t2 - t1, t3 - t2))
        assert len(view.nodes) == args.nodes and view.sets[0].held == args.nodes * args.blocks
        assert text.count("\n") > args.nodes
        med = [statistics.median(s[i] for s in splits) for i in range(3)]
        print(
            f"in process (median of {args.runs}): grid + etcd read + parse {med[0] * 1000:.0f} ms, "
            f"view {med[1] * 1000:.0f} ms, "
            f"render {med[2] * 1000:.0f} ms"
        )

        env = dict(os.environ, PYTHONPATH=ROOT)
        rows = []
        for label, argv in (("pool show", ["show"]), ("pool show --json", ["show", "--json"]),
                            ("pool show --summary", ["show", "--summary"]), ("pool metrics", ["metrics"])):
            times = []
            for _ in range(args.runs):
                t0 = time.monotonic()
                proc = subprocess.run([sys.executable, "-m", "cni_ipam", "pool"] + argv + ["--conf", conf_file],
                                      env=env, capture_output=True)
                times.append(time.monotonic() - t0)
                if proc.returncode not in (0, 1, 2, 3):
                    print(proc.stderr.decode(), file=sys.stderr)
                    return 1
            rows.append((label, statistics.median(times), max(times), len(proc.stdout)))
        print(f"\n{'command (fresh process)':<24} {'median':>8} {'max':>8} {'output':>10}")
        for label, med_t, max_t, size in rows:
            print(f"{label:<24} {med_t:>7.3f}s {max_t:>7.3f}s {size:>9}B")
        return 0
    finally:
        try:  # an etcd given with --endpoints keeps nothing of the run
            from cni_ipam.cluster.etcd import op_delete

            client.txn([], [op_delete(prefix.encode() + b"/", prefix=True)], [])
        except Exception:
            pass
        client.close()
        if cluster is not None:
            cluster.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
