"""Uniqueness of cluster-pool addresses whatever a node's local record says: each test makes that
record wrong the way production does (a lost or late answer, a DEL killed mid-release, two
machines with one node name, etcd restored from a snapshot, a renamed node, a clock stepped back,
a deleted grid key, a claim left pending by kill -9) and checks, against a real etcd, that no
address is handed out twice.  The tests look at etcd through raw keys, not the plugin's schema
module, so the same file runs against older code too."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.cluster.lossy_proxy import LossyProxy
from tests.cluster.poolkit import addresses, call, check_invariants, etcd_blocks, local_record, pool_conf, reservations
from tests.helpers import ROOT, cni_env, run_admin, run_plugin

ONE_BLOCK = [[{"subnet": "10.78.0.0/28", "gateway": "10.78.0.1"}]]  # a pool of exactly one /28 block


def _raw(cluster):
    from cni_ipam.cluster.etcd import EtcdClient

    return EtcdClient(cluster.endpoints, **cluster.client_kwargs())


def _key(prefix: bytes, *parts: str) -> bytes:
    return (prefix.decode().rstrip("/") + "/pools/p/" + "/".join(parts)).encode()


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@pytest.fixture
def proxy(etcd_single):
    p = LossyProxy(etcd_single.members[0].client_port)
    yield p
    p.close()


def _via(conf: dict, proxy: LossyProxy) -> dict:
    conf["ipam"]["pool"]["etcd"]["endpoints"] = [proxy.url]
    conf["ipam"]["pool"]["etcd"]["timeout"] = 1.0
    return conf


def _popen(command: str, conf: dict, cid: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env(command, cid))
    env["PYTHONPATH"] = ROOT
    proc = subprocess.Popen([sys.executable, "-m", "cni_ipam"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    return proc


def _block_release(block: bytes):
    """A proxy rule: the txn that deletes the block's claim."""
    return lambda req: "drop" if _b64(block) in req and b"request_delete_range" in req else "pass"


def _after_the_block_left_a(etcd_single, etcd_prefix, da: str, a: dict, tmp_path):
    """Node B claims the (only) block; node A, whose release answer never came, asks again."""
    db = str(tmp_path / "node-b")
    b = pool_conf(etcd_single, etcd_prefix, "node-b", db, ranges=ONE_BLOCK, block=28)
    rc, res = call("ADD", b, "b0")
    assert rc == 0, res
    rc, res = call("ADD", a, "a1")
    if rc == 0:  # A may only hand out what etcd records for it
        assert not set(addresses(res)) & set(reservations(db)), "one address on two nodes"
    check_invariants(etcd_single, etcd_prefix, {"node-a": da, "node-b": db})


def test_lost_answer_of_a_block_release(etcd_single, etcd_prefix, proxy, tmp_path):
    """etcd applies the release of an emptied block, the answer is lost: the node must not keep
    serving from it (another node claims it next)."""
    da = str(tmp_path / "node-a")
    a = _via(pool_conf(etcd_single, etcd_prefix, "node-a", da, ranges=ONE_BLOCK, block=28, keepBlocks=0), proxy)
    rc, res = call("ADD", a, "a0")
    assert rc == 0, res
    proxy.rule = _block_release(_key(etcd_prefix, "blocks", "10.78.0.0/28"))
    assert call("DEL", a, "a0")[0] == 0  # DEL never fails
    assert proxy.answered.is_set(), "the release never reached etcd: the test exercised nothing"
    assert etcd_blocks(etcd_single, etcd_prefix) == {}, "etcd applied the release"
    proxy.rule = lambda req: "pass"
    _after_the_block_left_a(etcd_single, etcd_prefix, da, a, tmp_path)


def test_del_killed_after_etcd_applied_the_release(etcd_single, etcd_prefix, proxy, tmp_path):
    """libcni kills a DEL that takes too long: here right after etcd applied the block release."""
    da = str(tmp_path / "node-a")
    a = _via(pool_conf(etcd_single, etcd_prefix, "node-a", da, ranges=ONE_BLOCK, block=28, keepBlocks=0), proxy)
    assert call("ADD", a, "a0")[0] == 0
    rule = _block_release(_key(etcd_prefix, "blocks", "10.78.0.0/28"))
    proxy.rule = lambda req: "hold" if rule(req) == "drop" else "pass"
    proc = _popen("DEL", a, "a0")
    try:
        assert proxy.answered.wait(30), "the release never reached etcd"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proxy.release()
    proxy.rule = lambda req: "pass"
    assert etcd_blocks(etcd_single, etcd_prefix) == {}
    _after_the_block_left_a(etcd_single, etcd_prefix, da, a, tmp_path)


