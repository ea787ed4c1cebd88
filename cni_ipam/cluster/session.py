"""The pool side of one ADD, DEL, GC or STATUS call on one node, under the network lock.

The rule everything here follows: **every allocation is a key in etcd**, created create-if-absent
in a txn that also compares this node's claim of the block (its exact value bytes).  The local
record only says where to look first; a wrong one (a lost answer, a shared node name, a restored
etcd, a copied data directory) can make an ADD fail or leak an address, never hand one out twice.

* ADD: one txn per address (``EtcdStore.create_addr``); a block found no longer ours is marked
  ``lost`` (its reservations stay, nothing new comes from it) and another block is claimed.
* DEL / GC: the address records go first (compared with their exact value), then the files; with
  etcd unreachable the files go anyway and the records wait in the record's ``pending`` list.
* Claims and releases of blocks note their intent in the record first; an unknown outcome (lost
  answer, timeout, kill) is settled by reading the claim on a later call, never by guessing.
* Restore: an answer with another cluster id or a lower revision than saved makes the node
  re-assert its claims and address records before it allocates again.
"""

from __future__ import annotations

import os

from cni_ipam.cluster import blocks as bm
from cni_ipam.cluster.config import EtcdSettings, node_name
from cni_ipam.cluster.etcdstore import EtcdStore
from cni_ipam.cluster.keys import AddrRecord, ClaimRecord, NodeRecord, random_id
from cni_ipam.cluster.record import Record, instance_id
from cni_ipam.errors import (
    INVALID_CONFIG,
    IO_FAILURE,
    POOL_EXHAUSTED,
    REQUESTED_IP_TAKEN,
    TRY_AGAIN_LATER,
    CniError,
)

CLAIM_ATTEMPTS = 8  # claim txns per scan of the pool's blocks
CLAIM_SCANS = 3


def warn(msg: str) -> None:
    try:
        os.write(2, f"cni-ipam: {msg}\n".encode("utf-8", "replace"))
    except OSError:
        pass


class BlockLost(Exception):
    """An ADD found the block it allocated in no longer claimed by this node."""


