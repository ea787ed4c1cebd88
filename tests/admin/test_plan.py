"""`cni-ipam plan`: exact capacity numbers, warnings and exit codes."""

import ipaddress
import json

import pytest

from cni_ipam.admin import plan
from tests.helpers import run_admin


def run_plan(*args):
    return run_admin("plan", *args)


def plan_json(*args):
    rc, out, err = run_plan("--json", *args)
    assert out, err
    return rc, json.loads(out)


def test_kubeadm_defaults():
    rc, doc = plan_json("--cluster-cidr", "10.244.0.0/16", "--nodes", "100")
    (f,) = doc["families"]
    assert (
        f["nodeSubnets"],
        f["availableNodeSubnets"],
        f["usableAddressesPerNode"],
        f["podsPerNode"],
        f["podCapacity"],
    ) == (256, 256, 253, 110, 28160)
    assert f["nodeMask"] == 24
    assert (doc["nodesFit"], doc["headroomNodes"], doc["growth"]) == (256, 156, 2.56)
    assert doc["errors"] == [] and doc["warnings"] == [] and rc == 0


@pytest.mark.parametrize(
    "nodes,rc,what",
    [(128, 0, None), (129, 1, "less than 2x growth"), (256, 1, "less than 2x growth"), (257, 2, "do not fit")],
)
def test_growth_thresholds(nodes, rc, what):
    got_rc, doc = plan_json("--cluster-cidr", "10.244.0.0/16", "--nodes", str(nodes))
    assert got_rc == rc
    text = " ".join(doc["errors"] + doc["warnings"])
    assert (what in text) if what else text == ""
    assert doc["headroomNodes"] == 256 - nodes


def test_usable_addresses_match_the_plugin_defaults():
    """The per-node count is what cni-ipam hands out from a node subnet with the default range."""
    from cni_ipam.plugin import netconf as config

    for cidr in ("10.1.2.0/24", "10.1.2.0/26", "10.1.2.0/30", "fd00::/120", "fd00::/64"):
        net = ipaddress.ip_network(cidr)
        cfg = config.load({"name": "x", "cniVersion": "1.0.0", "ipam": {"subnet": cidr}}, {})
        assert plan.usable_per_node(net.prefixlen, net.version) == cfg.range_sets[0].size(), cidr
    assert plan.usable_per_node(24, 4) == 253
    assert plan.usable_per_node(30, 4) == 1
    assert plan.usable_per_node(31, 4) == 0
    assert plan.usable_per_node(64, 6) == 2**64 - 3


def test_service_range_inside_cluster_cidr():
    rc, doc = plan_json("--cluster-cidr", "10.0.0.0/8", "--service-cidr", "10.96.0.0/12", "--nodes", "1000")
    (f,) = doc["families"]
    assert (f["nodeSubnets"], f["occupiedByServices"], f["availableNodeSubnets"]) == (65536, 4096, 61440)
    assert doc["nodesFit"] == 61440 and doc["podCapacity"] == 61440 * 110
    assert any(
        "10.96.0.0/12 overlaps cluster CIDR 10.0.0.0/8 (4096 node subnet(s) unusable)" in w for w in doc["warnings"]
    )
    assert rc == 1
    # a small service range still costs one node subnet
    rc, doc = plan_json("--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.244.200.0/28")
    assert doc["families"][0]["occupiedByServices"] == 1 and doc["nodesFit"] == 255 and rc == 1
    # disjoint: no warning
    rc, doc = plan_json("--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/12")
    assert doc["families"][0]["occupiedByServices"] == 0 and rc == 0


def test_node_mask_errors_and_warnings():
    rc, doc = plan_json("--cluster-cidr", "10.0.0.0/8", "--node-mask", "25")
    assert "17 bits longer" in doc["errors"][0] and rc == 2
    rc, doc = plan_json("--cluster-cidr", "10.0.0.0/16", "--node-mask", "25")
    f = doc["families"][0]
    assert (f["nodeSubnets"], f["usableAddressesPerNode"], f["podsPerNode"]) == (512, 125, 110)
    assert any("less than 2x --max-pods" in w for w in doc["warnings"]) and rc == 1
    rc, doc = plan_json("--cluster-cidr", "10.0.0.0/16", "--node-mask", "26")
    assert (
        doc["families"][0]["podsPerNode"] == 61
        and any("fewer than --max-pods 110" in e for e in doc["errors"])
        and rc == 2
    )
    rc, doc = plan_json("--cluster-cidr", "10.0.0.0/16", "--node-mask", "26", "--max-pods", "30")
    assert doc["podsPerNode"] == 30 and doc["podCapacity"] == 1024 * 30 and rc == 0
    rc, doc = plan_json("--cluster-cidr", "10.0.0.0/16", "--node-mask", "12")
    assert "shorter than the cluster CIDR" in doc["errors"][0] and rc == 2


