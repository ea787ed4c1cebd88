"""The verbs: ADD, DEL, CHECK, GC and STATUS over netconf, allocator, store and result.

Each verb receives the validated environment (``skel.CniEnv``) and the decoded network config (name
validated, version negotiated by ``skel``), parses it once (``netconf.load``, or ``netconf.network_ref``
for DEL and GC, which must work on a config whose ranges no longer parse) and returns the result dict
or None.  ``cni_ipam.__main__`` hands these functions to ``skel`` as its verb table; nothing here
imports ``skel`` at run time.

GC (CNI 1.1): release every reservation of this network whose (containerID, ifname) is not in the runtime's
``cni.dev/valid-attachments`` list (libcni also sends the same list as ``cni.dev/attachments``).  When
both keys carry a list, an attachment listed under either is kept: the union is the safer reading
(``[]`` under one key and a non-empty list under the other releases only what neither lists).  Rules:

* Only this network's directory, under its lock (the same ``flock`` as ADD/DEL and host-local).
* An attachment in the list keeps all its addresses.  An old ID-only reservation (a file holding
  only the container ID) is kept when any listed attachment has that container ID; so is every
  reservation of a container listed without an ``ifname``.
* A reservation file with no owner at all (empty) belongs to no attachment and is released; one
  whose content is not a valid owner (opaque) or that is not a regular file is never released.
* A missing or ``null`` list releases nothing: we cannot tell "the runtime knows no attachments"
  from "the runtime sent no list", and releasing an address in use is worse than keeping a leaked
  one.  libcni's ``GCNetworkList`` always sends a list, so an empty list ``[]`` really means "no
  valid attachments" and releases everything of the network.  A malformed list is an error (7) and
  releases nothing.
* Failures do not stop the pass: every reservation is tried, then one error (106, GC_INCOMPLETE)
  lists all that failed.

STATUS (CNI 1.1): could an ADD work now?  containerd 2.x calls STATUS on every CRI status poll and CRI-O polls it too; a failing STATUS makes
the kubelet report the node NotReady (no scheduling, and after the default 300 s toleration its pods
are evicted).  So STATUS fails (code 50, NOT_AVAILABLE) only for what stops *every* ADD:

* the state directory cannot be used the way ADD uses it (``store.usable_problem``: the same
  ``O_NOFOLLOW`` dir-fd walk; a symlinked network directory, ``.cni-ipam`` or ``.cni-ipam/tmp``, a
  file in the way, a read-only or unwritable directory);
* ``usePodCidr`` cannot be resolved (the pod CIDR is unknown).

A full range set is a choice (``ipam.statusOnExhaustion``): ``"ok"`` (the default) answers
available - the address shortage is reported by ``cni-ipam show`` and the metrics, and an ADD that
finds its set full first reclaims provably stranded reservations (``reclaimOnExhaustion``);
``"fail"`` answers 50 naming the full range sets.  An invalid config is reported as such (7).

STATUS never takes the network lock, never reads a reservation file and changes nothing on disk but
a probe file created and removed in ``.cni-ipam/tmp``.
"""

from __future__ import annotations

import os
import time

from cni_ipam.addr import ip_address
from cni_ipam.errors import CHECK_FAILED, GC_INCOMPLETE, INVALID_CONFIG, NOT_AVAILABLE, PODCIDR_UNAVAILABLE, CniError
from cni_ipam.plugin import allocator
from cni_ipam.plugin import netconf as config
from cni_ipam.plugin.result import IpamResult, addresses_in
from cni_ipam.store.network import NetworkStore

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable

    from cni_ipam.plugin.skel import CniEnv


def cmd_add(env: CniEnv, conf: dict) -> dict:
    cfg = config.load(conf, env.args)
    dns = config.read_resolv_conf(cfg.resolv_conf) if cfg.resolv_conf else {}
    with NetworkStore(cfg.data_dir, cfg.name, cfg.lock_timeout) as store:
        if cfg.pool is not None:  # cluster pool (issue 12): allocate inside this node's blocks
            from cni_ipam.cluster import pool

            ips = pool.allocate(store, cfg, env.container_id, env.ifname)
        else:
            reclaim = _heal(store, cfg.pidns_is_node) if cfg.reclaim_on_exhaustion else None
            ips = allocator.allocate(store, cfg.range_sets, cfg.requested, env.container_id, env.ifname, reclaim)
        store.save_owner(env.container_id, env.ifname, [iface.ip for iface, _ in ips], attachment_meta(env, store))
    return IpamResult(ips, cfg.routes, dns).to_json(cfg.cni_version)


def _heal(store: NetworkStore, node_pidns: bool):
    """The exhaustion heal for ``allocator.allocate``: True when it released something."""

    def reclaim() -> bool:
        from cni_ipam.plugin.heal import reclaim_stranded  # only when a range set is full

        return bool(reclaim_stranded(store, node_pidns=node_pidns))

    return reclaim


def cmd_del(env: CniEnv, conf: dict) -> None:
    """Release by (container ID, ifname).  Needs only the network name and dataDir to be valid,
    so an edit that broke the rest of the config does not leak the addresses."""
    ref = config.network_ref(conf)
    with NetworkStore(ref.data_dir, ref.name, ref.lock_timeout, create=False) as store:
        if store.exists:
            store.release_owner(env.container_id, env.ifname)
            if ref.pooled:  # cluster pool (issue 12)
                from cni_ipam.cluster import pool

                pool.after_release(store)  # returns emptied blocks; never fails the DEL


def cmd_check(env: CniEnv, conf: dict) -> None:
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
                listed.add(ip_address(text))
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


