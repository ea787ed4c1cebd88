"""What ``cni-ipam pool show`` and ``pool metrics`` see: the pools of the conf files, one pool read
from etcd (``Snapshot``), the numbers derived from it (``PoolView``), the table and the Prometheus
text.  Admin path only.

Usage comes from the address records: one key per allocated address (``cluster.keys``), counted
by etcd per claimed block (``count_only`` reads, 128 to a txn); only records outside every claim
are listed.  Block counts and capacities are exact integer interval arithmetic over the conf's
ranges (``Grid``): nothing enumerates blocks or addresses, so a /64 cut in /120 or /128 blocks
costs what a /24 does.  No clock is read for any
number here: nodes publish no timestamps.
"""

from __future__ import annotations

import bisect
from cni_ipam import addr
from cni_ipam.admin import output
from cni_ipam.admin.poolconf import AdminError, PoolTarget, etcd_client, error_text
from cni_ipam.cluster import keys
from cni_ipam.cluster.etcd import EtcdError, op_range, prefix_end
from cni_ipam.store import is_node_name


# ------------------------------------------------------------------------------------ block math
def _available(rset) -> list:
    """The addresses the range set hands out, as sorted disjoint (first, last) intervals: each range
    minus its exclusions and its network, broadcast and gateway addresses (``Range.size``'s rule)."""
    out = []
    for r in rset.ranges:
        holes = list(r.exclude) + [(s, s) for s in r.specials()]
        lo = r.start
        for a, b in sorted(holes):
            if b < lo or a > r.end:
                continue
            if a > lo:
                out.append((lo, a - 1))
            lo = max(lo, b + 1)
        if lo <= r.end:
            out.append((lo, r.end))
    return sorted(out)


class Grid:
    """The blocks of one range set at one prefix length, counted without enumerating them."""

    def __init__(self, rset, size: int) -> None:
        self.version = rset.version
        self.size = size
        self.step = 1 << (keys.ADDR_BITS[self.version] - size)
        self.free = _available(rset)
        self._starts = [lo for lo, _ in self.free]
        self.capacity = sum(hi - lo + 1 for lo, hi in self.free)
        spans: list = []  # block indexes holding an address to hand out, merged
        for lo, hi in self.free:
            a, b = lo // self.step, hi // self.step
            if spans and a <= spans[-1][1] + 1:
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
        self.blocks = sum(b - a + 1 for a, b in spans)

    def capacity_of(self, first: int) -> int:
        """Addresses to hand out in the block starting at ``first``."""
        last = first + self.step - 1
        i = bisect.bisect_right(self._starts, last) - 1
        total = 0
        while i >= 0 and self.free[i][1] >= first:
            lo, hi = self.free[i]
            total += min(hi, last) - max(lo, first) + 1
            i -= 1
        return total

    def holds(self, version: int, first: int, prefixlen: int) -> bool:
        return version == self.version and prefixlen == self.size and self.capacity_of(first) > 0


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


# ------------------------------------------------------------------------------------ the view
def _percent(part: int, whole: int) -> float:
    return 100.0 if not whole else 100.0 * part / whole


class SetView:
    def __init__(self, index: int, rset, size: int, thresholds) -> None:
        self.index = index
        self.range_set = rset
        self.block_size = size
        self.grid = Grid(rset, size)
        self.held = 0
        self.used = 0
        self.thresholds = thresholds

    @property
    def blocks(self) -> int:
        return self.grid.blocks

    @property
    def capacity(self) -> int:
        return self.grid.capacity

    @property
    def free_blocks(self) -> int:
        return max(self.blocks - self.held, 0)

    @property
    def held_percent(self) -> float:
        return _percent(self.held, self.blocks)

    @property
    def used_percent(self) -> float:
        return _percent(self.used, self.capacity)

    @property
    def level(self) -> str:
        return output.level_for(max(self.held_percent, self.used_percent), self.thresholds)

    def ranges_text(self) -> str:
        parts = []
        for r in self.range_set.ranges:
            parts.append(r.cidr if r.is_default() else f"{r.cidr}[{r.range_start}-{r.range_end}]")
        return ",".join(parts)

    def to_json(self) -> dict:
        return {"index": self.index, "family": f"ipv{self.range_set.version}", "ranges": self.range_set.to_json(),
                "blockSize": self.block_size, "blocks": self.blocks, "heldBlocks": self.held,
                "freeBlocks": self.free_blocks, "addresses": self.capacity, "usedAddresses": self.used,
                "heldPercent": round(self.held_percent, 2), "usedPercent": round(self.used_percent, 2),
                "level": self.level}


