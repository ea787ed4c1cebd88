"""``cni-ipam pool show | metrics | release-node NODE | gc``: the cluster-wide view and the node-leaving
commands of cluster pools.  Admin path: loaded only by the ``pool`` command (cli.py).

Which pools: every network with an ``ipam.pool`` section in the conf files (``--conf FILE``,
repeatable, or every file of ``--conf-dir``, default /etc/cni/net.d), parsed by the plugin's own
parser (``config.load``, ``cluster.pool.parse_pool``), so the commands see exactly what the nodes
see; ``--pool NAME`` selects.  The etcd settings come from the same section; ``--endpoints``,
``--ca-file``, ``--cert-file``, ``--key-file``, ``--username``/``--password-file`` override them (an
admin may use other credentials than the nodes).  Keys are those of ``cluster.pool`` (its key
functions; nothing is spelt here).

Each pool is read with ONE consistent ``range_prefix`` of ``<prefix>/pools/<pool>/`` (block claims,
node usage records, grid, spec), so its numbers belong to one etcd revision.

``pool show``: per pool and range set, blocks the grid has (blocks with no address to hand out do
not count), held and free, addresses and addresses in use, and a level (ok / warning / critical /
emergency at 70 / 85 / 95 %, ``--warning/--critical/--emergency`` as ``show``) of the HIGHER of the
two ratios: when every block is held, a node whose blocks are full cannot get another one however
empty the other nodes' blocks are.  Per node: blocks held (etcd's claims: authoritative), addresses
used / capacity / free from the usage the node last published, its own level, and when it was last
seen (the numbers are that old); nodes silent for longer than ``--silent-after`` (default 1 h) and
nodes that never published are marked.  Exit status: the worst pool level (0-3), 4 on an error.

``pool metrics``: the same numbers in the Prometheus text format (``--textfile-dir`` as ``metrics``).

``pool release-node NODE``: returns every block NODE holds (in the selected pools) to the pool, after
the node was removed from the cluster.  Refusals (``--force`` overrides 1 and 2):

1. NODE published usage less than ``--min-silence`` seconds ago (default 600): it is probably alive,
   or the name is wrong.
2. With ``--kubeconfig``/``--in-cluster``: the Node object still exists, or the API server gives no
   clear answer.
3. Always: each block is released by its own transaction that compares the claim's mod revision AND
   the node's usage record's mod revision (absent stays absent).  A node that claims, releases or
   publishes anything during the release proves it is alive: every later transaction fails and the
   command stops and says so.  The usage record goes last, under the same compare.

``pool gc``: releases the blocks of nodes the Kubernetes API says do not exist (``GET
/api/v1/nodes/NAME`` answers 404 with a ``NotFound`` Status), through the same release as ``release-node``.  Dry run unless
``--apply``.  Never on a timeout alone: a node the API server does not answer about clearly is kept
and reported; a node absent from Kubernetes that published usage less than ``--min-silence`` ago is
kept and reported (a nodeName that differs from the Kubernetes node name looks like that); when the
API says that NO node of a pool exists, nothing is released without ``--force`` (wrong kubeconfig or
cluster?).
"""

from __future__ import annotations

import json
import os
import sys
import time

from cni_ipam.admin import options
from cni_ipam.admin import conffiles, output
from cni_ipam.admin import show as report
from cni_ipam.cluster import pool as poolmod
from cni_ipam.errors import CniError
from cni_ipam.store import is_node_name

DEFAULT_SILENT_AFTER = 3600.0
DEFAULT_MIN_SILENCE = 600.0
DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_GRID_CHECK = 200_000  # grids larger than this are counted without checking each block for room
EXIT_OK, EXIT_FAILED = 0, 1
EXIT_USAGE = options.EXIT_USAGE  # one usage code for every admin command


class AdminError(Exception):
    pass


# ------------------------------------------------------------------------------------ pools of the confs
class PoolTarget:
    """One pool as a conf file defines it: name, etcd settings, range sets and block sizes."""

    def __init__(self, name, settings, range_sets, block_sizes, conf_file, network) -> None:
        self.name = name
        self.settings = settings
        self.range_sets = range_sets
        self.block_sizes = block_sizes
        self.conf_file = conf_file
        self.network = network

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    @property
    def identity(self) -> tuple:
        return (tuple(self.settings.endpoints), self.settings.prefix, self.name)


