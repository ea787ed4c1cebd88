"""A cluster pool through a real runtime: libcni (tests/libcni-driver) + macvlan + cni-ipam on two
"nodes" sharing one L2 subnet.

Topology, all in namespaces this test creates (nothing in the machine's own namespace):

    rt-<tok>-etcd:   etcd on 172.31.1.1 and 172.31.2.1 (the "control plane")
    rt-<tok>-na:     node-a's host: ctl 172.31.1.2/30 to etcd, lan (veth) = macvlan master
    rt-<tok>-nb:     node-b's host: ctl 172.31.2.2/30 to etcd, lan (veth peer of node-a's lan)
    containers c1, c3 on node-a, c2 on node-b: macvlan on lan, addresses from pool "lan" (/28 blocks)

Each node has its own netconf directory and data directory; the containers get distinct addresses
of 10.253.0.0/24 from their node's blocks and reach each other across the nodes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.helpers import real_runtime
from tests.integration.netns import Runtime, ping_until, sh, skip_reason

NET = "poolnet"
SUBNET = ipaddress.ip_network("10.253.0.0/24")
ETCD = "/usr/bin/etcd"


# The fixture from tests/integration/netns.py, registered here under its own name: importing it would
# leave a module-level name that the test's ``runtime`` parameter shadows.
@pytest.fixture(name="runtime")
def runtime_fixture():
    yield from real_runtime(skip_reason, Runtime, Runtime.cleanup)


def start_etcd(rt, ns: str) -> subprocess.Popen:
    data = os.path.join(rt.dir, "etcd")
    log = open(os.path.join(rt.dir, "etcd.log"), "wb")
    argv = ["ip", "netns", "exec", ns, ETCD, "--name", "cp", "--data-dir", data,
            "--listen-client-urls", "http://172.31.1.1:2379,http://172.31.2.1:2379",
            "--advertise-client-urls", "http://172.31.1.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "cp=http://127.0.0.1:2380", "--logger", "zap", "--log-level", "warn"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    end = time.monotonic() + 20
    while True:
        ok = subprocess.run(["ip", "netns", "exec", ns, "etcdctl", "--endpoints", "http://172.31.1.1:2379",
                             "endpoint", "health"],
                            capture_output=True, timeout=10).returncode == 0
        if ok:
            return proc
        if proc.poll() is not None or time.monotonic() > end:
            with open(os.path.join(rt.dir, "etcd.log"), "rb") as fh:
                raise AssertionError("etcd in the control-plane namespace did not start:\n"
                                     + fh.read()[-2000:].decode("utf-8", "replace"))
        time.sleep(0.1)


def node_conf(rt, node: str, endpoint: str) -> str:
    netdir = os.path.join(rt.dir, f"net-{node}")
    os.makedirs(netdir, exist_ok=True)
    doc = {"cniVersion": "1.0.0", "name": NET, "plugins": [{
        "type": "macvlan", "master": "lan", "mode": "bridge",
        "ipam": {"type": "cni-ipam", "dataDir": os.path.join(rt.data_dir, node),
                 "ranges": [[{"subnet": str(SUBNET), "rangeStart": "10.253.0.10", "rangeEnd": "10.253.0.250",
                              "gateway": "10.253.0.1"}]],
                 "pool": {"name": "lan", "blockSize": 28, "nodeName": node,
                          "etcd": {"endpoints": [endpoint], "prefix": "/cni-ipam", "timeout": 2}}},
    }]}
    with open(os.path.join(netdir, f"{NET}.conflist"), "w") as fh:
        json.dump(doc, fh)
    return netdir


def test_macvlan_pool_two_nodes_one_l2(runtime):
    rt = runtime
    if not os.access(ETCD, os.X_OK) or shutil.which("etcdctl") is None:
        pytest.skip("etcd-server / etcd-client missing (scripts/setup.d/40-etcd.sh)")
    cp, na, nb = rt.netns("etcd"), rt.netns("na"), rt.netns("nb")
    for host, side, net in ((na, "ea", "172.31.1"), (nb, "eb", "172.31.2")):
        sh("ip", "-n", cp, "link", "add", side, "type", "veth", "peer", "name", "ctl", "netns", host)
        sh("ip", "-n", cp, "addr", "add", f"{net}.1/30", "dev", side)
        sh("ip", "-n", host, "addr", "add", f"{net}.2/30", "dev", "ctl")
        sh("ip", "-n", cp, "link", "set", side, "up")
        sh("ip", "-n", host, "link", "set", "ctl", "up")
    sh("ip", "-n", na, "link", "add", "lan", "type", "veth", "peer", "name", "lan", "netns", nb)
    sh("ip", "-n", na, "link", "set", "lan", "up")
    sh("ip", "-n", nb, "link", "set", "lan", "up")
    etcd = start_etcd(rt, cp)
    try:
        confs = {"node-a": (na, node_conf(rt, "node-a", "http://172.31.1.1:2379")),
                 "node-b": (nb, node_conf(rt, "node-b", "http://172.31.2.1:2379"))}
        placement = [("c1", "node-a"), ("c2", "node-b"), ("c3", "node-a")]
        got = {}
        for tag, node in placement:
            host, netdir = confs[node]
            ctr = rt.netns(tag)
            res = rt.driver("add", NET, ctr, host=host, container_id=f"pool-{tag}", ifname="net1",
                            extra={"NETCONFPATH": netdir})
            assert res.rc == 0, res
            (ip,) = [ipaddress.ip_interface(i["address"]) for i in res.json["ips"]]
            assert ip.network == SUBNET, res.json
            got[tag] = (ctr, node, ip.ip)
        assert len({ip for _, _, ip in got.values()}) == 3, got
        # each node's addresses lie in its own blocks, and the two nodes' blocks are disjoint
        held = {}
        for node in confs:
            with open(os.path.join(rt.data_dir, node, NET, ".cni-ipam", "pool.json")) as fh:
                held[node] = [ipaddress.ip_network(b["cidr"]) for b in json.load(fh)["blocks"]]
        assert not any(a.overlaps(b) for a in held["node-a"] for b in held["node-b"]), held
        for _ctr, node, ip in got.values():
            assert any(ip in b for b in held[node]), (ip, node, held)
        out = subprocess.run(["ip", "netns", "exec", cp, "etcdctl", "--endpoints", "http://172.31.1.1:2379", "get",
                              "--prefix", "--keys-only", "/cni-ipam/pools/lan/blocks/"],
                             capture_output=True, text=True, timeout=10).stdout
        keys = sorted(line.rsplit("/blocks/", 1)[1] for line in out.split() if "/blocks/" in line)
        assert keys == sorted(str(b) for n in held.values() for b in n), (keys, held)
        # same L2 across the nodes: c1 (node-a) reaches c2 (node-b), c2 reaches c3 (node-a)
        assert ping_until(got["c1"][0], str(got["c2"][2])), "node-a container to node-b container"
        assert ping_until(got["c2"][0], str(got["c3"][2])), "node-b container to node-a container"
        for tag, node in placement:
            host, netdir = confs[node]
            res = rt.driver("del", NET, got[tag][0], host=host, container_id=f"pool-{tag}", ifname="net1",
                            extra={"NETCONFPATH": netdir})
            assert res.rc == 0, res
        for node in confs:
            names = os.listdir(os.path.join(rt.data_dir, node, NET))
            assert not [n for n in names if n[0].isdigit()], names
    finally:
        os.killpg(etcd.pid, signal.SIGKILL)
        etcd.wait(10)
