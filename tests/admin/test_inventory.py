"""`cni-ipam plan --inventory` / `--propose` and `lint --inventory`: the YAML subset, the schema's
errors (with their lines), overlaps, capacity and proposals against brute force on small spaces,
the conf-examples inventory and its output in docs/operations.md."""

import ipaddress
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_ipam.admin import inventory, inventory_lint, inventory_plan, yamlish
from tests.helpers import ROOT, run_admin

EXAMPLE = os.path.join("conf-examples", "inventory.yaml")
DOC = os.path.join(ROOT, "docs", "operations.md")


def parse(text, path="/nonexistent/inventory.yaml"):
    return inventory.parse(text, path)


def plan_json(*args):
    rc, out, err = run_admin("plan", "--json", *args)
    assert out, err
    return rc, json.loads(out)


def write(tmp_path, text, name="inv.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------- the YAML subset
def test_yaml_subset():
    doc = yamlish.loads(
        "---\n"
        "# comment\n"
        "a: 1            # trailing comment\n"
        "b: [x, 'y z', \"q#r\", fd00::/48]\n"
        "c: {ipv4: 24, ipv6: 64}\n"
        "d:\n"
        "- one\n"
        "- k: v\n"
        "  k2: ~\n"
        "-\n"
        "  nested: true\n"
        "e: 'it''s'\n"
        'f: "tab\\there"\n'
        "g:\n"
        "h: 007\n"
    )
    assert doc == {
        "a": 1,
        "b": ["x", "y z", "q#r", "fd00::/48"],
        "c": {"ipv4": 24, "ipv6": 64},
        "d": ["one", {"k": "v", "k2": None}, {"nested": True}],
        "e": "it's",
        "f": "tab\there",
        "g": None,
        "h": "007",
    }
    assert doc.key_lines == {"a": 3, "b": 4, "c": 5, "d": 6, "e": 12, "f": 13, "g": 14, "h": 15}
    assert doc["d"].item_lines == [7, 8, 10]
    assert doc["d"][1].key_lines == {"k": 8, "k2": 9}


@pytest.mark.parametrize(
    "text,line,what",
    [
        ("a: 1\na: 2\n", 2, "duplicate key 'a'"),
        ("a:\n\tb: 1\n", 2, "tab"),
        ("a: &x 1\n", 1, "anchors"),
        ("a: *x\n", 1, "aliases"),
        ("a: !!str 1\n", 1, "tags"),
        ("a: |\n  text\n", 1, "block scalars"),
        ("a: [1, 2\n", 1, "must end with ']'"),
        ("a: 1\n  b: 2\n", 2, "unexpected indentation"),
        ("a: 'open\n", 1, "does not end"),
        ("a: 1\n---\nb: 2\n", 2, "one document"),
        ("a: [[1]]\n", 1, "nested flow"),
        ('a: "\\q"\n', 1, "escape"),
        ("a: 1\n- b\n", 2, "sequence item"),
        ("just words\nmore: 1\n", 1, "expected 'key: value'"),
    ],
)
def test_yaml_errors_name_the_line(text, line, what):
    with pytest.raises(yamlish.YamlError) as exc:
        yamlish.loads(text)
    assert exc.value.line == line and what in exc.value.msg, str(exc.value)


# ---------------------------------------------------------------------------------- schema errors
GOOD = """\
clusters:
  - name: a
    nodes: 10
    clusterCIDR: 10.244.0.0/16
external:
  - name: vpc
    owner: cloud
    kind: vpc
    cidr: 10.0.0.0/16
"""


@pytest.mark.parametrize(
    "old,new,line,what",
    [
        ("    nodes: 10\n", "    nodes: 10\n    nodez: 3\n", 4, "unknown key 'nodez'"),
        ("    nodes: 10\n", "", 2, "'nodes' is missing"),
        ("    nodes: 10\n", "    nodes: 0\n", 3, "at least 1"),
        ("    nodes: 10\n", "    nodes: ten\n", 3, "whole number"),
        ("10.244.0.0/16", "10.244.0.0/33", 4, "not a CIDR"),
        ("10.244.0.0/16", "10.244.1.0/16", 4, "host bits set (the network is 10.244.0.0/16)"),
        ("10.244.0.0/16", "10.244.0.0", 4, "no prefix length"),
        ("    owner: cloud\n", "", 6, "'owner' is missing"),
        ("    kind: vpc\n", "    kind: vcp\n", 8, "kind 'vcp' is not one of"),
        ("  - name: vpc\n", "  - name: a\n", 6, "name 'a' is used twice (first on line 2)"),
        ("    nodes: 10\n", "    nodes: 10\n    maxNodes: 5\n", 4, "maxNodes 5 is less than nodes 10"),
        ("    nodes: 10\n", "    nodes: 10\n    nodeNetworks: vpn\n", 4, "no external network named 'vpn'"),
        ("    nodes: 10\n", "    nodes: 10\n    nodeMask: 12\n", 4, "node mask /12 does not fit clusterCIDR"),
        ("    nodes: 10\n", "    nodes: 10\n    nodeMask: {ipv5: 24}\n", 4, "nodeMask ipv5"),
        ("    clusterCIDR: 10.244.0.0/16\n", "", 2, "no pod addresses"),
        ("clusters:\n", "clusterz:\n", 1, "unknown key 'clusterz'"),
        (
            "    nodes: 10\n",
            "    nodes: 10\n    pools:\n      - subnet: 10.9.0.0/24\n        blockSize: 20\n",
            6,
            "must not be larger than the subnet",
        ),
    ],
)
def test_schema_errors_name_the_line(old, new, line, what):
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    with pytest.raises(inventory.InventoryError) as exc:
        parse(text)
    assert exc.value.line == line and what in exc.value.msg, str(exc.value)


def test_bad_files_are_usage_errors_naming_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("10.244.0.0/16", "banana"))
    rc, out, err = run_admin("plan", "--inventory", path)
    assert rc == 64 and out == "" and f"{path}:4: cluster a: clusterCIDR: 'banana' is not a CIDR" in err
    path = write(tmp_path, "clusters: [\n", "broken.yaml")
    rc, _, err = run_admin("plan", "--inventory", path)
    assert rc == 64 and f"{path}:1: a flow collection must end" in err
    rc, _, err = run_admin("plan", "--inventory", str(tmp_path / "missing.yaml"))
    assert rc == 64 and "cannot read" in err
    path = write(tmp_path, "")
    rc, _, err = run_admin("plan", "--inventory", path)
    assert rc == 64 and "empty" in err


