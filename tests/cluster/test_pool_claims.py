"""Cluster pool: claim, allocate locally, release; config errors; requested IPs; STATUS and GC.

Real etcd (tests/cluster/conftest.py fixtures); each test uses its own key prefix and data dirs.
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.cluster.poolkit import (addresses, call, call_inproc, check_invariants, etcd_blocks, local_record, pool_conf,
                                   reservations)


@pytest.fixture
def nodes(tmp_path):
    return {name: str(tmp_path / name) for name in ("node-a", "node-b", "node-c")}


def test_first_add_claims_a_block_then_allocates_locally(etcd_single, etcd_prefix, nodes):
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=28)
    rc, res = call("ADD", conf, "ctr-1")
    assert rc == 0, res
    ip = addresses(res)[0]
    assert res["ips"][0]["address"].endswith("/24"), res  # the subnet's mask, not the block's
    assert res["ips"][0]["gateway"] == "10.77.0.1"
    blocks = check_invariants(etcd_single, etcd_prefix, {"node-a": nodes["node-a"]})
    assert len(blocks) == 1
    (cidr, claim), = blocks.items()
    assert claim["node"] == "node-a" and claim["network"] == "poolnet"
    assert ip in ipaddress.ip_network(cidr)
    assert ip != ipaddress.ip_address("10.77.0.1")
    rec = local_record(nodes["node-a"])
    assert [b["cidr"] for b in rec["blocks"]] == [cidr] and rec["pending"] == []


def test_add_and_del_with_room_make_one_etcd_txn_each(etcd_single, etcd_prefix, nodes, monkeypatch):
    """Every allocation is recorded in etcd: one fenced txn per ADD in a held block, one per DEL."""
    from cni_ipam.cluster import etcd

    calls = []
    real = etcd.EtcdClient._call

    def counting(self, path, body):
        calls.append(path)
        return real(self, path, body)

    monkeypatch.setattr(etcd.EtcdClient, "_call", counting)
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=28)
    rc, res = call_inproc("ADD", conf, "ctr-0")
    assert rc == 0, res
    claim_calls = list(calls)
    assert claim_calls, "the first ADD must claim a block"
    print("etcd requests of the claiming ADD:", claim_calls)
    calls.clear()
    for i in range(1, 10):
        rc, res = call_inproc("ADD", conf, f"ctr-{i}")
        assert rc == 0, res
    assert calls == ["/v3/kv/txn"] * 9, calls
    calls.clear()
    rc, _ = call_inproc("DEL", conf, "ctr-3")
    assert rc == 0
    assert calls == ["/v3/kv/txn"], calls


def test_full_block_claims_the_next_and_two_nodes_never_share(etcd_single, etcd_prefix, nodes):
    # /29 blocks: 8 addresses, minus network/gateway where they fall
    got = {}
    for node in ("node-a", "node-b"):
        conf = pool_conf(etcd_single, etcd_prefix, node, nodes[node], block=29)
        for i in range(12):
            rc, res = call("ADD", conf, f"{node}-c{i}")
            assert rc == 0, res
            got[(node, i)] = addresses(res)[0]
    assert len(set(got.values())) == len(got)
    blocks = check_invariants(etcd_single, etcd_prefix, {n: nodes[n] for n in ("node-a", "node-b")})
    per_node = {}
    for cidr, claim in blocks.items():
        per_node.setdefault(claim["node"], []).append(cidr)
    assert len(per_node["node-a"]) >= 2 and len(per_node["node-b"]) >= 2, per_node


def test_pool_exhausted_names_the_pool(etcd_single, etcd_prefix, nodes):
    ranges = [[{"subnet": "10.78.0.0/28", "rangeStart": "10.78.0.2", "rangeEnd": "10.78.0.9"}]]
    a = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], ranges=ranges, block=30, pool="tiny")
    b = pool_conf(etcd_single, etcd_prefix, "node-b", nodes["node-b"], ranges=ranges, block=30, pool="tiny")
    ok = 0
    for i in range(8):
        rc, res = call("ADD", a if i % 2 else b, f"c{i}")
        ok += rc == 0
    assert ok == 8  # 10.78.0.2 .. 10.78.0.9 = 8 addresses in 3 blocks (/30s 0-3, 4-7, 8-11)
    rc, res = call("ADD", a, "one-more")
    assert rc == 1 and res["code"] == 107, res
    assert "pool tiny" in res["msg"] and "exhausted" in res["msg"], res
    # STATUS: a full pool does not take the node out of service by default ...
    rc, res = call("STATUS", a, "x")
    assert rc == 0, res
    # ... and says so when the user opts in (CNI 1.1)
    a["ipam"]["statusOnExhaustion"] = "fail"
    rc, res = call("STATUS", a, "x")
    assert rc == 1 and res["code"] == 50 and "exhausted" in res["msg"], res
    # a DEL frees an address: the block-holder can serve again without a claim
    assert call("DEL", b, "c0")[0] == 0


def test_emptied_blocks_return_to_the_pool_keeping_one(etcd_single, etcd_prefix, nodes):
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=29)
    for i in range(14):
        assert call("ADD", conf, f"c{i}")[0] == 0
    assert len(etcd_blocks(etcd_single, etcd_prefix)) >= 2
    for i in range(14):
        assert call("DEL", conf, f"c{i}")[0] == 0
    blocks = etcd_blocks(etcd_single, etcd_prefix)
    assert len(blocks) == 1, blocks  # keepBlocks 1
    assert reservations(nodes["node-a"]) == {}
    conf0 = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=29, keepBlocks=0)
    assert call("ADD", conf0, "again")[0] == 0
    assert call("DEL", conf0, "again")[0] == 0
    assert etcd_blocks(etcd_single, etcd_prefix) == {}


def test_requested_ip_in_free_block_claims_it_and_in_foreign_block_is_refused(etcd_single, etcd_prefix, nodes):
    a = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=28)
    b = pool_conf(etcd_single, etcd_prefix, "node-b", nodes["node-b"], block=28)
    rc, res = call("ADD", a, "a1", cni_args="IP=10.77.0.200")
    assert rc == 0, res
    assert addresses(res) == [ipaddress.ip_address("10.77.0.200")]
    assert etcd_blocks(etcd_single, etcd_prefix)["10.77.0.192/28"]["node"] == "node-a"
    rc, res = call("ADD", b, "b1", cni_args="IP=10.77.0.201")
    assert rc == 1 and res["code"] == 101 and "node-a" in res["msg"], res
    rc, res = call("ADD", b, "b2", cni_args="IP=10.99.0.1")
    assert rc == 1 and res["code"] == 102, res
    rc, res = call("ADD", b, "b3", cni_args="IP=10.77.0.1")  # the gateway: never handed out
    assert rc == 1 and res["code"] == 102, res
    assert not [c for c, claim in etcd_blocks(etcd_single, etcd_prefix).items() if claim["node"] == "node-b"], \
        "a refused request claimed a block"
    check_invariants(etcd_single, etcd_prefix, {n: nodes[n] for n in ("node-a", "node-b")})


def test_gateway_and_excluded_never_handed_out(etcd_single, etcd_prefix, nodes):
    ranges = [[{"subnet": "10.79.0.0/27", "gateway": "10.79.0.9", "exclude": ["10.79.0.4/30"]}]]
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], ranges=ranges, block=29, pool="gx")
    conf["ipam"]["exclude"] = ["10.79.0.17"]
    got = set()
    while True:
        rc, res = call("ADD", conf, f"c{len(got)}")
        if rc:
            assert res["code"] == 107, res
            break
        got |= set(addresses(res))
    bad = {ipaddress.ip_address(a) for a in ("10.79.0.0", "10.79.0.9", "10.79.0.4", "10.79.0.5", "10.79.0.6",
                                              "10.79.0.7", "10.79.0.17", "10.79.0.31")}
    assert not got & bad
    assert len(got) == 32 - len(bad)


def test_dual_stack_pool_claims_a_block_per_family(etcd_single, etcd_prefix, nodes):
    ranges = [[{"subnet": "10.80.0.0/24"}],
              [{"subnet": "fd80::/64", "rangeStart": "fd80::10", "rangeEnd": "fd80::1:0"}]]
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], ranges=ranges, block=28, pool="ds")
    rc, res = call("ADD", conf, "c1")
    assert rc == 0, res
    v4, v6 = addresses(res)
    assert v4.version == 4 and v6.version == 6
    blocks = etcd_blocks(etcd_single, etcd_prefix, "ds")
    assert sorted(blocks) == sorted([f"{ipaddress.ip_network(f'{v4}/28', strict=False)}",
                                     f"{ipaddress.ip_network(f'{v6}/124', strict=False)}"])
    assert v6 >= ipaddress.ip_address("fd80::10")


@pytest.mark.parametrize("pool, why", [
    ({"name": "p", "etcd": {"endpoints": ["http://127.0.0.1:1"]}}, "ipam.pool.blockSize"),
    ({"name": "p", "blockSize": 20, "etcd": {"endpoints": ["http://127.0.0.1:1"]}}, "larger than the subnet"),
    ({"name": "a/b", "blockSize": 28, "etcd": {"endpoints": ["http://127.0.0.1:1"]}}, "ipam.pool.name"),
    ({"name": "p", "blockSize": 28, "etcd": {"endpoints": []}}, "ipam.pool.etcd.endpoints"),
    ({"name": "p", "blockSize": 28, "etcd": {"endpoints": ["127.0.0.1:2379"]}}, "ipam.pool.etcd.endpoints[0]"),
    ({"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://x:1"], "prefix": "nope"}}, "ipam.pool.etcd.prefix"),
    ({"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://x:1"], "certFile": "/a"}}, "keyFile"),
    ({"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://x:1"], "username": "u"}}, "passwordFile"),
    ({"name": "p", "blockSize": 28, "nodeName": "Node_A", "etcd": {"endpoints": ["http://x:1"]}}, "ipam.pool.nodeName"),
    ({"name": "p", "blockSize": 28, "bogus": 1, "etcd": {"endpoints": ["http://x:1"]}}, "unknown keys"),
    ({"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://x:1"], "timeout": 0}}, "ipam.pool.etcd.timeout"),
])
def test_config_errors_are_code_7(tmp_path, pool, why):
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.77.0.0/24"}]],
                     "pool": pool}}
    rc, res = call("ADD", conf, "c1")
    assert rc == 1 and res["code"] == 7 and why in res["msg"] + res.get("details", ""), res


def test_two_range_sets_of_one_family_refused(tmp_path):
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path),
                     "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "10.78.0.0/24"}]],
                     "pool": {"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://127.0.0.1:1"]}}}}
    rc, res = call("ADD", conf, "c1")
    assert rc == 1 and res["code"] == 7 and "one range set per address family" in res["msg"], res


def test_block_size_mismatch_between_nodes_is_refused(etcd_single, etcd_prefix, nodes):
    a = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=28)
    b = pool_conf(etcd_single, etcd_prefix, "node-b", nodes["node-b"], block=26)
    assert call("ADD", a, "a1")[0] == 0
    rc, res = call("ADD", b, "b1")
    assert rc == 1 and res["code"] == 7 and "/28" in res["msg"] and "/26" in res["msg"], res
    check_invariants(etcd_single, etcd_prefix, {n: nodes[n] for n in ("node-a", "node-b")})


def test_gc_verb_returns_emptied_blocks(etcd_single, etcd_prefix, nodes):
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=29, keepBlocks=0)
    for i in range(3):
        assert call("ADD", conf, f"c{i}")[0] == 0
    assert etcd_blocks(etcd_single, etcd_prefix)
    gc = dict(conf, **{"cni.dev/valid-attachments": []})
    rc, res = call("GC", gc, "x")
    assert rc == 0, res
    assert reservations(nodes["node-a"]) == {}
    assert etcd_blocks(etcd_single, etcd_prefix) == {}


def test_check_in_a_pool(etcd_single, etcd_prefix, nodes):
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=28)
    rc, res = call("ADD", conf, "c1")
    assert rc == 0
    conf2 = dict(conf, prevResult=res)
    assert call("CHECK", conf2, "c1")[0] == 0  # the namespace does not exist: CHECK skips that part
    rc, res2 = call("CHECK", conf2, "c2")
    assert rc == 1 and res2["code"] == 105, res2


def test_node_record_and_address_records(etcd_single, etcd_prefix, nodes):
    """nodes/<name> names the machine (instance id, host name); each address has its own record
    under the block's claim id, and DEL removes it."""
    import os

    from cni_ipam.cluster import keys
    from cni_ipam.cluster.etcd import EtcdClient

    conf = pool_conf(etcd_single, etcd_prefix, "node-a", nodes["node-a"], block=28)
    rc, res = call("ADD", conf, "c1")
    assert rc == 0, res
    ip = addresses(res)[0]
    p = etcd_prefix.decode().rstrip("/")
    c = EtcdClient(etcd_single.endpoints)
    try:
        node = keys.NodeRecord.parse(c.get(keys.node_key(p, "p", "node-a"))[0])
        assert node.hostname == os.uname().nodename and len(node.instance) > 16
        (cidr, claim), = etcd_blocks(etcd_single, etcd_prefix).items()
        assert claim["instance"] == node.instance
        addr = keys.AddrRecord.parse(c.get(keys.addr_key(p, "p", 4, int(ip)))[0])
        assert (addr.node, addr.instance, addr.claim, addr.network, addr.cid, addr.ifname) == \
            ("node-a", node.instance, claim["claim"], "poolnet", "c1", "eth0")
        assert call("DEL", conf, "c1")[0] == 0
        assert c.get(keys.addr_key(p, "p", 4, int(ip))) is None
    finally:
        c.close()