def load_pools(conf_files, conf_dir, names=None) -> "tuple[list, list]":
    """(pools, problems) of the conf files; the first file wins for a pool (libcni's order)."""
    files = list(conf_files) if conf_files else conffiles.conf_files(conf_dir)
    pools, problems, seen = [], [], set()
    for path in files:
        try:
            attachments = conffiles.read_conf_file(path)
        except conffiles.ConfFileError as exc:
            problems.append(f"{path}: {exc}")
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        for att in attachments:
            ipam = att.netconf.get("ipam")
            if not isinstance(ipam, dict) or ipam.get("pool") is None:
                continue
            try:
                cfg = conffiles.load_offline(att.netconf)  # offline: never the Kubernetes API
            except CniError as exc:
                problems.append(f"{path}: {att.prefix}ipam: {exc.msg}")
                continue
            target = PoolTarget(cfg.pool.name, cfg.pool.etcd, list(cfg.range_sets), list(cfg.pool.block_sizes), path, att.name)
            if names and target.name not in names:
                continue
            if target.identity in seen:
                continue
            seen.add(target.identity)
            pools.append(target)
    if names:
        missing = sorted(set(names) - {p.name for p in pools})
        problems += [f"pool {n!r} is in no conf file" for n in missing]
    return pools, problems


def etcd_client(target: PoolTarget, args):
    """An EtcdClient for the pool: the conf's settings with the command-line overrides on top, made
    (password file and all) by the same code as the plugin's (``cluster.pool.EtcdStore``)."""
    s = target.settings
    username = args.username if args.username is not None else s.username
    password_file = args.password_file if args.password_file is not None else s.password_file
    if username is not None and not password_file:
        raise AdminError(f"etcd user {username!r} needs --password-file")
    settings = poolmod.EtcdSettings(endpoints=args.endpoints or s.endpoints, ca_file=args.ca_file or s.ca_file,
                                    cert_file=args.cert_file or s.cert_file, key_file=args.key_file or s.key_file,
                                    username=username, password_file=password_file, prefix=s.prefix,
                                    timeout=args.timeout or s.timeout)
    try:
        return poolmod.EtcdStore(settings, target.name, "admin").client()
    except CniError as exc:
        raise AdminError(exc.msg) from None


# ------------------------------------------------------------------------------------ reading a pool
class Snapshot:
    """Everything under ``<prefix>/pools/<pool>/`` read at one revision."""

    def __init__(self, target: PoolTarget, kvs: list, known=frozenset()) -> None:
        """``known``: canonical block CIDRs (of the conf's grid) taken as they are, unparsed."""
        prefix, name = target.prefix, target.name
        blocks_head = poolmod.blocks_prefix(prefix, name)
        self.blocks: dict = {}  # cidr -> (claim dict, mod revision)
        self.records: dict = {}  # node -> (usage dict, mod revision)
        self.grid: dict = {}  # family -> block prefix length pinned in etcd
        self.spec = None
        self.junk: list = []  # keys of the pool that are not what the schema says
        nodes_head = poolmod.nodes_prefix(prefix, name)
        grid_keys = {poolmod.grid_key(prefix, name, f): f for f in (4, 6)}
        spec_key = poolmod.spec_key(prefix, name)
        for key, value, mod, _create in kvs:
            cidr = None
            if key.startswith(blocks_head):
                cidr = key[len(blocks_head):].decode("ascii", "replace")
                if cidr not in known:
                    cidr = poolmod.parse_block_key(prefix, name, key)
            if cidr is not None:
                claim = poolmod.decode_json(value)
                if claim is None:
                    self.junk.append(key)
                self.blocks[cidr] = (claim or {}, mod)
            elif key.startswith(nodes_head):
                node = key[len(nodes_head):].decode("utf-8", "replace")
                doc = poolmod.decode_json(value)
                if doc is None or not is_node_name(node):
                    self.junk.append(key)
                    continue
                self.records[node] = (doc, mod)
            elif key in grid_keys:
                try:
                    self.grid[grid_keys[key]] = int(value)
                except ValueError:
                    self.junk.append(key)
            elif key == spec_key:
                self.spec = poolmod.decode_json(value)
            else:
                self.junk.append(key)

    def node_blocks(self, node: str) -> list:
        return sorted((c for c, (claim, _) in self.blocks.items() if claim.get("node") == node), key=_cidr_order)


def read_snapshot(client, target: PoolTarget, known=frozenset()) -> Snapshot:
    prefix = poolmod.pool_prefix(target.prefix, target.name).encode()
    return Snapshot(target, client.range_prefix(prefix), known)


def _cidr_order(cidr: str):
    version, lo, _ = poolmod.block_bounds(cidr)
    return version, lo