def test_dual_stack():
    rc, doc = plan_json("--cluster-cidr", "10.244.0.0/16", "--cluster-cidr", "fd00:10:244::/60", "--nodes", "5")
    v4, v6 = doc["families"]
    assert (v4["nodeSubnets"], v6["nodeSubnets"], v6["nodeMask"]) == (256, 16, 64)
    assert v6["usableAddressesPerNode"] == 2**64 - 3
    assert doc["nodesFit"] == 16 and doc["podCapacity"] == 16 * 110 and doc["headroomNodes"] == 11 and rc == 0
    rc, doc = plan_json(
        "--cluster-cidr",
        "10.244.0.0/16",
        "--cluster-cidr",
        "fd00:10:244::/56",
        "--node-mask",
        "ipv6=120",
        "--node-mask",
        "ipv4=25",
        "--nodes",
        "100",
    )
    v4, v6 = doc["families"]
    assert (v4["nodeMask"], v6["nodeMask"]) == (25, 120)
    assert "64 bits longer" in " ".join(doc["errors"]) and rc == 2  # /56 -> /120
    rc, doc = plan_json(
        "--cluster-cidr", "fd00:1::/48", "--cluster-cidr", "10.0.0.0/12", "--node-mask", "64", "--node-mask", "24"
    )
    assert [(f["family"], f["nodeMask"], f["nodeSubnets"]) for f in doc["families"]] == [
        ("ipv6", 64, 65536),
        ("ipv4", 24, 4096),
    ]
    assert doc["nodesFit"] == 4096 and rc == 0


def test_usage_errors():
    """Bad options are usage errors (64, as in every command); 2 stays "the plan does not fit"."""
    assert run_plan()[0] == 64
    rc, _, err = run_plan("--cluster-cidr", "10.0.0.0/16", "--cluster-cidr", "10.1.0.0/16")
    assert rc == 64 and "one per family" in err
    rc, _, err = run_plan("--cluster-cidr", "10.0.0.0/16", "--node-mask", "24", "--node-mask", "25")
    assert rc == 64 and "more plain masks" in err
    rc, _, err = run_plan("--cluster-cidr", "10.0.0.0/16", "--node-mask", "ipv5=24")
    assert rc == 64
    rc, _, err = run_plan("--cluster-cidr", "10.0.0.0/16", "--nodes", "0")
    assert rc == 64 and "--nodes" in err
    rc, _, err = run_plan("--cluster-cidr", "banana")
    assert rc == 64 and "not a CIDR" in err


@pytest.mark.parametrize(
    "n,text",
    [
        (253, "253"),
        (9_999_999, "9999999"),
        (2**64, "2^64"),
        (2**64 - 3, "2^64-3"),
        (2**56 + 7, "2^56+7"),
        (2**80 * 3, "~2^81.6"),
        (2**24 - 1, "2^24-1"),
    ],
)
def test_count_text(n, text):
    assert plan.count_text(n) == text


def test_ipv6_counts_are_readable_in_the_table():
    rc, out, _ = run_plan("--cluster-cidr", "10.244.0.0/16", "--cluster-cidr", "fd00:10:244::/56")
    v6 = next(ln for ln in out.splitlines() if ln.startswith("ipv6 "))
    assert v6.split() == ["ipv6", "fd00:10:244::/56", "/64", "256", "0", "256", "2^64-3", "110", "28160"], v6
    assert "18446744073709551613" not in out and rc == 0


def test_table_output():
    rc, out, _ = run_plan("--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.244.0.0/20", "--nodes", "100")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["FAMILY", "CLUSTER", "CIDR"]
    assert lines[1].split() == ["ipv4", "10.244.0.0/16", "/24", "256", "16", "240", "253", "110", "26400"]
    assert "nodes that fit: 240" in out and "headroom: 140 node(s), 2.40x growth" in out
    assert "warning: ipv4: service CIDR 10.244.0.0/20 overlaps" in out and rc == 1


