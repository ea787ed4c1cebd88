"""Cluster pool: TLS with client certificates, etcd auth limited to the key prefix, the etcd client
loaded only by calls that reach etcd, and ``cni-ipam gc --apply`` returning emptied blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.cluster.poolkit import call, check_invariants, etcd_blocks, local_record, pool_conf, reservations
from tests.helpers import ROOT, cni_env


def test_pool_over_tls_with_client_certificates(etcd_tls, etcd_prefix, tmp_path):
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd_tls, etcd_prefix, "node-a", d, block=28)
    assert conf["ipam"]["pool"]["etcd"]["endpoints"][0].startswith("https://")
    rc, res = call("ADD", conf, "c1")
    assert rc == 0, res
    check_invariants(etcd_tls, etcd_prefix, {"node-a": d})
    # without the client certificate the server refuses: a claim fails (7: configuration, naming etcd), DEL works
    bare = pool_conf(etcd_tls, etcd_prefix, "node-b", str(tmp_path / "node-b"), block=28)
    for key in ("certFile", "keyFile"):
        bare["ipam"]["pool"]["etcd"].pop(key)
    rc, res = call("ADD", bare, "c2")
    assert rc == 1 and res["code"] == 7 and "etcd" in res["msg"], res
    assert call("DEL", bare, "c2")[0] == 0


def test_pool_with_auth_needs_only_its_prefix(etcd_auth, tmp_path):
    """User ``limited`` may read and write only under its prefix: that is all the plugin needs."""
    d = str(tmp_path / "node-a")
    pw = tmp_path / "etcd-password"
    pw.write_text(etcd_auth.users["limited"] + "\n")
    prefix = etcd_auth.limited_prefix + uuid.uuid4().hex[:8].encode() + b"/"
    conf = pool_conf(etcd_auth, prefix, "node-a", d, block=29, keepBlocks=0)
    conf["ipam"]["pool"]["etcd"].update({"username": "limited", "passwordFile": str(pw)})
    for i in range(10):  # more than one /29: several claims
        rc, res = call("ADD", conf, f"c{i}")
        assert rc == 0, res
    assert len(local_record(d)["blocks"]) >= 2
    for i in range(10):
        assert call("DEL", conf, f"c{i}")[0] == 0
    assert local_record(d)["blocks"] == []
    # outside the granted prefix: refused (and reported, not a traceback)
    other = pool_conf(etcd_auth, b"/elsewhere/", "node-b", str(tmp_path / "node-b"), block=29)
    other["ipam"]["pool"]["etcd"].update({"username": "limited", "passwordFile": str(pw)})
    rc, res = call("ADD", other, "x")
    assert rc == 1 and res["code"] == 7 and "refused" in res["msg"], res
    wrong = tmp_path / "wrong-password"
    wrong.write_text("nope")
    conf["ipam"]["pool"]["etcd"]["passwordFile"] = str(wrong)
    rc, res = call("ADD", conf, "y")
    assert rc == 1 and res["code"] == 7 and "refused" in res["msg"], res
    assert "nope" not in res["msg"] + res.get("details", "")


PROBE = ("import sys; sys.path.insert(0, {root!r}); from cni_ipam.__main__ import main; rc = main(); "
         "print('etcd-loaded' if 'cni_ipam.cluster.etcd' in sys.modules else 'etcd-not-loaded', file=sys.stderr); "
         "sys.exit(rc)")


def _probe(conf, cid):
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env("ADD", cid))
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE.format(root=ROOT)], input=json.dumps(conf).encode(),
                          env=env, capture_output=True, timeout=60)
    return proc.returncode, proc.stderr.decode()


def test_etcd_client_is_imported_only_for_a_pool(etcd_single, etcd_prefix, tmp_path):
    conf = pool_conf(etcd_single, etcd_prefix, "node-a", str(tmp_path / "a"), block=28)
    rc, err = _probe(conf, "first")  # every pool ADD records its address in etcd
    assert rc == 0 and "etcd-loaded" in err, err
    local = dict(conf, ipam={k: v for k, v in conf["ipam"].items() if k != "pool"})
    rc, err = _probe(local, "second")  # a node-local network never loads it
    assert rc == 0 and "etcd-not-loaded" in err, err


def test_cni_ipam_gc_apply_returns_emptied_blocks(etcd3, etcd_prefix, tmp_path):
    d = str(tmp_path / "node-a")
    conf = pool_conf(etcd3, etcd_prefix, "node-a", d, block=28, keepBlocks=0)
    for i in range(2):
        assert call("ADD", conf, f"c{i}")[0] == 0
    for m in etcd3.members:
        m.kill()
    for i in range(2):
        assert call("DEL", conf, f"c{i}")[0] == 0  # etcd down: the emptied block stays claimed
    etcd3.heal()
    assert len(etcd_blocks(etcd3, etcd_prefix)) == 1
    env = dict(os.environ, PYTHONPATH=ROOT)
    env = {k: v for k, v in env.items() if not k.startswith("CNI_")}
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", "gc", "--apply", "--data-dir", d], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert etcd_blocks(etcd3, etcd_prefix) == {}
    assert local_record(d)["blocks"] == [] and reservations(d) == {}