def _number(value) -> "float | None":
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------------------ the view
class SetView:
    def __init__(self, index, rset, size, thresholds) -> None:
        self.index = index
        self.range_set = rset
        self.block_size = size
        self.grid: dict = {}  # cidr -> capacity (None when the grid is too large to check)
        self.order: dict = {}  # cidr -> (version, first address), for sorting without parsing
        self.held = 0
        self.used = 0
        self.capacity = rset.size()
        self.thresholds = thresholds
        starts = poolmod.set_block_starts(rset, size)
        step = 1 << ((32 if rset.version == 4 else 128) - size)
        edges = _edge_blocks(rset, step) if len(starts) <= MAX_GRID_CHECK else set()
        for lo in starts:
            cidr = poolmod.block_cidr(rset.version, lo, size)
            # only blocks at a range's edge, or holding a gateway, network, broadcast or excluded
            # address, can have fewer than ``step`` addresses to hand out (or none)
            cap = poolmod.block_capacity(rset, cidr) if lo in edges else step if edges else None
            if cap != 0:
                self.grid[cidr] = cap
                self.order[cidr] = (rset.version, lo)

    @property
    def blocks(self) -> int:
        return len(self.grid)

    @property
    def free_blocks(self) -> int:
        return max(self.blocks - self.held, 0)

    @property
    def held_percent(self) -> float:
        return 100.0 if not self.blocks else 100.0 * self.held / self.blocks

    @property
    def used_percent(self) -> float:
        return 100.0 if not self.capacity else 100.0 * self.used / self.capacity

    @property
    def level(self) -> str:
        return output.level_for(max(self.held_percent, self.used_percent), self.thresholds)

    def to_json(self) -> dict:
        return {"index": self.index, "family": f"ipv{self.range_set.version}", "ranges": self.range_set.to_json(),
                "blockSize": self.block_size, "blocks": self.blocks, "heldBlocks": self.held, "freeBlocks": self.free_blocks,
                "addresses": self.capacity, "usedAddresses": self.used,
                "heldPercent": round(self.held_percent, 2), "usedPercent": round(self.used_percent, 2), "level": self.level}


def _edge_blocks(rset, step: int) -> set:
    """First addresses of the blocks whose capacity is not simply ``step``."""
    out = set()
    for r in rset.ranges:
        points = [r.start, r.end] + [v for v in r.specials() if r.start <= v <= r.end]
        out.update(v - v % step for v in points)
        for lo, hi in r.exclude:
            lo, hi = max(lo, r.start), min(hi, r.end)
            v = lo - lo % step
            while v <= hi:
                out.add(v)
                v += step
    return out


class NodeView:
    def __init__(self, name: str) -> None:
        self.name = name
        self.blocks: list = []  # dicts: cidr, set, capacity, used (None: not published), state
        self.record = None
        self.record_rev = 0
        self.last_seen = None
        self.published = None
        self.conflicts: list = []
        self.networks: set = set()
        self.level = output.UNKNOWN_LEVEL
        self.silent = False

    @property
    def capacity(self) -> int:
        return sum(b["capacity"] or 0 for b in self.blocks)

    @property
    def used(self) -> "int | None":
        known = [b["used"] for b in self.blocks if b["used"] is not None]
        return sum(known) if known or not self.blocks else None

    @property
    def unpublished(self) -> int:
        return sum(1 for b in self.blocks if b["used"] is None)

    @property
    def percent(self) -> "float | None":
        used = self.used
        if used is None:
            return None
        return 100.0 if not self.capacity else 100.0 * used / self.capacity

    def to_json(self, now: float) -> dict:
        used = self.used
        return {"node": self.name, "networks": sorted(self.networks), "blocks": self.blocks, "heldBlocks": len(self.blocks),
                "capacity": self.capacity, "usedAddresses": used,
                "freeAddresses": None if used is None else max(self.capacity - used, 0),
                "percent": None if self.percent is None else round(self.percent, 2), "level": self.level,
                "lastSeen": self.last_seen, "published": self.published,
                "ageSeconds": None if self.last_seen is None else round(max(now - self.last_seen, 0.0), 3),
                "silent": self.silent, "unpublishedBlocks": self.unpublished, "conflicts": self.conflicts}


class PoolView:
    def __init__(self, target: PoolTarget) -> None:
        self.target = target
        self.sets: list = []
        self.nodes: list = []
        self.outside: list = []  # claims on no grid block of the conf (another block size, outside the ranges)
        self.grid_mismatch: list = []
        self.junk: list = []
        self.error = ""
        self.level = output.UNKNOWN_LEVEL

    def to_json(self, now: float, with_nodes: bool = True) -> dict:
        t = self.target
        out = {"pool": t.name, "network": t.network, "confFile": t.conf_file,
               "etcd": {"endpoints": t.settings.endpoints, "prefix": t.prefix}, "level": self.level,
               "sets": [s.to_json() for s in self.sets],
               "nodeCount": len(self.nodes), "silentNodes": [n.name for n in self.nodes if n.silent],
               "claimsOutsideGrid": self.outside, "gridMismatch": self.grid_mismatch,
               "malformedKeys": [k.decode("utf-8", "replace") for k in self.junk]}
        if with_nodes:
            out["nodes"] = [n.to_json(now) for n in self.nodes]
        if self.error:
            out["error"] = self.error
        return out


def set_views(target: PoolTarget, thresholds=output.DEFAULT_THRESHOLDS) -> list:
    return [SetView(i, rs, size, thresholds) for i, (rs, size) in enumerate(zip(target.range_sets, target.block_sizes))]


