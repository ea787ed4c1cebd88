"""The arithmetic of ``cni-ipam plan`` (see ``admin.plan`` for what it answers): node subnets of a
cluster CIDR and the service ranges that occupy some, addresses per node, a pool's blocks, the
pool conf reader.  Shared by ``plan --cluster-cidr`` / ``--pool-*`` and the inventory plan
(``admin.inventory``, ``admin.inventory_plan``).  Exact integers: no address or subnet is walked."""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Sequence

DEFAULT_MAX_PODS = 110
DEFAULT_NODE_MASK = {4: 24, 6: 64}  # kube-controller-manager's defaults
MAX_MASK_DIFF = 16  # kube-controller-manager cidrset: clusterSubnetMaxDiff
EXIT_OK, EXIT_WARNINGS, EXIT_ERRORS = 0, 1, 2


class PlanError(Exception):
    pass


def count_text(n: int) -> str:
    """A count for people: as is up to 7 digits, else as a power of two (``2^64``, ``2^64-3``), or
    ``~2^70.2`` when no power of two is near."""
    if n < 10_000_000:
        return str(n)
    p = n.bit_length() - 1
    if n - 2**p > 2 ** (p + 1) - n:
        p += 1
    d = n - 2**p
    if d == 0:
        return f"2^{p}"
    if abs(d) < 1000:
        return f"2^{p}{d:+d}"
    import math

    return f"~2^{math.log2(n):.1f}"


def usable_per_node(prefixlen: int, version: int) -> int:
    """Addresses cni-ipam hands out from a node subnet with the default range and gateway."""
    from cni_ipam.plugin.ranges import Range

    net = ipaddress.ip_network(("0.0.0.0" if version == 4 else "::", prefixlen))
    if prefixlen > net.max_prefixlen - 2:
        return 0
    return Range.of_subnet(net).size()


def _occupied_by(service, cluster, mask: int) -> int:
    """Node subnets of ``cluster`` (of prefix ``mask``) that overlap ``service``."""
    if service.version != cluster.version or not service.overlaps(cluster):
        return 0
    if cluster.subnet_of(service):
        return 2 ** (mask - cluster.prefixlen)
    if service.prefixlen <= mask:
        return 2 ** (mask - service.prefixlen)
    return 1