def test_two_machines_with_one_node_name(etcd_single, etcd_prefix, tmp_path):
    """A cloned VM or a copied nodeName: the second machine refuses, naming both."""
    da, db = str(tmp_path / "one"), str(tmp_path / "two")
    a = pool_conf(etcd_single, etcd_prefix, "node-a", da, block=28)
    b = pool_conf(etcd_single, etcd_prefix, "node-a", db, block=28)
    rc, res = call("ADD", a, "a0")
    assert rc == 0, res
    rc, res = call("ADD", b, "b0")
    assert rc == 1, f"a second machine as node-a was given {res}"
    c = _raw(etcd_single)
    try:
        first = json.loads(c.get(_key(etcd_prefix, "nodes", "node-a"))[0])
    finally:
        c.close()
    with open(os.path.join(db, ".cni-ipam-instance")) as fh:
        second = fh.read().strip()
    assert res["code"] == 7 and "node-a" in res["msg"], res
    assert first["instance"] in res["msg"] and second in res["msg"] and first["hostname"] in res["msg"], res
    assert reservations(db) == {}
    check_invariants(etcd_single, etcd_prefix, {"node-a": da})


def _etcdctl(*args: str) -> None:
    env = dict(os.environ, ETCDCTL_API="3")
    proc = subprocess.run(["etcdctl", *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def own_etcd():
    """A single member of its own (the restore test replaces its data directory)."""
    from tests.cluster.conftest import _cluster

    if shutil.which("etcdctl") is None:
        pytest.skip("etcdctl (Debian's etcd-client) is not installed")
    cluster = _cluster(1, "single member for a restore")
    yield cluster
    cluster.close()


@pytest.mark.parametrize("how", ["same-token-then-add", "new-token-then-gc"])
def test_etcd_restored_from_a_snapshot(own_etcd, etcd_prefix, tmp_path, how):
    """A snapshot taken before node A claimed its block is restored: the claim and A's address
    records are gone, revisions run again from the snapshot's.  A's next call detects it (a lower
    revision; with a new cluster token also another cluster id) and re-asserts before anyone can
    claim the block under A's live pods: its next ADD, or the documented procedure's
    `cni-ipam gc --apply` on each node."""
    m = own_etcd.members[0]
    da, db = str(tmp_path / "node-a"), str(tmp_path / "node-b")
    a = pool_conf(own_etcd, etcd_prefix, "node-a", da, ranges=ONE_BLOCK, block=28)
    b = pool_conf(own_etcd, etcd_prefix, "node-b", db, ranges=ONE_BLOCK, block=28)
    c = _raw(own_etcd)
    from cni_ipam.cluster.etcd import op_put

    c.txn([], [op_put(b"/unrelated", b"x")])
    c.close()
    snap = str(tmp_path / "snap.db")
    _etcdctl("--endpoints", m.client_url, "snapshot", "save", snap)
    for i in range(3):
        assert call("ADD", a, f"a{i}")[0] == 0
    before = set(reservations(da))
    m.stop()
    restored = os.path.join(own_etcd.root, f"restored-{uuid.uuid4().hex[:6]}")
    token = own_etcd.token if how.startswith("same") else f"restored-{uuid.uuid4().hex[:6]}"
    _etcdctl("snapshot", "restore", snap, "--data-dir", restored, "--name", m.name,
             "--initial-cluster", f"{m.name}={m.peer_url}", "--initial-cluster-token", token,
             "--initial-advertise-peer-urls", m.peer_url)
    m.data_dir = restored
    own_etcd.heal()
    assert etcd_blocks(own_etcd, etcd_prefix) == {}, "the restore brought back a state without the claim"
    if how.endswith("add"):
        rc, res = call("ADD", a, "a3")  # A's first call after the restore
        assert rc == 0, res
    else:
        rc, out, err = run_admin("gc", "--apply", "--data-dir", da)
        assert rc == 0, out + err
        assert "restored" in err, err
        assert set(reservations(da)) == before, "the GC pass released A's pods' addresses"
    rc, res = call("ADD", b, "b0")  # B would claim the block etcd forgot
    assert rc != 0 or not set(addresses(res)) & before, "B was given an address A's pods use"
    check_invariants(own_etcd, etcd_prefix, {"node-a": da, "node-b": db})
    # every address A holds is recorded in etcd again: an admin sees the block as used
    c = _raw(own_etcd)
    try:
        for ip in reservations(da):
            assert c.get(_key(etcd_prefix, "addrs", "4", format(int(ip), "08x"))) is not None, ip
    finally:
        c.close()


def test_renamed_node_keeps_its_blocks(etcd_single, etcd_prefix, tmp_path):
    """nodeName fixed from a typo: the same machine moves its claims to the new name."""
    d = str(tmp_path / "node")
    old = pool_conf(etcd_single, etcd_prefix, "node-aa", d, block=28)
    assert call("ADD", old, "c0")[0] == 0
    (cidr,) = etcd_blocks(etcd_single, etcd_prefix)
    new = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28)
    rc, res = call("ADD", new, "c1")
    assert rc == 0, res
    assert addresses(res)[0] in ipaddress.ip_network(cidr), "the pod of the renamed node came from another block"
    blocks = etcd_blocks(etcd_single, etcd_prefix)
    assert list(blocks) == [cidr] and blocks[cidr]["node"] == "node-a", blocks
    c = _raw(etcd_single)
    try:
        assert c.get(_key(etcd_prefix, "nodes", "node-aa")) is None
        assert c.get(_key(etcd_prefix, "nodes", "node-a")) is not None
    finally:
        c.close()
    assert call("DEL", new, "c0")[0] == 0 and call("DEL", new, "c1")[0] == 0
    c = _raw(etcd_single)
    try:
        assert c.range_prefix(_key(etcd_prefix, "addrs") + b"/") == [], "the old name's address record stayed"
    finally:
        c.close()


def _libfaketime() -> str | None:
    for path in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"):
        if os.path.exists(path):
            return path
    return None


@pytest.mark.parametrize("step", ["-2d", "+2d"])
def test_clock_stepped_never_serves_a_block_etcd_gave_away(etcd_single, etcd_prefix, tmp_path, step):
    """The node's block is given to node-b in etcd (an admin's mistake); the node's next ADD runs
    with its clock stepped back or forward (NTP, a VM snapshot): it must not hand out from it."""
    lib = _libfaketime()
    if lib is None:
        pytest.skip("libfaketime is not installed (scripts/setup.d/45-faketime.sh)")
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28)
    assert call("ADD", conf, "c0")[0] == 0
    (cidr,) = etcd_blocks(etcd_single, etcd_prefix)
    c = _raw(etcd_single)
    from cni_ipam.cluster.etcd import op_put

    try:
        other = {"node": "node-b", "instance": "other", "claim": "x", "network": "poolnet"}
        c.txn([], [op_put(_key(etcd_prefix, "blocks", cidr), json.dumps(other).encode())])
    finally:
        c.close()
    env = {"LD_PRELOAD": lib, "FAKETIME": step, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], env=dict(os.environ, **env),
                           capture_output=True, text=True, timeout=30)
    assert abs(float(probe.stdout) - time.time()) > 86400, "libfaketime did not step the clock"
    rc, res, out, err = run_plugin("ADD", conf, container_id="c1", extra_env=env)
    assert rc == 0, res
    assert addresses(res)[0] not in ipaddress.ip_network(cidr), "served from a block etcd shows as node-b's"