def build_view(target: PoolTarget, snap: Snapshot, now: float, thresholds=output.DEFAULT_THRESHOLDS,
               silent_after: float = DEFAULT_SILENT_AFTER, sets=None) -> PoolView:
    view = PoolView(target)
    view.junk = snap.junk
    view.sets = sets if sets is not None else set_views(target, thresholds)
    order = {}
    for s in view.sets:
        order.update(s.order)
    for s in view.sets:
        pinned = snap.grid.get(s.range_set.version)
        if pinned is not None and pinned != s.block_size:
            view.grid_mismatch.append(f"ipv{s.range_set.version}: etcd pins /{pinned}, the conf says /{s.block_size}")
    nodes: dict = {}

    def node(name: str) -> NodeView:
        if name not in nodes:
            nodes[name] = NodeView(name)
        return nodes[name]

    for name, (doc, rev) in snap.records.items():
        n = node(name)
        n.record, n.record_rev = doc, rev
        n.last_seen = _number(doc.get("lastSeen"))
        n.published = _number(doc.get("published"))
        conflicts = doc.get("conflicts")
        n.conflicts = [c for c in conflicts if isinstance(c, str)] if isinstance(conflicts, list) else []
    for cidr, (claim, _rev) in sorted(snap.blocks.items(), key=lambda kv: order.get(kv[0]) or _cidr_order(kv[0])):
        owner = claim.get("node")
        if not isinstance(owner, str) or not owner:
            view.outside.append({"cidr": cidr, "node": None, "why": "the claim names no node"})
            continue
        set_view = next((s for s in view.sets if cidr in s.grid), None)
        n = node(owner)
        if isinstance(claim.get("network"), str):
            n.networks.add(claim["network"])
        published = (n.record or {}).get("blocks")
        entry = published.get(cidr) if isinstance(published, dict) else None
        used = entry.get("used") if isinstance(entry, dict) else None
        used = int(used) if isinstance(used, int) and not isinstance(used, bool) and used >= 0 else None
        if set_view is None:
            view.outside.append({"cidr": cidr, "node": owner, "why": "not a block of the configured ranges and block size"})
            cap = entry.get("capacity") if isinstance(entry, dict) and isinstance(entry.get("capacity"), int) else None
            n.blocks.append({"cidr": cidr, "set": None, "capacity": cap, "used": used, "state": "outside"})
            continue
        cap = set_view.grid[cidr]
        if cap is None:
            cap = poolmod.block_capacity(set_view.range_set, cidr)
        set_view.held += 1
        set_view.used += used or 0
        n.blocks.append({"cidr": cidr, "set": set_view.index, "capacity": cap, "used": used,
                         "state": entry.get("state", "held") if isinstance(entry, dict) else "unpublished"})
    for n in nodes.values():
        n.silent = n.last_seen is None or now - n.last_seen > silent_after
        if n.percent is not None and n.blocks:
            n.level = output.level_for(n.percent, thresholds)
    view.nodes = sorted(nodes.values(), key=lambda n: n.name)
    level = "ok"
    for s in view.sets:
        level = output.worse(level, s.level)
    view.level = level
    return view


def collect(targets, args, now, thresholds, silent_after) -> list:
    views = []
    for target in targets:
        try:
            client = etcd_client(target, args)
            sets = set_views(target, thresholds)
            try:
                snap = read_snapshot(client, target, {c for s in sets for c in s.grid})
            finally:
                client.close()
        except Exception as exc:  # EtcdUnavailable, EtcdError, AdminError: this pool only
            view = PoolView(target)
            view.error = f"etcd: {exc}"
            views.append(view)
            continue
        views.append(build_view(target, snap, now, thresholds, silent_after, sets))
    return views


# ------------------------------------------------------------------------------------ output
def _pct(value) -> str:
    return "-" if value is None else f"{value:.1f}%"


