"""One pool as etcd holds it, read for ``cni-ipam pool show``, ``pool metrics`` and the release
commands (``Snapshot``).  Admin path only.

The claims are listed once and every other read is made at that revision, so the snapshot is one
consistent state of etcd.  Address records are not listed: etcd counts them per claimed block
(``count_only`` reads, 128 to a txn); only keys outside every claim are listed, and only when the
counts say there are some.  So the cost follows the number of claims, not of addresses.
"""

from __future__ import annotations

import bisect
from cni_ipam import addr
from cni_ipam.admin.poolconf import AdminError, PoolTarget
from cni_ipam.cluster import keys
from cni_ipam.cluster.etcd import EtcdError, op_range, prefix_end
from cni_ipam.store import is_node_name


def parse_cidr(cidr: str) -> tuple[int, int, int, int]:
    """(version, first, last, prefix length) of a canonical block CIDR (block keys are checked
    canonical), with the plugin's parser: ``ipaddress`` costs more than the etcd read per block."""
    version, first, prefixlen = addr.parse_cidr(cidr)
    return version, first, first | ((1 << (keys.ADDR_BITS[version] - prefixlen)) - 1), prefixlen


def _block_cidr(prefix: str, pool: str, head: bytes, key: bytes) -> tuple | None:
    """(cidr, (version, first, last, prefix length)) of a block key naming a canonical CIDR, else
    None: ``keys.parse_block_key``'s verdict, IPv4 without ``ipaddress`` (a canonical IPv4 CIDR is
    the dotted network address, "/" and the prefix length; 20,000 claims cost 0.3 s with it)."""
    import socket

    text = key[len(head):]
    dotted, slash, plen = text.partition(b"/")
    if key.startswith(head) and slash and b":" not in text and plen.isdigit() and len(plen) <= 2:
        try:
            first = int.from_bytes(socket.inet_aton(dotted.decode("ascii")), "big")
        except (UnicodeDecodeError, OSError, ValueError):
            return None
        prefixlen = int(plen)
        host = (1 << (32 - prefixlen)) - 1 if prefixlen <= 32 else 0
        cidr = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}/{prefixlen}"
        if prefixlen > 32 or first & host or cidr.encode() != text:
            return None
        return cidr, (4, first, first | host, prefixlen)
    other = keys.parse_block_key(prefix, pool, key)
    return None if other is None else (other, parse_cidr(other))


# ------------------------------------------------------------------------------------ reading a pool
class Claim:
    __slots__ = ("cidr", "value", "record", "mod", "version", "first", "last", "prefixlen")

    def __init__(self, cidr: str, value: bytes, record, mod: int, parsed: tuple | None = None) -> None:
        self.cidr = cidr
        self.value = value  # the exact bytes: the fencing token of every release
        self.record = record  # keys.ClaimRecord, or None when the value is not a JSON object
        self.mod = mod
        self.version, self.first, self.last, self.prefixlen = parsed or parse_cidr(cidr)

    @property
    def node(self) -> str:
        return self.record.node if self.record else ""

    @property
    def instance(self) -> str:
        return self.record.instance if self.record else ""


