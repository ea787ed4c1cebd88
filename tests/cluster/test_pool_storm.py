"""Cluster pool under load: simulated nodes (own node name and data dir each) running parallel
ADD/DEL storms against one pool in a real etcd, with an etcd member killed mid-storm.

Invariants checked after every storm (tests/cluster/poolkit.check_invariants) and during it: no
address is ever held by two pods at once (the intervals between an ADD's answer and the DEL's
start never overlap for one address), every block is held by at most one node, every reserved
address lies in a block etcd shows as its node's.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.cluster.poolkit import addresses, call, check_invariants, etcd_blocks, pool_conf, reservations


class Storm:
    def __init__(self, cluster, prefix, tmp_path, nodes: int, block: int, keep: int = 1, timeout: float = 2.0):
        self.confs = {}
        self.dirs = {}
        for i in range(nodes):
            name = f"node-{i}"
            self.dirs[name] = str(tmp_path / name)
            conf = pool_conf(cluster, prefix, name, self.dirs[name], block=block, keepBlocks=keep,
                             ranges=[[{"subnet": "10.81.0.0/23", "gateway": "10.81.0.1"}]])
            conf["ipam"]["pool"]["etcd"]["timeout"] = timeout
            self.confs[name] = conf
        self.lock = threading.Lock()
        self.holds = []  # (addr, pod, t_from, t_to)
        self.failures = []
        self.adds = self.dels = 0

    def worker(self, node: str, worker: int, rounds: int, pods: int, rng: random.Random):
        conf = self.confs[node]
        for r in range(rounds):
            live = []
            for p in range(pods):
                cid = f"{node}-w{worker}-r{r}-p{p}"
                rc, res = call("ADD", conf, cid)
                t = time.monotonic()
                with self.lock:
                    self.adds += 1
                    if rc != 0:
                        self.failures.append(("ADD", cid, res))
                        continue
                live.append((cid, addresses(res)[0], t))
            rng.shuffle(live)
            for cid, addr, t0 in live:
                t1 = time.monotonic()
                rc, res = call("DEL", conf, cid)
                with self.lock:
                    self.dels += 1
                    if rc != 0:
                        self.failures.append(("DEL", cid, res))
                    self.holds.append((addr, cid, t0, t1))

    def run(self, workers: int, rounds: int, pods: int, during=None):
        rng = random.Random(12)
        with ThreadPoolExecutor(len(self.confs) * workers) as pool:
            futs = [pool.submit(self.worker, node, w, rounds, pods, random.Random(rng.random()))
                    for node in self.confs for w in range(workers)]
            if during is not None:
                during()
            for f in futs:
                f.result()

    def no_overlapping_holds(self):
        by_addr = {}
        for addr, cid, t0, t1 in self.holds:
            by_addr.setdefault(addr, []).append((t0, t1, cid))
        for addr, spans in by_addr.items():
            spans.sort()
            for (_a0, a1, ca), (b0, _b1, cb) in zip(spans, spans[1:]):
                assert b0 >= a1, f"{addr} held by {ca} and {cb} at once"


def test_storm_three_nodes_small_blocks(etcd_single, etcd_prefix, tmp_path):
    s = Storm(etcd_single, etcd_prefix, tmp_path, nodes=3, block=29)
    t0 = time.monotonic()
    s.run(workers=4, rounds=2, pods=4)
    print(f"{s.adds} ADD + {s.dels} DEL on 3 nodes in {time.monotonic() - t0:.1f} s")
    assert not s.failures, s.failures[:5]
    assert s.adds == 3 * 4 * 2 * 4
    s.no_overlapping_holds()
    blocks = check_invariants(etcd_single, etcd_prefix, s.dirs)
    for d in s.dirs.values():
        assert reservations(d) == {}
    per_node = {}
    for claim in blocks.values():
        per_node[claim["node"]] = per_node.get(claim["node"], 0) + 1
    assert all(n <= 1 for n in per_node.values()), per_node  # keepBlocks 1: the rest went back


def test_storm_survives_killing_an_etcd_member(etcd3, etcd_prefix, tmp_path):
    s = Storm(etcd3, etcd_prefix, tmp_path, nodes=3, block=30, keep=0, timeout=2.0)

    def kill_one():
        time.sleep(1.5)
        victim = etcd3.members[0]
        victim.kill()
        print(f"killed etcd member {victim.name} mid-storm")

    s.run(workers=3, rounds=2, pods=3, during=kill_one)
    assert not s.failures, s.failures[:5]
    s.no_overlapping_holds()
    check_invariants(etcd3, etcd_prefix, s.dirs)
    etcd3.heal()
    assert etcd_blocks(etcd3, etcd_prefix) == {}, "keepBlocks 0: every emptied block went back"