def test_usage_errors(tmp_path):
    path = write(tmp_path, GOOD)
    for args, what in (
        (["--propose", "x", "--nodes", "3"], "go with --inventory"),
        (["--inventory", path, "--nodes", "3"], "go with --propose"),
        (["--inventory", path, "--propose", "x"], "needs --nodes"),
        (["--inventory", path, "--propose", "a", "--nodes", "3"], "already has that name"),
        (["--inventory", path, "--cluster-cidr", "10.0.0.0/8"], "takes the clusters from the file"),
        (["--inventory", path, "--propose", "x", "--nodes", "3", "--growth", "0.5"], "--growth"),
    ):
        rc, out, err = run_admin("plan", *args)
        assert rc == 64 and what in err, (args, err)


# ---------------------------------------------------------------------------------- the example
def test_example_plan():
    rc, doc = plan_json("--inventory", os.path.join(ROOT, EXAMPLE))
    assert rc == 2
    (ov,) = doc["overlaps"]
    assert {ov["a"]["name"], ov["b"]["name"]} == {"office-vpn", "edge"}
    assert ov["shared"] == "172.20.128.0/20" and ov["sharedAddresses"] == 4096
    prod, edge = doc["clusters"]
    assert [(f["family"], f["nodesFit"], f["maximum"]["level"]) for f in prod["families"]] == [
        ("ipv4", 256, "critical"),
        ("ipv6", 256, "critical"),
    ]
    assert prod["families"][0]["firstToRunOut"] == "node CIDRs (10.244.0.0/16, /24)"
    (e4,) = edge["families"]
    assert e4["nodesFit"] == 64 and e4["firstToRunOut"].startswith("pool blocks") and e4["podCapacity"] == 64 * 30
    # the node subnets lie in the VPC the clusters name as nodeNetworks: no overlap reported for them
    assert not any("vpc-main" in e for e in doc["errors"])


