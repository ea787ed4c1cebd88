"""``cni-ipam pool show | metrics | release-node`` against real etcd, the pool's keys written in the
schema of ``cni_ipam.cluster.keys`` (claims, address records, node records) the way nodes write
them.  The Kubernetes cases (``gc``, ``release-node --kubeconfig``) are in test_pool_admin_kube.py."""

from __future__ import annotations

import ipaddress
import json
import os
import resource
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cni_ipam.admin import pool as admin
from cni_ipam.admin import poolconf, poolread, poolrelease, poolview
from cni_ipam.cluster import keys
from cni_ipam.cluster.etcd import EtcdClient, op_put
from tests.cluster.poolkit import pool_conf
from tests.helpers import ROOT

SUBNET = "10.77.0.0/24"  # 16 blocks of /28; the first has 14 addresses (network, gateway), the last 15


def block(i: int) -> str:
    return f"10.77.0.{16 * i}/28"


def put_all(client, pairs) -> None:
    ops = [op_put(k, v) for k, v in pairs]
    for i in range(0, len(ops), 100):  # etcd's --max-txn-ops is 128
        client.txn([], ops[i:i + 100], [])


def seed(client, prefix: str, node: str, blocks, used=0, instance=None, uid="", hostname=None, record=True,
         pool: str = "p", network: str = "poolnet") -> dict:
    """A node's claims, address records (``used`` per block, or a dict) and node record, written as
    the node side writes them.  Returns {cidr: claim value}."""
    instance = instance or keys.random_id()
    claims, pairs = {}, []
    for cidr in blocks:
        claim = keys.ClaimRecord(node, instance, keys.random_id(), network, uid)
        claims[cidr] = claim.encode()
        pairs.append((keys.block_key(prefix, pool, cidr), claims[cidr]))
        net = ipaddress.ip_network(cidr)
        n = used.get(cidr, 0) if isinstance(used, dict) else used
        for k in range(n):
            value = int(net.network_address) + k
            rec = keys.AddrRecord(node, instance, claim.claim, network, f"cid-{node}-{value}", "eth0")
            pairs.append((keys.addr_key(prefix, pool, net.version, value), rec.encode()))
    if record:
        rec = keys.NodeRecord(instance, hostname or f"host-{node}", uid)
        pairs.append((keys.node_key(prefix, pool, node), rec.encode()))
    put_all(client, pairs)
    return claims


def held(env, node: str) -> list:
    snap = poolread.read_snapshot(env.etcd, env.target())
    return [c.cidr for c in snap.node_claims(node)]  # in address order


def records_in(env, cidr: str) -> int:
    snap = poolread.read_snapshot(env.etcd, env.target())
    v, first, last, _ = poolread.parse_cidr(cidr)
    return snap.count(v, first, last)


