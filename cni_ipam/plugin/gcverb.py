"""The CNI 1.1 GC verb (``protocol.run`` calls it after checking cniVersion >= 1.1.0).

GC: release every reservation of this network whose (containerID, ifname) is not in the runtime's
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

STATUS lives in ``cni_ipam.plugin.status``.
"""

from __future__ import annotations


from cni_ipam.plugin import netconf as config
from cni_ipam.errors import GC_INCOMPLETE, INVALID_CONFIG, CniError
from cni_ipam.store.network import NetworkStore

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Optional, Set, Tuple

    from cni_ipam.plugin.skel import CniEnv

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
        from cni_ipam.admin.liveness import record_gc_stats

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