def doc_examples():
    """The `$ cni-ipam plan --inventory ...` / `lint --inventory` blocks of docs/operations.md:
    (argv, expected output, expected exit status)."""
    text = open(DOC).read()
    out = []
    for block in re.findall(r"```\n(\$ cni-ipam (?:plan|lint) [^\n]*--inventory.*?)```", text, re.S):
        lines = block.rstrip("\n").split("\n")
        assert lines[-2] == "$ echo $?", block
        out.append((lines[0][len("$ cni-ipam ") :].split(), "\n".join(lines[1:-2]), int(lines[-1])))
    return out


def test_doc_shows_the_real_output():
    examples = doc_examples()
    assert len(examples) >= 3
    for argv, expected, code in examples:
        proc = __import__("subprocess").run(
            [__import__("sys").executable, "-m", "cni_ipam", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        assert (proc.stdout.rstrip("\n"), proc.returncode) == (expected, code), " ".join(argv)


# ---------------------------------------------------------------------------------- exact IPv6
def test_ipv6_slash_32_of_slash_64_is_exact():
    inv = parse(
        "clusters:\n  - name: big\n    nodes: 1000000\n    clusterCIDR: 'fd00::/32'\n"
        "    pools:\n      - {subnet: 'fd01::/32', blockSize: 64}\n"
    )
    (fam,) = inventory_plan.InventoryPlan(inv).clusters[0].families
    # 2^32 node subnets (kube-controller-manager refuses a 32-bit split: an error) + 2^32 pool blocks
    assert fam.limits[0].nodes == 2**32 + 2**32 and fam.fit == 2**33
    assert any("32 bits longer" in e for e in fam.errors)
    prop = inventory_plan.Proposal(inv, "new", 2**30, 110, [ipaddress.ip_network("fd00::/16")])
    pods = next(b for b in prop.blocks if b.role == "clusterCIDR")
    assert pods.cidr == "fd00:1::/33" and prop.fits  # 2^31 /64 node subnets, right after fd00::/32


# ---------------------------------------------------------------------------------- brute force
SPACE = ipaddress.ip_network("10.0.0.0/24")


def addresses(net):
    return set(range(int(net.network_address), int(net.broadcast_address) + 1))


small_nets = st.builds(
    lambda p, i: ipaddress.ip_network((int(SPACE.network_address) + (i % (1 << (p - 24))) * (1 << (32 - p)), p)),
    st.integers(24, 30),
    st.integers(0, 63),
)
entries = st.lists(
    st.tuples(
        st.sampled_from(["ext-a", "ext-b", "c1", "c2"]), st.sampled_from(["pods", "services", "nodes"]), small_nets
    ),
    min_size=1,
    max_size=12,
)


def inventory_text(items):
    """An inventory of the generated (holder, role, net): externals ext-a/ext-b (owners A/B),
    clusters c1/c2 with plain pod ranges, services and node subnets."""
    lines = []
    clusters = {h for h, _, _ in items if h.startswith("c")}
    if clusters:
        lines.append("clusters:")
        for c in sorted(clusters):
            mine = [(r, n) for h, r, n in items if h == c]
            lines += [
                f"  - name: {c}",
                "    nodes: 1",
                "    maxPods: 1",
                "    podRanges: [10.1.0.0/30" + "".join(f", {n}" for r, n in mine if r == "pods") + "]",
            ]
            for role, key in (("services", "serviceCIDR"), ("nodes", "nodeSubnets")):
                nets = [str(n) for r, n in mine if r == role]
                if nets:
                    lines.append(f"    {key}: [{', '.join(nets)}]")
    exts = {h for h, _, _ in items if h.startswith("ext")}
    if exts:
        lines.append("external:")
        for e in sorted(exts):
            nets = [str(n) for h, _, n in items if h == e]
            lines += [f"  - name: {e}", f"    owner: {e[-1].upper()}", f"    cidr: [{', '.join(nets)}]"]
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_overlaps_match_brute_force(items):
    inv = parse(inventory_text(items))
    got = {
        frozenset([(a.holder, a.role, a.cidr, a.line), (b.holder, b.role, b.cidr, b.line)])
        for a, b in inventory_plan.InventoryPlan(inv).overlaps
    }
    want = set()
    claims = inv.claims
    for i, a in enumerate(claims):
        for b in claims[i + 1 :]:
            if a.owner != b.owner and addresses(ipaddress.ip_network((a.lo, a.prefixlen))) & addresses(
                ipaddress.ip_network((b.lo, b.prefixlen))
            ):
                want.add(frozenset([(a.holder, a.role, a.cidr, a.line), (b.holder, b.role, b.cidr, b.line)]))
    assert got == want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, st.integers(24, 32))
def test_free_blocks_match_brute_force(items, prefixlen):
    inv = parse(inventory_text(items))
    used = set()
    for c in inv.claims:
        used |= set(range(c.lo, c.hi + 1))
    space = addresses(SPACE)
    size = 1 << (32 - prefixlen)
    lo = int(SPACE.network_address)
    free_starts = [s for s in range(lo, lo + 256, size) if not (set(range(s, s + size)) & used)]
    gaps = inventory_plan.subtract([(lo, lo + 255)], inventory_plan.merge([(c.lo, c.hi) for c in inv.claims]))
    assert set().union(*(set(range(a, b + 1)) for a, b in gaps)) == space - used
    assert inventory_plan.first_fit(gaps, size) == (free_starts[0] if free_starts else None)
    largest = inventory_plan.largest_block(gaps, 32)
    want = next(
        (
            (s, p)
            for p in range(24, 33)
            for s in range(lo, lo + 256, 1 << (32 - p))
            if not (set(range(s, s + (1 << (32 - p)))) & used)
        ),
        None,
    )
    assert largest == want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(24, 28),
    st.integers(0, 4),
    st.lists(small_nets, max_size=3),
    st.lists(small_nets, max_size=2),
    st.integers(1, 30),
)
def test_capacity_matches_brute_force(prefixlen, extra, services, node_nets, max_pods):
    """Node subnets free of the service CIDRs, pods per node and node addresses, counted one by one."""
    cluster = ipaddress.ip_network(f"10.0.0.0/{prefixlen}")
    mask = min(prefixlen + extra, 30)
    svc = ", ".join(map(str, services))
    text = (
        f"clusters:\n  - name: c\n    nodes: 1\n    maxPods: {max_pods}\n    clusterCIDR: {cluster}\n"
        f"    nodeMask: {mask}\n"
        + (f"    serviceCIDR: [{svc}]\n" if services else "")
        + (f"    nodeSubnets: [{', '.join(map(str, node_nets))}]\n" if node_nets else "")
    )
    (fam,) = inventory_plan.InventoryPlan(parse(text)).clusters[0].families
    svc_addrs = set().union(*(addresses(s) for s in services)) if services else set()
    free_subnets = [n for n in cluster.subnets(new_prefix=mask) if not (addresses(n) & svc_addrs)]
    assert fam.limits[0].nodes == len(free_subnets)
    usable = len([a for a in list(ipaddress.ip_network(f"10.0.0.0/{mask}"))[2:-1]])  # no network, gateway, broadcast
    assert fam.pods_per_node == min(usable, max_pods)
    want = len(free_subnets)
    if node_nets:
        node_addrs = sum(len(list(n)) - 3 if n.prefixlen <= 30 else 0 for n in node_nets)
        assert fam.limits[1].nodes == node_addrs
        want = min(want, node_addrs)
    assert fam.fit == want