@pytest.fixture
def pool_env(etcd_single, etcd_prefix, tmp_path, monkeypatch):
    """A conf file for pool "p" under a fresh prefix, an etcd client, and helpers to run the commands."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))  # gc: no default kubeconfig of this machine
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

        def target(self):
            return poolconf.load_pools([str(path)], "")[0][0]

        def run(self, *argv, capsys, conf=None):
            rc = admin.main(list(argv) + ["--conf", conf or str(path)])
            out, err = capsys.readouterr()
            assert "Traceback" not in out + err
            return rc, out, err

        def show_json(self, capsys, *extra):
            rc, out, err = self.run("show", "--json", *extra, capsys=capsys)
            return rc, json.loads(out), err

    yield Env()
    client.close()


# ------------------------------------------------------------------------------------ show
def test_show_counts_address_records_per_block_and_node(pool_env, capsys):
    seed(pool_env.etcd, pool_env.prefix, "node-a", [block(1), block(2)], used={block(1): 14, block(2): 3}, uid="uid-a")
    seed(pool_env.etcd, pool_env.prefix, "node-b", [block(3)], used=2)
    rc, doc, err = pool_env.show_json(capsys)
    assert rc == 0, err
    (p,) = doc["pools"]
    (s,) = p["sets"]
    assert (s["blocks"], s["heldBlocks"], s["freeBlocks"], s["addresses"], s["usedAddresses"]) == (16, 3, 13, 253, 19)
    nodes = {n["node"]: n for n in p["nodes"]}
    a = nodes["node-a"]
    assert (a["heldBlocks"], a["usedAddresses"], a["capacity"], a["freeAddresses"]) == (2, 17, 32, 15)
    assert {b["cidr"]: b["used"] for b in a["blocks"]} == {block(1): 14, block(2): 3}
    assert a["hostname"] == "host-node-a" and a["nodeUid"] == "uid-a" and not a["conflict"] and p["errors"] == []
    assert "lastSeen" not in json.dumps(doc) and "silent" not in json.dumps(doc)
    rc, out, _ = pool_env.run("show", capsys=capsys)
    assert rc == 0 and "node-a" in out and "host-node-b" in out and "/28" in out and "LAST-SEEN" not in out


@pytest.mark.parametrize("n_held, level, rc", [(8, "ok", 0), (12, "warning", 1), (14, "critical", 2),
                                               (16, "emergency", 3)])
def test_show_levels_from_held_blocks(pool_env, capsys, n_held, level, rc):
    for i in range(n_held):
        seed(pool_env.etcd, pool_env.prefix, f"node-{i}", [block(i)], used=1)
    got_rc, doc, _ = pool_env.show_json(capsys)
    s = doc["pools"][0]["sets"][0]
    assert (s["heldBlocks"], s["freeBlocks"], s["level"], doc["level"]) == (n_held, 16 - n_held, level, level)
    assert got_rc == rc and s["usedPercent"] < 10


def test_show_levels_per_node(pool_env, capsys):
    seed(pool_env.etcd, pool_env.prefix, "full", [block(1), block(2)], used={block(1): 15, block(2): 15})
    seed(pool_env.etcd, pool_env.prefix, "busy", [block(3)], used=12)
    rc, doc, _ = pool_env.show_json(capsys, "--warning", "10", "--critical", "20", "--emergency", "90")
    nodes = {n["node"]: n for n in doc["pools"][0]["nodes"]}
    assert (nodes["full"]["usedAddresses"], nodes["full"]["capacity"], nodes["full"]["level"]) == (30, 32, "emergency")
    assert (nodes["busy"]["percent"], nodes["busy"]["level"]) == (75.0, "critical")
    assert rc == 1 and doc["pools"][0]["sets"][0]["level"] == "warning"  # 3 of 16 blocks: 18.8 %


def test_two_instances_under_one_name_are_an_error(pool_env, capsys):
    seed(pool_env.etcd, pool_env.prefix, "ubuntu", [block(1)], used=3, instance="aaaa000000000001", hostname="vm-1")
    seed(pool_env.etcd, pool_env.prefix, "ubuntu", [block(2)], used=1, instance="bbbb000000000002", record=False)
    rc, doc, _ = pool_env.show_json(capsys)
    assert rc == 4
    (err,) = doc["pools"][0]["errors"]
    assert "ubuntu" in err and "aaaa000000000001" in err and "bbbb000000000002" in err and "vm-1" in err
    (node,) = doc["pools"][0]["nodes"]
    assert node["conflict"] and node["instances"] == ["aaaa000000000001", "bbbb000000000002"]
    rc, out, _ = pool_env.run("show", capsys=capsys)
    assert rc == 4 and "error: node name ubuntu is used by 2 instances" in out and "CONFLICT" in out
    rc, out, _ = pool_env.run("metrics", capsys=capsys)
    assert 'cni_ipam_pool_node_instances{node="ubuntu",pool="p"} 2.0' in out
    assert 'cni_ipam_pool_identity_conflicts{pool="p"} 1.0' in out


def test_show_reports_claims_outside_the_grid_junk_and_stray_records(pool_env, capsys):
    seed(pool_env.etcd, pool_env.prefix, "odd", ["10.77.0.64/27", "10.99.0.0/28"], used=1)
    head = keys.pool_prefix(pool_env.prefix, "p").encode()
    put_all(pool_env.etcd, [
        (keys.nodes_prefix(pool_env.prefix, "p") + b"NOT_A_NODE", b"{}"),
        (keys.block_key(pool_env.prefix, "p", "10.77.0.128/28"), b"not json"),
        (keys.grid_key(pool_env.prefix, "p", 4), b"27"),
        (head + b"addrs/4/zz", b"{}"),
        (head + b"whatever", b"x"),
        (keys.addr_key(pool_env.prefix, "p", 4, int(ipaddress.ip_address("10.77.0.250"))), b"{}"),  # in no claim
    ])
    rc, doc, _ = pool_env.show_json(capsys)
    p = doc["pools"][0]
    assert sorted(o["cidr"] for o in p["claimsOutsideGrid"]) == ["10.77.0.128/28", "10.77.0.64/27", "10.99.0.0/28"]
    assert p["gridMismatch"] == ["ipv4: etcd pins /27, the conf says /28"]
    assert len(p["malformedKeys"]) == 4 and p["addressRecordsOutsideClaims"] == 1
    assert p["sets"][0]["heldBlocks"] == 0
    rc, out, _ = pool_env.run("show", capsys=capsys)
    assert "block size mismatch" in out and "10.99.0.0/28" in out
    assert "malformed key" in out and "in no claimed block" in out


def test_nan_and_infinity_in_records_never_crash(pool_env, capsys):
    put_all(pool_env.etcd, [
        (keys.block_key(pool_env.prefix, "p", block(1)),
         b'{"node": "n1", "instance": NaN, "claim": Infinity, "x": -Infinity}'),
        (keys.block_key(pool_env.prefix, "p", block(2)), b'{"node": NaN}'),
        (keys.node_key(pool_env.prefix, "p", "n1"), b'{"instance": Infinity, "hostname": NaN, "lastSeen": NaN}'),
        (keys.addr_key(pool_env.prefix, "p", 4, int(ipaddress.ip_address("10.77.0.20"))), b'{"node": NaN}'),
    ])
    rc, doc, _ = pool_env.show_json(capsys)
    s = doc["pools"][0]["sets"][0]
    assert rc == 0 and s["heldBlocks"] == 1 and s["usedAddresses"] == 1
    for argv in (("show",), ("metrics",), ("release-node", "n1")):
        rc, out, err = pool_env.run(*argv, capsys=capsys)
        assert rc in (0, 1), err


def test_show_when_etcd_is_down_says_etcd_once(pool_env, capsys, tmp_path):
    conf = json.loads(open(pool_env.conf_file).read())
    conf["ipam"]["pool"]["etcd"]["endpoints"] = ["http://127.0.0.1:9"]
    conf["ipam"]["pool"]["etcd"]["timeout"] = 0.5
    path = tmp_path / "down.conf"
    path.write_text(json.dumps(conf))
    rc, out, err = pool_env.run("show", capsys=capsys, conf=str(path))
    assert rc == 4 and "127.0.0.1:9" in out
    assert "etcd" in out and "etcd: etcd" not in out
    rc, out, err = pool_env.run("metrics", capsys=capsys, conf=str(path))
    assert rc == 1 and 'cni_ipam_pool_etcd_up{pool="p"} 0.0' in out and "127.0.0.1:9" in err and "etcd: etcd" not in err


def test_show_prints_the_clients_message_once(pool_env, capsys, tmp_path):
    """The error of a pool is the etcd client's message as it is: no prefix, not twice."""
    from cni_ipam.cluster.etcd import EtcdUnavailable

    conf = json.loads(open(pool_env.conf_file).read())
    conf["ipam"]["pool"]["etcd"]["endpoints"] = ["http://127.0.0.1:9"]
    conf["ipam"]["pool"]["etcd"]["timeout"] = 0.5
    path = tmp_path / "down.conf"
    path.write_text(json.dumps(conf))
    with pytest.raises(EtcdUnavailable) as info:
        EtcdClient(["http://127.0.0.1:9"], timeout=0.5).range_prefix(b"/x")
    message = str(info.value).replace("/v3/kv/range", "")
    rc, out, err = pool_env.run("show", capsys=capsys, conf=str(path))
    (line,) = [x for x in out.splitlines() if x.startswith("p: error: ")]
    text = line[len("p: error: "):]
    assert rc == 4 and text.startswith("no etcd endpoint answered") and text.count("127.0.0.1:9") == 1, out
    assert text.replace("/v3/kv/range", "") == message, (text, message)
    rc, doc, err = pool_env.show_json(capsys, "--conf", str(path))
    assert doc["pools"][0]["error"] == text


