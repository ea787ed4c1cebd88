"""The verbs: ADD, DEL, CHECK, GC and STATUS over netconf, allocator, store and result.

Each verb receives the validated environment (``skel.CniEnv``) and the netconf ``skel`` parsed once
for it (``plugin.netconf.parse``): an ``IpamConfig`` for ADD, CHECK and STATUS, a ``NetworkRef`` for
DEL and GC (which must work on a config whose ranges no longer parse; GC's is None when the config
carries no attachment list), and returns the result dict or None.  ``cni_ipam.__main__`` hands these
functions to ``skel`` as its verb table; nothing here imports ``skel``.  What only one verb uses
(the allocator and the result for ADD, the locked store for all but STATUS, STATUS's lock-free view)
is imported by that verb, so a DEL loads no range, allocator or result code.

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

STATUS (CNI 1.1): could an ADD work now?  containerd 2.x calls STATUS on every CRI status poll and
CRI-O polls it too; a failing STATUS makes the kubelet report the node NotReady (no scheduling, and
after the default 300 s toleration its pods are evicted).  So STATUS fails (code 50, NOT_AVAILABLE)
only for what stops *every* ADD:

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

from cni_ipam.errors import CHECK_FAILED, GC_INCOMPLETE, NOT_AVAILABLE, CniError

# Annotations: ``env`` is a ``plugin.skel.CniEnv``, ``cfg`` a ``plugin.netconf.IpamConfig``, ``ref`` a
# ``plugin.netconf.NetworkRef``, ``store`` a ``store.network.NetworkStore``.


def cmd_add(env, cfg) -> dict:
    from cni_ipam.plugin import allocator
    from cni_ipam.plugin.netconf import read_resolv_conf
    from cni_ipam.plugin.result import IpamResult
    from cni_ipam.store.network import NetworkStore

    dns = read_resolv_conf(cfg.resolv_conf) if cfg.resolv_conf else {}
    with NetworkStore(cfg.data_dir, cfg.name, cfg.lock_timeout) as store:
        if cfg.pool is not None:  # cluster pool: allocate inside this node's blocks, recorded in etcd
            from cni_ipam.cluster import pool

            ips = pool.allocate(store, cfg, env.container_id, env.ifname)
        else:
            reclaim = _heal(store) if cfg.reclaim_on_exhaustion else None
            ips = allocator.allocate(store, cfg.range_sets, cfg.requested, env.container_id, env.ifname, reclaim)
        store.save_owner(env.container_id, env.ifname, [iface.ip for iface, _ in ips], attachment_meta(env, store))
    return IpamResult(ips, cfg.routes, dns).to_json(cfg.cni_version)


def _heal(store):
    """The exhaustion heal for ``allocator.allocate``: True when it released something."""

    def reclaim() -> bool:
        from cni_ipam.plugin.heal import reclaim_stranded  # only when a range set is full

        return bool(reclaim_stranded(store))

    return reclaim


def cmd_del(env, ref) -> None:
    """Release by (container ID, ifname).  Needs only the network name and dataDir to be valid,
    so an edit that broke the rest of the config does not leak the addresses."""
    from cni_ipam.store.network import NetworkStore

    with NetworkStore(ref.data_dir, ref.name, ref.lock_timeout, create=False) as store:
        if store.exists:
            if ref.pooled:  # cluster pool: the etcd records go first; never fails the DEL
                from cni_ipam.cluster import pool

                pool.release_owner(store, env.container_id, env.ifname)
            else:
                store.release_owner(env.container_id, env.ifname)


def cmd_check(env, cfg) -> None:
    from cni_ipam.addr import ip_address
    from cni_ipam.plugin.result import addresses_in
    from cni_ipam.store.network import NetworkStore

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
                f"reserved address {', '.join(map(str, missing))} of container {env.container_id} "
                "is missing from prevResult",
                "prevResult",
            )
    from cni_ipam.plugin.netcheck import check_in_netns  # pyroute2 loads only here, only for CHECK

    check_in_netns(env.netns, env.ifname, cfg.name, held)


def attachment_meta(env, store) -> dict:
    """What the GC pass needs to judge liveness later; host-local ignores all of it."""
    import time  # a builtin module, already loaded by the store

    meta: dict = {"created": round(time.time(), 3), "bootId": store.boot_id}
    if env.netns:
        from cni_ipam.plugin.nsfs import identity

        meta["netns"] = env.netns
        meta.update(identity(env.netns))  # the kernel's namespace id (never reused) where it has one
    k8s = {
        field: env.args[key]
        for key, field in (("K8S_POD_NAMESPACE", "namespace"), ("K8S_POD_NAME", "name"), ("K8S_POD_UID", "uid"))
        if env.args.get(key)
    }
    if k8s:
        meta["k8s"] = k8s
    return meta


# ----------------------------------------------------------------------------------------- GC
# The runtime's list is parsed with the netconf (``netconf.gc_ref``, ``netconf.valid_attachments``).
def cmd_gc(env, ref) -> None:
    """``ref``: the netconf with the runtime's list (``ref.valid``), None when the config carries
    no list (then nothing is released)."""
    if ref is None:
        return None
    from cni_ipam.store.network import NetworkStore

    valid = ref.valid
    failures: list[str] = []
    released = kept = 0
    with NetworkStore(ref.data_dir, ref.name, ref.lock_timeout, create=False) as store:
        if not store.exists:
            return None
        releaser = None
        if ref.pooled:  # cluster pool: each etcd record goes before its file; never fails the GC
            from cni_ipam.cluster.pool import Releaser

            releaser = Releaser(store, probe=True)
        for res in store.reservations():
            if valid.keeps(res.container_id, res.ifname):
                kept += 1
                continue
            try:
                if releaser is not None and res.container_id is not None:
                    releaser.free(res.address, res.container_id, res.ifname or "")
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
        if releaser is not None:
            releaser.finish()  # return emptied blocks
    if failures:
        raise CniError(
            GC_INCOMPLETE,
            f"GC released {released} reservation(s) of network {ref.name} but {len(failures)} failed",
            "; ".join(failures)[:4000],
        )
    return None


# ------------------------------------------------------------------------------------- STATUS
def cmd_status(env, cfg) -> None:
    """``cfg`` parsed for STATUS (``netconf.parse(..., "status")``: an unknown pod CIDR is already 50 there)."""
    from cni_ipam.store.layout import parse_ip_name  # STATUS reads no reservation: the lock-free view only
    from cni_ipam.store.snapshot import reserved_names, usable_problem

    net_dir = os.path.join(cfg.data_dir, cfg.name)
    problem = usable_problem(cfg.data_dir, cfg.name)
    if problem:
        raise CniError(NOT_AVAILABLE, f"data directory not writable: {problem}", net_dir)
    if cfg.status_on_exhaustion != "fail":
        return None
    if cfg.pool is not None:  # cluster pool: room in held blocks, else a free block in etcd
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


def free_in_set(rset, reserved) -> int:
    """How many addresses of ``rset`` an ADD could still take (reserved excluded/special ones don't count)."""
    used = sum(1 for addr in reserved if rset.can_hand_out(addr))
    return max(rset.size() - used, 0)