# ---------------------------------------------------------------------------------- conf dirs and pools
def test_cluster_from_conf_dir_and_pool_conf(tmp_path):
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "10-pods.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "pods",
                "plugins": [{"type": "bridge", "ipam": {"type": "cni-ipam", "ranges": [[{"subnet": "10.50.0.0/22"}]]}}],
            }
        )
    )
    (net_d / "20-other.conf").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "bridge", "ipam": {"type": "dhcp"}})
    )
    pool_conf = os.path.join(ROOT, "conf-examples", "cluster", "10-macvlan-pool.conflist")
    path = write(
        tmp_path,
        f"clusters:\n  - name: c\n    nodes: 2\n    maxPods: 100\n    confDir: net.d\n    poolConfs: {pool_conf}\n",
    )
    rc, doc = plan_json("--inventory", path)
    (c,) = doc["clusters"]
    fams = {f["family"]: f for f in c["families"]}
    # 10.50.0.0/22: 1021 addresses = 10 nodes at 100 pods; + the pool's /27 blocks of 192.168.60.0/23
    assert fams["ipv4"]["limits"][0]["what"].startswith("pool blocks (192.168.60.0/23, /27) + pod addresses")
    assert "ipv6" in fams
    rng = [r for r in inventory.load(path).claims if r.source.endswith("10-pods.conflist")]
    assert [r.cidr for r in rng] == ["10.50.0.0/22"]
    assert rc in (0, 1)


