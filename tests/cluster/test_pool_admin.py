"""``cni-ipam pool show | metrics | release-node | gc`` against real etcd, pools filled by the real
plugin (tests/cluster/poolkit.py) or written in the pool's key schema (conftest.seed_node), and the
stand-in Kubernetes API server of the usePodCidr tests for ``gc``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cni_ipam.cluster import admin
from cni_ipam.cluster import pool as poolmod
from cni_ipam.cluster.etcd import EtcdClient
from tests.cluster.conftest import seed_node
from tests.cluster.poolkit import call, etcd_blocks, pool_conf
from tests.helpers import ROOT

SUBNET = "10.77.0.0/24"  # 16 blocks of /28; the first has 14 addresses (network, gateway), the last 15


def block(i: int) -> str:
    return f"10.77.0.{16 * i}/28"


@pytest.fixture
def pool_env(etcd_single, etcd_prefix, tmp_path):
    """A conf file for pool "p" under a fresh prefix, an etcd client, and a helper to run the command."""
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", str(tmp_path / "node-a"), block=28,
                     ranges=[[{"subnet": SUBNET, "gateway": "10.77.0.1"}]])
    path = tmp_path / "10-pool.conf"
    path.write_text(json.dumps(conf))
    client = EtcdClient(etcd_single.endpoints)

    class Env:
        prefix = etcd_prefix.decode().rstrip("/")
        conf_file = str(path)
        etcd = client
        cluster = etcd_single
        tmp = tmp_path

        def conf_for(self, node):
            return pool_conf(etcd_single, etcd_prefix, node, str(tmp_path / node), block=28,
                             ranges=[[{"subnet": SUBNET, "gateway": "10.77.0.1"}]])

        def run(self, *argv, capsys):
            rc = admin.main(list(argv) + ["--conf", str(path)])
            out, err = capsys.readouterr()
            return rc, out, err

        def show_json(self, capsys, *extra):
            rc, out, err = self.run("show", "--json", *extra, capsys=capsys)
            return rc, json.loads(out), err

    yield Env()
    client.close()


def test_show_counts_what_real_nodes_claimed(pool_env, capsys):
    for node, pods in (("node-a", 20), ("node-b", 3)):
        conf = pool_env.conf_for(node)
        for i in range(pods):
            rc, res = call("ADD", conf, f"{node}-{i}")
            assert rc == 0, res
    claims = etcd_blocks(pool_env.cluster, (pool_env.prefix + "/").encode())
    rc, doc, err = pool_env.show_json(capsys)
    assert rc == 0, err
    (p,) = doc["pools"]
    (s,) = p["sets"]
    assert (s["blocks"], s["heldBlocks"], s["freeBlocks"]) == (16, len(claims), 16 - len(claims))
    assert s["addresses"] == 253
    nodes = {n["node"]: n for n in p["nodes"]}
    assert set(nodes) == {"node-a", "node-b"}
    for name, n in nodes.items():
        assert sorted(b["cidr"] for b in n["blocks"]) == sorted(c for c, v in claims.items() if v["node"] == name)
        assert n["ageSeconds"] < 120 and not n["silent"]
    assert nodes["node-a"]["heldBlocks"] >= 2  # 20 pods do not fit in one /28
    # what was published is at most what is reserved now (a node publishes when it claims or verifies)
    assert 0 < nodes["node-a"]["usedAddresses"] <= 20 and s["usedAddresses"] == sum(n["usedAddresses"] for n in nodes.values())
    rc, out, _ = pool_env.run("show", capsys=capsys)
    assert rc == 0
    assert "node-a" in out and "node-b" in out and "LAST-SEEN" in out and "/28" in out


@pytest.mark.parametrize("held, level, rc", [(8, "ok", 0), (12, "warning", 1), (14, "critical", 2), (16, "emergency", 3)])
def test_show_levels_from_held_blocks(pool_env, capsys, held, level, rc):
    now = time.time()
    for i in range(held):
        seed_node(pool_env.etcd, pool_env.prefix, "p", f"node-{i}", [block(i)], used=1, last_seen=now)
    got_rc, doc, _ = pool_env.show_json(capsys)
    s = doc["pools"][0]["sets"][0]
    assert (s["heldBlocks"], s["freeBlocks"], s["level"], doc["level"]) == (held, 16 - held, level, level)
    assert got_rc == rc
    assert s["usedPercent"] < 10  # the blocks, not the addresses, set this level


def test_show_levels_from_used_addresses_and_per_node(pool_env, capsys):
    now = time.time()
    seed_node(pool_env.etcd, pool_env.prefix, "p", "full", [block(1), block(2)], used={block(1): 16, block(2): 15}, last_seen=now)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "busy", [block(3)], used=12, last_seen=now)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "calm", [block(4)], used=1, last_seen=now)
    rc, doc, _ = pool_env.show_json(capsys, "--warning", "10", "--critical", "20", "--emergency", "90")
    nodes = {n["node"]: n for n in doc["pools"][0]["nodes"]}
    assert (nodes["full"]["usedAddresses"], nodes["full"]["capacity"], nodes["full"]["level"]) == (31, 32, "emergency")
    assert (nodes["busy"]["percent"], nodes["busy"]["level"]) == (75.0, "critical")
    assert (nodes["busy"]["freeAddresses"], nodes["calm"]["level"]) == (4, "ok")
    s = doc["pools"][0]["sets"][0]
    assert s["usedAddresses"] == 44 and s["usedPercent"] == round(100 * 44 / 253, 2)
    assert s["level"] == "critical" and rc == 2  # 17.4 % of the addresses, 25 % of the blocks


def test_show_silent_and_unpublished_nodes(pool_env, capsys):
    now = time.time()
    seed_node(pool_env.etcd, pool_env.prefix, "p", "fresh", [block(1)], used=3, last_seen=now - 30)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "quiet", [block(2)], used=3, last_seen=now - 7200)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "never", [block(3)])  # a claim, no usage record
    rc, doc, _ = pool_env.show_json(capsys)
    p = doc["pools"][0]
    assert p["silentNodes"] == ["never", "quiet"]
    nodes = {n["node"]: n for n in p["nodes"]}
    assert nodes["never"]["usedAddresses"] is None and nodes["never"]["lastSeen"] is None
    assert nodes["never"]["unpublishedBlocks"] == 1 and nodes["never"]["level"] == "unknown"
    assert 7190 < nodes["quiet"]["ageSeconds"] < 7300
    rc, out, _ = pool_env.run("show", "--silent-after", "60", capsys=capsys)
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("p ") and "node" not in line[:4]}
    assert "never published" in lines["never"] and "silent" in lines["quiet"] and "silent" not in lines["fresh"]
    assert "2 silent node(s)" in out
    rc, doc, _ = pool_env.show_json(capsys, "--silent-after", "10")
    assert doc["pools"][0]["silentNodes"] == ["fresh", "never", "quiet"]


def test_show_reports_claims_outside_the_grid_and_junk(pool_env, capsys):
    now = time.time()
    seed_node(pool_env.etcd, pool_env.prefix, "p", "odd", ["10.77.0.64/27", "10.99.0.0/28"], used=1, last_seen=now)
    pool_env.etcd.put(poolmod.nodes_prefix(pool_env.prefix, "p") + b"NOT_A_NODE", b"{}")
    pool_env.etcd.put(poolmod.block_key(pool_env.prefix, "p", "10.77.0.128/28"), b"not json")
    pool_env.etcd.put(poolmod.grid_key(pool_env.prefix, "p", 4), b"27")
    rc, doc, _ = pool_env.show_json(capsys)
    p = doc["pools"][0]
    assert sorted(o["cidr"] for o in p["claimsOutsideGrid"]) == ["10.77.0.128/28", "10.77.0.64/27", "10.99.0.0/28"]
    assert p["gridMismatch"] == ["ipv4: etcd pins /27, the conf says /28"]
    assert len(p["malformedKeys"]) == 2
    assert p["sets"][0]["heldBlocks"] == 0  # none of them is a block of this grid
    rc, out, _ = pool_env.run("show", capsys=capsys)
    assert "block size mismatch" in out and "10.99.0.0/28" in out and "malformed key" in out


def test_show_when_etcd_is_down(pool_env, capsys, tmp_path):
    conf = json.loads(open(pool_env.conf_file).read())
    conf["ipam"]["pool"]["etcd"]["endpoints"] = ["http://127.0.0.1:9"]
    conf["ipam"]["pool"]["etcd"]["timeout"] = 0.5
    path = tmp_path / "down.conf"
    path.write_text(json.dumps(conf))
    rc = admin.main(["show", "--conf", str(path)])
    out, err = capsys.readouterr()
    assert rc == 4 and "error" in out and "127.0.0.1:9" in out
    rc = admin.main(["metrics", "--conf", str(path)])
    out, err = capsys.readouterr()
    assert rc == 1 and 'cni_ipam_pool_etcd_up{pool="p"} 0.0' in out and "127.0.0.1:9" in err


def test_no_pool_in_the_confs(tmp_path, capsys):
    (tmp_path / "plain.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                                                     "ipam": {"type": "cni-ipam", "subnet": "10.1.0.0/24"}}))
    assert admin.main(["show", "--conf-dir", str(tmp_path)]) == 4
    assert "no pool found" in capsys.readouterr().err
    assert admin.main(["show", "--bogus"]) == 64  # usage error: one code for every admin command


def test_metrics_text_format(pool_env, capsys):
    from prometheus_client.parser import text_string_to_metric_families

    now = time.time()
    seed_node(pool_env.etcd, pool_env.prefix, "p", "node-a", [block(1), block(2)], used=5, last_seen=now - 10)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "node-b", [block(3)])
    rc, out, err = pool_env.run("metrics", capsys=capsys)
    assert rc == 0, err
    samples = {}
    for fam in text_string_to_metric_families(out):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    set_labels = (("family", "ipv4"), ("pool", "p"), ("range_set", "0"))
    assert samples[("cni_ipam_pool_blocks", set_labels)] == 16
    assert samples[("cni_ipam_pool_blocks_held", set_labels)] == 3
    assert samples[("cni_ipam_pool_blocks_free", set_labels)] == 13
    assert samples[("cni_ipam_pool_addresses_used", set_labels)] == 10
    assert samples[("cni_ipam_pool_node_addresses", (("node", "node-a"), ("pool", "p")))] == 32
    assert samples[("cni_ipam_pool_node_silent", (("node", "node-b"), ("pool", "p")))] == 1
    assert abs(samples[("cni_ipam_pool_node_last_seen_timestamp_seconds", (("node", "node-a"), ("pool", "p")))] - (now - 10)) < 1
    assert ("cni_ipam_pool_node_addresses_used", (("node", "node-b"), ("pool", "p"))) not in samples  # unknown, not 0
    assert samples[("cni_ipam_pool_etcd_up", (("pool", "p"),))] == 1
    rc = admin.main(["metrics", "--conf", pool_env.conf_file, "--textfile-dir", str(pool_env.tmp)])
    assert rc == 0 and "cni_ipam_pool_blocks_held" in (pool_env.tmp / "cni_ipam_pool.prom").read_text()


# ------------------------------------------------------------------------------------ release-node
def held_by(pool_env, node):
    return sorted(c for c, v in etcd_blocks(pool_env.cluster, (pool_env.prefix + "/").encode()).items() if v["node"] == node)


def test_release_node_refuses_a_recently_seen_node_then_releases_with_force(pool_env, capsys):
    now = time.time()
    seed_node(pool_env.etcd, pool_env.prefix, "p", "gone", [block(1), block(2)], used=3, last_seen=now - 30)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "other", [block(3)], used=3, last_seen=now - 30)
    rc, out, err = pool_env.run("release-node", "gone", capsys=capsys)
    assert rc == 1 and "refused" in err and "looks alive" in err
    assert held_by(pool_env, "gone") == [block(1), block(2)]
    rc, out, err = pool_env.run("release-node", "gone", "--force", "--dry-run", capsys=capsys)
    assert rc == 0 and "would release 2 block(s)" in out
    assert held_by(pool_env, "gone") == [block(1), block(2)]
    rc, out, err = pool_env.run("release-node", "gone", "--force", "--json", capsys=capsys)
    assert rc == 0, err
    res = json.loads(out)["results"][0]
    assert res["released"] == [block(1), block(2)] and res["recordRemoved"] and not res["alive"]
    assert held_by(pool_env, "gone") == [] and held_by(pool_env, "other") == [block(3)]
    assert pool_env.etcd.get(poolmod.node_key(pool_env.prefix, "p", "gone")) is None


def test_release_node_after_silence_needs_no_force(pool_env, capsys):
    seed_node(pool_env.etcd, pool_env.prefix, "p", "old", [block(5)], used=1, last_seen=time.time() - 3600)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "unpublished", [block(6)])
    for node in ("old", "unpublished"):
        rc, out, err = pool_env.run("release-node", node, capsys=capsys)
        assert rc == 0, err
        assert held_by(pool_env, node) == []
    rc, out, err = pool_env.run("release-node", "Not_A_Node", capsys=capsys)
    assert rc == 64  # usage error (options.EXIT_USAGE)


def test_release_node_stops_when_the_node_writes_meanwhile(pool_env):
    """A node that publishes during the release is alive: the remaining blocks stay its own."""
    seed_node(pool_env.etcd, pool_env.prefix, "p", "zombie", [block(1), block(2), block(3)], used=1, last_seen=time.time() - 3600)
    target = admin.load_pools([pool_env.conf_file], None)[0][0]
    record_key = poolmod.node_key(pool_env.prefix, "p", "zombie")

    class NodeWakesUp:
        def __init__(self, client):
            self.client, self.txns = client, 0

        def __getattr__(self, name):
            return getattr(self.client, name)

        def txn(self, *a):
            got = self.client.txn(*a)
            self.txns += 1
            if self.txns == 1:  # the node publishes its usage right after the first release
                self.client.put(record_key, json.dumps({"node": "zombie", "lastSeen": time.time()}).encode())
            return got

    res = admin.release_node_blocks(NodeWakesUp(pool_env.etcd), target, "zombie", apply=True)
    assert res["alive"] and res["released"] == [block(1)] and res["failed"] == [block(2), block(3)]
    assert held_by(pool_env, "zombie") == [block(2), block(3)]
    assert pool_env.etcd.get(record_key) is not None


def test_released_blocks_serve_another_node(pool_env, capsys):
    """End to end with the real plugin: node-a holds the whole pool, node-b's ADD fails; after
    node-a is released, node-b gets an address from one of node-a's former blocks."""
    conf = json.loads(open(pool_env.conf_file).read())
    small = [[{"subnet": "10.77.0.0/27", "gateway": "10.77.0.1"}]]  # two /28 blocks: 14 + 15 addresses
    conf["ipam"]["ranges"] = small
    path = pool_env.tmp / "small.conf"
    path.write_text(json.dumps(conf))
    conf_b = json.loads(json.dumps(conf))
    conf_b["ipam"]["pool"]["nodeName"] = "node-b"
    conf_b["ipam"]["dataDir"] = str(pool_env.tmp / "node-b")
    for i in range(29):
        rc, res = call("ADD", conf, f"a-{i}")
        assert rc == 0, res
    rc, res = call("ADD", conf_b, "b-0")
    assert rc == 1 and res["code"] == 107, res
    assert admin.main(["release-node", "node-a", "--conf", str(path)]) == 1  # it was seen just now
    capsys.readouterr()
    assert admin.main(["release-node", "node-a", "--force", "--conf", str(path)]) == 0
    rc, res = call("ADD", conf_b, "b-1")
    assert rc == 0, res
    assert list(etcd_blocks(pool_env.cluster, (pool_env.prefix + "/").encode()).values())[0]["node"] == "node-b"