# ---------------------------------------------------------------------------------- cluster pools
def pool_plan(capsys, *args):
    rc = plan.main(["--json", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_pool_ipv4_28_blocks_in_a_24(capsys):
    """10.0.0.0/24, /28 blocks: 256/16 = 16 blocks.  The default range hands out .1-.254 less the
    gateway .1: the first block loses .0 and .1 (14), the last loses .255 (15), the 14 others are full
    (16): 14 + 15 + 14*16 = 253.  max-pods 30 with the smallest block: ceil(30/14) = 3 blocks a node,
    16 // 3 = 5 nodes."""
    rc, doc = pool_plan(
        capsys, "--pool-subnet", "10.0.0.0/24", "--block-size", "28", "--max-pods", "30", "--nodes", "4"
    )
    (s,) = doc["rangeSets"]
    assert (s["blocks"], s["usablePerBlockMin"], s["usablePerBlockMax"], s["usableAddresses"]) == (
        16,
        14,
        16,
        14 + 15 + 14 * 16,
    )
    assert (s["blocksPerNode"], s["nodesFit"]) == (-(-30 // 14), 16 // 3) == (3, 5)
    assert doc["nodesFit"] == 5 and doc["podCapacity"] == 4 * 30  # 4 planned nodes, all fit
    assert doc["errors"] == doc["warnings"] == [] and rc == 0
    rc, doc = pool_plan(
        capsys, "--pool-subnet", "10.0.0.0/24", "--block-size", "28", "--max-pods", "30", "--nodes", "6"
    )
    # more --nodes than fit: an error (exit 2), as in --cluster-cidr mode (test_growth_thresholds)
    assert doc["podCapacity"] == 5 * 30 and rc == 2 and "6 nodes do not fit" in doc["errors"][0] and not doc["warnings"]


def test_pool_table(capsys):
    rc = plan.main(["--pool-subnet", "10.0.0.0/24", "--block-size", "28", "--max-pods", "30"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["ipv4", "10.0.0.0/24", "/28", "16", "14-16", "253", "3", "5"], lines
    assert "pod capacity: 150" in lines[3] and rc == 0


def test_pool_capacity_line_says_whose_pods_it_counts(capsys):
    """The capacity counts the planned nodes that fit: 5 of 10 here, not the 10 planned."""
    args = ["--pool-subnet", "10.0.0.0/24", "--block-size", "28", "--max-pods", "30"]
    assert plan.main([*args, "--nodes", "10"]) == 2
    assert "pod capacity: 150 (5 of the 10 planned nodes fit)" in capsys.readouterr().out
    assert plan.main([*args, "--nodes", "4"]) == 0
    assert "pod capacity: 120 (for 4 planned nodes)" in capsys.readouterr().out


def test_pool_ipv6_64_with_120_blocks(capsys):
    """fd00::/64, /120 blocks: 2^(120-64) = 2^56 blocks of 256.  The default range drops ::0, the
    gateway ::1 and the last address: first block 254, last 255, total 2^64 - 3."""
    rc, doc = pool_plan(capsys, "--pool-subnet", "fd00::/64", "--block-size", "120", "--max-pods", "110")
    (s,) = doc["rangeSets"]
    assert (s["blocks"], s["usablePerBlockMin"], s["usablePerBlockMax"], s["usableAddresses"]) == (
        2**56,
        254,
        256,
        2**64 - 3,
    )
    assert (s["blocksPerNode"], s["nodesFit"]) == (1, 2**56)
    assert doc["podCapacity"] == 2**56 * 110 and doc["warnings"] == [] and rc == 0
    rc = plan.main(["--pool-subnet", "fd00::/64", "--block-size", "120", "--max-pods", "110"])
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["ipv6", "fd00::/64", "/120", "2^56", "254-256", "2^64-3", "1", "2^56"]
    assert str(2**56) not in out


def test_pool_dual_stack_from_a_conf_file(tmp_path, capsys):
    """The conf goes through the plugin's parser: rangeStart and the exclude count.  IPv4
    10.1.0.64-10.1.0.254 of a /24 less 10.1.0.128/28, /27 blocks: .64/27 and .96/27 are full (32
    each), .128/27 loses the 16 excluded (16), .160/27 full (32), .192/27 full (32), .224/27 loses
    .255 (31): 6 blocks, 175 addresses.  IPv6 fd00:1::/64 with blockSizeIPv6 123 (32-address blocks),
    max-pods 40: IPv4 needs ceil(40/16) = 3 blocks a node -> 2 nodes; IPv6 2 blocks -> 2^58 nodes;
    the pool serves 2."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "pooled",
        "ipam": {
            "type": "cni-ipam",
            "ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.64"}], [{"subnet": "fd00:1::/64"}]],
            "exclude": ["10.1.0.128/28"],
            "pool": {
                "name": "p",
                "blockSize": 27,
                "blockSizeIPv6": 123,
                "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
            },
        },
    }
    path = tmp_path / "pool.conf"
    path.write_text(json.dumps(conf))
    rc, doc = pool_plan(capsys, "--pool-conf", str(path), "--max-pods", "40")
    v4, v6 = doc["rangeSets"]
    assert (v4["blocks"], v4["usablePerBlockMin"], v4["usablePerBlockMax"], v4["usableAddresses"]) == (
        6,
        16,
        32,
        32 * 4 + 16 + 31,
    )
    assert (v4["blocksPerNode"], v4["nodesFit"]) == (3, 2)
    assert (v6["blocks"], v6["usablePerBlockMin"], v6["usableAddresses"], v6["blocksPerNode"]) == (
        2**59,
        30,
        2**64 - 3,
        2,
    )
    assert doc["nodesFit"] == 2 and doc["podCapacity"] == 2 * 40 and rc == 0
    path.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "pooled", "plugins": [dict(type="bridge", ipam=conf["ipam"])]})
    )
    assert pool_plan(capsys, "--pool-conf", str(path), "--max-pods", "40")[1]["rangeSets"] == [v4, v6]  # a conflist too


def test_pool_counts_match_walking_the_blocks():
    """The shortcut (only special blocks measured) agrees with the pool's own block walk."""
    from cni_ipam.cluster import blocks as pool
    from cni_ipam.plugin import netconf

    conf = {
        "cniVersion": "1.0.0",
        "name": "w",
        "ipam": {
            "ranges": [
                [{"subnet": "10.2.0.0/22", "rangeStart": "10.2.0.7", "rangeEnd": "10.2.3.200", "gateway": "10.2.1.77"}]
            ],
            "exclude": ["10.2.2.0/25", "10.2.0.30/31"],
            "pool": {"name": "w", "blockSize": 26, "etcd": {"endpoints": ["http://127.0.0.1:2379"]}},
        },
    }
    (rset,) = netconf.load(conf, {}).range_sets
    for size in (24, 26, 27, 29, 32):
        caps = [
            c
            for c in (
                pool.block_capacity(rset, pool.block_cidr(4, lo, size)) for lo in pool.set_block_starts(rset, size)
            )
            if c
        ]
        assert plan.pool_set_blocks(rset, size) == (len(caps), min(caps), max(caps)), size


def test_pool_errors_and_waste(capsys):
    # /28 blocks hold at most 16: 300 pods need ceil(300/14) = 22 blocks, the /24 has 16: no node fits
    rc, doc = pool_plan(capsys, "--pool-subnet", "10.0.0.0/24", "--block-size", "28", "--max-pods", "300")
    assert doc["nodesFit"] == 0 and doc["podCapacity"] == 0 and rc == 2 and "not one node fits" in doc["errors"][0]
    # /25 blocks for 30 pods: the first loses .0 and the gateway .1 (128 - 2), still 4x too big
    rc, doc = pool_plan(capsys, "--pool-subnet", "10.0.0.0/24", "--block-size", "25", "--max-pods", "30")
    assert rc == 1 and "4x" in doc["warnings"][0] and doc["rangeSets"][0]["usablePerBlockMin"] == 128 - 2
    for args, what in [
        (["--pool-subnet", "10.0.0.0/24"], "--block-size"),
        (["--pool-subnet", "10.0.0.0/24", "--block-size", "22"], "larger than the subnet"),
        (["--pool-subnet", "10.0.0.0/24", "--block-size", "28", "--cluster-cidr", "10.0.0.0/16"], "not both"),
        (["--pool-conf", "/nonexistent/x.conf"], "--pool-conf"),
    ]:
        assert plan.main(args) == 64
        assert what in capsys.readouterr().err, args


def test_service_ranges_sharing_a_node_subnet_count_it_once():
    """Two service CIDRs in one node subnet (or one inside another) make that subnet unusable once."""
    rc, doc = plan_json(
        "--cluster-cidr",
        "10.244.0.0/16",
        "--service-cidr",
        "10.244.0.0/25",
        "--service-cidr",
        "10.244.0.128/26",
        "--service-cidr",
        "10.244.0.0/24",
        "--service-cidr",
        "10.244.1.0/28",
    )
    (f,) = doc["families"]
    assert (f["occupiedByServices"], f["availableNodeSubnets"]) == (2, 254) and rc == 1
    assert (
        plan.occupied_subnets([ipaddress.ip_network("10.244.0.0/16")], ipaddress.ip_network("10.244.0.0/16"), 24) == 256
    )