def render(views, now: float, with_nodes: bool = True) -> str:
    rows = [["POOL", "SET", "RANGES", "BLOCK", "BLOCKS", "HELD", "FREE", "HELD%", "ADDRESSES", "USED", "USED%", "LEVEL"]]
    notes = []
    for v in views:
        name = v.target.name
        if v.error:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "error"])
            notes.append(f"{name}: {v.error}")
            continue
        for s in v.sets:
            ranges = report.SetStats(s.index, s.range_set, s.capacity, 0, s.thresholds).ranges_text()
            rows.append([name, str(s.index), ranges, f"/{s.block_size}",
                         str(s.blocks), str(s.held), str(s.free_blocks), _pct(s.held_percent), str(s.capacity), str(s.used),
                         _pct(s.used_percent), s.level])
        silent = [n for n in v.nodes if n.silent]
        if silent:
            shown = ", ".join(n.name for n in silent[:10]) + (" ..." if len(silent) > 10 else "")
            notes.append(f"{name}: {len(silent)} silent node(s) (no usage published for over the --silent-after time, or never): {shown}")
        for n in v.nodes:
            for c in n.conflicts:
                notes.append(f"{name}: node {n.name} reports block {c} in conflict (etcd shows another owner)")
        for o in v.outside[:10]:
            notes.append(f"{name}: claim {o['cidr']} of node {o['node'] or '?'}: {o['why']}")
        if len(v.outside) > 10:
            notes.append(f"{name}: ... {len(v.outside) - 10} more claims outside the configured grid")
        notes += [f"{name}: block size mismatch: {m}" for m in v.grid_mismatch]
        if v.junk:
            notes.append(f"{name}: {len(v.junk)} malformed key(s) under the pool prefix, e.g. {v.junk[0]!r}")
    out = [output.table(rows, right=(4, 5, 6, 7, 8, 9, 10)) if len(rows) > 1 else "no pools found"]
    if with_nodes and any(v.nodes for v in views):
        node_rows = [["POOL", "NODE", "BLOCKS", "USED", "CAPACITY", "FREE", "USED%", "LEVEL", "LAST-SEEN", "NOTE"]]
        for v in views:
            for n in v.nodes:
                used = n.used
                note = []
                if n.silent:
                    note.append("silent" if n.last_seen is not None else "never published")
                if n.unpublished and n.last_seen is not None:
                    note.append(f"{n.unpublished} block(s) not in its last usage")
                if n.conflicts:
                    note.append(f"{len(n.conflicts)} conflict(s)")
                if not n.blocks:
                    note.append("no block")
                node_rows.append([v.target.name, n.name, str(len(n.blocks)), "-" if used is None else str(used), str(n.capacity),
                                  "-" if used is None else str(max(n.capacity - used, 0)), _pct(n.percent), n.level,
                                  "never" if n.last_seen is None else output.format_age(now - n.last_seen) + " ago",
                                  ", ".join(note)])
        out += ["", output.table(node_rows, right=(2, 3, 4, 5, 6))]
    if notes:
        out += [""] + notes
    return "\n".join(out)


# ------------------------------------------------------------------------------------ metrics
class PoolCollector:
    def __init__(self, views, now: float) -> None:
        self.views = views
        self.now = now

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        set_labels = ["pool", "range_set", "family"]
        g = {}

        def gauge(name, text, labels):
            g[name] = GaugeMetricFamily(name, text, labels=labels)
            return g[name]

        up = gauge("cni_ipam_pool_etcd_up", "1 when the pool could be read from etcd.", ["pool"])
        blocks = gauge("cni_ipam_pool_blocks", "Blocks of the range set's grid that have addresses to hand out.", set_labels)
        held = gauge("cni_ipam_pool_blocks_held", "Blocks claimed by a node.", set_labels)
        free = gauge("cni_ipam_pool_blocks_free", "Blocks no node holds.", set_labels)
        size = gauge("cni_ipam_pool_addresses", "Addresses the range set can hand out.", set_labels)
        used = gauge("cni_ipam_pool_addresses_used", "Addresses in use, as the nodes last published.", set_labels)
        ratio = gauge("cni_ipam_pool_utilization_ratio", "The higher of held blocks / blocks and used / addresses.", set_labels)
        nblocks = gauge("cni_ipam_pool_node_blocks", "Blocks the node holds.", ["pool", "node"])
        nused = gauge("cni_ipam_pool_node_addresses_used", "Addresses in use on the node (last published).", ["pool", "node"])
        ncap = gauge("cni_ipam_pool_node_addresses", "Addresses of the node's blocks.", ["pool", "node"])
        seen = gauge("cni_ipam_pool_node_last_seen_timestamp_seconds", "When the node last published its usage.", ["pool", "node"])
        silent = gauge("cni_ipam_pool_node_silent", "1 when the node has not published for --silent-after seconds (or never).", ["pool", "node"])
        conflicts = gauge("cni_ipam_pool_node_conflicts", "Blocks the node reports held by another node in etcd.", ["pool", "node"])
        outside = gauge("cni_ipam_pool_claims_outside_grid", "Claims that are not blocks of the configured ranges and block size.", ["pool"])
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
                if n.used is not None:
                    nused.add_metric(labels, n.used)
                ncap.add_metric(labels, n.capacity)
                if n.last_seen is not None:
                    seen.add_metric(labels, n.last_seen)
                silent.add_metric(labels, 1 if n.silent else 0)
                conflicts.add_metric(labels, len(n.conflicts))
            outside.add_metric([p], len(v.outside))
        yield from g.values()
        stamp = GaugeMetricFamily("cni_ipam_pool_metrics_generated_timestamp_seconds", "When cni-ipam pool metrics read etcd.")
        stamp.add_metric([], self.now)
        yield stamp


def exposition(views, now: float) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(views, now))
    return generate_latest(registry)