def test_release_node_via_the_cni_ipam_command(pool_env):
    seed_node(pool_env.etcd, pool_env.prefix, "p", "cli-node", [block(7)], used=0, last_seen=time.time() - 3600)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", "pool", "release-node", "cli-node", "--conf", pool_env.conf_file],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "released 1 block(s): 10.77.0.112/28" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert "pool" in proc.stdout


# ------------------------------------------------------------------------------------ gc with the API server
@pytest.fixture
def kube(tmp_path):
    from tests.integration.podcidr_apiserver import ApiServer, Pki, write_kubeconfig

    pki = Pki(str(tmp_path / "kpki"))
    api = ApiServer(pki, nodes={"alive": ["10.244.1.0/24"]}, token="gc-token")
    kc = write_kubeconfig(str(tmp_path / "kubeconfig"), api.url, ca_file=pki.ca_file, token="gc-token")
    yield api, kc
    api.stop()


def test_gc_releases_only_nodes_the_api_says_are_gone(pool_env, kube, capsys):
    api, kc = kube
    now = time.time()
    seed_node(pool_env.etcd, pool_env.prefix, "p", "alive", [block(1)], used=2, last_seen=now - 3600)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "gone", [block(2), block(3)], used=2, last_seen=now - 3600)
    seed_node(pool_env.etcd, pool_env.prefix, "p", "renamed", [block(4)], used=2, last_seen=now - 5)
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, capsys=capsys)  # dry run
    assert "node gone: gone (404" in out and "node alive: exists" in out and "node renamed: kept" in out
    assert "nodeName" in out and "dry run" in out and rc == 1  # a kept node is reported with status 1
    assert held_by(pool_env, "gone") == [block(2), block(3)]
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, "--apply", "--json", capsys=capsys)
    doc = json.loads(out)
    verdicts = {n["node"]: n["verdict"] for n in doc["pools"][0]["nodes"]}
    assert verdicts == {"alive": "exists", "gone": "gone", "renamed": "kept"}
    assert doc["pools"][0]["results"][0]["released"] == [block(2), block(3)]
    assert held_by(pool_env, "gone") == [] and held_by(pool_env, "alive") == [block(1)] and held_by(pool_env, "renamed") == [block(4)]
    assert api.node_requests() >= 6


