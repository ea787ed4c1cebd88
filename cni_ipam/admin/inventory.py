"""The address inventory of ``plan --inventory``: every range the clusters and the networks around
them claim, read from one YAML file (the subset :mod:`cni_ipam.admin.yamlish` reads), validated
with errors naming the line.  The schema is in docs/operations.md; in short::

    clusters:
      - name: prod                     # unique among clusters and external networks
        nodes: 100                     # planned node count (required)
        maxNodes: 200                  # the most it may grow to (default 2 x nodes)
        maxPods: 110                   # kubelet maxPods (default 110)
        clusterCIDR: [10.244.0.0/16, fd00:10:244::/56]
        nodeMask: {ipv4: 24, ipv6: 64} # or one number (default 24 / 64)
        serviceCIDR: 10.96.0.0/12
        nodeSubnets: 10.0.0.0/20       # the nodes' own addresses
        nodeNetworks: [vpc-main]       # external networks the node subnets are carved from
        pools: [{subnet: 10.50.0.0/16, blockSize: 26}]
        podRanges: 10.60.0.0/16        # plain pod ranges (no per-node split)
        confDir: net.d                 # the CNI conf dir: its cni-ipam networks (pools too)
        poolConfs: pool.conflist       # network confs with ipam.pool
    external:
      - name: vpc-main
        owner: cloud-team
        kind: vpc                      # vpc, on-prem, vpn, reserved, peering, other
        cidr: 10.0.0.0/16

Paths are relative to the inventory file.  Everything is kept as exact integer intervals
(``Claim.lo``/``hi``), so an IPv6 /32 costs what an IPv4 /24 costs.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from cni_ipam.admin import yamlish

MAX_FILE = 4 << 20
DEFAULT_MAX_PODS = 110
EXTERNAL_KINDS = ("vpc", "on-prem", "vpn", "reserved", "peering", "other")
CLUSTER_KEYS = (
    "name",
    "nodes",
    "maxNodes",
    "maxPods",
    "clusterCIDR",
    "nodeMask",
    "serviceCIDR",
    "nodeSubnets",
    "nodeNetworks",
    "pools",
    "podRanges",
    "confDir",
    "poolConfs",
)
EXTERNAL_KEYS = ("name", "owner", "kind", "cidr")
POOL_KEYS = ("subnet", "blockSize")
TOP_KEYS = ("clusters", "external")
# What a cluster's ranges are, by role: the owner of a cluster range is (cluster, role), so a
# cluster's pod range over its own service range is an overlap too.
POD, SERVICE, NODE = "pods", "services", "nodes"


class InventoryError(Exception):
    """A problem with the inventory file, naming its line."""

    def __init__(self, path: str, line: int, msg: str) -> None:
        super().__init__(f"{path}:{line}: {msg}" if line else f"{path}: {msg}")
        self.path = path
        self.line = line
        self.msg = msg


class Claim:
    """One range of the inventory as an inclusive integer interval."""

    __slots__ = ("version", "lo", "hi", "prefixlen", "holder", "external", "role", "owner", "line", "source")

    def __init__(
        self, net: Any, holder: str, external: bool, role: str, owner: str, line: int, source: str = ""
    ) -> None:
        self.version = net.version
        self.lo = int(net.network_address)
        self.hi = int(net.broadcast_address)
        self.prefixlen = net.prefixlen
        self.holder = holder  # the cluster's or external network's name
        self.external = external
        self.role = role  # pods/services/nodes for a cluster, the kind of an external network
        self.owner = owner  # overlaps are between claims of different owners
        self.line = line
        self.source = source  # a conf file the range came from

    @property
    def cidr(self) -> str:
        return cidr_text(self.version, self.lo, self.prefixlen)

    def label(self) -> str:
        if self.external:
            return f"{self.role} {self.holder} (owner {self.owner[6:]}) {self.cidr}"
        return f"cluster {self.holder} {self.role} {self.cidr}"

    def to_json(self) -> dict:
        out = {
            "name": self.holder,
            "type": "external" if self.external else "cluster",
            "role": self.role,
            "cidr": self.cidr,
            "line": self.line,
        }
        if self.external:
            out["owner"] = self.owner[6:]
        if self.source:
            out["source"] = self.source
        return out


class PodPool:
    """A pool's range set and block size (``capacity.PoolSetPlan`` plans it)."""

    __slots__ = ("rset", "block_size", "line", "source")

    def __init__(self, rset: Any, block_size: int, line: int, source: str) -> None:
        self.rset = rset
        self.block_size = block_size
        self.line = line
        self.source = source