# ---------------------------------------------------------------------------------- lint --inventory
def conf(tmp_path, name, subnet):
    path = tmp_path / f"{name}.conflist"
    path.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [{"type": "bridge", "ipam": {"type": "cni-ipam", "ranges": [[{"subnet": subnet}]]}}],
            }
        )
    )
    return str(path)


def lint_json(*args):
    rc, out, err = run_admin("lint", "--json", "--no-host", *args)
    assert out, err
    return rc, json.loads(out)


def test_lint_against_the_inventory(tmp_path):
    inv = os.path.join(ROOT, EXAMPLE)
    inside = conf(tmp_path, "inside", "10.244.7.0/24")
    rc, doc = lint_json(inside, "--inventory", inv, "--cluster", "prod")
    assert rc == 0 and doc["errors"] == 0, doc
    rc, doc = lint_json(inside, "--inventory", inv)  # the cluster inferred
    assert rc == 0 and doc["errors"] == 0, doc
    rc, doc = lint_json(inside, "--inventory", inv, "--cluster", "edge")
    outside, overlap = sorted((f for f in doc["findings"] if f["level"] == "error"), key=lambda f: f["check"])
    assert (
        rc == 1
        and outside["check"] == "inventory-outside"
        and "outside cluster edge's claimed space" in outside["message"]
    )
    assert overlap["check"] == "inventory-overlap" and "cluster prod pods 10.244.0.0/16" in overlap["message"]
    vpn = conf(tmp_path, "vpn", "172.20.1.0/24")
    rc, doc = lint_json(vpn, "--inventory", inv, "--cluster", "prod")
    checks = sorted(f["check"] for f in doc["findings"] if f["level"] == "error")
    assert rc == 1 and checks == ["inventory-outside", "inventory-overlap"], doc["findings"]
    assert any("office-vpn" in f["message"] for f in doc["findings"])
    other = conf(tmp_path, "other", "10.60.1.0/24")  # edge's pool, checked as prod's
    rc, doc = lint_json(other, "--inventory", inv, "--cluster", "prod")
    assert any(
        f["check"] == "inventory-overlap" and "cluster edge pods 10.60.0.0/21" in f["message"] for f in doc["findings"]
    )
    nowhere = conf(tmp_path, "nowhere", "10.200.0.0/24")
    rc, doc = lint_json(nowhere, "--inventory", inv)
    assert rc == 1 and "in no cluster's claimed space" in doc["findings"][-1]["message"]
    assert run_admin("lint", inside, "--inventory", inv, "--cluster", "nope")[0] == 64
    assert run_admin("lint", inside, "--cluster", "prod")[0] == 64


# ---------------------------------------------------------------------------------- 1,000 ranges
def big_inventory(n_clusters=100, n_external=500):
    """100 clusters (pods, services, nodes, dual stack: 500 ranges) and 500 external networks, with a
    known set of overlaps: every 50th external network lies on a cluster's pod range."""
    lines = ["clusters:"]
    for i in range(n_clusters):
        lines += [
            f"  - name: c{i}",
            "    nodes: 50",
            f"    clusterCIDR: [10.{i}.0.0/16, 'fd00:{i:x}::/56']",
            f"    serviceCIDR: [172.16.{i}.0/24, 'fd01:{i:x}::/112']",
            f"    nodeSubnets: 192.168.{i}.0/24",
        ]
    lines.append("external:")
    expected = 0
    for j in range(n_external):
        if j % 50 == 0:
            cidr = f"10.{j // 50}.128.0/20"
            expected += 1
        else:
            cidr = f"100.{64 + j // 256}.{j % 256}.0/24"
        lines += [f"  - name: e{j}", f"    owner: team{j % 7}", "    kind: other", f"    cidr: {cidr}"]
    return "\n".join(lines) + "\n", expected