def test_gc_without_a_clear_answer_releases_nothing(pool_env, kube, capsys):
    api, kc = kube
    seed_node(pool_env.etcd, pool_env.prefix, "p", "gone", [block(2)], used=2, last_seen=time.time() - 3600)
    api.fail_status = 503
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and "no clear answer" in out and held_by(pool_env, "gone") == [block(2)]
    # a 404 whose Status is not NotFound (a proxy, a wrong path): its message says "(404 ... not
    # found at" like a missing node's, but only the structured status counts
    api.fail_status = 404
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and "no clear answer" in out and "(404" in out and held_by(pool_env, "gone") == [block(2)]
    api.fail_status = 0
    api.stop()  # the API server is down: a timeout / refused connection is no evidence either
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, "--apply", "--kube-timeout", "1", capsys=capsys)
    assert rc == 1 and "kept" in out and held_by(pool_env, "gone") == [block(2)]


def test_gc_refuses_when_no_node_of_the_pool_exists(pool_env, kube, capsys):
    api, kc = kube
    now = time.time()
    for i, node in enumerate(("x1", "x2")):
        seed_node(pool_env.etcd, pool_env.prefix, "p", node, [block(8 + i)], used=1, last_seen=now - 3600)
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and "none of the pool's nodes exists" in err
    assert held_by(pool_env, "x1") == [block(8)]
    rc, out, err = pool_env.run("gc", "--kubeconfig", kc, "--apply", "--force", capsys=capsys)
    assert rc == 0, err
    assert held_by(pool_env, "x1") == [] and held_by(pool_env, "x2") == []


