"""The ``ipam.pool`` settings of a network: ``parse_pool`` validates them into a ``PoolConfig``.

Config (``ipam``; every other key keeps its node-local meaning)::

    "ranges": [[{"subnet": "192.168.50.0/24", "rangeStart": "192.168.50.10", "gateway": "192.168.50.1"}],
               [{"subnet": "fd00:50::/64"}]],
    "exclude": ["192.168.50.200/29"],
    "pool": {"name": "lan50", "blockSize": 28, "blockSizeIPv6": 124, "nodeName": "node-a", "keepBlocks": 1,
             "etcd": {"endpoints": ["https://10.0.0.1:2379"], "caFile": "...", "certFile": "...",
                      "keyFile": "...", "username": "...", "passwordFile": "...", "prefix": "/cni-ipam",
                      "timeout": 2}}

The ranges are the pool's: every node of the pool uses the same ones.  A pool has at most one range
set per address family.  ``blockSize`` is the prefix length of the IPv4 blocks, ``blockSizeIPv6``
of the IPv6 ones (default: as many addresses as an IPv4 block, e.g. /28 -> /124).
"""

from __future__ import annotations

import os

from cni_ipam.cluster.keys import DEFAULT_PREFIX
from cni_ipam.errors import CniError, config_error
from cni_ipam.store import is_node_name
from cni_ipam.store import node_name as store_node_name

POOL_KEYS = ("name", "blockSize", "blockSizeIPv6", "nodeName", "etcd", "keepBlocks", "kubeconfig")
ETCD_KEYS = ("endpoints", "caFile", "certFile", "keyFile", "username", "passwordFile", "prefix", "timeout")
DEFAULT_TIMEOUT = 2.0
DEFAULT_KEEP_BLOCKS = 1
_NAME_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class EtcdSettings:
    """``ipam.pool.etcd``, validated; kept in the node's pool record so DEL and GC reach etcd
    without a valid netconf."""

    __slots__ = ("endpoints", "ca_file", "cert_file", "key_file", "username", "password_file", "prefix", "timeout")

    def __init__(self, endpoints: list[str], ca_file: str | None, cert_file: str | None, key_file: str | None,
                 username: str | None, password_file: str | None, prefix: str, timeout: float) -> None:
        self.endpoints = endpoints
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.username = username
        self.password_file = password_file
        self.prefix = prefix
        self.timeout = timeout

    def to_json(self) -> dict:
        return {"endpoints": self.endpoints, "caFile": self.ca_file, "certFile": self.cert_file,
                "keyFile": self.key_file, "username": self.username, "passwordFile": self.password_file,
                "prefix": self.prefix, "timeout": self.timeout}

    @classmethod
    def from_json(cls, doc: object) -> EtcdSettings | None:
        """What ``to_json`` wrote, validated again (the record is a file on disk); None if bad."""
        try:
            return parse_etcd(doc)
        except CniError:
            return None


class PoolConfig:
    """The validated ``ipam.pool`` object of one network."""

    __slots__ = ("name", "block_sizes", "node", "etcd", "keep_blocks", "kubeconfig")

    def __init__(self, name: str, block_sizes: tuple[int, ...], node: str | None, etcd: EtcdSettings,
                 keep_blocks: int, kubeconfig: str | None = None) -> None:
        self.name = name
        self.block_sizes = block_sizes
        self.node = node  # None: from the environment or the host name (``node_name``)
        self.etcd = etcd
        self.keep_blocks = keep_blocks
        self.kubeconfig = kubeconfig  # to read this node's Node UID when claiming (``pool gc`` evidence)


def node_name(raw: str | None) -> str:
    """``pool.nodeName``, else ``KUBERNETES_NODE_NAME`` / ``NODE_NAME``, else the host name (the
    same rule as usePodCidr's ``podCidr.nodeName``: ``cni_ipam.store.node_name``)."""
    return store_node_name(raw, "ipam.pool.nodeName")


