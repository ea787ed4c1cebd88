"""Cluster pools: the calls the plugin verbs make (ADD, DEL, GC, STATUS).

A pool is a set of ranges shared by many nodes and cut into blocks that nodes claim in etcd; each
address a node hands out is recorded in etcd under the claim of its block (``cluster.session``
says how).  Imported only for a network whose ipam section has a ``pool`` object; the etcd client
loads on the first call that talks to etcd.  The modules below it: ``keys`` (key schema and
records), ``config`` (``ipam.pool``), ``blocks`` (block math), ``etcdstore`` (the fenced txns),
``record`` (the node's local record), ``session`` (one call's logic).  docs/cluster.md describes
the protocol and its guarantee.
"""

from __future__ import annotations

import os

from cni_ipam.cluster import blocks as bm
from cni_ipam.cluster.record import Record
from cni_ipam.cluster.session import CLAIM_ATTEMPTS, CLAIM_SCANS, BlockLost, Session, warn
from cni_ipam.errors import RANGE_EXHAUSTED, REQUESTED_IP_TAKEN, TRY_AGAIN_LATER, CniError


# ------------------------------------------------------------------------------------------- ADD
def allocate(store, cfg, cid: str, ifname: str) -> list:
    """ADD in a pool: one address per range set from this node's blocks, each recorded in etcd
    under the block's claim; a block is claimed when the held ones are full (or a requested
    address lies in a free block).  ``cfg``: the network's ``IpamConfig``."""
    from cni_ipam.plugin import allocator

    session = Session(store, cfg.name, cfg.pool, cfg.range_sets)
    try:
        session.prepare()
        wanted = _requested(session, cfg, allocator)
        held_now = store.owned_by(cid, ifname)
        out = []
        for idx, rset in enumerate(cfg.range_sets):
            allocator.check_not_held(held_now, rset, idx, cid)
            out += _allocate_set(session, idx, rset, wanted.get(idx, []), cid, ifname, allocator)
        if session.record.reassert:  # this call's answers showed a restore: re-assert before the next ADD
            session.reassert()
        return out
    except BaseException:
        session.undo_created()  # the store's rollback removes the files
        raise
    finally:
        try:
            session.save()
        finally:
            session.close()


def _requested(session: Session, cfg, allocator) -> dict[int, list]:
    """Requested addresses by range set, their blocks claimed; the allocator's rules checked first
    (no block is claimed for a gateway)."""
    wanted: dict[int, list] = {}
    unplaced = []
    for ip in dict.fromkeys(cfg.requested):
        idx = next((i for i, r in enumerate(cfg.range_sets) if r.contains(ip)), None)
        if idx is None:
            unplaced.append(ip)
            continue
        allocator.check_requested(cfg.range_sets[idx], ip, idx)
        cidr = bm.block_of(ip, cfg.pool.block_sizes[idx])
        entry = session.record.entry(cidr)
        if entry is not None and entry["state"] != "held":
            raise CniError(REQUESTED_IP_TAKEN, f"requested ip {ip}: block {cidr} of pool {session.pool_name} is "
                           f"not this node's any more", f"state {entry['state']}")
        if entry is None:
            session.claim(idx, want=cidr)
        wanted.setdefault(idx, []).append(ip)
    if unplaced:
        raise allocator.unplaced(unplaced)
    return wanted


def _allocate_set(session: Session, idx: int, rset, wanted: list, cid: str, ifname: str, allocator) -> list:
    view = SetView(session, idx)
    for _attempt in range(CLAIM_SCANS * CLAIM_ATTEMPTS):
        held = bm.held_range_set(rset, session.record.held(idx))
        if held is None:
            session.claim(idx)
            continue
        try:
            return allocator.allocate(view, [held], wanted, cid, ifname)
        except BlockLost:
            continue  # marked lost: the next round allocates from the other blocks
        except CniError as exc:
            if exc.code != RANGE_EXHAUSTED or wanted:
                raise
        session.claim(idx)
    raise CniError(TRY_AGAIN_LATER, f"pool {session.pool_name}: no room found after several claims",
                   f"range set {idx}")


class SetView:
    """The store as the allocator sees it for one range set: a reservation counts only once etcd
    recorded it under the block's claim, and cursor 0 is the set's own ``last_reserved_ip.<idx>``."""

    def __init__(self, session: Session, idx: int) -> None:
        self._session = session
        self._store = session.store
        self._idx = idx

    def reserve(self, addr, cid: str, ifname: str) -> bool:
        if not self._store.reserve(addr, cid, ifname):
            return False
        try:
            ok = self._session.record_addr(addr, cid, ifname)
        except BaseException:
            self._store.unreserve(addr)
            raise
        if not ok:
            self._store.unreserve(addr)
        return ok

    def holder(self, addr):
        return self._store.holder(addr)

    def owned_by(self, cid: str, ifname: str) -> list:
        return self._store.owned_by(cid, ifname)

    def last_reserved(self, _range_id: int):
        return self._store.last_reserved(self._idx)

    def set_last_reserved(self, _range_id: int, addr) -> None:
        self._store.set_last_reserved(self._idx, addr)