def test_grid_key_deleted_is_recreated_from_the_claims(etcd_single, etcd_prefix, tmp_path):
    """grid/4 lost (a partial cleanup): a node configured with smaller blocks must not claim a
    /28 inside another node's /27."""
    ranges = [[{"subnet": "10.80.0.0/27"}]]
    da, db = str(tmp_path / "node-a"), str(tmp_path / "node-b")
    a = pool_conf(etcd_single, etcd_prefix, "node-a", da, ranges=ranges, block=27)
    b = pool_conf(etcd_single, etcd_prefix, "node-b", db, ranges=ranges, block=28)
    assert call("ADD", a, "a0")[0] == 0
    c = _raw(etcd_single)
    try:
        c.txn([], [{"request_delete_range": {"key": _b64(_key(etcd_prefix, "grid", "4")).decode()}}])
    finally:
        c.close()
    rc, res = call("ADD", b, "b0")
    assert rc == 1 and res["code"] == 7 and "/27" in res["msg"] and "/28" in res["msg"], res
    check_invariants(etcd_single, etcd_prefix, {"node-a": da, "node-b": db})


def test_ipv6_pool_of_more_than_2_63_blocks(etcd_single, etcd_prefix, tmp_path):
    """A /64 in /128 blocks (the IPv6 default for blockSize 32): 2^64 blocks.  Claiming ADDs and
    STATUS work with exact integers."""
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=32, ranges=[[{"subnet": "fd00:78::/64"}]])
    conf["ipam"]["statusOnExhaustion"] = "fail"
    for i in range(3):
        rc, res = call("ADD", conf, f"c{i}")
        assert rc == 0 and res["ips"][0]["address"].endswith("/64"), res
    rc, res = call("STATUS", conf, "x")
    assert rc == 0, res
    assert len(etcd_blocks(etcd_single, etcd_prefix)) == 3
    check_invariants(etcd_single, etcd_prefix, {"node-a": d})


