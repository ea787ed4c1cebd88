"""The CNI 1.1 GC and STATUS verbs (``protocol.run`` calls them after checking cniVersion >= 1.1.0).

GC: release every reservation of this network whose (containerID, ifname) is not in the runtime's
``cni.dev/valid-attachments`` list (libcni also sends the same list as ``cni.dev/attachments``).  When
both keys carry a list, an attachment listed under either is kept: the union is the safer reading
(``[]`` under one key and a non-empty list under the other releases only what neither lists).  Rules:

* Only this network's directory, under its lock (the same ``flock`` as ADD/DEL and host-local).
* An attachment in the list keeps all its addresses.  An old ID-only reservation (a file holding
  only the container ID) is kept when any listed attachment has that container ID; so is every
  reservation of a container listed without an ``ifname``.
* A reservation file with no owner at all (empty) belongs to no attachment and is released.
* A missing or ``null`` list releases nothing: we cannot tell "the runtime knows no attachments"
  from "the runtime sent no list", and releasing an address in use is worse than keeping a leaked
  one.  libcni's ``GCNetworkList`` always sends a list, so an empty list ``[]`` really means "no
  valid attachments" and releases everything of the network.  A malformed list is an error (7) and
  releases nothing.
* Failures do not stop the pass: every reservation is tried, then one error (106, GC_INCOMPLETE)
  lists all that failed.

STATUS: exit 0 when an ADD could succeed now; otherwise code 50 (NOT_AVAILABLE) saying why: every
address of a range set is reserved, the data directory cannot be written, or the pod CIDR cannot be
resolved.  An invalid config is reported as such (7).  STATUS changes nothing on disk.
"""

from __future__ import annotations

import os

from cni_ipam import config
from cni_ipam.errors import GC_INCOMPLETE, INVALID_CONFIG, NOT_AVAILABLE, CniError
from cni_ipam.store import META_DIR, TMP_DIR, NetworkStore, parse_ip_name

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import FrozenSet, List, Optional, Set, Tuple

    from cni_ipam.protocol import CniEnv

VALID_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class ValidAttachments:
    """The runtime's list: exact (containerID, ifname) pairs plus container IDs listed without ifname."""

    __slots__ = ("pairs", "ids", "whole_ids")

    def __init__(self, pairs: "Set[Tuple[str, str]]", whole_ids: "Set[str]") -> None:
        self.pairs = frozenset(pairs)
        self.whole_ids = frozenset(whole_ids)
        self.ids = frozenset({cid for cid, _ in pairs} | set(whole_ids))

    def keeps(self, cid: "Optional[str]", ifname: "Optional[str]") -> bool:
        if cid is None:
            return False
        if cid in self.whole_ids:
            return True
        if ifname is None:  # ID-only reservation written by an old host-local
            return cid in self.ids
        return (cid, ifname) in self.pairs

    def __len__(self) -> int:
        return len(self.pairs) + len(self.whole_ids)


def valid_attachments(conf: dict) -> "Optional[ValidAttachments]":
    """The list from the config, None when absent or null (then GC releases nothing).  When both
    keys carry a list, an attachment listed under either is kept (the union: the safer reading)."""
    keys = [k for k in VALID_KEYS if conf.get(k) is not None]
    if not keys:
        return None
    pairs: "Set[Tuple[str, str]]" = set()
    whole: "Set[str]" = set()
    for key in keys:
        _read_list(key, conf[key], pairs, whole)
    return ValidAttachments(pairs, whole)


def _read_list(key: str, value: object, pairs: "Set[Tuple[str, str]]", whole: "Set[str]") -> None:
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


