"""The verbs: ADD, DEL and CHECK over config, allocator, store and result.

Each verb receives the validated environment (``protocol.CniEnv``) and the decoded network config.
"""

from __future__ import annotations

import ipaddress
import os
import time

from cni_ipam.plugin import allocator
from cni_ipam.plugin import netconf as config
from cni_ipam.errors import CHECK_FAILED, CniError
from cni_ipam.plugin.result import IpamResult, addresses_in
from cni_ipam.store.network import NetworkStore

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from cni_ipam.plugin.skel import CniEnv


def cmd_add(env: "CniEnv", conf: dict) -> dict:
    cfg = config.load(conf, env.args)
    dns = config.read_resolv_conf(cfg.resolv_conf) if cfg.resolv_conf else {}
    with NetworkStore(cfg.data_dir, cfg.name, cfg.lock_timeout) as store:
        if cfg.pool is not None:  # cluster pool (issue 12): allocate inside this node's blocks
            from cni_ipam.cluster import pool

            ips = pool.allocate(store, cfg, env.container_id, env.ifname)
        else:
            reclaim = _heal(store, config.pidns_is_node_of(cfg.ipam)) if config.reclaim_on_exhaustion_of(cfg.ipam) else None
            ips = allocator.allocate(store, cfg.range_sets, cfg.requested, env.container_id, env.ifname, reclaim)
        store.save_owner(env.container_id, env.ifname, [iface.ip for iface, _ in ips], attachment_meta(env, store))
    return IpamResult(ips, cfg.routes, dns).to_json(cfg.cni_version)


def _heal(store: NetworkStore, node_pidns: bool):
    """The exhaustion heal for ``allocator.allocate``: True when it released something."""

    def reclaim() -> bool:
        from cni_ipam.plugin.heal import reclaim_stranded  # only when a range set is full

        return bool(reclaim_stranded(store, node_pidns=node_pidns))

    return reclaim


def cmd_del(env: "CniEnv", conf: dict) -> None:
    """Release by (container ID, ifname).  Needs only the network name and dataDir to be valid,
    so an edit that broke the rest of the config does not leak the addresses."""
    ipam = conf.get("ipam")
    with NetworkStore(config.data_dir_of(ipam), conf["name"], config.lock_timeout_of(ipam), create=False) as store:
        if store.exists:
            store.release_owner(env.container_id, env.ifname)
            if isinstance(ipam, dict) and ipam.get("pool") is not None:  # cluster pool (issue 12)
                from cni_ipam.cluster import pool

                pool.after_release(store)  # returns emptied blocks; never fails the DEL


def cmd_check(env: "CniEnv", conf: dict) -> None:
    cfg = config.load(conf, env.args)
    with NetworkStore(cfg.data_dir, cfg.name, cfg.lock_timeout, create=False) as store:
        held = store.owned_by(env.container_id, env.ifname) if store.exists else []
    if not held:
        raise CniError(
            CHECK_FAILED,
            f"no address reserved for container {env.container_id} interface {env.ifname} in network {cfg.name}",
            os.path.join(cfg.data_dir, cfg.name),
        )
    for idx, rset in enumerate(cfg.range_sets):
        # Subnet, not rangeStart..rangeEnd: host-local hands out an IPv6 subnet's last address,
        # which our default range stops short of; CHECK must accept what host-local reserved.
        if not any(rset.in_subnets(ip) is not None for ip in held):
            raise CniError(
                CHECK_FAILED,
                f"container {env.container_id} interface {env.ifname} holds no address in range set {idx} ({rset})",
                f"holds {', '.join(map(str, held))}",
            )
    if cfg.prev_result is not None:
        listed = set()
        for text in addresses_in(cfg.prev_result):
            try:
                listed.add(ipaddress.ip_address(text))
            except ValueError:
                pass
        missing = [ip for ip in held if ip not in listed]
        if missing:
            raise CniError(
                CHECK_FAILED,
                f"reserved address {', '.join(map(str, missing))} of container {env.container_id} is missing from prevResult",
                "prevResult",
            )
    from cni_ipam.plugin.netcheck import check_in_netns  # pyroute2 loads only here, only for CHECK

    check_in_netns(env.netns, env.ifname, cfg.name, held)


def attachment_meta(env: "CniEnv", store: NetworkStore) -> dict:
    """What the GC pass needs to judge liveness later; host-local ignores all of it."""
    meta: dict = {"created": round(time.time(), 3), "bootId": store.boot_id}
    if env.netns:
        meta["netns"] = env.netns
        try:
            st = os.stat(env.netns)
            meta["netnsDev"] = st.st_dev
            meta["netnsIno"] = st.st_ino
        except OSError:
            pass
    k8s = {
        field: env.args[key]
        for key, field in (("K8S_POD_NAMESPACE", "namespace"), ("K8S_POD_NAME", "name"), ("K8S_POD_UID", "uid"))
        if env.args.get(key)
    }
    if k8s:
        meta["k8s"] = k8s
    return meta
