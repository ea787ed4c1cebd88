"""How ``pool show`` / ``pool metrics`` read a pool with many blocks (``poolread.read_snapshot``):
address records counted by etcd per claimed block in batched txns, never listed unless they lie
outside every claim; paging and batching change nothing in the result.  Real etcd; the reference
is a plain listing of every key of the pool."""

from __future__ import annotations

import ipaddress
import json

import pytest

from cni_ipam.admin import poolconf, poolread, poolview
from cni_ipam.cluster import etcd as etcdmod
from cni_ipam.cluster import keys
from cni_ipam.cluster.etcd import EtcdClient
from tests.cluster.conftest import Cluster, need_etcd
from tests.cluster.poolkit import pool_conf
from tests.cluster.test_pool_admin import put_all, seed

SUBNET = "10.80.0.0/20"  # 256 blocks of /28
NODES = 45  # 3 blocks each, spread over the subnet: 135 claims, more than one txn of 128 reads


def block(i: int) -> str:
    return f"{ipaddress.ip_address(int(ipaddress.ip_address('10.80.0.0')) + 16 * i)}/28"


def addr_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


@pytest.fixture
def big_pool(etcd_single, etcd_prefix, tmp_path):
    """A pool of 45 nodes x 3 scattered /28 blocks, plus what only a hand edit leaves: a /27 claim
    holding a /28 claim, records in no claim (IPv4 and IPv6), an IPv6 claim outside the grid,
    malformed keys between and inside the claimed ranges and elsewhere under the pool; an IPv6
    claim at the end of the address space."""
    conf = pool_conf(etcd_single, etcd_prefix, "node-000", str(tmp_path / "data"), block=28,
                     ranges=[[{"subnet": SUBNET}]])
    path = tmp_path / "10-pool.conf"
    path.write_text(json.dumps(conf))
    prefix = etcd_prefix.decode().rstrip("/")
    client = EtcdClient(etcd_single.endpoints, timeout=10)
    for n in range(NODES):
        blocks = [block(n), block(n + 80), block(n + 160)]
        seed(client, prefix, f"node-{n:03d}", blocks, used={b: (n + 5 * i) % 15 for i, b in enumerate(blocks)})
    seed(client, prefix, "outer", ["10.80.15.160/27"], used=20)
    seed(client, prefix, "inner", ["10.80.15.160/28"], used=0, record=False)
    seed(client, prefix, "six", ["fd00::/124"], used=5)
    seed(client, prefix, "top", ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"], used=3)  # ends the key space
    head = keys.pool_prefix(prefix, "p").encode()
    a = keys.addrs_prefix(prefix, "p", 4)
    put_all(client, [
        (keys.addr_key(prefix, "p", 4, addr_int("10.80.13.201")), b"{}"),  # block 220: no claim
        (keys.addr_key(prefix, "p", 4, addr_int("10.80.13.202")), b"{}"),
        (keys.addr_key(prefix, "p", 4, addr_int("10.80.0.0") - 1), b"{}"),  # below the subnet
        (keys.addr_key(prefix, "p", 6, addr_int("fd00::99")), b"{}"),
        (a + b"zz", b"{}"),
        (a + b"0a50", b"{}"),  # short: sorts before every key of 10.80.0.0
        (a + keys.addr_hex(4, addr_int("10.80.0.3")).encode() + b"x", b"{}"),  # inside block 0's range
        (head + b"addrs/5/x", b"{}"),
        (head + b"addrs/x", b"{}"),
        (head + b"whatever", b"x"),
        (head + b"zzz", b"x"),
        (keys.nodes_prefix(prefix, "p") + b"NOT_A_NODE", b"{}"),
        (keys.block_key(prefix, "p", "10.80.15.0/28"), b"not json"),
        (keys.grid_key(prefix, "p", 4), b"28"),
    ])
    target = poolconf.load_pools([str(path)], "")[0][0]
    yield client, target, head
    client.close()


def reference(client, target, head: bytes) -> dict:
    """Per-claim key counts, stray records and malformed keys from one plain listing of the pool:
    a claim's count is every key in its record range, as a release's compare sees it."""
    listing = [k for k, _v, _m, _c in client.range_prefix(head, keys_only=True)]
    prefix, pool = target.prefix, target.name
    ranges = {}
    for key in listing:
        cidr = keys.parse_block_key(prefix, pool, key)
        if cidr:
            ranges[cidr] = keys.block_addr_range(prefix, pool, cidr)
    counts = {cidr: sum(1 for k in listing if s <= k < e) for cidr, (s, e) in ranges.items()}
    inside = {k for k in listing for s, e in ranges.values() if s <= k < e}
    known = {keys.grid_key(prefix, pool, 4), keys.grid_key(prefix, pool, 6), keys.spec_key(prefix, pool)}
    stray, junk = {4: [], 6: []}, []
    for key in listing:
        if key in inside or key in known or key.startswith(keys.blocks_prefix(prefix, pool)) \
                or key.startswith(keys.nodes_prefix(prefix, pool)):
            continue
        parsed = keys.parse_addr_key(prefix, pool, key)
        if parsed:
            stray[parsed[0]].append(parsed[1])
        else:
            junk.append(key)
    return {"counts": counts, "stray": stray, "junk": junk}


def counts_of(snap) -> dict:
    return {c.cidr: snap.count(c.version, c.first, c.last) for c in snap.claims.values()}


def test_paged_and_batched_read_equals_a_plain_listing(big_pool, monkeypatch):
    client, target, head = big_pool
    ref = reference(client, target, head)
    whole = poolread.read_snapshot(client, target)
    monkeypatch.setattr(etcdmod, "PAGE_SIZE", 3)
    monkeypatch.setattr(poolread, "TXN_OPS", 4)
    before = client.round_trips
    paged = poolread.read_snapshot(client, target)
    assert client.round_trips - before > 50  # pages of 3 keys, txns of 4 reads: really paged
    for snap in (whole, paged):
        assert counts_of(snap) == ref["counts"]
        assert snap.stray == ref["stray"] and sorted(snap.junk[:len(ref["junk"])]) == ref["junk"]
    assert len(ref["counts"]) == 3 * NODES + 5 and ref["stray"][6] == [addr_int("fd00::99")]
    assert ref["counts"][block(0)] == 1  # 0 records and the malformed key inside its range
    assert ref["counts"]["10.80.15.160/27"] == 20 and ref["counts"]["10.80.15.160/28"] == 16
    assert ref["counts"]["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"] == 3
    assert whole.junk == paged.junk and len(whole.junk) == 8  # 6 listed, the node key, the claim
    assert whole.grid == paged.grid == {4: 28}
    views = [poolview.build_view(target, s) for s in (whole, paged)]
    assert views[0].to_json() == views[1].to_json()
    assert poolview.render(views[:1]) == poolview.render(views[1:])
    doc = views[0].to_json()
    assert doc["addressRecordsOutsideClaims"] == 4 and doc["nodeCount"] == NODES + 4
    used = sum(ref["counts"][b] for n in range(NODES) for b in (block(n), block(n + 80), block(n + 160)))
    assert doc["sets"][0]["usedAddresses"] == used + 16 and doc["sets"][0]["heldBlocks"] == 3 * NODES + 1


def test_address_records_in_claimed_blocks_are_counted_not_listed(big_pool):
    """The read transfers the keys of claims, node records and what lies outside every claim, never
    the address records of a claimed block (a listing of 640,000 of them is minutes on etcd 3.4)."""
    client, target, head = big_pool
    prefix, pool = target.prefix, target.name
    claimed = [keys.block_addr_range(prefix, pool, block(n + k)) for n in range(NODES) for k in (0, 80, 160)]
    received: list = []
    call = client._call

    def counting(path, body):
        result = call(path, body)
        if path == "/v3/kv/range":
            received.extend(k for k, _v, _m, _c in result[1])
        elif path == "/v3/kv/txn":
            received.extend(kv[0] for r in result[1] for kv in r.get("kvs", ()))
        return result

    client._call = counting
    try:
        snap = poolread.read_snapshot(client, target)
    finally:
        client._call = call
    in_blocks = [k for k in received if any(s <= k < e for s, e in claimed)]
    assert in_blocks == [], f"{len(in_blocks)} address keys of claimed blocks were listed"
    assert sum(counts_of(snap).values()) > 300 and len(received) < 250


def test_txns_shrink_when_etcd_refuses_their_size(big_pool, monkeypatch):
    client, target, _head = big_pool
    expected = counts_of(poolread.read_snapshot(client, target))
    monkeypatch.setattr(poolread, "TXN_OPS", 200)  # etcd's --max-txn-ops is 128
    txns = []
    call = client._call

    def counting(path, body):
        if path == "/v3/kv/txn":
            txns.append(len(body["success"]))
        return call(path, body)

    monkeypatch.setattr(client, "_call", counting)
    assert counts_of(poolread.read_snapshot(client, target)) == expected
    assert [n for n in txns if n > 128] == [len(expected) + 3]  # refused: too many operations
    assert sum(n for n in txns if n <= 128) == len(expected) + 3


def test_count_of_a_range_is_exact_or_refused(big_pool):
    client, target, _head = big_pool
    snap = poolread.read_snapshot(client, target)
    v4 = sum(snap.count(c.version, c.first, c.last) for c in snap.outermost[4]) + len(snap.stray[4])
    assert snap.count(4, 0, 2**32 - 1) == v4
    first = addr_int("10.80.13.192")  # block 220: claimed by nobody, two stray records
    assert snap.count(4, first, first + 15) == 2
    with pytest.raises(ValueError):  # the second half of the /27: no claim, inside one
        snap.count(4, addr_int("10.80.15.176"), addr_int("10.80.15.191"))


def test_a_revision_compacted_during_the_read_is_read_again(etcd_prefix, tmp_path):
    """The read pins the revision of its first answer; when etcd compacts it before the counts,
    the whole read starts again at a new revision. Its own etcd: compaction is for every key."""
    need_etcd()
    cluster = Cluster(1)
    try:
        cluster.start()
        conf = pool_conf(cluster, etcd_prefix, "n", str(tmp_path / "d"), block=28, ranges=[[{"subnet": SUBNET}]])
        (tmp_path / "c.conf").write_text(json.dumps(conf))
        target = poolconf.load_pools([str(tmp_path / "c.conf")], "")[0][0]
        prefix = etcd_prefix.decode().rstrip("/")
        client = EtcdClient(cluster.endpoints, timeout=5)
        seed(client, prefix, "n", [block(1), block(2)], used=3)
        txn = client.txn
        compacted = []

        def compact_first(compares, success, failure=()):
            if not compacted:
                rev = client.put(etcd_prefix + b"bump", b"x")
                status, doc = cluster.post(cluster.members[0], "/v3/kv/compaction",
                                           {"revision": str(rev), "physical": True})
                assert status == 200, doc
                compacted.append(rev)
            return txn(compares, success, failure)

        client.txn = compact_first
        snap = poolread.read_snapshot(client, target)
        assert compacted and snap.revision >= compacted[0]
        assert counts_of(snap) == {block(1): 3, block(2): 3}
        client.close()
    finally:
        cluster.close()


def test_nothing_but_the_pool_is_read(big_pool):
    """A key just past the pool's prefix (another pool named p + something) is not the pool's."""
    client, target, head = big_pool
    before = poolread.read_snapshot(client, target)
    put_all(client, [(head[:-1] + b"x/addrs/4/0a500001", b"{}"), (head[:-1] + b"0", b"{}")])
    after = poolread.read_snapshot(client, target)
    assert after.junk == before.junk and after.stray == before.stray and counts_of(after) == counts_of(before)