class NodeView:
    def __init__(self, name: str) -> None:
        self.name = name
        self.record = None  # keys.NodeRecord of nodes/<name>
        self.blocks: list = []  # dicts: cidr, set, capacity, used, instance
        self.instances: list = []  # instance ids seen under the name: more than one is a conflict
        self.networks: set = set()
        self.level = output.UNKNOWN_LEVEL

    @property
    def capacity(self) -> int:
        return sum(b["capacity"] for b in self.blocks)

    @property
    def used(self) -> int:
        return sum(b["used"] for b in self.blocks)

    @property
    def percent(self) -> float:
        return _percent(self.used, self.capacity)

    @property
    def conflict(self) -> bool:
        return len(self.instances) > 1

    def to_json(self) -> dict:
        rec = self.record
        return {"node": self.name, "instance": rec.instance if rec else None, "hostname": rec.hostname if rec else None,
                "nodeUid": (rec.node_uid or None) if rec else None, "instances": self.instances,
                "networks": sorted(self.networks), "blocks": self.blocks, "heldBlocks": len(self.blocks),
                "capacity": self.capacity, "usedAddresses": self.used,
                "freeAddresses": max(self.capacity - self.used, 0), "percent": round(self.percent, 2),
                "level": self.level, "conflict": self.conflict}


class PoolView:
    def __init__(self, target: PoolTarget) -> None:
        self.target = target
        self.sets: list = []
        self.nodes: list = []
        self.outside: list = []  # claims that are no block of the conf's grid
        self.grid_mismatch: list = []
        self.junk: list = []
        self.errors: list = []  # identity conflicts: two instances under one node name
        self.records_outside = 0
        self.error = ""  # the pool could not be read
        self.level = output.UNKNOWN_LEVEL

    def to_json(self, with_nodes: bool = True) -> dict:
        t = self.target
        out = {"pool": t.name, "network": t.network, "confFile": t.conf_file,
               "etcd": {"endpoints": t.settings.endpoints, "prefix": t.prefix}, "level": self.level,
               "sets": [s.to_json() for s in self.sets], "nodeCount": len(self.nodes), "errors": self.errors,
               "claimsOutsideGrid": self.outside, "addressRecordsOutsideClaims": self.records_outside,
               "gridMismatch": self.grid_mismatch, "malformedKeys": [k.decode("utf-8", "replace") for k in self.junk]}
        if with_nodes:
            out["nodes"] = [n.to_json() for n in self.nodes]
        if self.error:
            out["error"] = self.error
        return out


def set_views(target: PoolTarget, thresholds=output.DEFAULT_THRESHOLDS) -> list:
    return [SetView(i, rs, size, thresholds) for i, (rs, size) in enumerate(zip(target.range_sets, target.block_sizes))]


def conflict_text(name: str, node: NodeView) -> str:
    rec = node.record
    parts = []
    for inst in node.instances:
        where = f" (host {rec.hostname or '?'}, nodes/{name})" if rec and rec.instance == inst else " (claims only)"
        parts.append(inst + where)
    return (f"node name {name} is used by {len(node.instances)} instances: {', '.join(parts)}; "
            "two machines (or data directories) share the name: give each its own pool.nodeName, or, if one "
            f"instance is gone (a machine reinstalled with a wiped data directory), release it: cni-ipam pool "
            f"release-node {name} --instance ID --gone --apply")