def test_a_thousand_ranges(tmp_path):
    text, expected = big_inventory()
    inv = parse(text)
    assert len(inv.claims) == 1000
    report = inventory_plan.InventoryPlan(inv)
    assert len(report.overlaps) == expected
    # IPv4: the /24 of node addresses (253) runs out before the 256 node CIDRs; IPv6 has no node subnet
    assert {(f.version, f.fit, f.first_out.what.split(" (")[0]) for c in report.clusters for f in c.families} == {
        (4, 253, "node addresses"),
        (6, 256, "node CIDRs"),
    }
    prop = inventory_plan.Proposal(inv, "new", 100, 110, [ipaddress.ip_network("10.0.0.0/8")])
    assert prop.fits and next(b for b in prop.blocks if b.role == "clusterCIDR").cidr == "10.100.0.0/16"

    class Rec:  # the part of lint's RangeRecord the check reads
        def __init__(self, subnet):
            from cni_ipam.plugin.ranges import Range

            self.range = Range.of_subnet(ipaddress.ip_network(subnet))
            self.file, self.key = "x.conflist", "ipam.ranges[0][0]"

        def text(self):
            return str(self.range.subnet)

    found = inventory_lint.check(inv, [Rec(f"10.{i}.3.0/24") for i in range(100)] + [Rec("10.0.130.0/24")], None)
    assert [(f[3], f[2].split(" overlaps ")[-1]) for f in found] == [
        ("inventory-overlap", "other e0 (owner team0) 10.0.128.0/20 (/nonexistent/inventory.yaml:506)")
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, st.integers(1, 6), st.integers(1, 3), st.integers(1, 20), st.sampled_from([1.0, 1.5, 2.0, 3.0]))
def test_proposals_match_brute_force(items, nodes, max_pods, services, growth):
    """Each block of a proposal inside 10.0.0.0/24, replayed address by address: largest first, each at
    the lowest aligned start whose addresses are all free; else the largest free aligned block."""
    inv = parse(inventory_text(items))
    prop = inventory_plan.Proposal(inv, "new", nodes, max_pods, [SPACE], growth, services)
    used = set()
    for c in inv.claims:
        used |= set(range(c.lo, c.hi + 1))
    lo = int(SPACE.network_address)
    for b in sorted(prop.blocks, key=lambda b: b.prefixlen):
        size = 1 << (32 - b.prefixlen) if b.prefixlen >= 24 else None
        starts = [] if size is None else [s for s in range(lo, lo + 256, size) if not (set(range(s, s + size)) & used)]
        if starts:
            assert b.start == starts[0], (b.role, b.prefixlen)
            used |= set(range(b.start, b.start + size))
        else:
            assert b.start is None
            want = next(
                (
                    (s, p)
                    for p in range(24, 33)
                    for s in range(lo, lo + 256, 1 << (32 - p))
                    if not (set(range(s, s + (1 << (32 - p)))) & used)
                ),
                None,
            )
            assert b.largest == want
    assert prop.fits == all(b.start is not None for b in prop.blocks)
    assert prop.exit_code == (0 if prop.fits else 2)


def test_propose_json_and_does_not_fit():
    rc, doc = plan_json(
        "--inventory", os.path.join(ROOT, EXAMPLE), "--propose", "big", "--nodes", "3000", "--within", "10.0.0.0/12"
    )
    pods = next(b for b in doc["blocks"] if b["role"] == "clusterCIDR")
    assert rc == 2 and not doc["fits"] and pods["cidr"] is None and pods["prefixLength"] == 11
    assert pods["largestFree"] == "10.8.0.0/13"
    rc, doc = plan_json(
        "--inventory",
        os.path.join(ROOT, EXAMPLE),
        "--propose",
        "small",
        "--nodes",
        "10",
        "--max-pods",
        "30",
        "--services",
        "100",
        "--growth",
        "1.5",
        "--within",
        "172.16.0.0/12",
    )
    assert rc == 0 and doc["fits"] and doc["maxNodes"] == 15
    got = {b["role"]: b["cidr"] for b in doc["blocks"]}
    # 172.16/14 is the data centre's, 172.20/16 the VPN's: the first free space is 172.21.0.0
    assert got == {"clusterCIDR": "172.21.0.0/22", "serviceCIDR": "172.21.4.0/24", "nodeSubnets": "172.21.5.0/27"}