# ------------------------------------------------------------------------------------ releasing
def release_node_blocks(client, target: PoolTarget, node: str, apply: bool) -> dict:
    """Release every block ``node`` holds in the pool (see the module docstring, refusal 3).

    Returns {"released": [...], "failed": [...], "alive": bool, "recordRemoved": bool, "blocks": [...]}."""
    from cni_ipam.cluster.etcd import cmp_create, cmp_mod, op_delete

    snap = read_snapshot(client, target)
    record_key = poolmod.node_key(target.prefix, target.name, node)
    record = snap.records.get(node)
    record_rev = record[1] if record else 0
    guard = cmp_mod(record_key, "=", record_rev) if record_rev else cmp_create(record_key, "=", 0)
    mine = [(c, snap.blocks[c][1]) for c in snap.node_blocks(node)]
    out = {"pool": target.name, "node": node, "blocks": [c for c, _ in mine], "released": [], "failed": [],
           "alive": False, "recordRemoved": False, "applied": apply}
    if not apply:
        return out
    for cidr, rev in mine:
        key = poolmod.block_key(target.prefix, target.name, cidr)
        ok, _, _ = client.txn([cmp_mod(key, "=", rev), guard], [op_delete(key)], [])
        if ok:
            out["released"].append(cidr)
            continue
        now = client.get(record_key)
        if (now[1] if now else 0) != record_rev:
            out["alive"] = True  # the node wrote its record meanwhile: stop here
            out["failed"] += [c for c, _ in mine if c not in out["released"]]
            return out
        out["failed"].append(cidr)  # the claim changed meanwhile (released/re-claimed): not ours to touch
    if record_rev:
        ok, _, _ = client.txn([guard], [op_delete(record_key)], [])
        out["recordRemoved"] = ok
        out["alive"] = out["alive"] or not ok
    return out


def _last_seen(client, target: PoolTarget, node: str) -> "float | None":
    got = client.get(poolmod.node_key(target.prefix, target.name, node))
    doc = poolmod.decode_json(got[0]) if got else None
    return _number(doc.get("lastSeen")) if doc else None


class KubeNodes:
    """Does a Node exist?  Through the plugin's kubeconfig / in-cluster client (cni_ipam.podcidr.kubeapi):
    True (200), False (404 with a Kubernetes Status "NotFound": ``kubeapi.ApiAnswer.node_not_found``),
    or the reason there is no clear answer (a 404 page that is not such a Status included)."""

    def __init__(self, kubeconfig: "str | None", in_cluster: "str | None", timeout: float) -> None:
        import tempfile

        from cni_ipam.podcidr import kubeapi

        self._scratch = tempfile.mkdtemp(prefix="cni-ipam-pool-")
        self.timeout = timeout
        try:
            self.target = kubeapi.in_cluster(in_cluster) if in_cluster else kubeapi.from_kubeconfig(kubeconfig, self._scratch)
        except CniError as exc:
            self.close()
            raise AdminError(exc.msg.replace("usePodCidr: ", "")) from None

    def exists(self, node: str):
        from cni_ipam.podcidr import kubeapi

        try:
            kubeapi.get_node(self.target, node, self.timeout)
            return True
        except kubeapi.ApiAnswer as exc:
            if exc.node_not_found():
                return False
            return exc.msg.replace("usePodCidr: ", "")
        except CniError as exc:
            return exc.msg.replace("usePodCidr: ", "")

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._scratch, ignore_errors=True)


def _kube(args) -> "KubeNodes | None":
    if args.in_cluster:
        return KubeNodes(None, DEFAULT_SA_DIR if args.in_cluster is True else args.in_cluster, args.kube_timeout)
    path = args.kubeconfig
    if path is None and getattr(args, "command", "") == "gc":
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    if not path:
        return None
    return KubeNodes(path, None, args.kube_timeout)


def _print_release(res: dict, as_json: bool) -> None:
    if as_json:
        return
    verb = "released" if res["applied"] else "would release"
    blocks = res["released"] if res["applied"] else res["blocks"]
    print(f"pool {res['pool']}: node {res['node']}: {verb} {len(blocks)} block(s)" + (": " + ", ".join(blocks) if blocks else ""))
    if res["failed"]:
        print(f"pool {res['pool']}: node {res['node']}: kept {len(res['failed'])} block(s) whose claim changed meanwhile: "
              + ", ".join(res["failed"]))
    if res["alive"]:
        print(f"pool {res['pool']}: node {res['node']} wrote to etcd during the release: it is ALIVE; stopped", file=sys.stderr)