def test_release_node_asks_kubernetes_when_told(pool_env, kube, capsys):
    api, kc = kube
    seed_node(pool_env.etcd, pool_env.prefix, "p", "alive", [block(1)], used=2, last_seen=time.time() - 3600)
    rc, out, err = pool_env.run("release-node", "alive", "--kubeconfig", kc, capsys=capsys)
    assert rc == 1 and "still exists in Kubernetes" in err and held_by(pool_env, "alive") == [block(1)]
    api.nodes.pop("alive")
    rc, out, err = pool_env.run("release-node", "alive", "--kubeconfig", kc, capsys=capsys)
    assert rc == 0, err
    assert held_by(pool_env, "alive") == []


def test_gc_with_a_bad_kubeconfig(pool_env, tmp_path, capsys):
    rc, out, err = pool_env.run("gc", "--kubeconfig", str(tmp_path / "missing"), capsys=capsys)
    assert rc == 64 and "missing" in err  # usage error (options.EXIT_USAGE)


def test_admin_etcd_credentials_from_the_command_line(etcd_auth, tmp_path, capsys):
    """The admin may use other credentials than the nodes: --username/--password-file override."""
    prefix = etcd_auth.limited_prefix.decode() + "admin-test"
    conf = {"cniVersion": "1.0.0", "name": "poolnet", "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path / "d"), "ranges": [[{"subnet": SUBNET}]],
                     "pool": {"name": "p", "blockSize": 28, "nodeName": "n1",
                              "etcd": {"endpoints": etcd_auth.endpoints, "prefix": prefix}}}}
    path = tmp_path / "auth.conf"
    path.write_text(json.dumps(conf))
    pw = tmp_path / "pw"
    pw.write_text(etcd_auth.users["limited"] + "\n")
    root = EtcdClient(etcd_auth.endpoints, **etcd_auth.client_kwargs("root"))
    seed_node(root, prefix, "p", "n1", [block(1)], used=4, last_seen=time.time())
    assert admin.main(["show", "--conf", str(path)]) == 4  # no credentials in the conf
    assert "user name is empty" in capsys.readouterr().out
    rc = admin.main(["show", "--json", "--conf", str(path), "--username", "limited", "--password-file", str(pw)])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert json.loads(out)["pools"][0]["nodes"][0]["usedAddresses"] == 4
    pw.write_text("wrong")
    assert admin.main(["show", "--conf", str(path), "--username", "limited", "--password-file", str(pw)]) == 4
    out, err = capsys.readouterr()
    assert "authentication" in out and etcd_auth.users["limited"] not in out + err
    root.close()