def _number(key: str, value: object, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise config_error(key, value, f"must be a number in [{low:g}, {high:g}]")
    return float(value)


def _path(key: str, value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
        raise config_error(key, value, "must be an absolute path")
    return value


def _object(key: str, raw: object, known: tuple[str, ...], what: str) -> dict:
    """``raw`` as an object with only ``known`` keys, else code 7 naming ``key``."""
    if not isinstance(raw, dict):
        raise config_error(key, raw, f"must be an object with {what}")
    unknown = sorted(k for k in raw if k not in known)
    if unknown:
        raise config_error(key, unknown, f"unknown keys (known: {', '.join(known)})")
    return raw


def _endpoints(value: object) -> list[str]:
    if isinstance(value, str):
        value = [e.strip() for e in value.split(",") if e.strip()]
    if not isinstance(value, list) or not value or len(value) > 32:
        raise config_error("ipam.pool.etcd.endpoints", value, "must be a non-empty list of http(s)://host:port URLs")
    for i, ep in enumerate(value):
        if not isinstance(ep, str) or not ep.startswith(("http://", "https://")) or any(c.isspace() for c in ep):
            raise config_error(f"ipam.pool.etcd.endpoints[{i}]", ep, "must be an http:// or https:// URL")
    return list(value)


def _prefix(value: object) -> str:
    if (not isinstance(value, str) or not value.startswith("/") or value.endswith("/") or len(value) > 200
            or not value.isascii() or any(c.isspace() or ord(c) < 33 for c in value)):
        raise config_error("ipam.pool.etcd.prefix", value,
                           "must be an absolute key prefix like /cni-ipam (ASCII, no trailing /)")
    return value


def parse_etcd(raw: object) -> EtcdSettings:
    doc = _object("ipam.pool.etcd", raw, ETCD_KEYS, "endpoints")
    cert = _path("ipam.pool.etcd.certFile", doc.get("certFile"))
    key = _path("ipam.pool.etcd.keyFile", doc.get("keyFile"))
    if (cert is None) != (key is None):
        raise config_error("ipam.pool.etcd.certFile", cert, "certFile and keyFile go together")
    username = doc.get("username")
    if username in ("", None):
        username = None
    elif not isinstance(username, str):
        raise config_error("ipam.pool.etcd.username", username, "must be a string")
    password_file = _path("ipam.pool.etcd.passwordFile", doc.get("passwordFile"))
    if (username is None) != (password_file is None):
        raise config_error("ipam.pool.etcd.passwordFile", password_file, "username and passwordFile go together")
    return EtcdSettings(
        endpoints=_endpoints(doc.get("endpoints")),
        ca_file=_path("ipam.pool.etcd.caFile", doc.get("caFile")),
        cert_file=cert,
        key_file=key,
        username=username,
        password_file=password_file,
        prefix=_prefix(doc.get("prefix", DEFAULT_PREFIX)),
        timeout=_number("ipam.pool.etcd.timeout", doc.get("timeout"), DEFAULT_TIMEOUT, 0.1, 60),
    )


def _pool_name(name: object) -> str:
    if (not isinstance(name, str) or not name or name[0] not in _NAME_FIRST or name.strip(_NAME_FIRST + "_.-")
            or len(name) > 100):
        raise config_error("ipam.pool.name", name,
                           "must be a name of letters, digits, '_', '.', '-' (an etcd key part)")
    return name


def _block_size(key: str, value: object, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bits:
        raise config_error(key, value, f"must be the prefix length of a block (0-{bits})")
    return value


def parse_pool(ipam: dict, range_sets: list) -> PoolConfig:
    """Validate ``ipam.pool`` against the network's range sets (``plugin.ranges.RangeSet``; code 7,
    naming the key)."""
    raw = _object("ipam.pool", ipam.get("pool"), POOL_KEYS, "name, blockSize and etcd")
    name = _pool_name(raw.get("name"))
    node = raw.get("nodeName")
    if node in (None, ""):
        node = None
    elif not is_node_name(node):
        raise config_error("ipam.pool.nodeName", node, "not a Kubernetes node name (lowercase DNS subdomain)")
    families = [rset.version for rset in range_sets]
    if len(set(families)) != len(families):
        raise config_error("ipam.ranges", len(range_sets), "a pool takes at most one range set per address family")
    if raw.get("blockSize") is None:
        raise config_error("ipam.pool.blockSize", None, "must be the prefix length of a block (an IPv4 /N, 0-32)")
    v4 = _block_size("ipam.pool.blockSize", raw.get("blockSize"), 32)
    v6 = raw.get("blockSizeIPv6")
    v6 = 128 - (32 - v4) if v6 is None else _block_size("ipam.pool.blockSizeIPv6", v6, 128)
    sizes = []
    for idx, rset in enumerate(range_sets):
        size = v4 if rset.version == 4 else v6
        key = "ipam.pool.blockSize" if rset.version == 4 else "ipam.pool.blockSizeIPv6"
        for r in rset.ranges:
            if size < r.subnet.prefixlen:
                raise config_error(key, size,
                                   f"a block must not be larger than the subnet {r.subnet} of range set {idx}")
        sizes.append(size)
    return PoolConfig(
        name=name,
        block_sizes=tuple(sizes),
        node=node,
        etcd=parse_etcd(raw.get("etcd")),
        keep_blocks=int(_number("ipam.pool.keepBlocks", raw.get("keepBlocks"), DEFAULT_KEEP_BLOCKS, 0, 1 << 20)),
        kubeconfig=_path("ipam.pool.kubeconfig", raw.get("kubeconfig")),
    )