def build_view(target: PoolTarget, snap: Snapshot, thresholds=output.DEFAULT_THRESHOLDS, sets=None) -> PoolView:
    view = PoolView(target)
    view.junk = snap.junk
    view.sets = sets if sets is not None else set_views(target, thresholds)
    view.records_outside = snap.outside_claims()
    for s in view.sets:
        pinned = snap.grid.get(s.range_set.version)
        if pinned is not None and pinned != s.block_size:
            view.grid_mismatch.append(f"ipv{s.range_set.version}: etcd pins /{pinned}, the conf says /{s.block_size}")
    nodes: dict = {}

    def node(name: str) -> NodeView:
        if name not in nodes:
            nodes[name] = NodeView(name)
        return nodes[name]

    for name, rec in snap.nodes.items():
        n = node(name)
        n.record = rec
        if rec.instance:
            n.instances.append(rec.instance)
    for claim in sorted(snap.claims.values(), key=lambda c: (c.version, c.first, c.prefixlen)):
        owner = claim.node
        if not owner:
            view.outside.append({"cidr": claim.cidr, "node": None, "why": "the claim names no node"})
            continue
        n = node(owner)
        if claim.instance and claim.instance not in n.instances:
            n.instances.append(claim.instance)
        if claim.record and claim.record.network:
            n.networks.add(claim.record.network)
        used = snap.count(claim.version, claim.first, claim.last)
        set_view = next((s for s in view.sets if s.grid.holds(claim.version, claim.first, claim.prefixlen)), None)
        entry = {"cidr": claim.cidr, "set": None, "capacity": 0, "used": used, "instance": claim.instance or None}
        if set_view is None:
            view.outside.append({"cidr": claim.cidr, "node": owner,
                                 "why": "not a block of the configured ranges and block size"})
        else:
            entry["set"], entry["capacity"] = set_view.index, set_view.grid.capacity_of(claim.first)
            set_view.held += 1
            set_view.used += used
        n.blocks.append(entry)
    for name, n in sorted(nodes.items()):
        if n.blocks:
            n.level = output.level_for(n.percent, thresholds)
        if n.conflict:
            view.errors.append(conflict_text(name, n))
    view.nodes = [nodes[k] for k in sorted(nodes)]
    level = "ok"
    for s in view.sets:
        level = output.worse(level, s.level)
    view.level = level
    return view


def collect(targets, args, thresholds) -> list:
    views = []
    for target in targets:
        try:
            sets = set_views(target, thresholds)
            client = etcd_client(target, args)
            try:
                snap = read_snapshot(client, target)
            finally:
                client.close()
        except Exception as exc:  # EtcdUnavailable, EtcdError, AdminError, garbage from an endpoint: this pool only
            view = PoolView(target)
            view.error = error_text(exc)
            views.append(view)
            continue
        views.append(build_view(target, snap, thresholds, sets))
    return views


# ------------------------------------------------------------------------------------ output
def _pct(value: float) -> str:
    return f"{value:.1f}%"


def render(views, with_nodes: bool = True) -> str:
    rows = [["POOL", "SET", "RANGES", "BLOCK", "BLOCKS", "HELD", "FREE", "HELD%", "ADDRESSES", "USED", "USED%",
             "LEVEL"]]
    notes = []
    for v in views:
        name = v.target.name
        if v.error:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "error"])
            notes.append(f"{name}: error: {v.error}")
            continue
        for s in v.sets:
            rows.append([name, str(s.index), s.ranges_text(), f"/{s.block_size}", str(s.blocks), str(s.held),
                         str(s.free_blocks), _pct(s.held_percent), str(s.capacity), str(s.used),
                         _pct(s.used_percent), s.level])
        notes += [f"{name}: error: {e}" for e in v.errors]
        for o in v.outside[:10]:
            notes.append(f"{name}: claim {o['cidr']} of node {o['node'] or '?'}: {o['why']}")
        if len(v.outside) > 10:
            notes.append(f"{name}: ... {len(v.outside) - 10} more claims outside the configured grid")
        if v.records_outside:
            notes.append(f"{name}: {v.records_outside} address record(s) in no claimed block")
        notes += [f"{name}: block size mismatch: {m}" for m in v.grid_mismatch]
        if v.junk:
            notes.append(f"{name}: {len(v.junk)} malformed key(s) under the pool prefix, e.g. {v.junk[0]!r}")
    out = [output.table(rows, right=(4, 5, 6, 7, 8, 9, 10)) if len(rows) > 1 else "no pools found"]
    if with_nodes and any(v.nodes for v in views):
        node_rows = [["POOL", "NODE", "INSTANCE", "HOST", "BLOCKS", "USED", "CAPACITY", "FREE", "USED%", "LEVEL",
                      "NOTE"]]
        for v in views:
            for n in v.nodes:
                note = []
                if n.conflict:
                    note.append(f"CONFLICT: {len(n.instances)} instances")
                if n.record is None:
                    note.append("no node record")
                if not n.blocks:
                    note.append("no block")
                rec = n.record
                node_rows.append([v.target.name, n.name, rec.instance if rec and rec.instance else "-",
                                  rec.hostname if rec and rec.hostname else "-", str(len(n.blocks)), str(n.used),
                                  str(n.capacity), str(max(n.capacity - n.used, 0)),
                                  _pct(n.percent) if n.blocks else "-", n.level, ", ".join(note)])
        out += ["", output.table(node_rows, right=(4, 5, 6, 7, 8))]
    if notes:
        out += [""] + notes
    return "\n".join(out)