class Snapshot:
    """A pool as etcd holds it at one revision: claims, node records, address records (counted per
    claimed block; listed, as sorted ints per family, only where no claim covers them), grid."""

    def __init__(self, target: PoolTarget) -> None:
        self.target = target
        self.revision = 0  # the etcd revision every read was made at
        self.claims: dict = {}  # cidr -> Claim
        self.nodes: dict = {}  # name -> keys.NodeRecord
        self.block_counts: dict = {}  # (version, first, last) of each claim -> keys in its record range
        self.stray: dict = {4: [], 6: []}  # address records in no claimed block, sorted
        self.outermost: dict = {4: [], 6: []}  # claims in no other claim: disjoint, sorted by first
        self.grid: dict = {}  # family -> prefix length pinned in etcd
        self.junk: list = []  # keys of the pool that are not what the schema says
        self._instances: dict | None = None

    def count(self, version: int, first: int, last: int) -> int:
        """Address records in ``first..last``: exact for a claimed block and for any range made of
        whole claims and addresses outside every claim (a released block, the whole family); a
        range that cuts a claimed block is not known per address (ValueError)."""
        exact = self.block_counts.get((version, first, last))
        if exact is not None:
            return exact
        a = self.stray[version]
        total = bisect.bisect_right(a, last) - bisect.bisect_left(a, first)
        for c in self.outermost[version]:
            if c.last < first or c.first > last:
                continue
            if c.first < first or c.last > last:
                raise ValueError(f"{first}..{last} cuts the claimed block {c.cidr}: only whole blocks are counted")
            total += self.block_counts[(version, c.first, c.last)]
        return total

    def node_claims(self, node: str) -> list:
        return sorted((c for c in self.claims.values() if c.node == node), key=lambda c: (c.version, c.first))

    def instance_names(self) -> dict:
        """instance id -> the node names it shows under (node records and claims), computed once."""
        if self._instances is None:
            index: dict = {}
            for name, rec in self.nodes.items():
                if rec.instance:
                    index.setdefault(rec.instance, set()).add(name)
            for c in self.claims.values():
                if c.instance and c.node:
                    index.setdefault(c.instance, set()).add(c.node)
            self._instances = index
        return self._instances

    def outside_claims(self) -> int:
        """Address records in no claimed block (fenced writes never leave one; a hand edit may)."""
        return len(self.stray[4]) + len(self.stray[6])


# etcd's default --max-txn-ops: reads per txn (halved while etcd says a txn holds too many)
TXN_OPS = 128