def test_an_empty_message_names_the_exception():
    assert poolconf.error_text(MemoryError()) == "MemoryError"
    assert poolconf.error_text(poolconf.AdminError("  two\n lines ")) == "two lines"


class _NotEtcd(BaseHTTPRequestHandler):
    body = b'{"hello": "world"}'

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("body", [b'{"hello": "world"}', b"<html>no</html>", b'{"kvs": "garbage", "count": "x"}',
                                  b'{"kvs": [{"key": 5}]}', b"[1, 2]"])
def test_an_endpoint_answering_garbage_is_a_clear_error(pool_env, capsys, tmp_path, body):
    handler = type("H", (_NotEtcd,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for argv in (("show",), ("metrics",), ("release-node", "n1"), ("gc", "--apply")):
            rc, out, err = pool_env.run(*argv, "--endpoints", url, capsys=capsys)
            assert rc in (1, 4), (argv, out, err)
            assert url in out + err or "etcd" in out + err
            assert "Traceback" not in out + err
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_textfile_dir_missing_is_a_clear_error(pool_env, capsys):
    missing = pool_env.tmp / "no" / "such"
    rc, out, err = pool_env.run("metrics", "--textfile-dir", str(missing), capsys=capsys)
    assert rc == 1 and str(missing) in err and "No such file" in err
    rc, out, err = pool_env.run("metrics", "--textfile-dir", str(pool_env.tmp), capsys=capsys)
    assert rc == 0 and "cni_ipam_pool_blocks_held" in (pool_env.tmp / "cni_ipam_pool.prom").read_text()


def test_metrics_text_format(pool_env, capsys):
    from prometheus_client.parser import text_string_to_metric_families

    seed(pool_env.etcd, pool_env.prefix, "node-a", [block(1), block(2)], used=5)
    seed(pool_env.etcd, pool_env.prefix, "node-b", [block(3)])
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
    assert samples[("cni_ipam_pool_node_addresses_used", (("node", "node-b"), ("pool", "p")))] == 0
    assert samples[("cni_ipam_pool_etcd_up", (("pool", "p"),))] == 1
    assert not any("last_seen" in name or "silent" in name for name, _ in samples)


def test_usage_errors_and_no_pool(tmp_path, capsys):
    (tmp_path / "plain.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                                                     "ipam": {"type": "cni-ipam", "subnet": "10.1.0.0/24"}}))
    assert admin.main(["show", "--conf-dir", str(tmp_path)]) == 4
    assert "no pool found" in capsys.readouterr().err
    assert admin.main(["show", "--bogus"]) == 64
    assert admin.main(["frobnicate"]) == 64
    assert admin.main(["release-node", "Not_A_Node", "--conf-dir", str(tmp_path)]) == 64
    assert admin.main(["gc", "--min-silence", "10"]) == 64  # the option is gone


# ------------------------------------------------------------------------------------ scale
V6_CONF = [[{"subnet": "fd00:64::/64"}]]


@pytest.mark.parametrize("block6", [120, 128])
def test_ipv6_slash64_pool_show_is_instant_and_small(etcd_single, etcd_prefix, tmp_path, block6):
    """2^56 (or 2^64) blocks: counted, never enumerated.  In a fresh process limited to 512 MB of
    address space (the old view grew until killed), and in process under a second."""
    conf = pool_conf(etcd_single, etcd_prefix, "n6", str(tmp_path / "n6"), block=28, ranges=V6_CONF,
                     blockSizeIPv6=block6)
    path = tmp_path / "v6.conf"
    path.write_text(json.dumps(conf))
    prefix = etcd_prefix.decode().rstrip("/")
    client = EtcdClient(etcd_single.endpoints)
    try:
        blocks = [f"fd00:64::{i:x}00/120" if block6 == 120 else f"fd00:64::{i:x}/128" for i in range(2, 6)]
        seed(client, prefix, "n6", blocks, used=1 if block6 == 120 else 0)
    finally:
        client.close()
    t0 = time.monotonic()
    target = poolconf.load_pools([str(path)], "")[0][0]
    (view,) = poolview.collect([target], _Args(), (70.0, 85.0, 95.0))
    elapsed = time.monotonic() - t0
    assert not view.error, view.error
    (s,) = view.sets
    assert s.blocks == (1 << 56 if block6 == 120 else s.capacity)  # /128: one block per address to hand out
    assert s.capacity == target.range_sets[0].size() and s.held == 4
    assert elapsed < 1.0, f"pool show took {elapsed:.2f} s"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", "pool", "show", "--json", "--conf", str(path)], env=env,
                          capture_output=True, text=True, timeout=60, preexec_fn=limit)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["pools"][0]["sets"][0]["blocks"] == s.blocks and doc["pools"][0]["sets"][0]["heldBlocks"] == 4
    print(f"\n/64 in /{block6}: {s.blocks} blocks; in process {elapsed * 1000:.0f} ms, fresh process {wall:.2f} s")


class _Args:
    endpoints = ca_file = cert_file = key_file = username = password_file = timeout = None


@pytest.mark.parametrize("ranges, size", [
    ([{"subnet": "10.9.0.0/22", "gateway": "10.9.1.77", "exclude": ["10.9.2.0/25", "10.9.3.200"]}], 26),
    ([{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.50", "rangeEnd": "10.9.0.140"},
      {"subnet": "10.9.4.0/23", "exclude": ["10.9.4.0/27"]}], 27),
    ([{"subnet": "10.9.0.0/28"}], 32),
    ([{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10", "rangeEnd": "10.9.0.20"},
      {"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.30", "rangeEnd": "10.9.0.40"}], 24),
    ([{"subnet": "fd00:9::/118", "exclude": ["fd00:9::100/120"]}], 122),
])
def test_grid_arithmetic_matches_counting_every_address(ranges, size):
    from cni_ipam.plugin import netconf as config
    from cni_ipam.addr import IP

    cfg = config.load({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                       "ipam": {"type": "cni-ipam", "ranges": [ranges]}}, {})
    rset = cfg.range_sets[0]
    grid = poolview.Grid(rset, size)
    step = grid.step
    brute: dict = {}
    for r in rset.ranges:
        for v in range(r.net, r.last + 1):
            if r.can_hand_out(IP(v, rset.version)):
                brute[v - v % step] = brute.get(v - v % step, 0) + 1
    assert grid.blocks == len(brute)
    assert grid.capacity == sum(brute.values()) == rset.size()
    for first, cap in brute.items():
        assert grid.capacity_of(first) == cap
        assert grid.holds(rset.version, first, size)


# ------------------------------------------------------------------------------------ release-node without Kubernetes
def test_release_node_without_kubernetes_releases_only_empty_blocks(pool_env, capsys):
    seed(pool_env.etcd, pool_env.prefix, "old", [block(1), block(2), block(3)], used={block(2): 4})
    seed(pool_env.etcd, pool_env.prefix, "other", [block(4)])
    rc, out, err = pool_env.run("release-node", "old", "--dry-run", capsys=capsys)
    assert rc == 1 and "would release" in out and held(pool_env, "old") == [block(1), block(2), block(3)]
    rc, out, err = pool_env.run("release-node", "old", "--json", capsys=capsys)
    assert rc == 1  # a block was kept
    res = json.loads(out)["results"][0]
    assert res["released"] == [block(1), block(3)] and res["kept"] == [block(2)] and res["recordsDeleted"] == 0
    assert held(pool_env, "old") == [block(2)] and records_in(pool_env, block(2)) == 4
    assert held(pool_env, "other") == [block(4)]


def test_release_node_old_name_after_a_rename_keeps_live_blocks(pool_env, capsys):
    """A node renamed OLD -> NEW that has not moved its claims yet: the admin runs release-node OLD
    (as the node told them to, or by mistake): blocks with live address records stay."""
    inst = "cafe000000000001"
    seed(pool_env.etcd, pool_env.prefix, "old-name", [block(5), block(6)], used={block(5): 7}, instance=inst)
    seed(pool_env.etcd, pool_env.prefix, "new-name", [], instance=inst)
    rc, out, err = pool_env.run("release-node", "old-name", capsys=capsys)
    assert rc == 1 and held(pool_env, "old-name") == [block(5)] and records_in(pool_env, block(5)) == 7
    rc, out, err = pool_env.run("gc", "--apply", capsys=capsys)
    assert held(pool_env, "old-name") == [block(5)] and records_in(pool_env, block(5)) == 7


def test_gc_without_kubernetes_releases_only_empty_blocks(pool_env, capsys):
    seed(pool_env.etcd, pool_env.prefix, "quiet", [block(1), block(2)], used={block(1): 2})
    rc, out, err = pool_env.run("gc", capsys=capsys)
    assert rc == 0 and "dry run" in out and "only blocks that hold no address record" in out
    assert held(pool_env, "quiet") == [block(1), block(2)]
    rc, out, err = pool_env.run("gc", "--apply", capsys=capsys)
    assert rc == 0 and held(pool_env, "quiet") == [block(1)] and records_in(pool_env, block(1)) == 2


def test_an_address_written_between_read_and_release_keeps_the_block(pool_env):
    """(a)'s txn compares the range: a node that allocates after the admin read the block keeps it."""
    claims = seed(pool_env.etcd, pool_env.prefix, "busy", [block(1)])
    snap = poolread.read_snapshot(pool_env.etcd, pool_env.target())
    (claim,) = snap.node_claims("busy")
    rec = keys.AddrRecord("busy", claim.instance, "x", "poolnet", "late", "eth0").encode()
    put_all(pool_env.etcd, [(keys.addr_key(pool_env.prefix, "p", 4, int(ipaddress.ip_address("10.77.0.20"))), rec)])
    assert poolrelease.release_empty(pool_env.etcd, pool_env.target(), claim) == poolrelease.IN_USE
    assert held(pool_env, "busy") == [block(1)]
    # a claim rewritten meanwhile (the node moved it under a new name) is not the claim that was read
    moved = claims[block(1)].replace(b"busy", b"moved")
    put_all(pool_env.etcd, [(keys.block_key(pool_env.prefix, "p", block(1)), moved)])
    assert poolrelease.release_empty(pool_env.etcd, pool_env.target(), claim) == poolrelease.CHANGED


def test_pool_commands_via_the_cni_ipam_command(pool_env):
    seed(pool_env.etcd, pool_env.prefix, "cli-node", [block(7)])
    env = dict(os.environ, PYTHONPATH=ROOT)
    argv = [sys.executable, "-m", "cni_ipam", "pool", "release-node", "cli-node", "--conf", pool_env.conf_file]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "released 1 block(s): 10.77.0.112/28" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", "--help"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "pool" in proc.stdout
    for sub in ("gc", "release-node"):
        proc = subprocess.run([sys.executable, "-m", "cni_ipam", "pool", sub, "--help"], env=env, capture_output=True,
                              text=True, timeout=60)
        text = " ".join(proc.stdout.split())
        assert proc.returncode == 0 and "No timestamp decides anything" in text and "exit status:" in text, proc.stdout
        assert "silence" not in text and "lastSeen" not in text and "verif" not in text, proc.stdout
        assert ("--instance ID --gone" in text and "the operator is the authority" in text) == (sub == "release-node")
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", "pool"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 64 and "release-node" in proc.stdout


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
    seed(root, prefix, "n1", [block(1)], used=4)
    root.close()
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