@pytest.mark.parametrize("ranges, size", [
    ([{"subnet": "10.9.0.0/22", "gateway": "10.9.1.77", "exclude": ["10.9.2.0/25", "10.9.3.200"]}], 26),
    ([{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.50", "rangeEnd": "10.9.0.140"},
      {"subnet": "10.9.4.0/23", "exclude": ["10.9.4.0/27"]}], 27),
    ([{"subnet": "10.9.0.0/28"}], 32),
    ([{"subnet": "fd00:9::/118", "exclude": ["fd00:9::100/120"]}], 122),
])
def test_grid_capacities_match_the_pool_block_math(ranges, size):
    """The view's shortcut (only edge blocks are computed) agrees with cluster.pool's block math."""
    from cni_ipam.plugin import netconf as config

    cfg = config.load({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                       "ipam": {"type": "cni-ipam", "ranges": [ranges]}}, {})
    rset = cfg.range_sets[0]
    view = admin.SetView(0, rset, size, (70, 85, 95))
    brute = {}
    for lo in poolmod.set_block_starts(rset, size):
        cidr = poolmod.block_cidr(rset.version, lo, size)
        cap = poolmod.block_capacity(rset, cidr)
        if cap:
            brute[cidr] = cap
    assert view.grid == brute
    assert sum(view.grid.values()) == view.capacity == rset.size()