def _read_in_txns(client, reads: list, revision: int) -> list:
    """etcd's answers to ``reads`` ((start, end or None, count_only) each) at ``revision``: the
    count of a count_only read, the kvs of another.  Sent in read-only txns of up to ``TXN_OPS``
    reads, each txn built when it is sent: 20,000 block counts are 157 round trips of a few kB."""
    out: list = []
    batch = TXN_OPS
    while len(out) < len(reads):
        chunk = reads[len(out):len(out) + batch]
        ops = [op_range(start, end, revision=revision, count_only=count) for start, end, count in chunk]
        try:
            _ok, responses, _rev = client.txn([], ops, [])
        except EtcdError as exc:
            if "too many operations" not in str(exc) or batch == 1:
                raise
            batch = max(batch // 2, 1)
            continue
        out += [r["count"] if count else r["kvs"] for (_s, _e, count), r in zip(chunk, responses)]
    return out


def _record_range(addrs_head: bytes, claim: Claim) -> tuple[bytes, bytes]:
    """``keys.addr_range`` of a claim's addresses, the pool's ``addrs/`` prefix given."""
    family = claim.version
    head = addrs_head + b"%d/" % family
    start = head + keys.addr_hex(family, claim.first).encode()
    if claim.last + 1 >= 1 << keys.ADDR_BITS[family]:
        return start, prefix_end(head)
    return start, head + keys.addr_hex(family, claim.last + 1).encode()


def read_snapshot(client, target: PoolTarget) -> Snapshot:
    """The pool at one etcd revision (see ``_read``); read again once when etcd compacted that
    revision meanwhile."""
    for attempt in (0, 1):
        try:
            return _read(client, target)
        except EtcdError as exc:
            if attempt or "compacted" not in str(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _read(client, target: PoolTarget) -> Snapshot:
    """The claims with their values (their revision is the snapshot's), then at that revision: the
    node records, the grid and the number of address records of each claimed block and of the whole
    ``addrs/`` range, counted by etcd (``count_only``, in txns); only when the two disagree, the
    address keys outside every claim (stray records, malformed keys), keys-only; and the keys of the
    pool that are neither claims, node records nor address records (grid, spec, anything else).
    The cost follows the number of claims, not of address records: an etcd 3.4 range with a limit
    walks its whole key range for every page, so listing 640,000 records in pages costs minutes.

    A key inside a claimed block's record range that is not a well-formed address key counts as a
    record of that block, as it does for the compare a release makes (no key in the range)."""
    prefix, pool = target.prefix, target.name
    snap = Snapshot(target)
    head = keys.pool_prefix(prefix, pool).encode()
    blocks_head, nodes_head = keys.blocks_prefix(prefix, pool), keys.nodes_prefix(prefix, pool)
    addrs_head = head + b"addrs/"
    grid_keys = {4: keys.grid_key(prefix, pool, 4), 6: keys.grid_key(prefix, pool, 6)}
    known = set(grid_keys.values()) | {keys.spec_key(prefix, pool)}
    claims, rev = client.range_between(blocks_head, prefix_end(blocks_head))
    if not getattr(client, "last_header", (0, 1))[1]:  # every etcd answer carries its cluster id and revision
        raise AdminError(f"etcd {client.endpoint}: the answer has no etcd header: is this an etcd client URL?")
    snap.revision = rev
    block_junk, node_junk, listed_junk = [], [], []
    for key, value, mod, _create in claims:
        parsed = _block_cidr(prefix, pool, blocks_head, key)
        if parsed is None:
            block_junk.append(key)
            continue
        record = keys.ClaimRecord.parse(value)
        if record is None:
            block_junk.append(key)
        snap.claims[parsed[0]] = Claim(parsed[0], value, record, mod, parsed[1])
    for key, value, _mod, _create in client.range_between(nodes_head, prefix_end(nodes_head), revision=rev)[0]:
        name = keys.parse_node_key(prefix, pool, key)
        node = keys.NodeRecord.parse(value)
        if name is None or node is None or not is_node_name(name):
            node_junk.append(key)
            continue
        snap.nodes[name] = node

    # CIDRs nest or are disjoint: the claims that no other claim holds cover every claimed address once
    ordered = sorted(snap.claims.values(), key=lambda c: (c.version, c.first, c.prefixlen))
    for c in ordered:
        outer = snap.outermost[c.version]
        if not outer or c.first > outer[-1].last:
            outer.append(c)
    reads = [(grid_keys[4], None, False), (grid_keys[6], None, False), (addrs_head, prefix_end(addrs_head), True)]
    reads += [_record_range(addrs_head, c) + (True,) for c in ordered]
    answers = _read_in_txns(client, reads, rev)
    del reads
    grid_junk = []
    for family, kvs in zip((4, 6), answers):
        if kvs:
            try:
                snap.grid[family] = int(kvs[0][1])
            except ValueError:
                grid_junk.append(grid_keys[family])
    total = answers[2]
    for c, count in zip(ordered, answers[3:]):
        snap.block_counts[(c.version, c.first, c.last)] = count
    inside = sum(snap.block_counts[(c.version, c.first, c.last)] for v in (4, 6) for c in snap.outermost[v])

    # the key ranges that hold neither claims, node records nor claimed blocks' address records
    covered = [(blocks_head, prefix_end(blocks_head)), (nodes_head, prefix_end(nodes_head))]
    covered += [_record_range(addrs_head, c) for v in (4, 6) for c in snap.outermost[v]]
    covered.sort()
    rest, at = [], head
    for start, end in covered:
        if start > at:
            rest.append((at, start))
        at = max(at, end)
    if at < prefix_end(head):
        rest.append((at, prefix_end(head)))
    if total == inside:  # every address key is in a claimed block: nothing to list under addrs/
        rest = [(s, e) for s, e in rest if e <= addrs_head or s >= prefix_end(addrs_head)]
    for start, end in rest:
        for key, _value, _mod, _create in client.range_between(start, end, keys_only=True, revision=rev)[0]:
            parsed = keys.parse_addr_key(prefix, pool, key)
            if parsed is not None:
                snap.stray[parsed[0]].append(parsed[1])
            elif key not in known:
                listed_junk.append(key)
    for version in (4, 6):
        snap.stray[version].sort()
    snap.junk = sorted(listed_junk) + block_junk + node_junk + grid_junk
    return snap
