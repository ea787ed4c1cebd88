"""Cluster pool failure modes with real etcd: all members down, a blackholed etcd, kill -9 of the
plugin mid-claim, a claim without a local record, a block taken by another node (split brain)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import time

from tests.cluster.poolkit import addresses, call, check_invariants, etcd_blocks, local_record, pool_conf, reservations
from tests.helpers import ROOT, cni_env


def test_all_members_down_held_blocks_serve_claims_fail_11_then_converge(etcd3, etcd_prefix, tmp_path):
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd3, etcd_prefix, "node-a", d, block=28, keepBlocks=0)
    conf["ipam"]["pool"]["etcd"]["timeout"] = 1.0
    for i in range(3):
        assert call("ADD", conf, f"c{i}")[0] == 0
    (cidr,) = etcd_blocks(etcd3, etcd_prefix)
    for m in etcd3.members:
        m.stop()
    # the held /28 has 13 more addresses (16 minus network-of-subnet/gateway where they fall)
    served = 3
    while True:
        t0 = time.monotonic()
        rc, res = call("ADD", conf, f"c{served}")
        took = time.monotonic() - t0
        if rc != 0:
            break
        assert ipaddress.ip_address(res["ips"][0]["address"].split("/")[0]) in ipaddress.ip_network(cidr)
        served += 1
    assert res["code"] == 11 and "etcd" in res["msg"] and "pool p" in res["msg"], res
    assert took < 8, f"the failing claim took {took:.1f} s"
    assert served >= 13, served
    # full blocks and no etcd: STATUS stays ok by default (a NotReady node would have its pods
    # evicted; an etcd outage must not drain every full node), and fails when the user opts in
    assert call("STATUS", conf, "x")[0] == 0
    strict = dict(conf, ipam=dict(conf["ipam"], statusOnExhaustion="fail"))
    rc, res = call("STATUS", strict, "x")
    assert rc == 1 and res["code"] == 50 and "etcd" in res["msg"], res
    for i in range(served):  # DEL always works locally
        assert call("DEL", conf, f"c{i}")[0] == 0
    assert reservations(d) == {}
    assert local_record(d)["blocks"], "the emptied block stays held until etcd answers"
    etcd3.heal()
    gc = dict(conf, **{"cni.dev/valid-attachments": []})
    assert call("GC", gc, "x")[0] == 0
    assert etcd_blocks(etcd3, etcd_prefix) == {}
    assert local_record(d)["blocks"] == []
    assert call("ADD", conf, "after")[0] == 0
    check_invariants(etcd3, etcd_prefix, {"node-a": d})


def test_held_block_with_room_is_not_a_status_failure_when_etcd_is_down(etcd3, etcd_prefix, tmp_path):
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd3, etcd_prefix, "node-a", d, block=28)
    assert call("ADD", conf, "c0")[0] == 0
    for m in etcd3.members:
        m.kill()
    rc, res = call("STATUS", conf, "x")
    assert rc == 0, res
    assert call("ADD", conf, "c1")[0] == 0


def test_blackholed_etcd_fails_a_claim_with_11_in_bounded_time(etcd3, etcd_prefix, tmp_path):
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd3, etcd_prefix, "node-a", d, block=28)
    conf["ipam"]["pool"]["etcd"]["timeout"] = 0.5
    try:
        for m in etcd3.members:
            m.pause()  # accepts connections, never answers
        t0 = time.monotonic()
        rc, res = call("ADD", conf, "c0")
        took = time.monotonic() - t0
    finally:
        for m in etcd3.members:
            m.resume()
    assert rc == 1 and res["code"] == 11, res
    assert took < 5, took  # 0.5 s per endpoint x 3 endpoints, plus process start
    assert reservations(d) == {}


def _popen_add(conf, cid):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env("ADD", cid))
    env["PYTHONPATH"] = ROOT
    proc = subprocess.Popen([sys.executable, "-m", "cni_ipam"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    return proc


def test_kill_9_mid_claim_loses_no_block(etcd_single, etcd_prefix, tmp_path):
    """Each ADD must claim (/32 blocks: one address each); kill it at random points; then one
    normal ADD + DEL with keepBlocks 0 must leave etcd with no block of this node."""
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=32, keepBlocks=0)
    rng = random.Random(7)
    record = os.path.join(d, "poolnet", ".cni-ipam", "pool.json")
    killed_with_intent = tries = 0
    while killed_with_intent < 3 and tries < 40:
        proc = _popen_add(conf, f"k{tries}")
        if tries % 2:  # half at random points of the whole call ...
            time.sleep(rng.uniform(0.05, 0.4))
        else:  # ... half the moment the claim's intent is on disk (the txn is on its way)
            end = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < end:
                try:
                    with open(record, "rb") as fh:
                        if json.loads(fh.read()).get("pending"):
                            break
                except (OSError, ValueError):
                    pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tries += 1
        if local_record(d).get("pending"):  # died between its intent and the claim's answer
            killed_with_intent += 1
    print(f"killed {tries} ADDs, {killed_with_intent} with a claim in flight; etcd holds {len(etcd_blocks(etcd_single, etcd_prefix))} blocks")
    assert killed_with_intent >= 1, "never hit the claim window: the test exercised nothing"
    # recovery: the next ADD resolves intents (adopting what etcd applied)
    rc, res = call("ADD", conf, "recover")
    assert rc == 0, res
    rec = local_record(d)
    assert rec["pending"] == []
    blocks = check_invariants(etcd_single, etcd_prefix, {"node-a": d})
    assert set(blocks) == {b["cidr"] for b in rec["blocks"]}, "every claim of this node is in its local record"
    # the killed ADDs' reservations: DEL them as the runtime would retry
    for i in range(tries):
        assert call("DEL", conf, f"k{i}")[0] == 0
    assert call("DEL", conf, "recover")[0] == 0
    assert reservations(d) == {}
    assert etcd_blocks(etcd_single, etcd_prefix) == {}, "no block lost for good"


def test_claim_without_local_record_is_adopted(etcd_single, etcd_prefix, tmp_path):
    """A node whose data dir was wiped (or an fsync lost): its claim in etcd is adopted by its next
    claim instead of leaking."""
    from cni_ipam.cluster import pool as poolmod
    from cni_ipam.cluster.etcd import EtcdClient

    d = str(tmp_path / "node-a")
    prefix = etcd_prefix.decode().rstrip("/")
    c = EtcdClient(etcd_single.endpoints)
    c.put(poolmod.grid_key(prefix, "p", 4), b"28")
    c.put(poolmod.block_key(prefix, "p", "10.77.0.48/28"), poolmod.claim_value("node-a", "poolnet", "lost", time.time()))
    c.close()
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28)
    rc, res = call("ADD", conf, "c0")
    assert rc == 0, res
    assert addresses(res)[0] in ipaddress.ip_network("10.77.0.48/28")
    assert list(etcd_blocks(etcd_single, etcd_prefix)) == ["10.77.0.48/28"]


def test_block_taken_by_another_node_is_not_served_from(etcd_single, etcd_prefix, tmp_path):
    from cni_ipam.cluster import pool as poolmod
    from cni_ipam.cluster.etcd import EtcdClient

    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28, verifyInterval=0)
    rc, res = call("ADD", conf, "c0")
    assert rc == 0
    (cidr,) = etcd_blocks(etcd_single, etcd_prefix)
    prefix = etcd_prefix.decode().rstrip("/")
    c = EtcdClient(etcd_single.endpoints)  # an admin's mistake: the block handed to node-b
    c.put(poolmod.block_key(prefix, "p", cidr), poolmod.claim_value("node-b", "poolnet", "x", time.time()))
    c.close()
    rc, res, out, err = __import__("tests.helpers", fromlist=["run_plugin"]).run_plugin("ADD", conf, container_id="c1")
    assert rc == 0, res
    assert "held by node node-b" in err, err
    new = ipaddress.ip_address(res["ips"][0]["address"].split("/")[0])
    assert new not in ipaddress.ip_network(cidr)
    rec = local_record(d)
    assert [b["state"] for b in rec["blocks"] if b["cidr"] == cidr] == ["conflict"]
    # the conflicting block's last pod leaves: the node forgets it without touching node-b's claim
    assert call("DEL", conf, "c0")[0] == 0
    assert etcd_blocks(etcd_single, etcd_prefix)[cidr]["node"] == "node-b"
    assert cidr not in {b["cidr"] for b in local_record(d)["blocks"]}


def test_junk_local_record_never_breaks_a_call(etcd_single, etcd_prefix, tmp_path):
    """pool.json is validated like stdin: junk, wrong types, a symlink, a FIFO.  ADD answers with
    JSON (re-adopting the node's claims from etcd), DEL always succeeds, nothing outside is touched."""
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28)
    assert call("ADD", conf, "c0")[0] == 0
    (cidr,) = etcd_blocks(etcd_single, etcd_prefix)
    record = os.path.join(d, "poolnet", ".cni-ipam", "pool.json")
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    junk = [b"\xff\x00garbage", b"[]", b'{"v": 1, "blocks": "x", "pending": 7}',
            b'{"v": 1, "blocks": [{"cidr": "../../etc", "set": 0, "rev": 1}], "pending": [{"cidr": "x", "set": "y"}]}',
            b'{"v": 1, "blocks": [{"cidr": "10.77.0.0/28", "set": 9, "rev": "r"}], "node": 5}']
    for i, content in enumerate(junk + ["symlink", "fifo"]):
        os.unlink(record) if os.path.lexists(record) else None
        if content == "symlink":
            os.symlink(str(outside), record)
        elif content == "fifo":
            os.mkfifo(record)
        else:
            with open(record, "wb") as fh:
                fh.write(content)
        rc, res = call("ADD", conf, f"j{i}")
        assert rc == 0, (content, res)
        assert call("DEL", conf, f"j{i}")[0] == 0
        assert outside.read_text() == "precious"
        assert not os.path.islink(record)
    check_invariants(etcd_single, etcd_prefix, {"node-a": d})
    assert cidr in {b["cidr"] for b in local_record(d)["blocks"]}, "the node's claim was adopted back"


def test_reverification_of_more_blocks_than_one_txn_allows(etcd_single, etcd_prefix, tmp_path):
    """/32 blocks, 130 pods: re-verification reads 130 blocks (etcd allows 128 ops per txn)."""
    from tests.cluster.poolkit import call_inproc

    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=32, verifyInterval=3600,
                     ranges=[[{"subnet": "10.82.0.0/24"}]])
    for i in range(130):
        rc, res = call_inproc("ADD", conf, f"c{i}")
        assert rc == 0, res
    assert len(local_record(d)["blocks"]) == 130
    conf["ipam"]["pool"]["verifyInterval"] = 0  # the next ADD re-verifies every block
    rc, res, out, err = __import__("tests.helpers", fromlist=["run_plugin"]).run_plugin("ADD", conf, container_id="last")
    assert rc == 0, res
    assert "could not re-verify" not in err, err
    rec = local_record(d)
    assert all(b["state"] == "held" for b in rec["blocks"]) and len(rec["blocks"]) == 131
    assert rec["verified"] > 0 and rec["etcdFailed"] == 0