def attachment_meta(env: CniEnv, store: NetworkStore) -> dict:
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


# ----------------------------------------------------------------------------------------- GC
VALID_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class ValidAttachments:
    """The runtime's list: exact (containerID, ifname) pairs plus container IDs listed without ifname."""

    __slots__ = ("pairs", "ids", "whole_ids")

    def __init__(self, pairs: set[tuple[str, str]], whole_ids: set[str]) -> None:
        self.pairs = frozenset(pairs)
        self.whole_ids = frozenset(whole_ids)
        self.ids = frozenset({cid for cid, _ in pairs} | set(whole_ids))

    def keeps(self, cid: str | None, ifname: str | None) -> bool:
        if cid is None:
            return False
        if cid in self.whole_ids:
            return True
        if ifname is None:  # ID-only reservation written by an old host-local
            return cid in self.ids
        return (cid, ifname) in self.pairs

    def __len__(self) -> int:
        return len(self.pairs) + len(self.whole_ids)


def valid_attachments(conf: dict) -> ValidAttachments | None:
    """The list from the config, None when absent or null (then GC releases nothing).  When both
    keys carry a list, an attachment listed under either is kept (the union: the safer reading)."""
    keys = [k for k in VALID_KEYS if conf.get(k) is not None]
    if not keys:
        return None
    pairs: set[tuple[str, str]] = set()
    whole: set[str] = set()
    for key in keys:
        _read_list(key, conf[key], pairs, whole)
    return ValidAttachments(pairs, whole)


def _read_list(key: str, value: object, pairs: set[tuple[str, str]], whole: set[str]) -> None:
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, f"invalid {key}: must be a list of {{containerID, ifname}} objects", f"key {key}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise CniError(INVALID_CONFIG, f"invalid {key}[{i}] {item!r}: must be an object with containerID and ifname", f"key {key}")
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or not cid.strip():
            raise CniError(INVALID_CONFIG, f"invalid {key}[{i}].containerID {cid!r}: must be a non-empty string", f"key {key}")
        if ifname in (None, ""):
            whole.add(cid.strip())
        elif not isinstance(ifname, str):
            raise CniError(INVALID_CONFIG, f"invalid {key}[{i}].ifname {ifname!r}: must be a string", f"key {key}")
        else:
            pairs.add((cid.strip(), ifname))


def cmd_gc(env: CniEnv, conf: dict) -> None:
    valid = valid_attachments(conf)
    if valid is None:
        return None
    ref = config.network_ref(conf)
    failures: list[str] = []
    released = kept = 0
    with NetworkStore(ref.data_dir, ref.name, ref.lock_timeout, create=False) as store:
        if not store.exists:
            return None
        for res in store.reservations():
            if valid.keeps(res.container_id, res.ifname):
                kept += 1
                continue
            try:
                if store.release_reservation(res):
                    released += 1
            except CniError as exc:
                failures.append(f"{res.address}: {exc.msg}")
            except OSError as exc:
                failures.append(f"{res.address}: {exc.strerror or exc}")
        from cni_ipam.store.gcstats import record_gc_stats

        record_gc_stats(
            ref.data_dir, ref.name, "gc-verb", True,
            {"live": kept, "stranded": released + len(failures), "unknown": 0}, released, len(failures),
        )
        if ref.pooled:  # cluster pool (issue 12)
            from cni_ipam.cluster import pool

            pool.after_release(store, force=True)  # return emptied blocks; never fails the GC
    if failures:
        raise CniError(
            GC_INCOMPLETE,
            f"GC released {released} reservation(s) of network {ref.name} but {len(failures)} failed",
            "; ".join(failures)[:4000],
        )
    return None


# ------------------------------------------------------------------------------------- STATUS
def cmd_status(env: CniEnv, conf: dict) -> None:
    from cni_ipam.store.layout import parse_ip_name  # STATUS reads no reservation: the lock-free view only
    from cni_ipam.store.snapshot import reserved_names, usable_problem

    try:
        cfg = config.load(conf, {})
    except CniError as exc:
        if exc.code == PODCIDR_UNAVAILABLE:
            raise CniError(NOT_AVAILABLE, f"pod CIDR unknown: {exc.msg}", exc.details) from None
        raise
    net_dir = os.path.join(cfg.data_dir, cfg.name)
    problem = usable_problem(cfg.data_dir, cfg.name)
    if problem:
        raise CniError(NOT_AVAILABLE, f"data directory not writable: {problem}", net_dir)
    if cfg.status_on_exhaustion != "fail":
        return None
    if cfg.pool is not None:  # cluster pool (issue 12): room in held blocks, else a free block in etcd
        from cni_ipam.cluster import pool

        why = pool.status_problem(cfg)
        if why:
            raise CniError(NOT_AVAILABLE, why, f"pool {cfg.pool.name}")
        return None
    reserved = frozenset(parse_ip_name(name) for name in reserved_names(cfg.data_dir, cfg.name))
    full = [idx for idx, rset in enumerate(cfg.range_sets) if free_in_set(rset, reserved) == 0]
    if full:
        sets = ", ".join(f"range set {i} ({cfg.range_sets[i]})" for i in full)
        raise CniError(NOT_AVAILABLE, f"no free address: every address of {sets} is reserved", net_dir)
    return None


def free_in_set(rset, reserved: Iterable) -> int:
    """How many addresses of ``rset`` an ADD could still take (reserved excluded/special ones don't count)."""
    used = sum(1 for addr in reserved if rset.can_hand_out(addr))
    return max(rset.size() - used, 0)
