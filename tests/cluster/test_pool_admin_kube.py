"""``cni-ipam pool gc`` and ``pool release-node --kubeconfig`` against real etcd and the stand-in
Kubernetes API server (tests/integration/podcidr_apiserver.py: real HTTPS, real Status objects; its
Node objects have the uid ``0000-<name>``).  A node is gone only if the API says so for the node
that claimed: its name absent (404 NotFound) with a nodeUid recorded in the claim, or the name
present with another UID.  Nothing here has a clock: no record carries a time."""

from __future__ import annotations

import ipaddress
import json

import pytest

from cni_ipam.admin import poolread, poolrelease
from cni_ipam.cluster import keys
from tests.cluster.test_pool_admin import block, held, pool_env, put_all, records_in, seed  # noqa: F401


@pytest.fixture
def env(pool_env):  # noqa: F811
    return pool_env


@pytest.fixture
def kube(tmp_path):
    from tests.integration.podcidr_apiserver import ApiServer, Pki, write_kubeconfig

    pki = Pki(str(tmp_path / "kpki"))
    nodes = {"alive": ["10.244.1.0/24"], "quiet": [], "recreated": [], "new-name": []}
    api = ApiServer(pki, nodes=nodes, token="gc-token")
    kc = write_kubeconfig(str(tmp_path / "kubeconfig"), api.url, ca_file=pki.ca_file, token="gc-token")
    yield api, kc
    api.stop()


def uid(name: str) -> str:
    return "0000-" + name  # what the stand-in API server gives its Node objects


def test_gc_releases_a_deleted_node_with_its_records_and_never_a_live_one(env, kube, capsys):
    api, kc = kube
    seed(env.etcd, env.prefix, "alive", [block(1)], used=3, uid=uid("alive"))
    seed(env.etcd, env.prefix, "quiet", [block(2), block(3)], used={block(2): 5}, uid=uid("quiet"))
    seed(env.etcd, env.prefix, "deleted", [block(4), block(5)], used={block(4): 9, block(5): 1},
         uid="0000-deleted")
    rc, out, err = env.run("gc", "--kubeconfig", kc, capsys=capsys)  # dry run
    assert rc == 0, out + err
    assert "would release with its address records (404 NotFound" in out and "dry run" in out
    assert held(env, "deleted") == [block(4), block(5)]
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", "--json", capsys=capsys)
    assert rc == 0, out + err
    res = json.loads(out)["pools"][0]
    assert res["released"] == [block(4), block(5)] and res["recordsDeleted"] == 10
    assert held(env, "deleted") == [] and records_in(env, block(4)) == 0 and records_in(env, block(5)) == 0
    # live nodes keep everything, their empty blocks too (returning those is the node's own business)
    assert held(env, "alive") == [block(1)] and held(env, "quiet") == [block(2), block(3)]
    assert records_in(env, block(1)) == 3 and records_in(env, block(2)) == 5


def test_a_quiet_node_with_live_records_is_never_released_whatever_its_name(env, kube, capsys):
    """Finding 5: a node whose pool name is not its Kubernetes name (an FQDN), quiet, with records:
    Kubernetes never knew the name and the claim has no nodeUid: reported, never released; a stale
    ``lastSeen`` in its record (an old node's field) changes nothing."""
    api, kc = kube
    seed(env.etcd, env.prefix, "quiet.example.com", [block(6), block(7)], used={block(6): 4},
         instance="0123456789abcdef")
    put_all(env.etcd, [(keys.node_key(env.prefix, "p", "quiet.example.com"),
                             b'{"instance": "0123456789abcdef", "hostname": "q", "lastSeen": 1}')])
    seed(env.etcd, env.prefix, "alive", [block(1)], used=1, uid=uid("alive"))
    for _ in range(2):
        rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
        assert rc == 1 and "never a Kubernetes node name" in out
        assert held(env, "quiet.example.com") == [block(6), block(7)] and records_in(env, block(6)) == 4
    # a quiet live node without a nodeUid (it could not read its Node object) whose name exists: kept
    seed(env.etcd, env.prefix, "quiet", [block(8)], used=2)
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert held(env, "quiet") == [block(8)] and records_in(env, block(8)) == 2


