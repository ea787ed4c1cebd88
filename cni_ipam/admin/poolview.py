"""What ``cni-ipam pool show`` and ``pool metrics`` see: the numbers derived from one pool as read
from etcd (``poolread.Snapshot``) and the pool's conf (``PoolView``), the table and the Prometheus
text.  Admin path only.

Usage comes from the address records (one key per allocated address, ``cluster.keys``), as
``poolread`` counted them.  Block counts and capacities are exact integer interval arithmetic over the conf's
ranges (``Grid``): nothing enumerates blocks or addresses, so a /64 cut in /120 or /128 blocks
costs what a /24 does.  No clock is read for any
number here: nodes publish no timestamps.
"""

from __future__ import annotations

import bisect
from cni_ipam.admin import output
from cni_ipam.admin.poolconf import PoolTarget, etcd_client, error_text
from cni_ipam.admin.poolread import Snapshot, read_snapshot
from cni_ipam.cluster import keys


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