def cmd_gc(env: "CniEnv", conf: dict) -> None:
    valid = valid_attachments(conf)
    if valid is None:
        return None
    ipam = conf.get("ipam")
    data_dir = config.data_dir_of(ipam)
    failures: "List[str]" = []
    released = kept = 0
    with NetworkStore(data_dir, conf["name"], config.lock_timeout_of(ipam), create=False) as store:
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
        from cni_ipam.liveness import record_gc_stats

        record_gc_stats(
            data_dir, conf["name"], "gc-verb", True,
            {"live": kept, "stranded": released + len(failures), "unknown": 0}, released, len(failures),
        )
        if isinstance(ipam, dict) and ipam.get("pool") is not None:  # cluster pool (issue 12)
            from cni_ipam.cluster import pool

            pool.after_release(store, force=True)  # return emptied blocks; never fails the GC
    if failures:
        raise CniError(
            GC_INCOMPLETE,
            f"GC released {released} reservation(s) of network {conf['name']} but {len(failures)} failed",
            "; ".join(failures)[:4000],
        )
    return None


# ---------------------------------------------------------------------- STATUS
def cmd_status(env: "CniEnv", conf: dict) -> None:
    try:
        cfg = config.load(conf, {})
    except CniError as exc:
        from cni_ipam.errors import PODCIDR_UNAVAILABLE

        if exc.code == PODCIDR_UNAVAILABLE:
            raise CniError(NOT_AVAILABLE, f"pod CIDR unknown: {exc.msg}", exc.details) from None
        raise
    net_dir = os.path.join(cfg.data_dir, cfg.name)
    problem = _write_problem(cfg.data_dir, net_dir)
    if problem:
        raise CniError(NOT_AVAILABLE, f"data directory not writable: {problem}", net_dir)
    if cfg.pool is not None:  # cluster pool (issue 12): room in held blocks, else a free block in etcd
        from cni_ipam.cluster import pool

        why = pool.status_problem(cfg)
        if why:
            raise CniError(NOT_AVAILABLE, why, f"pool {cfg.pool.name}")
        return None
    if not os.path.isdir(net_dir):
        return None  # nothing reserved yet: every range set has room (config.load checked sizes)
    reserved = _reserved_addresses(net_dir)
    full = [idx for idx, rset in enumerate(cfg.range_sets) if free_in_set(rset, reserved) == 0]
    if full:
        sets = ", ".join(f"range set {i} ({cfg.range_sets[i]})" for i in full)
        raise CniError(NOT_AVAILABLE, f"no free address: every address of {sets} is reserved", net_dir)
    return None


def free_in_set(rset, reserved: "FrozenSet") -> int:
    """How many addresses of ``rset`` an ADD could still take (reserved excluded/special ones don't count)."""
    used = 0
    for addr in reserved:
        rng = rset.range_for(addr)
        if rng is not None and not rng.is_excluded(addr) and not rng.unusable(int(addr)):
            used += 1
    return max(rset.size() - used, 0)


def _reserved_addresses(net_dir: str) -> "FrozenSet":
    """Addresses with a reservation file (names only: no lock, no reads; STATUS is advisory)."""
    try:
        names = os.listdir(net_dir)
    except OSError:
        return frozenset()
    out = set()
    for name in names:
        addr = parse_ip_name(name)
        if addr is not None:
            out.add(addr)
    return frozenset(out)


def _write_problem(data_dir: str, net_dir: str) -> str:
    """Why an ADD could not create a reservation file, or '' when it could."""
    if os.path.isdir(net_dir):
        # Probe inside .cni-ipam when it exists: a file made in the network directory itself would
        # change its mtime and cost the next ADD an index rebuild.
        probe_dir = next(
            (d for d in (os.path.join(net_dir, META_DIR, TMP_DIR), os.path.join(net_dir, META_DIR)) if os.path.isdir(d)),
            net_dir,
        )
        probe = os.path.join(probe_dir, f".status-probe.{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                try:
                    os.unlink(probe)
                except FileNotFoundError:
                    pass  # an ADD that opened the store just now cleaned tmp/
        except OSError as exc:
            return f"cannot create a file in {probe_dir}: {exc.strerror or exc}"
        return ""
    # Not created yet: the nearest existing ancestor must let us create the directories.
    path = net_dir
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"cannot create {net_dir}: {path} is not writable"
    return ""