def test_lint_inventory_usage_errors(tmp_path):
    inside = conf(tmp_path, "inside", "10.244.7.0/24")
    bad = write(tmp_path, "clusters:\n  - name: a\n    nodes: x\n")
    rc, out, err = run_admin("lint", "--no-host", inside, "--inventory", bad)
    assert rc == 64 and f"{bad}:3: cluster a: nodes must be a whole number" in err


yaml_noise = st.text(alphabet=st.sampled_from(list("ab1:- #[]{},'\"\\\n\t~&*!|>./")), max_size=80)


@settings(max_examples=1000, deadline=None)
@given(yaml_noise)
def test_any_text_is_a_document_or_an_error_with_a_line(text):
    """Whatever the file holds, the reader answers or raises YamlError naming a line of the file;
    the schema check then answers or raises InventoryError: never another exception."""
    try:
        yamlish.loads(text)
    except yamlish.YamlError as exc:
        assert 1 <= exc.line <= max(text.count("\n") + 1, 1)
    try:
        parse(text)
    except inventory.InventoryError as exc:
        assert exc.msg


scalars = st.one_of(
    st.integers(-2, 200),
    st.booleans(),
    st.none(),
    st.sampled_from(
        ["10.0.0.0/16", "fd00::/48", "10.0.0.1/16", "x", "", "vpc", "a", "10.0.0.0/40", "/nonexistent", ".", "ipv4"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [*inventory.CLUSTER_KEYS, *inventory.EXTERNAL_KEYS, "ipv4", "ipv6", "subnet", "blockSize", "x"]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=12,
)


def to_yaml(value, indent=0):
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return " {}"
        return "".join(f"\n{pad}{k}:{to_yaml(v, indent + 2)}" for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return " []"
        return "".join(f"\n{pad}-{to_yaml(v, indent + 2)}" for v in value)
    if value is None:
        return " null"
    if isinstance(value, bool):
        return " true" if value else " false"
    return f" {value}" if isinstance(value, int) else f" '{value}'"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.dictionaries(st.sampled_from(inventory.CLUSTER_KEYS), values, max_size=8), max_size=2),
    st.lists(st.dictionaries(st.sampled_from(inventory.EXTERNAL_KEYS), values, max_size=5), max_size=2),
)
def test_any_structure_is_an_inventory_or_an_error_with_a_line(clusters, externals):
    text = "clusters:" + to_yaml(clusters, 2) + "\nexternal:" + to_yaml(externals, 2) + "\n"
    assert yamlish.loads(text) == {"clusters": clusters or [], "external": externals or []}
    try:
        parse(text)
    except inventory.InventoryError as exc:
        assert 1 <= exc.line <= text.count("\n") + 1, (exc, text)


def test_a_service_cidr_inside_its_own_cluster_cidr_is_a_warning():
    inv = parse(
        "clusters:\n  - name: a\n    nodes: 10\n    clusterCIDR: 10.0.0.0/8\n    serviceCIDR: 10.96.0.0/12\n"
        "  - name: b\n    nodes: 10\n    podRanges: 172.16.0.0/16\n    serviceCIDR: 172.16.1.0/24\n"
        "  - name: c\n    nodes: 10\n    clusterCIDR: 192.168.0.0/16\n    serviceCIDR: 192.168.254.0/23\n"
    )
    report = inventory_plan.InventoryPlan(inv)
    levels = {(a.holder, lv) for (a, _), lv in zip(report.overlaps, report.levels)}
    assert levels == {("a", "warning"), ("b", "error"), ("c", "warning")}
    assert report.exit_code == 2 and len(report.errors) == 1 and "cluster b services" in report.errors[0]
    (a_fam,) = report.clusters[0].families
    assert a_fam.fit == 2**16 - 2**12  # the service /12 takes 4096 of the /24 node subnets
