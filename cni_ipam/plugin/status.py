"""The CNI 1.1 STATUS verb: could an ADD work now?  (``protocol.run`` calls ``cmd_status``.)

containerd 2.x calls STATUS on every CRI status poll and CRI-O polls it too; a failing STATUS makes
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

from cni_ipam.plugin import netconf as config
from cni_ipam.errors import NOT_AVAILABLE, PODCIDR_UNAVAILABLE, CniError
from cni_ipam.store.network import parse_ip_name, reserved_names, usable_problem

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable

    from cni_ipam.plugin.skel import CniEnv


def cmd_status(env: "CniEnv", conf: dict) -> None:
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
    if config.status_on_exhaustion_of(cfg.ipam) != "fail":
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


def free_in_set(rset, reserved: "Iterable") -> int:
    """How many addresses of ``rset`` an ADD could still take (reserved excluded/special ones don't count)."""
    used = 0
    for addr in reserved:
        rng = rset.range_for(addr)
        if rng is not None and not rng.is_excluded(addr) and not rng.unusable(int(addr)):
            used += 1
    return max(rset.size() - used, 0)
