"""The ``pool`` scenarios: cluster pools on an etcd started on loopback for the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from benchlib.runner import Failure, HOST_LOCAL, NETNS, ROOT, ips_of, must, netconf, ratio

# --------------------------------------------------------------------------- cluster pools
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
        argv = [
            ETCD,
            "--name",
            "bench",
            "--data-dir",
            os.path.join(self.dir, "d"),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"bench=http://127.0.0.1:{peer}",
            "--log-level",
            "error",
            "--logger",
            "zap",
        ]
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
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
                    raise SystemExit("bench: etcd did not start") from None
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


def pool_netconf(
    data_dir: str,
    endpoint: str,
    node: str,
    block: int,
    keep: int = 1,
    name: str = "bench",
    subnet: str = "10.128.0.0/16",
    prefix: str = "/bench",
) -> dict:
    conf = netconf(data_dir, name=name, subnet=subnet)
    conf["ipam"]["type"] = "cni-ipam"
    conf["ipam"]["pool"] = {
        "name": "bench",
        "blockSize": block,
        "nodeName": node,
        "keepBlocks": keep,
        "etcd": {"endpoints": [endpoint], "prefix": prefix, "timeout": 2},
    }
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
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": NETNS,
            "CNI_PATH": os.path.dirname(HOST_LOCAL),
        }
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
            lanes.append(
                (f"{s.name} node-local", s, lambda d: dict(netconf(d), ipam=dict(netconf(d)["ipam"], type="cni-ipam")))
            )
            lanes.append(
                (
                    f"{s.name} pool",
                    s,
                    lambda d, s=s: pool_netconf(d, etcd.endpoint, f"held-{s.name}", 24, prefix="/bench-held"),
                )
            )
        dirs = {name: os.path.join(work, "pool-held", name.replace(" ", "-")) for name, _, _ in lanes}
        for name, s, make in lanes:  # warm-up: the pool lane claims its /24 here, once
            must(s.cni("ADD", make(dirs[name]), "bench-warm"), f"pool warm-up {name}")
            must(s.cni("DEL", make(dirs[name]), "bench-warm"), f"pool warm-up {name}")
        for run in range(runs):
            order = lanes[run % len(lanes) :] + lanes[: run % len(lanes)]
            cid = f"bench-p-{run:05d}"
            for name, s, make in order:
                rec.add("pool-held", name, "ADD", must(s.cni("ADD", make(dirs[name]), cid), f"pool {name} ADD"))
            for name, s, make in reversed(order):
                rec.add("pool-held", name, "DEL", must(s.cni("DEL", make(dirs[name]), cid), f"pool {name} DEL"))
        held = {}
        for name, _, _ in lanes:
            held[name] = {
                op: {"median_ms": rec.median("pool-held", name, op), "cpu_ms": rec.cpu_median("pool-held", name, op)}
                for op in ("ADD", "DEL")
            }
        for s in ours:
            p, n = held[f"{s.name} pool"], held[f"{s.name} node-local"]
            held[f"{s.name} pool"]["x_node_local"] = {
                op: ratio(p[op]["median_ms"], n[op]["median_ms"]) for op in ("ADD", "DEL")
            }
            held[f"{s.name} pool"]["x_node_local"]["ADD+DEL"] = ratio(
                p["ADD"]["median_ms"] + p["DEL"]["median_ms"], n["ADD"]["median_ms"] + n["DEL"]["median_ms"]
            )
            held[f"{s.name} pool"]["x_node_local_cpu"] = {
                op: ratio(p[op]["cpu_ms"], n[op]["cpu_ms"]) for op in ("ADD", "DEL")
            }
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
            c24 = pool_netconf(
                os.path.join(work, "pool-count24"), etcd.endpoint, "counter24", 24, prefix="/bench-count24"
            )
            first = count_round_trips(c32, "ADD", "rt-1")  # the pool's first claim also pins the block grid
            claim = count_round_trips(c32, "ADD", "rt-2")
            release = count_round_trips(c32, "DEL", "rt-2")
            count_round_trips(c24, "ADD", "rt-3")
            held_add = count_round_trips(c24, "ADD", "rt-4")
            held_del = count_round_trips(c24, "DEL", "rt-4")
            out["claim"] = {
                "subject": s.name,
                "n": claims,
                "claiming_ADD_ms": rec.median("pool-claim", s.name, "ADD"),
                "releasing_DEL_ms": rec.median("pool-claim", s.name, "DEL"),
                "round_trips": {
                    "first claim of the pool": first,
                    "claiming ADD": claim,
                    "releasing DEL": release,
                    "ADD in a held block": held_add,
                    "DEL keeping its block": held_del,
                },
            }
            log(f"  pool: {claims} claiming ADDs and releasing DELs done")

            # 3. storm: nodes x parallel ADDs, one pool, /28 blocks (so nodes claim as they go), then
            #    the same storm on node-local networks (one per simulated node) for comparison
            confs = [
                pool_netconf(
                    os.path.join(work, "pool-storm", f"n{i}"), etcd.endpoint, f"storm-{i}", 28, prefix="/bench-storm"
                )
                for i in range(nodes)
            ]
            plain = [
                dict(netconf(os.path.join(work, "plain-storm", f"n{i}"), subnet=f"10.{130 + i}.0.0/16"), type="bridge")
                for i in range(nodes)
            ]
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
            out["storm"] = {
                "subject": s.name,
                "nodes": nodes,
                "parallel_per_node": parallel,
                "adds": len(calls),
                "wall_s": round(wall, 3),
                "adds_per_s": round(len(calls) / wall, 1),
                "failed": len(failed),
                "node_local_adds_per_s": round(len(calls) / walls["node-local"], 1),
                "cpu_s": round(walls["pool cpu"], 2),
                "node_local_cpu_s": round(walls["node-local cpu"], 2),
                "cpu_x_node_local": ratio(walls["pool cpu"], walls["node-local cpu"]),
                "first_failure": failed[0].out.strip()[:300] if failed else None,
                "duplicates": len(addrs) - len(set(addrs)),
                "blocks_claimed": len(blocks),
                "blocks_per_node": {n: owners.count(n) for n in sorted(set(owners))},
                "ok": not failed and len(addrs) == len(set(addrs)),
            }
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
        p(
            f"\ncluster pool, ADD/DEL in a held block vs node-local vs host-local: median ms (CPU ms)   [runs: "
            f"{h['runs']}]"
        )
        for name, row in h["lanes"].items():
            x = row.get("x_node_local")
            extra = f"   pool/node-local: ADD {x['ADD']}x, DEL {x['DEL']}x, ADD+DEL {x['ADD+DEL']}x" if x else ""
            p(
                f"  {name:<22} ADD {row['ADD']['median_ms']:8.2f} ({row['ADD']['cpu_ms']:6.2f})   "
                f"DEL {row['DEL']['median_ms']:8.2f} ({row['DEL']['cpu_ms']:6.2f}){extra}"
            )
    c = pool.get("claim")
    if c:
        p(
            f"\ncluster pool, block claims ({c['subject']}, /32 blocks, keepBlocks 0, n={c['n']}): claiming ADD "
            f"{c['claiming_ADD_ms']:.2f} ms, "
            f"releasing DEL {c['releasing_DEL_ms']:.2f} ms (medians)"
        )
        for what, (n, paths) in c["round_trips"].items():
            p(f"  etcd round trips, {what:<24} {n}  {' '.join(x.rsplit('/', 1)[-1] for x in paths)}")
    st = pool.get("storm")
    if st:
        p(
            f"\ncluster pool storm: {st['nodes']} nodes x {st['parallel_per_node']}-way, {st['adds']} ADDs in "
            f"{st['wall_s']:.2f}s = "
            f"{st['adds_per_s']:.1f} ADD/s; failed {st['failed']}, duplicates {st['duplicates']}, blocks "
            f"{st['blocks_claimed']} "
            f"{st['blocks_per_node']}  {'OK' if st['ok'] else 'FAIL'}"
        )
        p(
            f"  the same storm on node-local networks (one per node): {st['node_local_adds_per_s']:.1f} ADD/s; CPU "
            "time of all "
            f"calls: pool {st['cpu_s']:.1f} s, node-local {st['node_local_cpu_s']:.1f} s ({st['cpu_x_node_local']}x)"
        )
