"""``cni-ipam plan --inventory FILE``: the address plan across clusters.

* overlaps: every pair of ranges of different owners that share an address (same family only),
  both named, with the part they share.  The owner of an external network's range is its
  ``owner``; a cluster's ranges are owned per role (pods, services, nodes), so a cluster's pod
  range over its own service range counts too.  A cluster's node subnet inside one of its
  ``nodeNetworks`` is expected, not an overlap.  A sorted sweep: n log n plus the overlaps found.
* capacity per cluster and family: the nodes the pod space serves (node subnets of the
  clusterCIDR less those its service CIDR occupies, as ``plan --cluster-cidr``; a pool's blocks,
  as ``plan --pool-conf``; plain pod ranges at maxPods per node) and the nodes the node subnets
  hold; the smaller is the family's room, the constraint that gives it is the first to run out.
  Used and headroom percent at the planned and the maximum node count, with ``show``'s levels.
  Dual stack: each family on its own; a node needs both, so the cluster's room is the smaller.
* ``--propose NAME --nodes N``: the smallest aligned CIDRs (per family of ``--within``, default
  the RFC 1918 blocks) for the new cluster's pods, services and nodes at ``--growth`` (2x), each
  the lowest free block of its size that touches nothing in the inventory; or "does not fit" and
  the largest free block.

Exact integers throughout (no address or subnet is ever enumerated): an IPv6 /32 of /64 node
subnets costs what an IPv4 /16 costs.  Exit status as the other plan modes: 0 fits, 1 warnings,
2 errors (an overlap, a cluster that does not fit at its planned or maximum size, a proposal that
does not fit); 64 for an inventory that cannot be read (the message names the line).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any, Sequence

from cni_ipam.admin.inventory import NODE, Claim, Cluster, Inventory, cidr_text
from cni_ipam.admin.output import level_for
from cni_ipam.plugin.ranges import merge

BITS = {4: 32, 6: 128}
DEFAULT_WITHIN = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
DEFAULT_GROWTH = 2.0
DEFAULT_SERVICES = 1000


# ---------------------------------------------------------------------------------- interval math
def range_text(version: int, lo: int, hi: int) -> str:
    """A CIDR when ``lo..hi`` is one, else ``first-last``."""
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        return cidr_text(version, lo, BITS[version] - size.bit_length() + 1)
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return f"{cls(lo)}-{cls(hi)}"


def subtract(spaces: list[tuple[int, int]], used: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``spaces`` outside ``used`` (both merged: sorted, disjoint)."""
    out = []
    j = 0
    for lo, hi in spaces:
        cur = lo
        while j < len(used) and used[j][1] < cur:
            j += 1
        k = j
        while k < len(used) and used[k][0] <= hi:
            if used[k][0] > cur:
                out.append((cur, used[k][0] - 1))
            cur = max(cur, used[k][1] + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def first_fit(gaps: list[tuple[int, int]], size: int) -> int | None:
    """The lowest start of an aligned block of ``size`` (a power of two) inside one of ``gaps``."""
    for lo, hi in gaps:
        start = -(-lo // size) * size
        if start + size - 1 <= hi:
            return start
    return None


def largest_block(gaps: list[tuple[int, int]], bits: int) -> tuple[int, int] | None:
    """(start, prefix length) of the largest aligned block inside ``gaps`` (the lowest of equals)."""
    best: tuple[int, int] | None = None
    for lo, hi in gaps:
        cur = lo
        while cur <= hi:
            size = cur & -cur if cur else 1 << bits
            while cur + size - 1 > hi:
                size >>= 1
            if best is None or size > best[0]:
                best = (size, cur)
            cur += size
    if best is None:
        return None
    return best[1], bits - best[0].bit_length() + 1


def find_overlaps(claims: Sequence[Claim], expected=lambda a, b: False) -> list[tuple[Claim, Claim]]:
    """Every pair of claims of different owners sharing an address, same family (a sweep)."""
    out = []
    for version in (4, 6):
        items = sorted((c for c in claims if c.version == version), key=lambda c: (c.lo, -c.hi, c.line))
        active: list[Claim] = []
        for c in items:
            active = [a for a in active if a.hi >= c.lo]
            for a in active:
                if a.owner != c.owner and not expected(a, c):
                    out.append((a, c))
            active.append(c)
    return out


# ---------------------------------------------------------------------------------- capacity
class Limit:
    __slots__ = ("what", "nodes")

    def __init__(self, what: str, nodes: int) -> None:
        self.what = what
        self.nodes = nodes


def used_percent(nodes: int, fit: int) -> float | None:
    return None if fit <= 0 else 100.0 * nodes / fit


class FamilyCapacity:
    """One cluster's room in one family: what limits it, used and headroom at its two sizes."""

    def __init__(self, c: Cluster, version: int) -> None:
        from cni_ipam.admin.capacity import FamilyPlan, PoolSetPlan, count_text

        self.version = version
        fam = f"ipv{version}"
        self.errors: list[str] = []
        self.warnings: list[str] = []
        pod_nodes, parts = 0, []
        self.pods_per_node = c.max_pods
        for net in (n for n in c.cluster_cidrs if n.version == version):
            fp = FamilyPlan(net, c.masks[version], c.service_cidrs, c.max_pods, service_warnings=False)
            pod_nodes += fp.available
            self.pods_per_node = min(self.pods_per_node, fp.pods_per_node)
            parts.append(f"node CIDRs ({net}, /{fp.mask})")
            self.errors += [f"cluster {c.name}: {e}" for e in fp.errors]
            self.warnings += [f"cluster {c.name}: {w}" for w in fp.warnings]
        for p in (p for p in c.pools if p.rset.version == version):
            ps = PoolSetPlan(p.rset, p.block_size, c.max_pods)
            pod_nodes += ps.nodes_fit
            parts.append(f"pool blocks ({','.join(r.cidr for r in p.rset.ranges)}, /{p.block_size})")
            if not ps.nodes_fit:
                self.errors.append(
                    f"cluster {c.name}: {fam}: pool {','.join(r.cidr for r in p.rset.ranges)}: not one node fits "
                    f"({ps.blocks} /{p.block_size} block(s) of at least {count_text(ps.usable_min)} addresses)"
                )
        plain = [(n, what) for v, n, what in c.plain if v == version]
        if plain:
            pod_nodes += sum(n for n, _ in plain) // c.max_pods
            parts.append(f"pod addresses ({'; '.join(w for _, w in plain)})")
        self.limits = [Limit(" + ".join(parts), pod_nodes)]
        node_nets = [n for n in c.node_subnets if n.version == version]
        if node_nets:
            from cni_ipam.admin.inventory import usable_addresses

            self.limits.append(
                Limit(
                    f"node addresses (nodeSubnets {', '.join(map(str, node_nets))})",
                    sum(map(usable_addresses, node_nets)),
                )
            )
        self.fit = min(lim.nodes for lim in self.limits)
        self.first_out = next(lim for lim in self.limits if lim.nodes == self.fit)
        self.planned, self.maximum = c.nodes, c.max_nodes
        self.used_planned = used_percent(c.nodes, self.fit)
        self.used_max = used_percent(c.max_nodes, self.fit)
        for label, n in (("planned", c.nodes), ("maximum", c.max_nodes)):
            if n > self.fit:
                self.errors.append(
                    f"cluster {c.name}: {fam}: {n} nodes ({label}) do not fit: room for {count_text(self.fit)}; "
                    f"{self.first_out.what} runs out first"
                )
                break
        else:
            level = self.level(self.used_max)
            if level != "ok":
                self.warnings.append(
                    f"cluster {c.name}: {fam}: {level} at maxNodes {c.max_nodes}: {self.used_max:.1f}% of room "
                    f"for {count_text(self.fit)} nodes; {self.first_out.what} runs out first"
                )

    @staticmethod
    def level(used: float | None) -> str:
        return "emergency" if used is None else level_for(used)

    @property
    def pod_capacity(self) -> int:
        return self.fit * self.pods_per_node

    def to_json(self) -> dict:
        def size(n: int, used: float | None) -> dict:
            return {
                "nodes": n,
                "usedPercent": None if used is None else round(used, 2),
                "headroomPercent": None if used is None else round(100 - used, 2),
                "level": self.level(used),
            }

        return {
            "family": f"ipv{self.version}",
            "nodesFit": self.fit,
            "podsPerNode": self.pods_per_node,
            "podCapacity": self.pod_capacity,
            "firstToRunOut": self.first_out.what,
            "limits": [{"what": lim.what, "nodes": lim.nodes} for lim in self.limits],
            "planned": size(self.planned, self.used_planned),
            "maximum": size(self.maximum, self.used_max),
        }


class ClusterCapacity:
    def __init__(self, c: Cluster) -> None:
        self.cluster = c
        fams = sorted(
            {n.version for n in c.cluster_cidrs} | {p.rset.version for p in c.pools} | {v for v, _, _ in c.plain}
        )
        self.families = [FamilyCapacity(c, v) for v in fams]
        self.nodes_fit = min(f.fit for f in self.families)

    def to_json(self) -> dict:
        c = self.cluster
        return {
            "name": c.name,
            "line": c.line,
            "nodes": c.nodes,
            "maxNodes": c.max_nodes,
            "maxPods": c.max_pods,
            "nodesFit": self.nodes_fit,
            "families": [f.to_json() for f in self.families],
            "notes": c.notes,
        }


# ---------------------------------------------------------------------------------- the report
class InventoryPlan:
    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        allowed = {(c.name, name) for c in inv.clusters for name, _ in c.node_networks}

        def expected(a: Claim, b: Claim) -> bool:
            for node, ext in ((a, b), (b, a)):
                if (
                    not node.external
                    and node.role == NODE
                    and ext.external
                    and (node.holder, ext.holder) in allowed
                    and ext.lo <= node.lo
                    and node.hi <= ext.hi
                ):
                    return True
            return False

        self.overlaps = find_overlaps(inv.claims, expected)
        own_cidrs = {c.name: {str(n) for n in c.cluster_cidrs} for c in inv.clusters}
        self.levels = [self.overlap_level(a, b, own_cidrs) for a, b in self.overlaps]
        self.errors = [self.overlap_text(a, b) for (a, b), lv in zip(self.overlaps, self.levels) if lv == "error"]
        self.warnings: list[str] = [
            self.overlap_text(a, b) + " (inside its own clusterCIDR: kube-controller-manager gives no node those "
            "subnets, counted in the room below)"
            for (a, b), lv in zip(self.overlaps, self.levels)
            if lv == "warning"
        ]
        self.clusters = [ClusterCapacity(c) for c in inv.clusters]
        for cc in self.clusters:
            for f in cc.families:
                self.errors += f.errors
                self.warnings += f.warnings
        self.notes = [f"cluster {cc.cluster.name}: {n}" for cc in self.clusters for n in cc.cluster.notes]

    @staticmethod
    def overlap_level(a: Claim, b: Claim, own_cidrs: dict) -> str:
        """A warning for a service CIDR inside its own cluster's clusterCIDR (a setup Kubernetes
        supports: those node subnets are marked used, and the room counts without them); an error
        for every other overlap (a pool or plain pod range knows nothing of services)."""
        if a.external or b.external or a.holder != b.holder:
            return "error"
        pods, svc = (a, b) if a.role == "pods" else (b, a)
        if (
            (pods.role, svc.role) == ("pods", "services")
            and pods.cidr in own_cidrs[pods.holder]
            and (pods.lo <= svc.lo and svc.hi <= pods.hi)
        ):
            return "warning"
        return "error"

    @staticmethod
    def overlap_text(a: Claim, b: Claim) -> str:
        common = range_text(a.version, max(a.lo, b.lo), min(a.hi, b.hi))
        return f"overlap: {a.label()} (line {a.line}) and {b.label()} (line {b.line}) share {common}"

    @property
    def exit_code(self) -> int:
        return 2 if self.errors else 1 if self.warnings else 0

    def to_json(self) -> dict:
        overlaps = [
            {
                "family": f"ipv{a.version}",
                "a": a.to_json(),
                "b": b.to_json(),
                "shared": range_text(a.version, max(a.lo, b.lo), min(a.hi, b.hi)),
                "sharedAddresses": min(a.hi, b.hi) - max(a.lo, b.lo) + 1,
                "level": level,
            }
            for (a, b), level in zip(self.overlaps, self.levels)
        ]
        return {
            "inventory": self.inv.path,
            "ranges": len(self.inv.claims),
            "overlaps": overlaps,
            "clusters": [cc.to_json() for cc in self.clusters],
            "external": [
                {"name": e.name, "owner": e.owner, "kind": e.kind, "line": e.line} for e in self.inv.externals
            ],
            "errors": self.errors,
            "warnings": self.warnings,
            "notes": self.notes,
        }

    def render(self) -> str:
        from cni_ipam.admin.output import table
        from cni_ipam.admin.capacity import count_text

        def pct(used: float | None) -> str:
            return "none" if used is None else f"{100 - used:.1f}%"

        inv = self.inv
        out = [
            f"inventory {inv.path}: {len(inv.clusters)} cluster(s), {len(inv.externals)} external network(s), "
            f"{len(inv.claims)} range(s), {len(self.overlaps)} overlap(s)",
            "",
        ]
        rows = [
            [
                "CLUSTER",
                "FAMILY",
                "NODES FIT",
                "PLANNED",
                "HEADROOM",
                "LEVEL",
                "MAXIMUM",
                "HEADROOM",
                "LEVEL",
                "PODS/NODE",
                "POD CAPACITY",
                "FIRST TO RUN OUT",
            ]
        ]
        for cc in self.clusters:
            for f in cc.families:
                rows.append(
                    [
                        cc.cluster.name,
                        f"ipv{f.version}",
                        count_text(f.fit),
                        str(f.planned),
                        pct(f.used_planned),
                        f.level(f.used_planned),
                        str(f.maximum),
                        pct(f.used_max),
                        f.level(f.used_max),
                        str(f.pods_per_node),
                        count_text(f.pod_capacity),
                        f.first_out.what,
                    ]
                )
        if len(rows) > 1:
            out += [table(rows, right=(2, 3, 4, 6, 7, 9, 10)), ""]
        out += [f"error: {e}" for e in self.errors]
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"note: {n}" for n in self.notes]
        if not (self.errors or self.warnings):
            out.append("no overlaps; every cluster fits at its maximum size")
        return "\n".join(out).rstrip("\n")


# ---------------------------------------------------------------------------------- proposals
class Block:
    """One CIDR a proposal needs: its role, prefix length, what it holds, where it goes."""

    __slots__ = ("role", "version", "prefixlen", "needed", "holds", "start", "largest")

    def __init__(self, role: str, version: int, prefixlen: int, needed: str, holds: str) -> None:
        self.role = role
        self.version = version
        self.prefixlen = prefixlen
        self.needed = needed
        self.holds = holds
        self.start: int | None = None
        self.largest: tuple[int, int] | None = None  # the largest free block when it does not fit

    @property
    def cidr(self) -> str | None:
        return None if self.start is None else cidr_text(self.version, self.start, self.prefixlen)

    def to_json(self) -> dict:
        return {
            "role": self.role,
            "family": f"ipv{self.version}",
            "prefixLength": self.prefixlen,
            "cidr": self.cidr,
            "needed": self.needed,
            "holds": self.holds,
            "largestFree": None if self.largest is None else cidr_text(self.version, *self.largest),
        }


def _prefix_for(addresses: int, bits: int) -> int:
    """The longest prefix length whose block holds ``addresses``."""
    return bits - max(addresses - 1, 0).bit_length()


class Proposal:
    def __init__(
        self,
        inv: Inventory,
        name: str,
        nodes: int,
        max_pods: int,
        withins: Sequence[Any],
        growth: float = DEFAULT_GROWTH,
        services: int = DEFAULT_SERVICES,
    ) -> None:
        from cni_ipam.admin.capacity import PlanError, usable_per_node

        if name in {c.name for c in inv.clusters} | {e.name for e in inv.externals}:
            raise PlanError(f"--propose {name}: the inventory already has that name")
        if nodes < 1 or max_pods < 1 or services < 1 or not growth >= 1:
            raise PlanError("--nodes, --max-pods, --services must be at least 1 and --growth at least 1.0")
        self.inv, self.name, self.nodes, self.max_pods, self.services, self.growth = (
            inv,
            name,
            nodes,
            max_pods,
            services,
            growth,
        )
        self.max_nodes = math.ceil(nodes * growth)
        nets = list(withins) or [ipaddress.ip_network(w) for w in DEFAULT_WITHIN]
        self.withins = nets
        self.blocks: list[Block] = []
        self.masks: dict[int, int] = {}
        for version in sorted({n.version for n in nets}):
            bits = BITS[version]
            # IPv4: the longest node mask giving 2x maxPods addresses (a /24 for 110, as Kubernetes sizes it)
            if version == 4:
                found = next((m for m in range(30, 7, -1) if usable_per_node(m, 4) >= 2 * max_pods), None)
                if found is None:
                    raise PlanError(f"--max-pods {max_pods}: no IPv4 node subnet up to a /8 holds twice that")
                mask = found
            else:
                mask = 64
            self.masks[version] = mask
            need_bits = max(self.max_nodes - 1, 0).bit_length()
            svc = math.ceil(services * growth) + 2  # the network address and the last one are not handed out
            node_addrs = self.max_nodes + 3  # network, gateway, broadcast
            fam_blocks = [
                Block(
                    "clusterCIDR",
                    version,
                    mask - need_bits,
                    f"{self.max_nodes} /{mask} node subnets",
                    f"{2**need_bits} /{mask} node subnets, {count(usable_per_node(mask, version))} pod addresses each",
                ),
                Block(
                    "serviceCIDR",
                    version,
                    max(_prefix_for(svc, bits), 12 if version == 4 else 108),
                    f"{svc - 2} service addresses",
                    "",
                ),
                Block(
                    "nodeSubnets",
                    version,
                    64 if version == 6 else _prefix_for(node_addrs, bits),
                    f"{self.max_nodes} node addresses",
                    "",
                ),
            ]
            svc_block, node_block = fam_blocks[1], fam_blocks[2]
            svc_block.holds = f"{count(2 ** (bits - svc_block.prefixlen) - 2)} service addresses"
            node_block.holds = (
                f"{count(2 ** (bits - node_block.prefixlen) - (3 if version == 4 else 2))} node addresses"
            )
            used = merge([(c.lo, c.hi) for c in inv.claims if c.version == version])
            space = merge([(int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version])
            for b in sorted(fam_blocks, key=lambda b: b.prefixlen):  # largest first: the small ones fill gaps
                gaps = subtract(space, used)
                if b.prefixlen >= 0:
                    b.start = first_fit(gaps, 1 << (bits - b.prefixlen))
                if b.start is None:
                    b.largest = largest_block(gaps, bits)
                else:
                    used = merge(used + [(b.start, b.start + (1 << (bits - b.prefixlen)) - 1)])
            self.blocks += fam_blocks

    @property
    def fits(self) -> bool:
        return all(b.start is not None for b in self.blocks)

    @property
    def exit_code(self) -> int:
        return 0 if self.fits else 2

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "nodes": self.nodes,
            "maxNodes": self.max_nodes,
            "growth": self.growth,
            "maxPods": self.max_pods,
            "services": self.services,
            "within": [str(n) for n in self.withins],
            "fits": self.fits,
            "blocks": [b.to_json() for b in self.blocks],
        }

    def render(self) -> str:
        from cni_ipam.admin.output import table

        out = [
            f"proposal for cluster {self.name}: {self.nodes} nodes, room for {self.max_nodes} "
            f"({self.growth:g}x growth), "
            f"{self.max_pods} pods per node, {self.services} services; within {', '.join(map(str, self.withins))}",
            "",
        ]
        rows = [["FAMILY", "ROLE", "CIDR", "NEEDED", "HOLDS"]]
        for b in self.blocks:
            rows.append([f"ipv{b.version}", b.role, b.cidr or f"(a /{b.prefixlen}: does not fit)", b.needed, b.holds])
        out.append(table(rows))
        if not self.fits:
            out.append("")
        for b in self.blocks:
            if b.start is None:
                where = (
                    "no free address"
                    if b.largest is None
                    else f"the largest free block is {cidr_text(b.version, *b.largest)}"
                )
                out.append(f"error: ipv{b.version} {b.role}: a /{b.prefixlen} does not fit: {where}")
        if self.fits:
            out.append("")
            out.append("fits; as an inventory entry:")
            out.append(f"  - name: {self.name}")
            out.append(f"    nodes: {self.nodes}")
            out.append(f"    maxNodes: {self.max_nodes}")
            out.append(f"    maxPods: {self.max_pods}")
            for role in ("clusterCIDR", "serviceCIDR", "nodeSubnets"):
                out.append(f"    {role}: [{', '.join(b.cidr or '' for b in self.blocks if b.role == role)}]")
            out.append("    nodeMask: {" + ", ".join(f"ipv{v}: {m}" for v, m in sorted(self.masks.items())) + "}")
        return "\n".join(out)


def count(n: int) -> str:
    from cni_ipam.admin.capacity import count_text

    return count_text(n)
