"""Helpers for the cluster-pool tests (tests/cluster/test_pool_*.py): a pool netconf per simulated
node, plugin calls as a runtime makes them, and the invariant check over etcd and every node's
data directory."""

from __future__ import annotations

import io
import ipaddress
import json
import os

from tests.helpers import run_plugin


def pool_conf(cluster, prefix: bytes, node: str, data_dir: str, pool: str = "p", ranges=None, block: int = 28,
              network: str = "poolnet", version: str = "1.1.0", **pool_extra) -> dict:
    etcd = {"endpoints": cluster.endpoints, "prefix": prefix.decode().rstrip("/"), "timeout": 3.0}
    kw = cluster.client_kwargs()
    for src, dst in (("ca_file", "caFile"), ("cert_file", "certFile"), ("key_file", "keyFile")):
        if kw.get(src):
            etcd[dst] = kw[src]
    pool_obj = {"name": pool, "blockSize": block, "nodeName": node, "etcd": etcd}
    pool_obj.update(pool_extra)
    return {
        "cniVersion": version,
        "name": network,
        "type": "bridge",
        "ipam": {"type": "cni-ipam", "dataDir": data_dir,
                 "ranges": ranges or [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]],
                 "pool": pool_obj},
    }


def call(command: str, conf: dict, cid: str, ifname: str = "eth0", **kw):
    """(rc, parsed JSON) of one plugin process."""
    rc, parsed, out, err = run_plugin(command, conf, container_id=cid, ifname=ifname, **kw)
    assert "Traceback" not in out + err, out + err
    return rc, parsed


def call_inproc(command: str, conf: dict, cid: str, ifname: str = "eth0", cni_args: str = ""):
    """One call in this process (for counting etcd round trips): (rc, parsed JSON)."""
    from cni_ipam.__main__ import VERBS
    from cni_ipam.plugin.skel import plugin_main

    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_NETNS": "/var/run/netns/none",
           "CNI_PATH": "/usr/lib/cni"}
    if cni_args:
        env["CNI_ARGS"] = cni_args
    out = io.StringIO()
    rc = plugin_main(VERBS, env, json.dumps(conf).encode(), out)
    text = out.getvalue()
    return rc, (json.loads(text) if text.strip() else None)


def addresses(result: dict) -> list:
    return [ipaddress.ip_interface(ip["address"]).ip for ip in result["ips"]]


def etcd_blocks(cluster, prefix: bytes, pool: str = "p") -> dict:
    """cidr -> claim dict, straight from etcd."""
    from cni_ipam.cluster import keys as poolmod
    from cni_ipam.cluster.etcd import EtcdClient

    p = prefix.decode().rstrip("/")
    c = EtcdClient(cluster.endpoints, **cluster.client_kwargs())
    try:
        out = {}
        for key, value, _mod, _create in c.range_prefix(poolmod.blocks_prefix(p, pool)):
            cidr = poolmod.parse_block_key(p, pool, key)
            assert cidr is not None, key
            out[cidr] = json.loads(value)
        return out
    finally:
        c.close()


def reservations(data_dir: str, network: str = "poolnet") -> dict:
    """address -> file content of one node's network directory."""
    d = os.path.join(data_dir, network)
    out = {}
    if not os.path.isdir(d):
        return out
    for name in os.listdir(d):
        try:
            addr = ipaddress.ip_address(name)
        except ValueError:
            continue
        with open(os.path.join(d, name)) as fh:
            out[addr] = fh.read()
    return out


def local_record(data_dir: str, network: str = "poolnet") -> dict:
    try:
        with open(os.path.join(data_dir, network, ".cni-ipam", "pool.json")) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


def check_invariants(cluster, prefix: bytes, nodes: dict, pool: str = "p", network: str = "poolnet") -> dict:
    """nodes: name -> data dir.  No address on two nodes; every block held by one node; every
    reserved address inside a block etcd shows as its node's.  Returns the etcd blocks."""
    blocks = etcd_blocks(cluster, prefix, pool)
    nets = {cidr: ipaddress.ip_network(cidr) for cidr in blocks}
    seen = {}
    for node, data_dir in nodes.items():
        for addr in reservations(data_dir, network):
            assert addr not in seen, f"{addr} reserved on {seen[addr]} and {node}"
            seen[addr] = node
            owners = [c for c, n in nets.items() if addr in n]
            assert len(owners) == 1, f"{addr} of {node} is in no claimed block ({owners})"
            assert blocks[owners[0]]["node"] == node, \
                f"{addr} of {node} lies in {owners[0]} held by {blocks[owners[0]]['node']}"
        rec = local_record(data_dir, network)
        for b in rec.get("blocks", []):
            if b.get("state", "held") == "held":
                assert blocks.get(b["cidr"], {}).get("node") == node, \
                    f"{node} believes it holds {b['cidr']}: etcd says {blocks.get(b['cidr'])}"
    cidrs = sorted(nets.values(), key=lambda n: (n.version, int(n.network_address)))
    for a, b in zip(cidrs, cidrs[1:]):
        assert not a.overlaps(b), f"blocks {a} and {b} overlap"
    return blocks
