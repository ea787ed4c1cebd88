"""Cluster pool failure modes with real etcd: all members down, a blackholed etcd, kill -9 of the
plugin mid-claim, a claim without a local record, a block taken by another node."""

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


def test_outage_refuses_add_with_11_and_del_removes_the_records_later(etcd3, etcd_prefix, tmp_path):
    """No offline mode: with every member down an ADD fails with 11 in bounded time even with room
    in a held block (it could not be recorded in etcd); DEL succeeds locally and its address
    records are deleted by the next call that reaches etcd (here the GC verb)."""
    from cni_ipam.cluster import keys
    from cni_ipam.cluster.etcd import EtcdClient

    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd3, etcd_prefix, "node-a", d, block=28, keepBlocks=0)
    conf["ipam"]["pool"]["etcd"]["timeout"] = 1.0
    ips = []
    for i in range(3):
        rc, res = call("ADD", conf, f"c{i}")
        assert rc == 0, res
        ips += addresses(res)
    for m in etcd3.members:
        m.stop()
    t0 = time.monotonic()
    rc, res = call("ADD", conf, "c3")
    took = time.monotonic() - t0
    assert rc == 1 and res["code"] == 11 and "etcd" in res["msg"] and "pool p" in res["msg"], res
    assert took < 8, f"the refused ADD took {took:.1f} s"
    assert len(reservations(d)) == 3, "the refused ADD left no reservation"
    # STATUS stays ok: held blocks have room (an etcd outage must not make every node NotReady)
    assert call("STATUS", conf, "x")[0] == 0
    for i in range(3):  # DEL always works locally
        assert call("DEL", conf, f"c{i}")[0] == 0
    assert reservations(d) == {}
    # three DELs and the refused ADD's txn, whose outcome is unknown: each record goes when etcd answers
    assert len(local_record(d)["pending"]) == 4, json.dumps(local_record(d)["pending"])
    etcd3.heal()
    p = etcd_prefix.decode().rstrip("/")
    c = EtcdClient(etcd3.endpoints)
    try:
        assert all(c.get(keys.addr_key(p, "p", 4, int(ip))) is not None for ip in ips)
        gc = dict(conf, **{"cni.dev/valid-attachments": []})
        assert call("GC", gc, "x")[0] == 0
        assert [c.get(keys.addr_key(p, "p", 4, int(ip))) for ip in ips] == [None] * 3
    finally:
        c.close()
    assert etcd_blocks(etcd3, etcd_prefix) == {}
    assert local_record(d)["blocks"] == [] and local_record(d)["pending"] == []
    assert call("ADD", conf, "after")[0] == 0
    check_invariants(etcd3, etcd_prefix, {"node-a": d})


def test_held_block_with_room_is_not_a_status_failure_when_etcd_is_down(etcd3, etcd_prefix, tmp_path):
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd3, etcd_prefix, "node-a", d, block=28)
    conf["ipam"]["pool"]["etcd"]["timeout"] = 0.5
    assert call("ADD", conf, "c0")[0] == 0
    for m in etcd3.members:
        m.kill()
    rc, res = call("STATUS", conf, "x")
    assert rc == 0, res
    rc, res = call("ADD", conf, "c1")
    assert rc == 1 and res["code"] == 11, res


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
    held = len(etcd_blocks(etcd_single, etcd_prefix))
    print(f"killed {tries} ADDs, {killed_with_intent} with a claim in flight; etcd holds {held} blocks")
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
    """pool.json lost (an fsync lost, a hand cleanup) but the instance id kept: the node's claims
    in etcd are adopted by its next claim instead of leaking."""
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28)
    assert call("ADD", conf, "c0")[0] == 0
    (cidr,) = etcd_blocks(etcd_single, etcd_prefix)
    os.unlink(os.path.join(d, "poolnet", ".cni-ipam", "pool.json"))
    rc, res = call("ADD", conf, "c1")
    assert rc == 0, res
    assert addresses(res)[0] in ipaddress.ip_network(cidr)
    assert list(etcd_blocks(etcd_single, etcd_prefix)) == [cidr]


def test_block_taken_by_another_node_is_not_served_from(etcd_single, etcd_prefix, tmp_path):
    from cni_ipam.cluster import keys
    from cni_ipam.cluster.etcd import EtcdClient, op_put

    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", d, block=28)
    rc, res = call("ADD", conf, "c0")
    assert rc == 0
    (cidr,) = etcd_blocks(etcd_single, etcd_prefix)
    prefix = etcd_prefix.decode().rstrip("/")
    c = EtcdClient(etcd_single.endpoints)  # an admin's mistake: the block handed to node-b
    c.txn([], [op_put(keys.block_key(prefix, "p", cidr), keys.ClaimRecord("node-b", "i-b", "x", "poolnet").encode())])
    c.close()
    rc, res, out, err = __import__("tests.helpers", fromlist=["run_plugin"]).run_plugin("ADD", conf, container_id="c1")
    assert rc == 0, res
    assert "no longer claimed by node node-a (etcd: node node-b" in err, err
    new = ipaddress.ip_address(res["ips"][0]["address"].split("/")[0])
    assert new not in ipaddress.ip_network(cidr)
    rec = local_record(d)
    assert [b["state"] for b in rec["blocks"] if b["cidr"] == cidr] == ["lost"]
    # the lost block's last pod leaves: the node forgets it without touching node-b's claim
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