@pytest.mark.parametrize("record", ["another instance", "none"])
def test_a_node_recreated_with_a_new_uid_is_gone_once_another_machine_holds_the_name(env, kube, capsys, record):
    """A new UID counts as gone only when nodes/<name> no longer holds the claiming instance:
    another machine registered the name, or no record is left."""
    api, kc = kube
    seed(env.etcd, env.prefix, "recreated", [block(9)], used=6, uid="1111-old-uid", record=False)
    if record == "another instance":
        put_all(env.etcd, [(keys.node_key(env.prefix, "p", "recreated"),
                            keys.NodeRecord("cafe000000000002", "new-machine", uid("recreated")).encode())])
    seed(env.etcd, env.prefix, "alive", [block(1)], used=1, uid=uid("alive"))
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 0, out + err
    assert "re-created" in out and held(env, "recreated") == [] and records_in(env, block(9)) == 0


def test_kubectl_delete_node_while_kubelet_runs_keeps_the_blocks(env, kube, capsys):
    """``kubectl delete node`` while kubelet runs: kubelet registers again at once (a new UID), the
    pods bound to the name keep running, and the node has not refreshed nodes/<name> yet (it does
    on its next registration): the record still holds the claiming instance with the old UID.
    The machine that claimed is still the registered one: nothing is released, by gc or
    release-node."""
    api, kc = kube
    seed(env.etcd, env.prefix, "recreated", [block(9), block(10)], used={block(9): 6}, uid="1111-old-uid")
    seed(env.etcd, env.prefix, "alive", [block(1)], used=1, uid=uid("alive"))
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 0, out + err
    assert held(env, "recreated") == [block(9), block(10)] and records_in(env, block(9)) == 6
    rc, out, err = env.run("release-node", "recreated", "--kubeconfig", kc, capsys=capsys)
    assert rc == 1 and "still holds the claiming instance" in out, out + err
    assert held(env, "recreated") == [block(9)] and records_in(env, block(9)) == 6  # only the empty one went


def test_the_claiming_instance_running_under_the_new_uid_is_not_gone(env, kube, capsys):
    """The Node object was deleted and re-registered (new UID) while the machine kept running: its
    node record shows the claiming instance with the new UID, so its blocks stay."""
    api, kc = kube
    inst = "beef000000000001"
    seed(env.etcd, env.prefix, "recreated", [block(9)], used=6, uid="1111-old-uid", instance=inst,
         record=False)
    put_all(env.etcd, [(keys.node_key(env.prefix, "p", "recreated"),
                             keys.NodeRecord(inst, "h", uid("recreated")).encode())])
    seed(env.etcd, env.prefix, "alive", [block(1)], used=1, uid=uid("alive"))
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 0 and held(env, "recreated") == [block(9)] and records_in(env, block(9)) == 6


def test_a_renamed_node_still_running_is_not_released(env, kube, capsys):
    """Finding 4: OLD's Node was deleted (404, the claim has its UID), but the claiming instance
    now runs as new-name (its node record): release-node OLD and gc keep the live blocks."""
    api, kc = kube
    inst = "f00d000000000001"
    seed(env.etcd, env.prefix, "old-name", [block(10), block(11)], used={block(10): 3}, uid="0000-old-name",
         instance=inst)
    seed(env.etcd, env.prefix, "new-name", [], instance=inst, uid=uid("new-name"))
    rc, out, err = env.run("release-node", "old-name", "--kubeconfig", kc, capsys=capsys)
    assert rc == 1 and "now runs as node new-name" in out
    assert held(env, "old-name") == [block(10)] and records_in(env, block(10)) == 3  # the empty one went
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and held(env, "old-name") == [block(10)] and records_in(env, block(10)) == 3


def test_gc_without_a_clear_answer_releases_nothing(env, kube, capsys):
    api, kc = kube
    seed(env.etcd, env.prefix, "deleted", [block(2)], used=2, uid="0000-deleted")
    api.fail_status = 503
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and "unavailable" in out and held(env, "deleted") == [block(2)]
    api.fail_status = 404  # a 404 whose Status is not NotFound: no evidence either
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and "(404" in out and held(env, "deleted") == [block(2)]
    api.fail_status = 0
    api.stop()  # the API server is down: a refused connection is no evidence
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", "--kube-timeout", "1", capsys=capsys)
    assert rc == 1 and "kept" in out and held(env, "deleted") == [block(2)] and records_in(env, block(2)) == 2


