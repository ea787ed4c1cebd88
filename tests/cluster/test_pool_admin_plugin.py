"""The pool admin commands over keys the real plugin wrote (ADD/DEL as a runtime calls them), not
keys a test wrote: usage counted from the plugin's address records, and releases that never take a
block a pod still uses."""

from __future__ import annotations

import importlib.util
import json

import pytest

from cni_ipam.admin import poolconf, poolread
from tests.cluster.poolkit import call, pool_conf
from tests.cluster.test_pool_admin import pool_env  # noqa: F401

SUBNET = "10.77.0.0/24"


def fenced_node_side() -> bool:
    """The node side that writes one etcd record per address (cluster/session.py) is in this tree."""
    return importlib.util.find_spec("cni_ipam.cluster.session") is not None


@pytest.fixture
def env(pool_env):  # noqa: F811
    if not fenced_node_side():
        pytest.skip("the node side of this tree writes no address records (cni_ipam.cluster.session is missing)")
    return pool_env


def conf_for(env, node: str) -> dict:
    return pool_conf(env.cluster, (env.prefix + "/").encode(), node, str(env.tmp / node), block=28,
                     ranges=[[{"subnet": SUBNET, "gateway": "10.77.0.1"}]])


def show(env, capsys) -> dict:
    rc, out, err = env.run("show", "--json", capsys=capsys)
    assert rc in (0, 1, 2, 3), out + err
    return {n["node"]: n for n in json.loads(out)["pools"][0]["nodes"]}


def test_admin_commands_over_what_the_plugin_wrote(env, capsys):
    a, b = conf_for(env, "node-a"), conf_for(env, "node-b")
    for i in range(20):
        rc, res = call("ADD", a, f"a-{i}")
        assert rc == 0, res
    for i in range(3):
        rc, res = call("ADD", b, f"b-{i}")
        assert rc == 0, res
    nodes = show(env, capsys)
    assert nodes["node-a"]["usedAddresses"] == 20 and nodes["node-b"]["usedAddresses"] == 3
    assert nodes["node-a"]["heldBlocks"] >= 2 and not nodes["node-a"]["conflict"]
    assert nodes["node-a"]["instance"] and nodes["node-a"]["instance"] != nodes["node-b"]["instance"]
    held_a = sorted(blk["cidr"] for blk in nodes["node-a"]["blocks"])

    # no Kubernetes: gc and release-node leave every block with a live address alone
    rc, out, err = env.run("gc", "--apply", capsys=capsys)
    assert rc == 0, out + err
    rc, out, err = env.run("release-node", "node-a", capsys=capsys)
    assert rc == 1, out + err
    nodes = show(env, capsys)
    assert sorted(blk["cidr"] for blk in nodes["node-a"]["blocks"] if blk["used"]) == \
        sorted(blk["cidr"] for blk in nodes["node-a"]["blocks"]) and nodes["node-a"]["usedAddresses"] == 20
    assert set(held_a) >= {blk["cidr"] for blk in nodes["node-a"]["blocks"]}

    # DEL frees the records: usage follows, and the emptied blocks can be released
    for i in range(20):
        rc, res = call("DEL", a, f"a-{i}")
        assert rc == 0, res
    nodes = show(env, capsys)
    assert nodes.get("node-a", {"usedAddresses": 0})["usedAddresses"] == 0
    rc, out, err = env.run("release-node", "node-a", capsys=capsys)
    assert rc == 0, out + err
    snap = poolread.read_snapshot(env.etcd, poolconf.load_pools([env.conf_file], "")[0][0])
    assert snap.node_claims("node-a") == [] and len(snap.node_claims("node-b")) == 1
    # both nodes go on working: node-a claims again, node-b keeps its block and addresses
    rc, res = call("ADD", a, "a-again")
    assert rc == 0, res
    rc, res = call("ADD", b, "b-3")
    assert rc == 0, res
    nodes = show(env, capsys)
    assert nodes["node-a"]["usedAddresses"] == 1 and nodes["node-b"]["usedAddresses"] == 4