class Cluster:
    def __init__(self, name: str, line: int, nodes: int, max_nodes: int, max_pods: int, masks: dict[int, int]) -> None:
        self.name = name
        self.line = line
        self.nodes = nodes
        self.max_nodes = max_nodes
        self.max_pods = max_pods
        self.masks = masks
        self.cluster_cidrs: list[Any] = []
        self.service_cidrs: list[Any] = []
        self.node_subnets: list[Any] = []
        self.node_networks: list[tuple[str, int]] = []
        self.pools: list[PodPool] = []
        self.plain: list[tuple[int, int, str]] = []  # (family, usable addresses, what) of plain pod ranges
        self.notes: list[str] = []  # what a conf dir could not tell


class External:
    def __init__(self, name: str, owner: str, kind: str, line: int) -> None:
        self.name = name
        self.owner = owner
        self.kind = kind
        self.line = line


class Inventory:
    def __init__(self, path: str) -> None:
        self.path = path
        self.clusters: list[Cluster] = []
        self.externals: list[External] = []
        self.claims: list[Claim] = []

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)


def cidr_text(version: int, lo: int, prefixlen: int) -> str:
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return str(cls((lo, prefixlen)))


# ---------------------------------------------------------------------------------- reading
class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.inv = Inventory(path)
        self.names: dict[str, int] = {}

    def fail(self, line: int, msg: str) -> InventoryError:
        return InventoryError(self.path, line, msg)

    def mapping(self, value: Any, line: int, what: str, known: tuple[str, ...]) -> yamlish.Map:
        if not isinstance(value, yamlish.Map):
            raise self.fail(getattr(value, "line", line), f"{what} must be a mapping ('key: value' lines)")
        for key in value:
            if key not in known:
                raise self.fail(value.key_lines[key], f"{what}: unknown key {key!r} (known: {', '.join(known)})")
        return value

    def items(self, value: Any, line: int, what: str) -> list[tuple[Any, int]]:
        """A value given as one item or a list of items, each with its line."""
        if isinstance(value, yamlish.Seq):
            return list(zip(value, value.item_lines))
        if value is None:
            raise self.fail(line, f"{what}: no value")
        return [(value, line)]

    def integer(self, m: yamlish.Map, key: str, what: str, low: int, default: int | None = None) -> int:
        if key not in m:
            if default is None:
                raise self.fail(m.line, f"{what}: {key!r} is missing")
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise self.fail(m.key_lines[key], f"{what}: {key} must be a whole number of at least {low}, not {v!r}")
        return v

    def text(self, m: yamlish.Map, key: str, what: str) -> str:
        if key not in m:
            raise self.fail(m.line, f"{what}: {key!r} is missing")
        v = m[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(m.key_lines[key], f"{what}: {key} must be a non-empty string, not {v!r}")
        return v.strip()

    def cidr(self, value: Any, line: int, what: str) -> Any:
        from cni_ipam.addr import host_bits, parse_cidr

        if not isinstance(value, str):
            raise self.fail(line, f"{what}: {value!r} is not a CIDR")
        try:
            version, addr, prefixlen = parse_cidr(value.strip())
        except ValueError:
            raise self.fail(line, f"{what}: {value!r} is not a CIDR") from None
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        net = cls((addr & ~host_bits(version, prefixlen), prefixlen))
        if "/" not in value:
            raise self.fail(line, f"{what}: {value!r} has no prefix length (write {net})")
        if addr & host_bits(version, prefixlen):
            raise self.fail(line, f"{what}: {value} has host bits set (the network is {net})")
        return net

    def cidrs(self, m: yamlish.Map, key: str, what: str) -> list[tuple[Any, int]]:
        if key not in m:
            return []
        return [
            (self.cidr(v, ln, f"{what}: {key}"), ln) for v, ln in self.items(m[key], m.key_lines[key], f"{what}: {key}")
        ]

    def claim_name(self, name: str, line: int) -> None:
        if name in self.names:
            raise self.fail(line, f"name {name!r} is used twice (first on line {self.names[name]})")
        self.names[name] = line

    def path_of(self, value: Any, line: int, what: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(line, f"{what}: must be a path")
        return os.path.normpath(os.path.join(self.base, value.strip()))

    # ------------------------------------------------------------------ the document
    def read(self, doc: Any) -> Inventory:
        if doc is None:
            raise self.fail(0, "empty: expected 'clusters:' and/or 'external:'")
        top = self.mapping(doc, 1, "the inventory", TOP_KEYS)
        if not top.get("clusters") and not top.get("external"):
            raise self.fail(top.line, "no clusters and no external networks")
        for key, reader in (("clusters", self.read_cluster), ("external", self.read_external)):
            if key not in top or top[key] is None:
                continue
            value = top[key]
            if not isinstance(value, yamlish.Seq):
                raise self.fail(top.key_lines[key], f"{key} must be a list ('- name: ...' items)")
            for item, line in zip(value, value.item_lines):
                reader(item, line)
        names = {e.name for e in self.inv.externals}
        for c in self.inv.clusters:
            for name, line in c.node_networks:
                if name not in names:
                    raise self.fail(line, f"cluster {c.name}: nodeNetworks: no external network named {name!r}")
        return self.inv

    def read_external(self, item: Any, line: int) -> None:
        m = self.mapping(item, line, "an external network", EXTERNAL_KEYS)
        name = self.text(m, "name", "an external network")
        what = f"external network {name}"
        self.claim_name(name, m.key_lines["name"])
        owner = self.text(m, "owner", what)
        kind = self.text(m, "kind", what) if "kind" in m else "other"
        if kind not in EXTERNAL_KINDS:
            raise self.fail(m.key_lines["kind"], f"{what}: kind {kind!r} is not one of {', '.join(EXTERNAL_KINDS)}")
        if "cidr" not in m:
            raise self.fail(m.line, f"{what}: 'cidr' is missing")
        ext = External(name, owner, kind, m.line)
        self.inv.externals.append(ext)
        for net, ln in self.cidrs(m, "cidr", what):
            self.inv.claims.append(Claim(net, name, True, kind, "owner:" + owner, ln))

    def read_cluster(self, item: Any, line: int) -> None:
        m = self.mapping(item, line, "a cluster", CLUSTER_KEYS)
        name = self.text(m, "name", "a cluster")
        what = f"cluster {name}"
        self.claim_name(name, m.key_lines["name"])
        nodes = self.integer(m, "nodes", what, 1)
        max_nodes = self.integer(m, "maxNodes", what, 1, 2 * nodes)
        if max_nodes < nodes:
            raise self.fail(m.key_lines["maxNodes"], f"{what}: maxNodes {max_nodes} is less than nodes {nodes}")
        max_pods = self.integer(m, "maxPods", what, 1, DEFAULT_MAX_PODS)
        c = Cluster(name, m.line, nodes, max_nodes, max_pods, self.masks(m, what))
        claims = self.inv.claims
        for key, role, target in (
            ("clusterCIDR", POD, c.cluster_cidrs),
            ("serviceCIDR", SERVICE, c.service_cidrs),
            ("nodeSubnets", NODE, c.node_subnets),
        ):
            for net, ln in self.cidrs(m, key, what):
                target.append(net)
                claims.append(Claim(net, name, False, role, f"cluster:{name}/{role}", ln))
        for net in c.cluster_cidrs:
            mask = c.masks[net.version]
            if not net.prefixlen <= mask <= net.max_prefixlen - 2:
                raise self.fail(
                    m.key_lines.get("nodeMask", m.key_lines["clusterCIDR"]),
                    f"{what}: node mask /{mask} does not fit clusterCIDR {net} (it must be /{net.prefixlen}"
                    f"-/{net.max_prefixlen - 2})",
                )
        for net, ln in self.cidrs(m, "podRanges", what):
            c.plain.append((net.version, usable_addresses(net), f"podRanges {net}"))
            claims.append(Claim(net, name, False, POD, f"cluster:{name}/{POD}", ln))
        if "nodeNetworks" in m:
            for v, ln in self.items(m["nodeNetworks"], m.key_lines["nodeNetworks"], f"{what}: nodeNetworks"):
                if not isinstance(v, str):
                    raise self.fail(ln, f"{what}: nodeNetworks: {v!r} is not a name")
                c.node_networks.append((v, ln))
        if "pools" in m:
            self.read_pools(c, m["pools"], m.key_lines["pools"], what)
        for v, ln in (
            self.items(m["poolConfs"], m.key_lines["poolConfs"], f"{what}: poolConfs") if "poolConfs" in m else ()
        ):
            self.read_pool_conf(c, self.path_of(v, ln, f"{what}: poolConfs"), ln, what)
        if "confDir" in m:
            self.read_conf_dir(
                c, self.path_of(m["confDir"], m.key_lines["confDir"], f"{what}: confDir"), m.key_lines["confDir"], what
            )
        if not (c.cluster_cidrs or c.pools or c.plain):
            raise self.fail(
                m.line, f"{what}: no pod addresses: give clusterCIDR, pools, podRanges, confDir or poolConfs"
            )
        self.inv.clusters.append(c)

    def masks(self, m: yamlish.Map, what: str) -> dict[int, int]:
        masks = {4: 24, 6: 64}
        if "nodeMask" not in m:
            return masks
        v, line = m["nodeMask"], m.key_lines["nodeMask"]
        if isinstance(v, int) and not isinstance(v, bool):
            fams = {net.version for net, _ in self.cidrs(m, "clusterCIDR", what)}
            if len(fams) != 1:
                raise self.fail(line, f"{what}: one nodeMask number fits one family: write {{ipv4: N, ipv6: N}}")
            masks[fams.pop()] = v
            return masks
        if not isinstance(v, yamlish.Map):
            raise self.fail(line, f"{what}: nodeMask must be a number or {{ipv4: N, ipv6: N}}")
        for key, n in v.items():
            fam = {"ipv4": 4, "ipv6": 6}.get(key)
            if fam is None or isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= (32 if fam == 4 else 128):
                raise self.fail(v.key_lines[key], f"{what}: nodeMask {key}: {n!r} (expected ipv4: 0-32 or ipv6: 0-128)")
            masks[fam] = n
        return masks

    def read_pools(self, c: Cluster, value: Any, line: int, what: str) -> None:
        from cni_ipam.admin import capacity

        for item, ln in self.items(value, line, f"{what}: pools"):
            p = self.mapping(item, ln, f"{what}: a pool", POOL_KEYS)
            nets = self.cidrs(p, "subnet", f"{what}: pool")
            if not nets:
                raise self.fail(p.line, f"{what}: a pool needs 'subnet'")
            size = self.integer(p, "blockSize", f"{what}: pool", 0)
            fams = {n.version for n, _ in nets}
            if len(fams) != 1:
                raise self.fail(
                    p.key_lines["subnet"], f"{what}: one pool per family (a pool's subnets are one range set)"
                )
            fam = fams.pop()
            try:
                sets, sizes = capacity.load_pool(None, [n for n, _ in nets], [f"ipv{fam}={size}"])
            except capacity.PlanError as exc:
                raise self.fail(p.key_lines["blockSize"], f"{what}: pool: {exc}") from None
            c.pools.append(PodPool(sets[0], sizes[0], p.line, ""))
            for net, nl in nets:
                self.inv.claims.append(Claim(net, c.name, False, POD, f"cluster:{c.name}/{POD}", nl))

    def read_pool_conf(self, c: Cluster, path: str, line: int, what: str) -> None:
        from cni_ipam.admin import capacity

        try:
            sets, sizes = capacity.load_pool(path, [], [])
        except capacity.PlanError as exc:
            raise self.fail(line, f"{what}: poolConfs: {exc}") from None
        for rset, size in zip(sets, sizes):
            c.pools.append(PodPool(rset, size, line, path))
            for r in rset.ranges:
                self.inv.claims.append(Claim(r.subnet, c.name, False, POD, f"cluster:{c.name}/{POD}", line, path))

    def read_conf_dir(self, c: Cluster, conf_dir: str, line: int, what: str) -> None:
        """The cni-ipam (and host-local) networks of a CNI conf dir, read offline as ``show`` does:
        a pool network is a pool, any other a plain pod range; a ``usePodCidr`` range whose pod CIDR
        is not known offline is left to clusterCIDR (a note)."""
        from cni_ipam.admin.conffiles import IPAM_TYPES, ConfFileError, conf_files, load_offline, read_conf_file
        from cni_ipam.errors import CniError
        from cni_ipam.podcidr.sources import NotKnownOffline

        if not os.path.isdir(conf_dir):
            raise self.fail(line, f"{what}: confDir {conf_dir} is not a directory")
        files = conf_files(conf_dir)
        if not files:
            raise self.fail(line, f"{what}: confDir {conf_dir} has no .conf/.conflist/.json file")
        for path in files:
            try:
                attachments = read_conf_file(path)
            except ConfFileError as exc:
                c.notes.append(f"{path}: {exc.msg} (skipped; run cni-ipam lint)")
                continue
            for att in attachments:
                if att.ipam_type not in IPAM_TYPES:
                    continue
                try:
                    cfg: Any = load_offline(att.netconf)
                except NotKnownOffline as exc:
                    c.notes.append(f"{path}: network {att.name}: {exc.msg} (its ranges are left to clusterCIDR)")
                    continue
                except CniError as exc:
                    c.notes.append(f"{path}: network {att.name}: {exc.msg} (skipped; run cni-ipam lint)")
                    continue
                pool_cfg = getattr(cfg, "pool", None)
                for i, rset in enumerate(cfg.range_sets):
                    if pool_cfg is not None:
                        c.pools.append(PodPool(rset, pool_cfg.block_sizes[i], line, path))
                    else:
                        c.plain.append((rset.version, rset.size(), f"{path} network {att.name}"))
                    for r in rset.ranges:
                        self.inv.claims.append(
                            Claim(r.subnet, c.name, False, POD, f"cluster:{c.name}/{POD}", line, path)
                        )


def usable_addresses(net: Any) -> int:
    """Addresses cni-ipam hands out from a subnet with the default range."""
    from cni_ipam.plugin.ranges import Range

    if net.prefixlen > net.max_prefixlen - 2:
        return 0
    return Range.of_subnet(net).size()


def parse(text: str, path: str) -> Inventory:
    """The inventory in ``text`` (read from ``path``: relative paths in it start from there)."""
    try:
        doc = yamlish.loads(text)
    except yamlish.YamlError as exc:
        raise InventoryError(path, exc.line, exc.msg) from None
    return _Reader(path).read(doc)


def load(path: str) -> Inventory:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise InventoryError(path, 0, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise InventoryError(path, 0, f"larger than {MAX_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InventoryError(path, line, "not UTF-8 text") from None
    return parse(text, path)