def test_gc_refuses_when_no_node_of_the_pool_exists(env, kube, capsys):
    api, kc = kube
    for i, node in enumerate(("x1", "x2")):
        seed(env.etcd, env.prefix, node, [block(8 + i)], used=1, uid=f"0000-{node}")
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", capsys=capsys)
    assert rc == 1 and "knows none of the pool's claiming nodes" in err
    assert held(env, "x1") == [block(8)]
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", "--force", capsys=capsys)
    assert rc == 0, out + err
    assert held(env, "x1") == [] and held(env, "x2") == []


def test_release_node_asks_kubernetes(env, kube, capsys):
    api, kc = kube
    seed(env.etcd, env.prefix, "alive", [block(1), block(2)], used={block(1): 2}, uid=uid("alive"))
    rc, out, err = env.run("release-node", "alive", "--kubeconfig", kc, capsys=capsys)
    assert rc == 1 and "the Node exists" in out
    assert held(env, "alive") == [block(1)]  # the empty block is returned whoever holds it
    api.nodes.pop("alive")
    rc, out, err = env.run("release-node", "alive", "--kubeconfig", kc, capsys=capsys)
    assert rc == 0, out + err
    assert held(env, "alive") == [] and records_in(env, block(1)) == 0


def test_a_record_written_while_releasing_proves_the_node_alive(env, kube):
    """(b) deletes the records read, then the claim under the range-empty compare: an address the
    node allocates meanwhile keeps the block."""
    api, kc = kube
    seed(env.etcd, env.prefix, "zombie", [block(3)], used=5, uid="0000-zombie")
    target = env.target()
    (claim,) = poolread.read_snapshot(env.etcd, target).node_claims("zombie")
    late = keys.addr_key(env.prefix, "p", 4, int(ipaddress.ip_address("10.77.0.60")))

    class NodeWakesUp:
        def __init__(self, client):
            self.client, self.txns = client, 0

        def __getattr__(self, name):
            return getattr(self.client, name)

        def txn(self, *a):
            got = self.client.txn(*a)
            self.txns += 1
            if self.txns == 2:  # right after the records were deleted, the node allocates again
                rec = keys.AddrRecord("zombie", claim.instance, "c", "poolnet", "new", "eth0")
                put_all(self.client, [(late, rec.encode())])
            return got

    outcome, deleted = poolrelease.release_with_records(NodeWakesUp(env.etcd), target, claim)
    assert (outcome, deleted) == (poolrelease.ALIVE, 5)
    assert held(env, "zombie") == [block(3)] and records_in(env, block(3)) == 1


def test_release_of_many_records_stays_within_etcd_txn_limits(env, kube, capsys):
    """A /24 block with 250 records: three txns of at most 128 compares, then the claim."""
    api, kc = kube
    conf = json.loads(open(env.conf_file).read())
    conf["ipam"]["pool"]["blockSize"] = 24
    path = env.tmp / "big.conf"
    path.write_text(json.dumps(conf))
    seed(env.etcd, env.prefix, "big", ["10.77.0.0/24"], used=250, uid="0000-big")
    seed(env.etcd, env.prefix, "alive", [], uid=uid("alive"))
    put_all(env.etcd, [(keys.block_key(env.prefix, "p", "10.77.1.0/24"),
                             keys.ClaimRecord("alive", "i", "c", "poolnet", uid("alive")).encode())])
    rc, out, err = env.run("gc", "--kubeconfig", kc, "--apply", "--json", capsys=capsys, conf=str(path))
    assert rc == 0, out + err
    res = json.loads(out)["pools"][0]
    assert res["released"] == ["10.77.0.0/24"] and res["recordsDeleted"] == 250


def test_gc_with_a_bad_kubeconfig(env, tmp_path, capsys):
    rc, out, err = env.run("gc", "--kubeconfig", str(tmp_path / "missing"), capsys=capsys)
    assert rc == 64 and "missing" in err