def cmd_release_node(args, targets) -> int:
    node = args.node
    if not is_node_name(node):
        print(f"cni-ipam pool release-node: {node!r} is not a Kubernetes node name", file=sys.stderr)
        return EXIT_USAGE
    kube = _kube(args)
    try:
        if kube is not None and not args.force:
            answer = kube.exists(node)
            if answer is True:
                print(f"cni-ipam pool release-node: refused: node {node} still exists in Kubernetes (--force overrides)", file=sys.stderr)
                return EXIT_FAILED
            if answer is not False:
                print(f"cni-ipam pool release-node: refused: no clear answer from Kubernetes about node {node}: {answer}", file=sys.stderr)
                return EXIT_FAILED
    finally:
        if kube is not None:
            kube.close()
    results, rc, now = [], EXIT_OK, time.time()
    for target in targets:
        try:
            client = etcd_client(target, args)
            try:
                seen = _last_seen(client, target, node)
                if seen is not None and now - seen < args.min_silence and not args.force:
                    print(f"cni-ipam pool release-node: refused for pool {target.name}: node {node} published usage "
                          f"{output.format_age(now - seen)} ago (less than --min-silence {args.min_silence:g}s): "
                          "it looks alive; wait, check the name, or use --force", file=sys.stderr)
                    rc = EXIT_FAILED
                    continue
                res = release_node_blocks(client, target, node, apply=not args.dry_run)
            finally:
                client.close()
        except Exception as exc:
            print(f"cni-ipam pool release-node: pool {target.name}: {exc}", file=sys.stderr)
            rc = EXIT_FAILED
            continue
        results.append(res)
        _print_release(res, args.json)
        if res["failed"] or res["alive"]:
            rc = EXIT_FAILED
    if args.json:
        print(json.dumps({"node": node, "results": results}, indent=2))
    return rc


