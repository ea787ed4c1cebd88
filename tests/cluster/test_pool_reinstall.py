"""A node reinstalled with a wiped data directory: same node name, a new instance id.  Its ADDs are
refused while ``nodes/<name>`` holds the former instance; the operator states that instance is gone
with ``cni-ipam pool release-node NAME --instance ID --gone --apply``, which removes the former
instance's address records, claims and node record under compares, and the new instance then
registers and allocates.  Real etcd, real plugin processes."""

from __future__ import annotations

import json

import pytest

from cni_ipam.admin import pool as admin
from tests.cluster.poolkit import addresses, call, pool_conf


def _raw(cluster):
    from cni_ipam.cluster.etcd import EtcdClient

    return EtcdClient(cluster.endpoints, **cluster.client_kwargs())


def _values(cluster, prefix: bytes, part: str) -> dict:
    """key -> JSON value of every key under <prefix>/pools/p/<part>/."""
    c = _raw(cluster)
    try:
        head = (prefix.decode().rstrip("/") + "/pools/p/" + part + "/").encode()
        return {k: json.loads(v) for k, v, _m, _c in c.range_prefix(head)}
    finally:
        c.close()


def _admin(capsys, *argv):
    rc = admin.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.fixture
def reinstalled(etcd_single, etcd_prefix, tmp_path):
    """Node "node-a" allocated from its first data directory, then its second is refused."""
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    a = pool_conf(etcd_single, etcd_prefix, "node-a", first, block=28)
    b = pool_conf(etcd_single, etcd_prefix, "node-a", second, block=28)
    for i in range(3):
        rc, res = call("ADD", a, f"a{i}")
        assert rc == 0, res
    conf_file = tmp_path / "10-pool.conf"
    conf_file.write_text(json.dumps(a))
    (old,) = {v["instance"] for v in _values(etcd_single, etcd_prefix, "nodes").values()}
    return a, b, str(conf_file), old


def test_release_of_a_reinstalled_nodes_old_instance(etcd_single, etcd_prefix, reinstalled, capsys):
    a, b, conf_file, old = reinstalled
    rc, res = call("ADD", b, "b0")
    assert rc == 1 and res["code"] == 7, res
    command = f"cni-ipam pool release-node node-a --instance {old} --gone"
    assert command in res["msg"], res["msg"]
    records = _values(etcd_single, etcd_prefix, "addrs/4")
    assert len(records) == 3 and {r["instance"] for r in records.values()} == {old}

    # a dry run without --apply: says what would go, changes nothing
    rc, out, err = _admin(capsys, "release-node", "node-a", "--instance", old, "--gone", "--conf", conf_file)
    assert rc == 0, out + err
    assert "would release with its address records" in out and "dry run" in out
    assert _values(etcd_single, etcd_prefix, "addrs/4") == records
    assert len(_values(etcd_single, etcd_prefix, "nodes")) == 1

    rc, out, err = _admin(capsys, "release-node", "node-a", "--instance", old, "--gone", "--apply", "--json",
                          "--conf", conf_file)
    assert rc == 0, out + err
    (res_doc,) = json.loads(out)["results"]
    assert res_doc["recordsDeleted"] == 3 and res_doc["nodeRecord"] == "deleted" and len(res_doc["released"]) == 1
    assert _values(etcd_single, etcd_prefix, "addrs/4") == {}
    assert _values(etcd_single, etcd_prefix, "blocks") == {} and _values(etcd_single, etcd_prefix, "nodes") == {}

    # the reinstalled machine registers and allocates; nothing of the old instance remains
    rc, res = call("ADD", b, "b0")
    assert rc == 0, res
    (node,) = _values(etcd_single, etcd_prefix, "nodes").values()
    new = node["instance"]
    assert new != old
    records = _values(etcd_single, etcd_prefix, "addrs/4")
    assert len(records) == 1 and {r["instance"] for r in records.values()} == {new}
    assert [key.decode()[-8:] for key in records] == [format(int(addresses(res)[0]), "08x")]
    assert all(c["instance"] == new for c in _values(etcd_single, etcd_prefix, "blocks").values())


def test_release_of_an_instance_refuses_another_id(etcd_single, etcd_prefix, reinstalled, capsys):
    a, b, conf_file, old = reinstalled
    before = (_values(etcd_single, etcd_prefix, "addrs/4"), _values(etcd_single, etcd_prefix, "blocks"))
    wrong = "0123456789abcdef.deadbeef"
    rc, out, err = _admin(capsys, "release-node", "node-a", "--instance", wrong, "--gone", "--apply",
                          "--conf", conf_file)
    assert rc == 1 and f"holds instance {old}" in err and wrong in err, out + err
    rc, out, err = _admin(capsys, "release-node", "node-b", "--instance", old, "--gone", "--apply", "--conf", conf_file)
    assert rc == 1 and "names instance" in err, out + err
    assert (_values(etcd_single, etcd_prefix, "addrs/4"), _values(etcd_single, etcd_prefix, "blocks")) == before
    assert len(_values(etcd_single, etcd_prefix, "nodes")) == 1


@pytest.mark.parametrize("argv", [["--instance", "x"], ["--gone"], ["--apply"],
                                  ["--instance", "x", "--gone", "--kubeconfig", "/nonexistent"]])
def test_release_instance_usage(tmp_path, capsys, argv):
    rc, out, err = _admin(capsys, "release-node", "node-a", *argv, "--conf", str(tmp_path / "none.conf"))
    assert rc == 64, out + err