class PoolCollector:
    """prometheus_client collector over views taken once."""

    def __init__(self, views, now: float) -> None:
        self.views = views
        self.now = now

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        set_labels = ["pool", "range_set", "family"]
        g: dict = {}

        def gauge(name: str, text: str, labels: list):
            g[name] = GaugeMetricFamily(name, text, labels=labels)
            return g[name]

        up = gauge("cni_ipam_pool_etcd_up", "1 when the pool could be read from etcd.", ["pool"])
        blocks = gauge("cni_ipam_pool_blocks", "Blocks of the range set's grid that have addresses to hand out.",
                       set_labels)
        held = gauge("cni_ipam_pool_blocks_held", "Blocks claimed by a node.", set_labels)
        free = gauge("cni_ipam_pool_blocks_free", "Blocks no node holds.", set_labels)
        size = gauge("cni_ipam_pool_addresses", "Addresses the range set can hand out.", set_labels)
        used = gauge("cni_ipam_pool_addresses_used", "Address records in the held blocks.", set_labels)
        ratio = gauge("cni_ipam_pool_utilization_ratio", "The higher of held blocks / blocks and used / addresses.",
                      set_labels)
        nblocks = gauge("cni_ipam_pool_node_blocks", "Blocks the node holds.", ["pool", "node"])
        nused = gauge("cni_ipam_pool_node_addresses_used", "Address records in the node's blocks.", ["pool", "node"])
        ncap = gauge("cni_ipam_pool_node_addresses", "Addresses of the node's blocks.", ["pool", "node"])
        conflicts = gauge("cni_ipam_pool_node_instances",
                          "Instance ids seen under the node name (more than 1: a conflict).", ["pool", "node"])
        errors = gauge("cni_ipam_pool_identity_conflicts", "Node names used by more than one instance.", ["pool"])
        outside = gauge("cni_ipam_pool_claims_outside_grid",
                        "Claims that are not blocks of the configured ranges and block size.", ["pool"])
        orphans = gauge("cni_ipam_pool_address_records_outside_claims", "Address records in no claimed block.",
                        ["pool"])
        for v in self.views:
            p = v.target.name
            up.add_metric([p], 0 if v.error else 1)
            if v.error:
                continue
            for s in v.sets:
                labels = [p, str(s.index), f"ipv{s.range_set.version}"]
                blocks.add_metric(labels, s.blocks)
                held.add_metric(labels, s.held)
                free.add_metric(labels, s.free_blocks)
                size.add_metric(labels, s.capacity)
                used.add_metric(labels, s.used)
                ratio.add_metric(labels, max(s.held_percent, s.used_percent) / 100.0)
            for n in v.nodes:
                labels = [p, n.name]
                nblocks.add_metric(labels, len(n.blocks))
                nused.add_metric(labels, n.used)
                ncap.add_metric(labels, n.capacity)
                conflicts.add_metric(labels, len(n.instances))
            errors.add_metric([p], len(v.errors))
            outside.add_metric([p], len(v.outside))
            orphans.add_metric([p], v.records_outside)
        yield from g.values()
        stamp = GaugeMetricFamily("cni_ipam_pool_metrics_generated_timestamp_seconds",
                                  "When cni-ipam pool metrics read etcd (for staleness only).")
        stamp.add_metric([], self.now)
        yield stamp


def exposition(views, now: float) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(views, now))
    return generate_latest(registry)