def cmd_gc(args, targets) -> int:
    try:
        kube = _kube(args)
    except AdminError as exc:
        print(f"cni-ipam pool gc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    now = time.time()
    rc = EXIT_OK
    doc: list = []
    try:
        for target in targets:
            entry = {"pool": target.name, "nodes": [], "results": []}
            doc.append(entry)
            try:
                client = etcd_client(target, args)
            except AdminError as exc:
                entry["error"] = str(exc)
                rc = EXIT_FAILED
                continue
            try:
                snap = read_snapshot(client, target)
                names = sorted({c.get("node") for c, _ in snap.blocks.values() if isinstance(c.get("node"), str)} | set(snap.records))
                verdicts = []
                for name in names:
                    if not is_node_name(name):
                        verdicts.append((name, "kept", "not a Kubernetes node name"))
                        continue
                    answer = kube.exists(name)
                    rec = snap.records.get(name)
                    seen = _number(rec[0].get("lastSeen")) if rec else None
                    if answer is True:
                        verdicts.append((name, "exists", "the Node exists"))
                    elif answer is False and seen is not None and now - seen < args.min_silence:
                        verdicts.append((name, "kept", f"absent from Kubernetes but published usage {output.format_age(now - seen)} ago "
                                                       "(does pool.nodeName match the Kubernetes node name?)"))
                    elif answer is False:
                        verdicts.append((name, "gone", "404 from the API server"))
                    else:
                        verdicts.append((name, "kept", f"no clear answer: {answer}"))
                gone = [n for n, v, _ in verdicts if v == "gone"]
                refuse_all = bool(gone) and not any(v == "exists" for _, v, _ in verdicts) and not args.force
                for name, verdict, why in verdicts:
                    held = len(snap.node_blocks(name))
                    entry["nodes"].append({"node": name, "verdict": verdict, "why": why, "blocks": held})
                    if verdict == "kept":
                        rc = EXIT_FAILED
                    if not args.json:
                        print(f"pool {target.name}: node {name}: {verdict} ({why}); {held} block(s)")
                if refuse_all:
                    msg = (f"pool {target.name}: the API server says none of the pool's nodes exists: nothing released "
                           "(wrong kubeconfig or cluster? --force overrides)")
                    entry["refused"] = msg
                    print(msg, file=sys.stderr)
                    rc = EXIT_FAILED
                    continue
                for name in gone:
                    res = release_node_blocks(client, target, name, apply=args.apply)
                    entry["results"].append(res)
                    _print_release(res, args.json)
                    if res["failed"] or res["alive"]:
                        rc = EXIT_FAILED
            except Exception as exc:
                entry["error"] = str(exc)
                print(f"cni-ipam pool gc: pool {target.name}: {exc}", file=sys.stderr)
                rc = EXIT_FAILED
            finally:
                client.close()
    finally:
        kube.close()
    if args.json:
        print(json.dumps({"applied": args.apply, "pools": doc}, indent=2))
    elif not args.apply:
        print("dry run: nothing released (use --apply)")
    return rc


# ------------------------------------------------------------------------------------ command line
def make_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise options.UsageError(f"{self.prog}: {message}")

    parser = Parser(prog="cni-ipam pool", description="Cluster pools in etcd: the cluster-wide view and leaving nodes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def common(p) -> None:
        p.add_argument("--conf", action="append", metavar="FILE", help="a netconf (.conf/.conflist) with an ipam.pool section (repeatable)")
        p.add_argument("--conf-dir", default=conffiles.DEFAULT_CONF_DIR, help="every pool of the conf files here (default %(default)s)")
        p.add_argument("--pool", action="append", metavar="NAME", help="only this pool (repeatable)")
        p.add_argument("--endpoints", type=lambda s: [e.strip() for e in s.split(",") if e.strip()], metavar="URL,...",
                       help="etcd endpoints instead of the conf's")
        p.add_argument("--ca-file")
        p.add_argument("--cert-file")
        p.add_argument("--key-file")
        p.add_argument("--username")
        p.add_argument("--password-file")
        p.add_argument("--timeout", type=float, metavar="SECONDS", help="etcd timeout per endpoint (default: the conf's)")
        p.add_argument("--json", action="store_true", help="JSON for tools")

    def thresholds(p) -> None:
        p.add_argument("--silent-after", type=float, default=DEFAULT_SILENT_AFTER, metavar="SECONDS",
                       help="a node that published nothing for this long is silent (default %(default)g)")
        for name, default in zip(("warning", "critical", "emergency"), output.DEFAULT_THRESHOLDS):
            p.add_argument(f"--{name}", type=float, default=default, metavar="PERCENT", help="default %(default)g")

    def kube(p, default_note: str) -> None:
        p.add_argument("--kubeconfig", help=f"ask this Kubernetes API whether nodes exist ({default_note})")
        p.add_argument("--in-cluster", nargs="?", const=True, metavar="SA_DIR",
                       help=f"use the pod's service account (default {DEFAULT_SA_DIR})")
        p.add_argument("--kube-timeout", type=float, default=5.0, metavar="SECONDS", help="default %(default)g")
        p.add_argument("--min-silence", type=float, default=DEFAULT_MIN_SILENCE, metavar="SECONDS",
                       help="refuse for a node that published usage more recently than this (default %(default)g)")
        p.add_argument("--force", action="store_true", help="override the refusals (see docs/cluster-ops.md)")

    p = sub.add_parser("show", help="per pool and node: blocks, addresses, levels, silent nodes")
    common(p)
    thresholds(p)
    p.add_argument("--summary", action="store_true", help="pools only, no per-node rows")
    p = sub.add_parser("metrics", help="the show numbers in the Prometheus text format")
    common(p)
    thresholds(p)
    p.add_argument("--textfile-dir", metavar="DIR", help="write <DIR>/cni_ipam_pool.prom atomically")
    p = sub.add_parser("release-node", help="release every block of a node that was removed")
    common(p)
    kube(p, "optional: refuse while the Node exists")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--dry-run", action="store_true", help="list the blocks, release nothing")
    p = sub.add_parser("gc", help="release the blocks of nodes that no longer exist in Kubernetes (dry run unless --apply)")
    common(p)
    kube(p, "default $KUBECONFIG or ~/.kube/config")
    p.add_argument("--apply", action="store_true", help="really release")
    return parser


def main(argv: list) -> int:
    try:
        args = make_parser().parse_args(argv)
        if args.command in ("show", "metrics"):
            thresholds = report.thresholds_of(args)
    except options.UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    targets, problems = load_pools(args.conf, args.conf_dir, args.pool)
    for problem in problems:
        print(f"cni-ipam pool {args.command}: {problem}", file=sys.stderr)
    if not targets:
        print(f"cni-ipam pool {args.command}: no pool found (give --conf FILE or --conf-dir)", file=sys.stderr)
        return report.EXIT_CODES[output.UNKNOWN_LEVEL] if args.command == "show" else EXIT_FAILED
    try:
        if args.command == "release-node":
            return cmd_release_node(args, targets)
        if args.command == "gc":
            return cmd_gc(args, targets)
    except AdminError as exc:
        print(f"cni-ipam pool {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    now = time.time()
    views = collect(targets, args, now, thresholds, args.silent_after)
    failed = any(v.error for v in views)
    if args.command == "metrics":
        data = exposition(views, now)
        if args.textfile_dir:
            from cni_ipam.store import fs as safefs  # the node-local metrics' writer: O_EXCL|O_NOFOLLOW temp file, 0644, one rename

            fd = safefs.open_dir(args.textfile_dir, follow=True)  # the operator named it; it may be a link
            try:
                safefs.write_atomic(fd, "cni_ipam_pool.prom", data, 0o644)
            finally:
                os.close(fd)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        for v in views:
            if v.error:
                print(f"cni-ipam pool metrics: {v.target.name}: {v.error}", file=sys.stderr)
        return EXIT_FAILED if failed else EXIT_OK
    level = "ok"
    for v in views:
        if v.level in output.LEVELS:
            level = output.worse(level, v.level)
    if args.json:
        print(json.dumps({"thresholds": dict(zip(output.LEVELS[1:], thresholds)), "silentAfter": args.silent_after,
                          "generated": now, "level": level, "pools": [v.to_json(now, not args.summary) for v in views]}, indent=2))
    else:
        print(render(views, now, with_nodes=not args.summary))
    if failed:
        return report.EXIT_CODES[output.UNKNOWN_LEVEL]
    return report.EXIT_CODES[level]
