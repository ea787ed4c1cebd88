"""Cluster pool block math, key schema and config parsing: pure functions, no etcd."""

from __future__ import annotations

import ipaddress

import pytest

from cni_ipam.plugin import netconf as config
from cni_ipam.cluster import blocks, keys, pool
from cni_ipam.cluster.record import Record
from cni_ipam.errors import CniError
from cni_ipam.store import is_node_name


def rset(*ranges, exclude=None):
    ipam = {"type": "cni-ipam", "ranges": [list(ranges)], "pool": {"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://127.0.0.1:1"]}}}
    if exclude:
        ipam["exclude"] = exclude
    return config.load({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}, {}).range_sets[0]


def addrs(rs, cidr):
    out = []
    for piece in blocks.block_pieces(rs, cidr):
        from cni_ipam.plugin.ranges import RangeSet

        out += [str(a) for a, _ in RangeSet([piece]).candidates(None)]
    return out


def test_blocks_are_aligned_and_respect_range_start_end():
    rs = rset({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.40"})
    starts = blocks.set_block_starts(rs, 28)
    assert [str(ipaddress.ip_address(s)) for s in starts] == ["10.0.0.0", "10.0.0.16", "10.0.0.32"]
    assert addrs(rs, "10.0.0.0/28") == [f"10.0.0.{i}" for i in range(10, 16)]
    assert addrs(rs, "10.0.0.32/28") == [f"10.0.0.{i}" for i in range(32, 41)]
    assert blocks.block_capacity(rs, "10.0.0.16/28") == 16


def test_gateway_and_excludes_leave_every_block():
    rs = rset({"subnet": "10.0.0.0/24", "gateway": "10.0.0.20", "exclude": ["10.0.0.33"]}, exclude=["10.0.0.250/31"])
    assert "10.0.0.20" not in addrs(rs, "10.0.0.16/28")
    assert "10.0.0.33" not in addrs(rs, "10.0.0.32/28")
    last = addrs(rs, "10.0.0.240/28")
    assert "10.0.0.250" not in last and "10.0.0.251" not in last and last[-1] == "10.0.0.254"  # .255: broadcast
    assert blocks.block_capacity(rs, "10.0.0.0/28") == 15  # network address
    # /32 blocks: the gateway block and excluded blocks have nothing to hand out and are never offered
    free = list(blocks.free_blocks(rs, 32, set()))
    assert "10.0.0.20/32" not in free and "10.0.0.0/32" not in free and "10.0.0.33/32" not in free
    assert len(free) == rs.size()
    # one block = the whole subnet
    assert blocks.block_capacity(rs, "10.0.0.0/24") == rs.size()


def test_two_ranges_sharing_a_block_make_one_block():
    rs = rset({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.2", "rangeEnd": "10.0.0.5"},
              {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.20"})
    assert blocks.set_block_starts(rs, 28) == [int(ipaddress.ip_address("10.0.0.0")),
                                               int(ipaddress.ip_address("10.0.0.16"))]
    assert addrs(rs, "10.0.0.0/28") == (["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
                                        + [f"10.0.0.{i}" for i in range(9, 16)])


def test_free_blocks_skips_taken_and_wraps_from_the_start_point():
    rs = rset({"subnet": "10.0.0.0/26"})
    all_blocks = list(blocks.free_blocks(rs, 28, set()))
    assert all_blocks == ["10.0.0.0/28", "10.0.0.16/28", "10.0.0.32/28", "10.0.0.48/28"]
    assert list(blocks.free_blocks(rs, 28, {"10.0.0.32/28"}, start=2)) == [
        "10.0.0.48/28", "10.0.0.0/28", "10.0.0.16/28"]
    assert list(blocks.free_blocks(rs, 28, set(all_blocks))) == []


def test_large_grid_is_lazy():
    rs = rset({"subnet": "10.0.0.0/8"})
    it = blocks.free_blocks(rs, 32, set(), start=123456)
    # blocks begin at rangeStart
    assert next(it) == str(ipaddress.ip_address(int(ipaddress.ip_address("10.0.0.1")) + 123456)) + "/32"


def test_block_of_and_keys_round_trip():
    assert blocks.block_of(ipaddress.ip_address("10.1.2.77"), 26) == "10.1.2.64/26"
    assert blocks.block_of(ipaddress.ip_address("fd00::1:5"), 124) == "fd00::1:0/124"
    key = keys.block_key("/cni-ipam", "lan", "fd00::1:0/124")
    assert key == b"/cni-ipam/pools/lan/blocks/fd00::1:0/124"
    assert keys.parse_block_key("/cni-ipam", "lan", key) == "fd00::1:0/124"
    assert keys.parse_block_key("/cni-ipam", "lan", b"/cni-ipam/pools/lan/blocks/10.0.0.1/24") is None  # host bits
    assert keys.parse_block_key("/cni-ipam", "lan", b"/cni-ipam/pools/lan2/blocks/10.0.0.0/24") is None
    assert keys.node_key("/x", "p", "n1") == b"/x/pools/p/nodes/n1"
    assert keys.grid_key("/x", "p", 6) == b"/x/pools/p/grid/6"


@pytest.mark.parametrize("name, ok", [("node-a", True), ("a.b-c.d", True), ("Node", False), ("-a", False),
                                      ("a-", False), ("a..b", False), ("a_b", False), ("", False), ("x" * 254, False)])
def test_node_names(name, ok):
    assert is_node_name(name) is ok


def test_ipv6_block_size_defaults_to_the_same_number_of_addresses():
    ipam = {"type": "cni-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]],
            "pool": {"name": "p", "blockSize": 27, "etcd": {"endpoints": "http://a:1, http://b:2"}}}
    cfg = config.load({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}, {})
    assert cfg.pool.block_sizes == (27, 123)
    assert cfg.pool.etcd.endpoints == ["http://a:1", "http://b:2"]
    ipam["pool"]["blockSizeIPv6"] = 60  # larger than the /64
    with pytest.raises(CniError) as exc:
        config.load({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}, {})
    assert exc.value.code == 7 and "ipam.pool.blockSizeIPv6" in exc.value.msg


def test_record_ignores_junk():
    claim = '{"claim":"c","instance":"i","network":"n","node":"a"}'
    rec = Record({"v": 2,
                  "blocks": [{"cidr": "10.0.0.0/28", "set": 0, "claim": claim},
                             {"cidr": "bad", "set": 0, "claim": claim},
                             {"cidr": "10.0.0.16/28", "set": "0", "claim": claim}, "x",
                             {"cidr": "10.0.0.64/28", "set": 0, "claim": claim, "state": "odd"}],
                  "pending": [{"op": "claim", "cidr": "10.0.0.32/28", "set": 0, "claim": claim},
                              {"op": "claim", "cidr": 5}, {"op": "free", "family": 4, "addr": 3, "record": "{}"},
                              {"op": "free", "family": 5, "addr": 3}],
                  "keepBlocks": -1, "cluster": "x", "revision": -4})
    assert [b["cidr"] for b in rec.blocks] == ["10.0.0.0/28"] and rec.blocks[0]["state"] == "held"
    assert [p.get("cidr", p.get("addr")) for p in rec.pending] == ["10.0.0.32/28", 3]
    assert rec.keep == 1 and rec.cluster == 0 and rec.revision == 0
    assert Record([1, 2]).blocks == []
    assert Record({"v": 1, "blocks": [{"cidr": "10.0.0.0/28", "set": 0, "claim": claim}]}).blocks == []


def test_lint_checks_pool_settings(tmp_path):
    """`cni-ipam lint` runs the plugin's pool parser: a bad key is an error naming it, the example is clean."""
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    bad = {"cniVersion": "1.1.0", "name": "lan", "plugins": [{"type": "macvlan", "master": "eth1", "ipam": {
        "type": "cni-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}]],
        "pool": {"name": "lan", "blockSize": 20, "etcd": {"endpoints": ["http://127.0.0.1:2379"]}}}}]}
    path = tmp_path / "bad.conflist"
    path.write_text(json.dumps(bad))
    example = os.path.join(ROOT, "conf-examples", "cluster", "10-macvlan-pool.conflist")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "cni_ipam", "lint", "--json", "--no-host", "--strict", str(path),
                          example],
                         capture_output=True, text=True, env=env, timeout=60)
    doc = json.loads(out.stdout)
    errors = [f for f in doc["findings"] if f["level"] == "error"]
    assert len(errors) == 1 and errors[0]["file"].endswith("bad.conflist"), doc["findings"]
    assert "ipam.pool.blockSize" in errors[0]["key"] + errors[0]["message"], errors
    assert not [f for f in doc["findings"] if f["file"].endswith("10-macvlan-pool.conflist") and f["level"] != "info"]


def test_status_reads_pool_json_only_through_the_store_reader(tmp_path):
    """STATUS's lock-free read of ``.cni-ipam/pool.json`` (store.fs's dir-fd reader): a record behind
    a symlinked ``.cni-ipam``, a symlinked ``pool.json`` or a FIFO someone writes into is never read;
    the same record as a regular file is.  No etcd here: with a held block that has room STATUS
    answers None at once, without one it asks etcd (unreachable: a message)."""
    import json
    import os

    ipam = {"type": "cni-ipam", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.77.0.0/24"}]],
            "pool": {"name": "p", "blockSize": 28, "nodeName": "node-a",
                     "etcd": {"endpoints": ["http://127.0.0.1:1"], "timeout": 0.5}}}
    cfg = config.load({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}, {})
    record = json.dumps({"v": 2, "pool": "p", "node": "node-a", "network": "n", "pending": [],
                         "blocks": [{"cidr": "10.77.0.16/28", "set": 0, "claim": "{}", "state": "held"}]})
    net = tmp_path / "n"
    real = tmp_path / "elsewhere"
    real.mkdir()
    net.mkdir()
    (real / "pool.json").write_text(record)
    os.symlink(str(real), net / ".cni-ipam")
    assert "etcd" in pool.status_problem(cfg)  # the planted record was not read
    os.unlink(net / ".cni-ipam")
    (net / ".cni-ipam").mkdir()
    os.symlink(str(real / "pool.json"), net / ".cni-ipam" / "pool.json")
    assert "etcd" in pool.status_problem(cfg)
    os.unlink(net / ".cni-ipam" / "pool.json")
    fifo = net / ".cni-ipam" / "pool.json"
    os.mkfifo(fifo)
    writer_fd = os.open(fifo, os.O_RDWR)  # a writer holds it open, the record waits in the pipe
    try:
        os.write(writer_fd, record.encode())
        assert "etcd" in pool.status_problem(cfg)
    finally:
        os.close(writer_fd)
    os.unlink(fifo)
    (net / ".cni-ipam" / "pool.json").write_text(record)
    assert pool.status_problem(cfg) is None  # the same record, in place: a held block with room