# --------------------------------------------------------------------------------------- DEL, GC
class Releaser:
    """DEL and GC in a pool: each address's etcd record goes before its file, then emptied blocks
    are returned.  Never fails the call: etcd's answers only decide what is deleted there."""

    def __init__(self, store, probe: bool = False) -> None:
        """``probe``: ask etcd once even with nothing to settle (GC passes: a restored etcd is
        detected and this node's claims and address records are re-asserted)."""
        self.store = store
        self.session: Session | None = None
        record = Record.load(store)
        if record.pool is None:  # no pool record: nothing of this network is in etcd
            return
        try:
            self.session = Session(store, store.network, None, record=record)
        except CniError as exc:
            warn(f"pool: network {store.network}: {exc.msg}")
        if self.session is not None and self.session.backend is not None:
            session = self.session
            try:
                session.settle()  # claims a kill left open, releases in flight, deletes that waited
                if probe and session.backend is not None:
                    session.backend.get(session.backend.node_key(session.node))
                if session.record.reassert:
                    warn(f"pool {session.pool_name}: etcd was restored from a backup: re-asserting this node's "
                         f"claims and address records")
                    session.reassert()
            except CniError as exc:
                warn(f"pool: network {store.network}: {exc.msg}")

    def free(self, addr, cid: str, ifname: str) -> None:
        if self.session is None:
            return
        self.session.free(addr, cid, ifname)
        if self.session.record.dirty:
            self.session.save()  # a delete that waits is on disk before the file goes

    def finish(self) -> list[str]:
        if self.session is None:
            return []
        try:
            return self.session.release_empty()
        except CniError as exc:
            warn(f"pool: returning emptied blocks failed (kept for the next call): {exc.msg}")
            return []
        finally:
            try:
                self.session.save()
            except CniError as exc:
                warn(f"pool: could not save the pool record: {exc.msg}")
            self.session.close()


def release_owner(store, cid: str, ifname: str) -> list:
    """DEL: release (cid, ifname)'s addresses in etcd and on disk; returns them."""
    releaser = Releaser(store)
    for addr in store.owned_by(cid, ifname):
        releaser.free(addr, cid, ifname)
    released = store.release_owner(cid, ifname)
    releaser.finish()
    return released


def after_release(store) -> list[str]:
    """GC passes that released files themselves: settle and return emptied blocks."""
    return Releaser(store).finish()


# ---------------------------------------------------------------------------------------- STATUS
def status_problem(cfg) -> str | None:
    """STATUS: why an ADD could not succeed now, or None.  No etcd call while held blocks have room."""
    from cni_ipam.cluster.config import node_name
    from cni_ipam.cluster.etcdstore import EtcdStore
    from cni_ipam.cluster.record import read_record_at
    from cni_ipam.store import fs as safefs

    net_dir = os.path.join(cfg.data_dir, cfg.name)
    fd = -1
    rec = Record(None)
    if os.path.isdir(net_dir):
        try:
            fd = safefs.open_dir(net_dir)
        except OSError as exc:
            return f"cannot open {net_dir}: {exc.strerror or exc}"
        rec = read_record_at(fd)
    try:
        needs = []
        for idx, rset in enumerate(cfg.range_sets):
            room = sum(max(bm.block_capacity(rset, c) - (bm.used_in_block(fd, c) if fd >= 0 else 0), 0)
                       for c in rec.held(idx))
            if not room:
                needs.append(idx)
        if not needs:
            return None
        node = node_name(cfg.pool.node)
        etcd = EtcdStore(cfg.pool.etcd, cfg.pool.name)
        try:
            taken = set(etcd.claims())
        except CniError as exc:
            return f"this node's blocks are full and etcd cannot be reached to claim one: {exc.msg}"
        finally:
            etcd.close()
        taken |= {b["cidr"] for b in rec.blocks}
        for idx in needs:
            rset, size = cfg.range_sets[idx], cfg.pool.block_sizes[idx]
            if next(bm.free_blocks(rset, size, taken), None) is None:
                return (f"pool {cfg.pool.name} is exhausted: no free block left for range set {idx} ({rset}) "
                        f"and the blocks of node {node} are full")
        return None
    finally:
        if fd >= 0:
            os.close(fd)