class Session:
    def __init__(self, store, network: str, pool, range_sets: list | None = None, record: Record | None = None) -> None:
        """``store``: the locked ``NetworkStore``; ``pool``: the network's ``PoolConfig``, or None
        for DEL and GC (then the record's settings are used)."""
        self.store = store
        self.network = network
        self.cfg = pool
        self.range_sets: list = range_sets or []
        self.record = rec = record if record is not None else Record.load(store)
        try:
            self.instance = instance_id(store.data_dir)
        except OSError as exc:
            raise CniError(IO_FAILURE, f"cannot keep the pool instance id in {store.data_dir}: {exc}",
                           store.data_dir) from None
        self.old_node: str | None = None
        if rec.instance not in (None, self.instance):
            # Made on another machine (a copied data directory): its claims are not ours.
            warn(f"pool record of network {network} was made by instance {rec.instance}, this is {self.instance}: "
                 f"its blocks are not used here")
            for b in rec.blocks:
                b["state"] = "lost"
            rec.pending = []
            rec.dirty = True
        settings: EtcdSettings | None
        if pool is not None:
            self.pool_name, self.node, settings = pool.name, node_name(pool.node), pool.etcd
            if rec.pool not in (None, pool.name):
                warn(f"pool record of network {network} was for pool {rec.pool}, now {pool.name}: "
                     f"the old pool's blocks are not used here")
                rec.blocks, rec.pending = [b for b in rec.blocks if b["state"] == "lost"], []
                for b in rec.blocks:
                    b["state"] = "lost"
            if rec.node not in (None, self.node) and any(b["state"] != "lost" for b in rec.blocks):
                self.old_node = rec.node  # moved under a compare by ``prepare``
            fields = (pool.name, network, settings.to_json(), pool.keep_blocks, self.instance)
            if (rec.pool, rec.network, rec.etcd, rec.keep, rec.instance) != fields:
                rec.pool, rec.network, rec.etcd, rec.keep, rec.instance = fields
                rec.dirty = True
            if self.old_node is None and rec.node != self.node:
                rec.node = self.node
                rec.dirty = True
        else:
            self.pool_name, self.node = rec.pool or "", rec.node or ""
            settings = EtcdSettings.from_json(rec.etcd)
        self.backend: EtcdStore | None = None
        if settings is not None and self.pool_name and self.node and rec.instance == self.instance:
            self.backend = EtcdStore(settings, self.pool_name, rec.saw)
        self.created: list[tuple[int, int, bytes]] = []  # address records made by this call
        self._uid: str | None = None

    # ------------------------------------------------------------------ values
    def node_uid(self) -> str:
        """This node's Kubernetes Node UID, read once per call that claims (``pool.kubeconfig``):
        the evidence ``pool gc`` needs to tell a deleted node from a renamed one.  "" when not
        configured or not readable (claims then carry none)."""
        if self._uid is None:
            self._uid = ""
            path = self.cfg.kubeconfig if self.cfg is not None else None
            if path:
                from cni_ipam.podcidr import kubeapi

                try:
                    scratch = os.path.join(self.store.path, ".cni-ipam", "tmp")
                    node = kubeapi.get_node(kubeapi.from_kubeconfig(path, scratch), self.node, self.cfg.etcd.timeout)
                    uid = (node.get("metadata") or {}).get("uid")
                    self._uid = uid if isinstance(uid, str) and len(uid) <= 128 else ""
                except (CniError, OSError, ValueError, AttributeError) as exc:
                    warn(f"pool {self.pool_name}: cannot read Node {self.node} with {path} (claims carry no nodeUid): "
                         f"{getattr(exc, 'msg', exc)}")
        return self._uid

    def node_value(self) -> bytes:
        return NodeRecord(self.instance, os.uname().nodename, self.node_uid()).encode()

    def addr_value(self, entry: dict, cid: str, ifname: str) -> bytes:
        claim = ClaimRecord.parse(entry["claim"].encode()) or ClaimRecord("", "", "", "")
        return AddrRecord(claim.node, claim.instance, claim.claim, claim.network, cid, ifname).encode()

    def ours(self, value: bytes | None, cid: str, ifname: str) -> bool:
        """An address record this instance wrote for (cid, ifname), under any name or claim."""
        rec = AddrRecord.parse(value)
        return (rec is not None and rec.instance == self.instance and rec.network == self.network
                and rec.cid == cid and rec.ifname == ifname)

    def spec(self) -> bytes:
        import json

        sets = [{"family": r.version, "blockSize": s, "ranges": r.to_json()}
                for r, s in zip(self.range_sets, self.cfg.block_sizes if self.cfg else [])]
        return json.dumps({"sets": sets}, sort_keys=True).encode()

    def entry_of(self, addr) -> dict | None:
        """The record's block holding ``addr``."""
        value = int(addr)
        for b in self.record.blocks:
            version, lo, hi = bm.block_bounds(b["cidr"])
            if version == addr.version and lo <= value <= hi:
                return b
        return None

    def etcd(self) -> EtcdStore:
        if self.backend is None:
            raise CniError(TRY_AGAIN_LATER, f"pool {self.pool_name}: no etcd settings for network {self.network}")
        return self.backend

    def save(self) -> None:
        if self.record.dirty:
            self.record.save(self.store)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    # ------------------------------------------------------------------ before allocating
    def prepare(self) -> None:
        """Settle what earlier calls left open, a rename and a restore: before any allocation."""
        self.settle()
        if self.old_node is not None:
            self.rename()
        if self.record.reassert:
            self.reassert()

    def settle(self) -> None:
        """Claims of unknown outcome, releases in flight and address records to delete."""
        rec, etcd = self.record, self.etcd()
        for p in list(rec.pending):
            if p["op"] == "claim":
                claimed = p["claim"].encode()
                if etcd.get(etcd.block_key(p["cidr"])) == claimed:
                    rec.add(p["cidr"], p["set"], claimed)
            else:
                etcd.delete_addr(p["family"], p["addr"], p["record"].encode())
            rec.pending.remove(p)
            rec.dirty = True
        for b in list(rec.blocks):
            if b["state"] == "releasing":
                have = etcd.get(etcd.block_key(b["cidr"]))
                if have == b["claim"].encode():
                    rec.set_state(b["cidr"], "held")
                elif bm.used_in_block(self.store.dir_fd, b["cidr"]):
                    rec.set_state(b["cidr"], "lost")
                else:
                    rec.drop(b["cidr"])

    def register(self) -> None:
        """``nodes/<node>`` holds this instance, else every claim is refused naming both."""
        etcd, mine = self.etcd(), self.node_value()
        have = etcd.create_node(self.node, mine)
        if have is None:
            return
        other = NodeRecord.parse(have)
        if other is not None and other.instance == self.instance and not self._uid and other.node_uid:
            self._uid = other.node_uid  # the API did not answer now: the UID read before still holds
            mine = self.node_value()
            if have == mine:
                return
        if other is not None and other.instance == self.instance:  # ours, with an older host name or UID
            if etcd.put_node(self.node, have, mine):
                return
            have = etcd.get(etcd.node_key(self.node)) or b""
            other = NodeRecord.parse(have)
            if have == mine:
                return
        who = f"instance {other.instance} on host {other.hostname}" if other else f"a record {have[:80]!r}"
        gone = ""
        if other is not None and other.instance:
            gone = (f"; if that instance is gone (this machine reinstalled with a wiped data directory), release it: "
                    f"cni-ipam pool release-node {self.node} --instance {other.instance} --gone --apply")
        raise CniError(INVALID_CONFIG, f"pool {self.pool_name}: node name {self.node} is used by another machine "
                       f"({who}); this is instance {self.instance} on host {os.uname().nodename}: "
                       f"give each machine its own ipam.pool.nodeName{gone}", f"pool {self.pool_name} node {self.node}")

    def rename(self) -> None:
        """Same instance, new node name: move every claim under a compare of its old value."""
        rec, etcd = self.record, self.etcd()
        old = self.old_node or ""
        self.register()
        for b in rec.blocks:
            if b["state"] == "lost":
                continue
            before = b["claim"].encode()
            c = ClaimRecord.parse(before) or ClaimRecord("", self.instance, random_id(), self.network)
            after = ClaimRecord(self.node, c.instance, c.claim, c.network, self.node_uid()).encode()
            ok, have = etcd.put_claim(b["cidr"], before, after)
            if ok or have == after:
                b["claim"] = after.decode()
            else:
                warn(f"pool {self.pool_name}: block {b['cidr']} of node {old} was not ours any more when moving it "
                     f"to {self.node}")
                b["state"] = "lost"
            rec.dirty = True
        before = etcd.get(etcd.node_key(old))
        was = NodeRecord.parse(before)
        if before is not None and was is not None and was.instance == self.instance:
            etcd.delete_node(old, before)
        rec.node = self.node
        self.old_node = None
        rec.dirty = True

    def reassert(self) -> None:
        """After a restore: every claim and every local reservation's record back into etcd."""
        rec, etcd = self.record, self.etcd()
        conflicts = []
        for b in rec.blocks:
            if b["state"] == "lost":
                continue
            mine = b["claim"].encode()
            have = etcd.get(etcd.block_key(b["cidr"]))
            if have is None:
                _ok, have = etcd.put_claim(b["cidr"], None, mine)
            if have != mine:
                b["state"] = "lost"
                rec.dirty = True
                conflicts.append(f"block {b['cidr']} is claimed by {_who(have)}")
        for res in self.store.reservations():
            if res.container_id is None:
                continue
            entry = self.entry_of(res.address)
            if entry is None or entry["state"] == "lost":
                continue
            value = self.addr_value(entry, res.container_id, res.ifname or "")
            ok, _b, have = etcd.create_addr(entry["cidr"], entry["claim"].encode(), res.address.version,
                                            int(res.address), value)
            theirs = have is not None and have != value and not self.ours(have, res.container_id, res.ifname or "")
            if not ok and theirs:
                conflicts.append(f"{res.address} is recorded for {_who(have)}")
        rec.reassert = False
        rec.dirty = True
        if conflicts:
            raise CniError(TRY_AGAIN_LATER, f"pool {self.pool_name}: etcd was restored from a backup and node "
                           f"{self.node} found its allocations taken: " + "; ".join(conflicts[:20]),
                           f"{len(conflicts)} conflict(s)")

    # ------------------------------------------------------------------ claims
    def claim(self, idx: int, want: str | None = None) -> None:
        """One more block for range set ``idx`` (``want``: that block, for a requested address).
        Adopts first the claims etcd shows as this instance's that the record lacks."""
        rset, size = self.range_sets[idx], self.cfg.block_sizes[idx]
        rec, etcd = self.record, self.etcd()
        family = rset.version
        self.register()
        pinned = etcd.ensure_grid(family, size)
        if pinned != size:
            raise CniError(INVALID_CONFIG, f"pool {self.pool_name}: etcd has IPv{family} blocks of /{pinned}, this "
                           f"node's config says /{size} (every node of a pool must use the same block size)",
                           "key ipam.pool.blockSize")
        for _scan in range(CLAIM_SCANS):
            claims = etcd.claims()
            if self.adopt(idx, claims) and (want is None or rec.entry(want) is not None):
                return
            if want is not None:
                holder = claims.get(want)
                if holder is not None:
                    raise CniError(REQUESTED_IP_TAKEN, f"pool {self.pool_name}: block {want} is held by {_who(holder)}",
                                   f"node {self.node}")
                candidates = iter([want])
            else:
                taken = set(claims) | {b["cidr"] for b in rec.blocks}
                candidates = bm.free_blocks(rset, size, taken, bm.stable_hash(self.node))
            tried = 0
            for cidr in candidates:
                if tried >= CLAIM_ATTEMPTS:
                    break
                tried += 1
                if self.claim_one(idx, cidr, family, size):
                    return
                if want is not None:
                    break
            if not tried:
                raise CniError(POOL_EXHAUSTED, f"pool {self.pool_name} is exhausted: no free block of /{size} left "
                               f"for range set {idx} ({rset}) and the blocks of node {self.node} are full",
                               f"{len(claims)} blocks claimed")
        raise CniError(TRY_AGAIN_LATER, f"pool {self.pool_name}: could not claim a block for range set {idx} "
                       f"(other nodes took every candidate first); try again", f"node {self.node}")

    def adopt(self, idx: int, claims: dict[str, bytes]) -> bool:
        rec, size, family = self.record, self.cfg.block_sizes[idx], self.range_sets[idx].version
        adopted = False
        for cidr, value in claims.items():
            c = ClaimRecord.parse(value)
            if (c is not None and c.instance == self.instance and c.node == self.node and c.network == self.network
                    and rec.entry(cidr) is None and bm.block_bounds(cidr)[0] == family
                    and bm.block_prefixlen(cidr) == size):
                rec.add(cidr, idx, value)
                adopted = True
        return adopted

    def claim_one(self, idx: int, cidr: str, family: int, size: int) -> bool:
        rec, etcd = self.record, self.etcd()
        value = ClaimRecord(self.node, self.instance, random_id(), self.network, self.node_uid()).encode()
        # The intent is on disk before the txn: an answer lost or a kill -9 after etcd applied it
        # cannot lose the block (a later call reads the claim and compares the value).
        pending = {"op": "claim", "cidr": cidr, "set": idx, "claim": value.decode()}
        rec.pending.append(pending)
        rec.save(self.store)
        ok, block, grid, node = etcd.claim_block(cidr, family, size, value, self.node, self.node_value(), self.spec())
        rec.pending.remove(pending)
        rec.dirty = True
        if ok or block == value:
            rec.add(cidr, idx, value)
            return True
        if block is None and grid != str(size).encode():
            raise CniError(INVALID_CONFIG, f"pool {self.pool_name}: the IPv{family} block size in etcd is now "
                           f"{(grid or b'(none)').decode(errors='replace')}, this node's config says /{size}",
                           "key ipam.pool.blockSize")
        if block is None and node != self.node_value():
            self.register()  # names the other machine, or re-creates a deleted node record
        return False

    # ------------------------------------------------------------------ addresses
    def record_addr(self, addr, cid: str, ifname: str) -> bool:
        """The etcd half of reserving ``addr`` (reserved locally already): True when its record
        is ours now, False when another holds it; BlockLost when the block is not ours."""
        entry = self.entry_of(addr)
        if entry is None or entry["state"] != "held":
            raise BlockLost()
        claim, value = entry["claim"].encode(), self.addr_value(entry, cid, ifname)
        family, number = addr.version, int(addr)
        for _ in range(2):
            try:
                ok, block, have = self.etcd().create_addr(entry["cidr"], claim, family, number, value)
            except CniError:
                # Unknown outcome: the record may exist.  Deleted (under its value) by the next call.
                self.record.pending.append({"op": "free", "family": family, "addr": number, "record": value.decode()})
                self.record.dirty = True
                raise
            if ok or not self.record.reassert:
                break
            # This very answer showed a restore: the claim may be missing only because of it.
            # Re-assert everything (this reservation included, its file exists) and look again.
            self.reassert()
        if ok:
            self.created.append((family, number, value))
            return True
        if block != claim:
            self.record.set_state(entry["cidr"], "lost")
            warn(f"pool {self.pool_name}: block {entry['cidr']} is no longer claimed by node {self.node} "
                 f"(etcd: {_who(block)}); no address is handed out from it any more")
            raise BlockLost()
        return have == value

    def undo_created(self) -> None:
        """An ADD failed after recording addresses: remove those records (later, if etcd fails)."""
        for family, number, value in self.created:
            try:
                self.etcd().delete_addr(family, number, value)
            except CniError:
                self.record.pending.append({"op": "free", "family": family, "addr": number, "record": value.decode()})
                self.record.dirty = True
        self.created = []

    def free(self, addr, cid: str, ifname: str) -> None:
        """Delete ``addr``'s record if it is ours (DEL, GC).  Never raises for etcd: with etcd
        unreachable the delete waits in the record (saved before the caller removes the file)."""
        if self.backend is None:
            return
        entry = self.entry_of(addr)
        value = self.addr_value(entry, cid, ifname) if entry is not None else b""
        family, number = addr.version, int(addr)
        try:
            ok, have = (False, None) if not value else self.backend.delete_addr(family, number, value)
            if not ok and have is None and not value:
                have = self.backend.get(self.backend.addr_key(family, number))
            if not ok and have is not None and have != value and self.ours(have, cid, ifname):
                self.backend.delete_addr(family, number, have)  # written before a rename
        except CniError as exc:
            if value:
                self.record.pending.append({"op": "free", "family": family, "addr": number, "record": value.decode()})
                self.record.dirty = True
                warn(f"pool {self.pool_name}: the etcd record of {addr} is removed later: {exc.msg}")

    # ------------------------------------------------------------------ returning blocks
    def release_empty(self) -> list[str]:
        """Return emptied blocks (each range set keeps ``keepBlocks`` blocks).  Never raises for
        etcd; a release whose answer is lost stays ``releasing`` until a later call reads it."""
        rec = self.record
        fd = self.store.dir_fd
        keep = self.cfg.keep_blocks if self.cfg is not None else rec.keep
        by_set: dict[int, list[tuple[int, dict]]] = {}
        for b in list(rec.blocks):
            used = bm.used_in_block(fd, b["cidr"])
            if b["state"] == "lost":
                if not used:
                    rec.drop(b["cidr"])  # not ours in etcd; nothing left here: forget it
                continue
            if b["state"] == "held":
                by_set.setdefault(b["set"], []).append((used, b))
        empty = []
        for blocks in by_set.values():
            kept = sum(1 for used, _ in blocks if used)
            for used, b in sorted(blocks, key=lambda t: bm.cidr_order(t[1]["cidr"])):
                if used:
                    continue
                if kept < keep:
                    kept += 1
                    continue
                empty.append(b)
        if not empty or self.backend is None:
            return []
        released = []
        for b in empty:
            cidr, claim = b["cidr"], b["claim"].encode()
            rec.set_state(cidr, "releasing")
            rec.save(self.store)  # a kill or a lost answer from here on never leaves it "held"
            try:
                ok, have = self.backend.release_block(cidr, claim)
            except CniError as exc:
                warn(f"pool {self.pool_name}: block {cidr} is returned when etcd answers: {exc.msg}")
                break
            if ok:
                rec.drop(cidr)
                released.append(cidr)
            elif have == claim:
                rec.set_state(cidr, "held")  # address records remain in it: not empty in etcd
            else:
                rec.drop(cidr)
        return released


def _who(value: bytes | None) -> str:
    claim = ClaimRecord.parse(value)
    if value is None:
        return "nobody"
    if claim is None:
        return f"an unreadable value {value[:60]!r}"
    return f"node {claim.node or '?'} (instance {claim.instance or '?'}, network {claim.network or '?'})"