def occupied_subnets(services: Sequence, cluster, mask: int) -> int:
    """Node subnets (/``mask``) of ``cluster`` that any of ``services`` touches, each counted once
    however many service ranges touch it (they may overlap or share a subnet): the merged
    intervals, a subnet index range each, without walking the subnets."""
    from cni_ipam.plugin.ranges import merge

    step = 1 << (cluster.max_prefixlen - mask)
    lo, hi = int(cluster.network_address), int(cluster.broadcast_address)
    parts = merge(
        [
            (max(int(s.network_address), lo), min(int(s.broadcast_address), hi))
            for s in services
            if s.version == cluster.version and s.overlaps(cluster)
        ]
    )
    total, last = 0, -1
    for a, b in parts:
        first, end = max(a // step, last + 1), b // step
        if end >= first:
            total += end - first + 1
        last = max(last, end)
    return total


class FamilyPlan:
    def __init__(self, cluster, mask: int, services: Sequence, max_pods: int, service_warnings: bool = True) -> None:
        self.cluster = cluster
        self.mask = mask
        self.version = cluster.version
        self.errors: list[str] = []
        self.warnings: list[str] = []
        p, top = cluster.prefixlen, cluster.max_prefixlen
        fam = f"ipv{self.version}"
        self.node_subnets = 0
        self.occupied = 0
        self.usable = 0
        if mask < p:
            self.errors.append(f"{fam}: node mask /{mask} is shorter than the cluster CIDR {cluster}")
        elif mask > top - 2:
            self.errors.append(f"{fam}: node mask /{mask} leaves no address to hand out")
        else:
            if mask - p > MAX_MASK_DIFF:
                self.errors.append(
                    f"{fam}: node mask /{mask} is {mask - p} bits longer than cluster CIDR {cluster}; "
                    f"kube-controller-manager allows at most {MAX_MASK_DIFF}"
                )
            self.node_subnets = 2 ** (mask - p)
            self.usable = usable_per_node(mask, self.version)
        for svc in services:
            if svc.version == self.version and svc.overlaps(cluster):
                n = _occupied_by(svc, cluster, mask) if self.node_subnets else 0
                if service_warnings:  # the inventory plan reports it as an overlap instead
                    self.warnings.append(
                        f"{fam}: service CIDR {svc} overlaps cluster CIDR {cluster}"
                        + (f" ({n} node subnet(s) unusable)" if n else "")
                    )
        if self.node_subnets:
            self.occupied = occupied_subnets(services, cluster, mask)
        self.pods_per_node = min(self.usable, max_pods)
        if self.node_subnets and self.usable < max_pods:
            self.errors.append(
                f"{fam}: a /{mask} node subnet holds {self.usable} pod addresses, fewer than --max-pods {max_pods}"
            )
        elif self.node_subnets and self.usable < 2 * max_pods:
            self.warnings.append(
                f"{fam}: a /{mask} node subnet holds {self.usable} pod addresses, less than 2x --max-pods "
                f"{max_pods}: addresses are reused soon after pods go (Kubernetes sizes /24 for 110)"
            )

    @property
    def available(self) -> int:
        return self.node_subnets - self.occupied

    @property
    def capacity(self) -> int:
        return self.available * self.pods_per_node

    def to_json(self) -> dict:
        return {
            "family": f"ipv{self.version}",
            "clusterCIDR": str(self.cluster),
            "nodeMask": self.mask,
            "nodeSubnets": self.node_subnets,
            "occupiedByServices": self.occupied,
            "availableNodeSubnets": self.available,
            "usableAddressesPerNode": self.usable,
            "podsPerNode": self.pods_per_node,
            "podCapacity": self.capacity,
        }


class Plan:
    def __init__(
        self,
        clusters: Sequence,
        masks: dict[int, int],
        services: Sequence = (),
        nodes: int | None = None,
        max_pods: int = DEFAULT_MAX_PODS,
    ) -> None:
        if not clusters:
            raise PlanError("give at least one --cluster-cidr")
        seen = set()
        for c in clusters:
            if c.version in seen:
                raise PlanError(f"more than one IPv{c.version} --cluster-cidr (one per family)")
            seen.add(c.version)
        if max_pods < 1:
            raise PlanError("--max-pods must be at least 1")
        if nodes is not None and nodes < 1:
            raise PlanError("--nodes must be at least 1")
        self.services = list(services)
        self.nodes = nodes
        self.max_pods = max_pods
        self.families = [
            FamilyPlan(c, masks.get(c.version, DEFAULT_NODE_MASK[c.version]), self.services, max_pods) for c in clusters
        ]
        self.errors = [e for f in self.families for e in f.errors]
        self.warnings = [w for f in self.families for w in f.warnings]
        self.nodes_fit = min(f.available for f in self.families)
        self.pods_per_node = min(f.pods_per_node for f in self.families)
        if nodes is not None:
            if nodes > self.nodes_fit:
                self.errors.append(f"{nodes} nodes do not fit: the plan has room for {self.nodes_fit}")
            elif self.nodes_fit < 2 * nodes:
                self.warnings.append(f"room for {self.nodes_fit} nodes is less than 2x growth over {nodes} nodes")

    @property
    def headroom(self) -> int | None:
        return None if self.nodes is None else self.nodes_fit - self.nodes

    @property
    def growth(self) -> float | None:
        return None if self.nodes is None else self.nodes_fit / self.nodes

    @property
    def exit_code(self) -> int:
        return EXIT_ERRORS if self.errors else EXIT_WARNINGS if self.warnings else EXIT_OK

    def to_json(self) -> dict:
        return {
            "families": [f.to_json() for f in self.families],
            "serviceCIDRs": [str(s) for s in self.services],
            "maxPods": self.max_pods,
            "nodes": self.nodes,
            "nodesFit": self.nodes_fit,
            "podsPerNode": self.pods_per_node,
            "podCapacity": self.nodes_fit * self.pods_per_node,
            "headroomNodes": self.headroom,
            "growth": None if self.growth is None else round(self.growth, 3),
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def render(self) -> str:
        from cni_ipam.admin.output import table

        rows = [
            [
                "FAMILY",
                "CLUSTER CIDR",
                "NODE MASK",
                "NODE SUBNETS",
                "SERVICE-OCCUPIED",
                "AVAILABLE",
                "ADDRESSES/NODE",
                "PODS/NODE",
                "POD CAPACITY",
            ]
        ]
        for f in self.families:
            rows.append(
                [
                    f"ipv{f.version}",
                    str(f.cluster),
                    f"/{f.mask}",
                    *map(count_text, (f.node_subnets, f.occupied, f.available, f.usable, f.pods_per_node, f.capacity)),
                ]
            )
        out = [table(rows, right=(3, 4, 5, 6, 7, 8)), ""]
        line = (
            f"nodes that fit: {count_text(self.nodes_fit)}; pods per node: {self.pods_per_node} "
            f"(--max-pods {self.max_pods}); "
            f"pod capacity: {count_text(self.nodes_fit * self.pods_per_node)}"
        )
        out.append(line)
        if self.nodes is not None:
            out.append(f"planned nodes: {self.nodes}; headroom: {self.headroom} node(s), {self.growth:.2f}x growth")
        out += [f"error: {e}" for e in self.errors]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)


# ---------------------------------------------------------------------------------- cluster pools
def pool_set_blocks(rset, prefixlen: int) -> tuple[int, int, int]:
    """(blocks that can hand out an address, fewest usable addresses in one, most) of a pool range
    set cut into /``prefixlen`` blocks, exact without walking the blocks (a /64 of /120 blocks has
    2^56): only a block holding a range end, a gateway, a network/broadcast address or an exclusion
    edge can differ from a full block; those are measured with the pool's own ``block_capacity``,
    and every other block meeting the ranges is full or wholly excluded, so the full ones number
    (the set's usable total less the measured blocks') / block size."""
    from cni_ipam.cluster import blocks as pool

    step = 1 << (rset.ranges[0].subnet.max_prefixlen - prefixlen)
    points = set()
    for r in rset.ranges:  # Range.specials: the network/broadcast/gateway rule, not restated here
        points |= {r.start, r.end, *r.specials(), *(v for ex in r.exclude for v in ex)}
    caps = [
        pool.block_capacity(rset, pool.block_cidr(rset.version, lo, prefixlen)) for lo in {p - p % step for p in points}
    ]
    caps = [c for c in caps if c]
    full = (rset.size() - sum(caps)) // step
    sizes = caps + ([step] if full else [])
    return (len(caps) + full, min(sizes), max(sizes)) if sizes else (0, 0, 0)


class PoolSetPlan:
    def __init__(self, rset, block_size: int, max_pods: int) -> None:
        self.rset = rset
        self.version = rset.version
        self.block_size = block_size
        self.blocks, self.usable_min, self.usable_max = pool_set_blocks(rset, block_size)
        self.usable = rset.size()
        # a node must reach --max-pods even with the smallest blocks
        self.blocks_per_node = -(-max_pods // self.usable_min) if self.usable_min else 0
        self.nodes_fit = self.blocks // self.blocks_per_node if self.blocks_per_node else 0

    def to_json(self) -> dict:
        return {
            "family": f"ipv{self.version}",
            "subnets": [str(r.subnet) for r in self.rset.ranges],
            "blockSize": self.block_size,
            "blocks": self.blocks,
            "usablePerBlockMin": self.usable_min,
            "usablePerBlockMax": self.usable_max,
            "usableAddresses": self.usable,
            "blocksPerNode": self.blocks_per_node,
            "nodesFit": self.nodes_fit,
        }


class PoolPlan:
    """What a pool (its range sets and block sizes, ``cfg.pool``) serves: per range set the blocks,
    usable addresses per block, blocks a node needs for --max-pods, nodes that get that many."""

    def __init__(
        self,
        range_sets: Sequence,
        block_sizes: Sequence[int],
        nodes: int | None = None,
        max_pods: int = DEFAULT_MAX_PODS,
    ) -> None:
        if max_pods < 1:
            raise PlanError("--max-pods must be at least 1")
        if nodes is not None and nodes < 1:
            raise PlanError("--nodes must be at least 1")
        self.nodes, self.max_pods = nodes, max_pods
        self.sets = [PoolSetPlan(r, b, max_pods) for r, b in zip(range_sets, block_sizes)]
        self.errors: list[str] = []
        self.warnings: list[str] = []
        for s in self.sets:
            fam = f"ipv{s.version}"
            if not s.nodes_fit:
                self.errors.append(
                    f"{fam}: not one node fits: {s.blocks} /{s.block_size} block(s) of at least "
                    f"{s.usable_min} addresses, a node needs {s.blocks_per_node or 'more than all'} for {max_pods} pods"
                )
            elif s.usable_min >= 4 * max_pods:
                self.warnings.append(
                    f"{fam}: a /{s.block_size} block holds at least {count_text(s.usable_min)} addresses, "
                    f"4x or more than --max-pods {max_pods} needs: a smaller blockSize wastes less"
                )
        self.nodes_fit = min(s.nodes_fit for s in self.sets)
        if nodes is not None and self.nodes_fit and self.nodes_fit < nodes:  # an error, as with --cluster-cidr
            self.errors.append(f"{nodes} nodes do not fit: the pool has blocks for {self.nodes_fit}")
        served = self.nodes_fit if nodes is None else min(self.nodes_fit, nodes)
        self.pod_capacity = served * max_pods

    @property
    def exit_code(self) -> int:
        return EXIT_ERRORS if self.errors else EXIT_WARNINGS if self.warnings else EXIT_OK

    def to_json(self) -> dict:
        return {
            "rangeSets": [s.to_json() for s in self.sets],
            "maxPods": self.max_pods,
            "nodes": self.nodes,
            "nodesFit": self.nodes_fit,
            "podCapacity": self.pod_capacity,
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def _served_text(self) -> str:
        """Whose pods the capacity counts: the planned nodes, or as many of them as fit."""
        if self.nodes is None:
            return ""
        if self.nodes_fit < self.nodes:
            return f" ({count_text(self.nodes_fit)} of the {self.nodes} planned nodes fit)"
        return f" (for {self.nodes} planned nodes)"

    def render(self) -> str:
        from cni_ipam.admin.output import table

        rows = [["FAMILY", "SUBNETS", "BLOCK SIZE", "BLOCKS", "ADDRESSES/BLOCK", "USABLE", "BLOCKS/NODE", "NODES FIT"]]
        for s in self.sets:
            per = (
                count_text(s.usable_min)
                if s.usable_min == s.usable_max
                else f"{count_text(s.usable_min)}-{count_text(s.usable_max)}"
            )
            rows.append(
                [
                    f"ipv{s.version}",
                    ",".join(str(r.subnet) for r in s.rset.ranges),
                    f"/{s.block_size}",
                    count_text(s.blocks),
                    per,
                    count_text(s.usable),
                    str(s.blocks_per_node),
                    count_text(s.nodes_fit),
                ]
            )
        out = [
            table(rows, right=(3, 4, 5, 6, 7)),
            "",
            f"nodes that fit: {count_text(self.nodes_fit)}; pods per node: {self.max_pods} (--max-pods); "
            f"pod capacity: {count_text(self.pod_capacity)}" + self._served_text(),
        ]
        out += [f"error: {e}" for e in self.errors]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)


def load_pool(conf_path: str | None, subnets: Sequence, block_sizes: Sequence[str]):
    """(range sets, block sizes) of ``--pool-conf`` or of ``--pool-subnet``/``--block-size``, both
    through the plugin's own netconf parser, so the plan sees the pool the plugin would."""
    from cni_ipam.admin.conffiles import load_offline
    from cni_ipam.errors import CniError

    if conf_path is not None:
        if subnets or block_sizes:
            raise PlanError(
                "--pool-conf takes the subnets and block sizes from the file: no --pool-subnet/--block-size"
            )
        try:
            with open(conf_path, encoding="utf-8") as f:
                conf = json.load(f)
        except (OSError, ValueError) as exc:
            raise PlanError(f"--pool-conf {conf_path}: {exc}") from None
        if isinstance(conf, dict) and isinstance(conf.get("plugins"), list):  # a conflist: its pooled plugin
            pooled = [
                p
                for p in conf["plugins"]
                if isinstance(p, dict) and isinstance(p.get("ipam"), dict) and p["ipam"].get("pool") is not None
            ]
            conf = dict(pooled[0], cniVersion=conf.get("cniVersion"), name=conf.get("name")) if pooled else {}
        if not isinstance(conf, dict) or not isinstance(conf.get("ipam"), dict) or conf["ipam"].get("pool") is None:
            raise PlanError(f"--pool-conf {conf_path}: not a network config with an ipam.pool section")
    else:
        if not block_sizes:
            raise PlanError("--pool-subnet needs --block-size")
        sizes = parse_masks(block_sizes, subnets)
        for s in subnets:
            if s.version not in sizes:
                raise PlanError(
                    f"--block-size: no IPv{s.version} block size for --pool-subnet {s} (N, ipv4=N or ipv6=N)"
                )
        pool = {
            "name": "plan",
            "blockSize": sizes.get(4, 32),
            "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
        }  # never contacted
        if 6 in sizes:
            pool["blockSizeIPv6"] = sizes[6]
        conf = {
            "cniVersion": "1.0.0",
            "name": "plan",
            "ipam": {"ranges": [[{"subnet": str(s)}] for s in subnets], "pool": pool},
        }
    try:
        cfg: Any = load_offline(conf)  # a usePodCidr subnet from the cache only: plan never calls the API
    except CniError as exc:
        raise PlanError(exc.msg) from None
    return cfg.range_sets, cfg.pool.block_sizes


def parse_masks(values: Sequence[str], clusters: Sequence) -> dict[int, int]:
    """``--node-mask`` values: ``24``, ``ipv4=24`` / ``ipv6=64`` (or ``4=24``); plain numbers pair
    with the --cluster-cidr values in order."""
    masks: dict[int, int] = {}
    plain = 0
    for value in values:
        text = value.strip().lower()
        fam_text, sep, num = text.partition("=")
        try:
            if sep:
                family = {"ipv4": 4, "4": 4, "v4": 4, "ipv6": 6, "6": 6, "v6": 6}[fam_text]
                mask = int(num.lstrip("/"))
            else:
                mask = int(text.lstrip("/"))
                if plain >= len(clusters):
                    raise PlanError(
                        f"--node-mask {value}: more plain masks than --cluster-cidr values (use ipv4=N / ipv6=N)"
                    )
                family = clusters[plain].version
                plain += 1
        except (KeyError, ValueError):
            raise PlanError(f"--node-mask {value!r}: expected N, ipv4=N or ipv6=N") from None
        if not 0 <= mask <= (32 if family == 4 else 128):
            raise PlanError(f"--node-mask {value}: not a prefix length for IPv{family}")
        masks[family] = mask
    return masks