def test_claim_left_pending_by_kill_9_is_settled_by_del(etcd_single, etcd_prefix, proxy, tmp_path):
    """An ADD killed while its claim txn was applied but unanswered: the next DEL (not only an
    ADD) reads the claim and takes it into the record."""
    d = str(tmp_path / "node-a")
    conf = _via(pool_conf(etcd_single, etcd_prefix, "node-a", d, ranges=ONE_BLOCK, block=28), proxy)
    block = _key(etcd_prefix, "blocks", "10.78.0.0/28")
    proxy.rule = lambda req: "hold" if _b64(block) in req and b"CREATE" in req and b"request_put" in req else "pass"
    proc = _popen("ADD", conf, "k0")
    try:
        assert proxy.answered.wait(30), "the claim never reached etcd"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proxy.release()
    proxy.rule = lambda req: "pass"
    assert local_record(d).get("pending"), "the kill left no claim in flight: the test exercised nothing"
    assert call("DEL", conf, "k0")[0] == 0
    rec = local_record(d)
    assert rec["pending"] == [], rec["pending"]
    assert [b["cidr"] for b in rec["blocks"]] == ["10.78.0.0/28"], rec["blocks"]
    check_invariants(etcd_single, etcd_prefix, {"node-a": d})


def test_claims_carry_the_node_uid_when_the_api_answers(etcd_single, etcd_prefix, tmp_path):
    """pool.kubeconfig: the claim and nodes/<name> record the Node's UID (pool gc's evidence that
    the node which claimed is gone, not renamed)."""
    pytest.importorskip("yaml")
    from tests.integration.podcidr_apiserver import ApiServer, Pki, write_kubeconfig

    pki = Pki(str(tmp_path / "kpki"))
    api = ApiServer(pki, nodes={"node-a": ["10.244.1.0/24"]}, token="t0k")
    try:
        kc = write_kubeconfig(str(tmp_path / "kubeconfig"), api.url, ca_file=pki.ca_file, token="t0k")
        d = str(tmp_path / "node-a")
        conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28, kubeconfig=kc)
        rc, res = call("ADD", conf, "c0")
        assert rc == 0, res
        (claim,) = etcd_blocks(etcd_single, etcd_prefix).values()
        assert claim["nodeUid"] == "0000-node-a", claim
        c = _raw(etcd_single)
        try:
            assert json.loads(c.get(_key(etcd_prefix, "nodes", "node-a"))[0])["nodeUid"] == "0000-node-a"
        finally:
            c.close()
    finally:
        api.stop()


def test_kill_9_at_random_points_of_dels_that_release(etcd_single, etcd_prefix, tmp_path):
    """/32 blocks, keepBlocks 0: each DEL deletes an address record and releases a block.  Killed
    at random points (and each time at least once after the release's intent is on disk), then
    another node claims what it can: never an address on two nodes, never a local block that etcd
    does not show as the node's."""
    import random

    da, db = str(tmp_path / "node-a"), str(tmp_path / "node-b")
    ranges = [[{"subnet": "10.81.0.0/29"}]]  # 6 usable addresses: the nodes compete for them
    a = pool_conf(etcd_single, etcd_prefix, "node-a", da, ranges=ranges, block=32, keepBlocks=0)
    b = pool_conf(etcd_single, etcd_prefix, "node-b", db, ranges=ranges, block=32, keepBlocks=0)
    record = os.path.join(da, "poolnet", ".cni-ipam", "pool.json")
    rng = random.Random(11)
    releasing = 0
    for i in range(6):
        assert call("ADD", a, f"k{i}")[0] == 0
        proc = _popen("DEL", a, f"k{i}")
        if i % 2:
            time.sleep(rng.uniform(0.05, 0.5))
        else:  # the moment the release's intent is on disk
            end = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < end:
                try:
                    with open(record, "rb") as fh:
                        if any(x.get("state") == "releasing" for x in json.loads(fh.read()).get("blocks", [])):
                            break
                except (OSError, ValueError):
                    pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if any(x.get("state") == "releasing" for x in local_record(da).get("blocks", [])):
            releasing += 1
        check_invariants(etcd_single, etcd_prefix, {"node-a": da})
    assert releasing >= 1, "never killed a release in flight: the test exercised nothing"
    for i in range(6):  # node-b takes whatever etcd shows free; node-a asks again
        call("ADD", b, f"b{i}")
        call("ADD", a, f"a{i}")
    check_invariants(etcd_single, etcd_prefix, {"node-a": da, "node-b": db})
