"""Cluster pools: range sets shared by many nodes, cut into blocks that nodes claim in etcd.

Imported only for a network whose ipam section has a ``pool`` object (``config.load`` does it), and
imports nothing but the standard library; the etcd client loads on the first call that needs etcd.

Config (``ipam``; every other key keeps its node-local meaning)::

    "ranges": [[{"subnet": "192.168.50.0/24", "rangeStart": "192.168.50.10", "gateway": "192.168.50.1"}],
               [{"subnet": "fd00:50::/64"}]],
    "exclude": ["192.168.50.200/29"],
    "pool": {"name": "lan50", "blockSize": 28, "blockSizeIPv6": 124, "nodeName": "node-a",
             "etcd": {"endpoints": ["https://10.0.0.1:2379"], "caFile": "...", "certFile": "...",
                      "keyFile": "...", "username": "...", "passwordFile": "...", "prefix": "/cni-ipam",
                      "timeout": 2},
             "verifyInterval": 60, "keepBlocks": 1}

The ranges are the pool's: every node of the pool uses the same ones.  A pool has at most one range
set per address family (dual stack = one IPv4 and one IPv6 set).  ``blockSize`` is the prefix
length of the IPv4 blocks; ``blockSizeIPv6`` of the IPv6 ones (default: as many addresses as an
IPv4 block, e.g. /28 -> /124).  A block is the aligned CIDR of that length; the addresses a node
may hand out from it are those of the pool's ranges inside it (rangeStart/End, never the
subnet-wide gateway, network/broadcast or excluded addresses).

Keys in etcd (the admin commands read them through the functions below)::

    <prefix>/pools/<pool>/grid/<4|6>       "<prefix length>"  the block size of the family, created
                                           by the first claim; every claim compares it, so two nodes
                                           with different block sizes can never claim overlapping blocks
    <prefix>/pools/<pool>/blocks/<cidr>    {"node", "network", "claimed", "claim"}: the block's owner.
                                           Created by a create-if-absent txn, never rewritten; its
                                           mod revision is the claim's identity (released with a
                                           txn that compares it)
    <prefix>/pools/<pool>/nodes/<node>     usage published by the node (see ``node_record``):
                                           lastSeen, published, per-block used/capacity, conflicts
    <prefix>/pools/<pool>/spec             the pool's range sets and block sizes as the last claiming
                                           node saw them (informational, for ``pool show``)

Local record (``<dataDir>/<network>/.cni-ipam/pool.json``, written under the network lock through
the store): the blocks this node holds (cidr, range set, mod revision), blocks in conflict, claims
in flight (``pending``), when etcd last verified the blocks, when usage was last published, when
etcd last failed, and a copy of the etcd settings (so DEL, the GC verb and ``cni-ipam gc`` can
return an emptied block without a valid netconf).  docs/cluster.md describes the protocol.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time

from cni_ipam.store import fs as safefs
from cni_ipam.store import is_node_name
from cni_ipam.store import node_name as store_node_name
from cni_ipam.errors import (
    DUPLICATE_ALLOCATION,
    INVALID_CONFIG,
    POOL_EXHAUSTED,
    RANGE_EXHAUSTED,
    REQUESTED_IP_INVALID,
    REQUESTED_IP_TAKEN,
    TRY_AGAIN_LATER,
    CniError,
    config_error,
)

from cni_ipam.plugin.ranges import RangeSet  # loaded already: netconf parsed the ranges
from cni_ipam.store.network import NetworkStore  # the plugin path's store; no typing at run time

POOL_KEYS = ("name", "blockSize", "blockSizeIPv6", "nodeName", "etcd", "verifyInterval", "keepBlocks")
ETCD_KEYS = ("endpoints", "caFile", "certFile", "keyFile", "username", "passwordFile", "prefix", "timeout")
DEFAULT_PREFIX = "/cni-ipam"
DEFAULT_TIMEOUT = 2.0
DEFAULT_VERIFY_INTERVAL = 60.0
DEFAULT_KEEP_BLOCKS = 1
ETCD_RETRY_AFTER = 30.0  # after etcd failed, DEL, re-verification and pending claims wait this long
RECORD_FILE = "pool.json"
RECORD_LIMIT = 16 << 20  # as NetworkStore.read_meta: a record of ~100k blocks; anything larger is damage
CLAIM_ATTEMPTS = 8  # txns per scan before scanning again
TXN_READS = 100  # block reads per re-verification txn (etcd's default limit is 128 operations)
CLAIM_SCANS = 3
_RECORD_VERSION = 1
_NAME_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


# ---------------------------------------------------------------------------------- key schema
def pool_prefix(prefix: str, pool: str) -> str:
    """``<prefix>/pools/<pool>/``: everything of one pool."""
    return f"{prefix}/pools/{pool}/"


def pools_prefix(prefix: str) -> bytes:
    """``<prefix>/pools/``: every pool (admin listing)."""
    return f"{prefix}/pools/".encode()


def grid_key(prefix: str, pool: str, family: int) -> bytes:
    return f"{pool_prefix(prefix, pool)}grid/{family}".encode()


def spec_key(prefix: str, pool: str) -> bytes:
    return f"{pool_prefix(prefix, pool)}spec".encode()


def blocks_prefix(prefix: str, pool: str) -> bytes:
    return f"{pool_prefix(prefix, pool)}blocks/".encode()


def block_key(prefix: str, pool: str, cidr: str) -> bytes:
    return blocks_prefix(prefix, pool) + cidr.encode()


def nodes_prefix(prefix: str, pool: str) -> bytes:
    return f"{pool_prefix(prefix, pool)}nodes/".encode()


def node_key(prefix: str, pool: str, node: str) -> bytes:
    return nodes_prefix(prefix, pool) + node.encode()


def parse_block_key(prefix: str, pool: str, key: bytes) -> str | None:
    """The CIDR a block key names (canonical form), or None for any other key."""
    head = blocks_prefix(prefix, pool)
    if not key.startswith(head):
        return None
    try:
        net = ipaddress.ip_network(key[len(head):].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return str(net) if str(net) == key[len(head):].decode("ascii") else None


def decode_json(value: bytes | None) -> dict | None:
    """A block claim or node record as a dict; None when absent or not a JSON object."""
    if not value:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def claim_value(node: str, network: str, claim_id: str, now: float) -> bytes:
    return json.dumps({"node": node, "network": network, "claimed": round(now, 3), "claim": claim_id}, sort_keys=True).encode()


# ---------------------------------------------------------------------------------- config
class EtcdSettings:
    __slots__ = ("endpoints", "ca_file", "cert_file", "key_file", "username", "password_file", "prefix", "timeout")

    def __init__(self, **kw: object) -> None:
        for key in self.__slots__:
            setattr(self, key, kw[key])

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, doc: object) -> EtcdSettings | None:
        if not isinstance(doc, dict) or any(k not in doc for k in cls.__slots__):
            return None
        try:
            return _parse_etcd({"endpoints": doc["endpoints"], "caFile": doc["ca_file"], "certFile": doc["cert_file"],
                                "keyFile": doc["key_file"], "username": doc["username"],
                                "passwordFile": doc["password_file"], "prefix": doc["prefix"], "timeout": doc["timeout"]})
        except CniError:
            return None


class PoolConfig:
    """The validated ``ipam.pool`` object of one network."""

    __slots__ = ("name", "block_sizes", "node", "etcd", "verify_interval", "keep_blocks")

    def __init__(self, **kw: object) -> None:
        for key in self.__slots__:
            setattr(self, key, kw[key])


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


def _parse_etcd(raw: object) -> EtcdSettings:
    _object("ipam.pool.etcd", raw, ETCD_KEYS, "endpoints")
    endpoints = raw.get("endpoints")
    if isinstance(endpoints, str):
        endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not isinstance(endpoints, list) or not endpoints or len(endpoints) > 32:
        raise config_error("ipam.pool.etcd.endpoints", endpoints, "must be a non-empty list of http(s)://host:port URLs")
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, str) or not ep.startswith(("http://", "https://")) or any(c.isspace() for c in ep):
            raise config_error(f"ipam.pool.etcd.endpoints[{i}]", ep, "must be an http:// or https:// URL")
    prefix = raw.get("prefix", DEFAULT_PREFIX)
    if (not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/") or len(prefix) > 200
            or not prefix.isascii() or any(c.isspace() or ord(c) < 33 for c in prefix)):
        raise config_error("ipam.pool.etcd.prefix", prefix, "must be an absolute key prefix like /cni-ipam (ASCII, no trailing /)")
    cert, key = _path("ipam.pool.etcd.certFile", raw.get("certFile")), _path("ipam.pool.etcd.keyFile", raw.get("keyFile"))
    if (cert is None) != (key is None):
        raise config_error("ipam.pool.etcd.certFile", cert, "certFile and keyFile go together")
    username = raw.get("username")
    if username in ("", None):
        username = None
    elif not isinstance(username, str):
        raise config_error("ipam.pool.etcd.username", username, "must be a string")
    password_file = _path("ipam.pool.etcd.passwordFile", raw.get("passwordFile"))
    if (username is None) != (password_file is None):
        raise config_error("ipam.pool.etcd.passwordFile", password_file, "username and passwordFile go together")
    return EtcdSettings(
        endpoints=list(endpoints),
        ca_file=_path("ipam.pool.etcd.caFile", raw.get("caFile")),
        cert_file=cert,
        key_file=key,
        username=username,
        password_file=password_file,
        prefix=prefix,
        timeout=_number("ipam.pool.etcd.timeout", raw.get("timeout"), DEFAULT_TIMEOUT, 0.1, 60),
    )


def parse_pool(ipam: dict, range_sets: list[RangeSet]) -> PoolConfig:
    """Validate ``ipam.pool`` against the network's range sets (code 7, naming the key)."""
    raw = _object("ipam.pool", ipam.get("pool"), POOL_KEYS, "name, blockSize and etcd")
    name = raw.get("name")
    if not isinstance(name, str) or not name or name[0] not in _NAME_FIRST or name.strip(_NAME_FIRST + "_.-") or len(name) > 100:
        raise config_error("ipam.pool.name", name, "must be a name of letters, digits, '_', '.', '-' (an etcd key part)")
    node = raw.get("nodeName")
    if node in (None, ""):
        node = None
    elif not is_node_name(node):
        raise config_error("ipam.pool.nodeName", node, "not a Kubernetes node name (lowercase DNS subdomain)")
    families = [rset.version for rset in range_sets]
    if len(set(families)) != len(families):
        raise config_error("ipam.ranges", len(range_sets), "a pool takes at most one range set per address family")
    v4 = raw.get("blockSize")
    if v4 is None or isinstance(v4, bool) or not isinstance(v4, int) or not 0 <= v4 <= 32:
        raise config_error("ipam.pool.blockSize", v4, "must be the prefix length of a block (an IPv4 /N, 0-32)")
    v6 = raw.get("blockSizeIPv6")
    if v6 is None:
        v6 = 128 - (32 - v4)
    elif isinstance(v6, bool) or not isinstance(v6, int) or not 0 <= v6 <= 128:
        raise config_error("ipam.pool.blockSizeIPv6", v6, "must be the prefix length of an IPv6 block (0-128)")
    sizes = []
    for idx, rset in enumerate(range_sets):
        size = v4 if rset.version == 4 else v6
        key = "ipam.pool.blockSize" if rset.version == 4 else "ipam.pool.blockSizeIPv6"
        for r in rset.ranges:
            if size < r.subnet.prefixlen:
                raise config_error(key, size, f"a block must not be larger than the subnet {r.subnet} of range set {idx}")
        sizes.append(size)
    return PoolConfig(
        name=name,
        block_sizes=tuple(sizes),
        node=node,
        etcd=_parse_etcd(raw.get("etcd")),
        verify_interval=_number("ipam.pool.verifyInterval", raw.get("verifyInterval"), DEFAULT_VERIFY_INTERVAL, 0, 86400),
        keep_blocks=int(_number("ipam.pool.keepBlocks", raw.get("keepBlocks"), DEFAULT_KEEP_BLOCKS, 0, 1 << 20)),
    )


# ---------------------------------------------------------------------------------- block math
def _make(version: int):
    return ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address


def block_cidr(version: int, lo: int, prefixlen: int) -> str:
    return f"{_make(version)(lo)}/{prefixlen}"


def block_bounds(cidr: str) -> tuple[int, int, int]:
    """(version, first, last) of a block CIDR."""
    net = ipaddress.ip_network(cidr)
    return net.version, int(net.network_address), int(net.broadcast_address)


def block_of(addr, prefixlen: int) -> str:
    """The aligned block of ``prefixlen`` holding ``addr``."""
    bits = 32 if addr.version == 4 else 128
    step = 1 << (bits - prefixlen)
    return block_cidr(addr.version, int(addr) - int(addr) % step, prefixlen)


def block_start_runs(rset: RangeSet, prefixlen: int) -> list[range]:
    """First addresses (ints) of the blocks that meet the set's ranges, as ascending, disjoint
    ``range`` objects: a pool of /32 blocks over a /16 is one ``range``, not 65,536 ints."""
    bits = 32 if rset.version == 4 else 128
    step = 1 << (bits - prefixlen)
    runs = []
    last = -1
    for r in sorted(rset.ranges, key=lambda r: r.start):
        lo = r.start - r.start % step
        if lo <= last:  # this range's first block is the previous range's last one
            lo = last + step
        hi = r.end - r.end % step
        if lo <= hi:
            runs.append(range(lo, hi + 1, step))
            last = hi
    return runs


def set_block_starts(rset: RangeSet, prefixlen: int) -> list[int]:
    """First address (int) of every block that meets one of the set's ranges, ascending."""
    return [lo for run in block_start_runs(rset, prefixlen) for lo in run]


def free_blocks(rset: RangeSet, prefixlen: int, taken, start: int = 0):
    """Yields the CIDRs of the set's blocks not in ``taken`` (a set of CIDRs) that can hand out an address,
    lazily, beginning at the ``start``-th block (modulo) and wrapping round."""
    runs = block_start_runs(rset, prefixlen)
    total = sum(len(run) for run in runs)
    if not total:
        return
    start %= total
    for k in range(total):
        i = (start + k) % total
        for run in runs:
            if i < len(run):
                lo = run[i]
                break
            i -= len(run)
        cidr = block_cidr(rset.version, lo, prefixlen)
        if cidr not in taken and block_capacity(rset, cidr):
            yield cidr


def block_pieces(rset: RangeSet, cidr: str) -> list:
    """The pool's ranges clipped to one block: ``Range`` objects keeping their subnet, gateway and
    exclusions, so the gateway and excluded addresses are never handed out from any block."""
    from cni_ipam.plugin.ranges import Range

    version, lo, hi = block_bounds(cidr)
    out = []
    for r in rset.ranges:
        if version == r.version and r.start <= hi and lo <= r.end:
            out.append(Range(r.subnet, max(lo, r.start), min(hi, r.end), r.gateway, r.exclude))
    return out


def block_capacity(rset: RangeSet, cidr: str) -> int:
    return sum(p.size() for p in block_pieces(rset, cidr))


def held_range_set(rset: RangeSet, cidrs: list[str]) -> RangeSet | None:
    """A RangeSet made of the given blocks' pieces (what the allocator may hand out), or None."""

    pieces = [p for cidr in cidrs for p in block_pieces(rset, cidr)]
    return RangeSet(pieces) if pieces else None


def used_in_block(net_dir_fd: int, cidr: str) -> int:
    """Reservation files inside a block (any owner, host-local's included).  Stats each address of
    small blocks; lists the directory for blocks larger than 1,024 addresses."""
    version, lo, hi = block_bounds(cidr)
    make = _make(version)
    if hi - lo < 1024:
        count = 0
        for value in range(lo, hi + 1):
            try:
                os.stat(str(make(value)), dir_fd=net_dir_fd, follow_symlinks=False)
                count += 1
            except OSError:
                pass
        return count
    from cni_ipam.store.layout import parse_ip_name

    count = 0
    for name in os.listdir(net_dir_fd):
        addr = parse_ip_name(name)
        if addr is not None and addr.version == version and lo <= int(addr) <= hi:
            count += 1
    return count


# ---------------------------------------------------------------------------------- the cluster store seam
class ClusterStore:
    """What a pool needs from the cluster engine.  ``EtcdStore`` implements it with etcd; a
    Kubernetes-API backend (one object per block, create = claim, resourceVersion = revision)
    would implement the same five methods.  Every method raises ``CniError`` 11 when the engine
    cannot be reached in time."""

    def blocks(self) -> dict[str, tuple[dict, int]]:  # pragma: no cover - interface
        """Every claimed block of the pool: cidr -> (claim, revision)."""
        raise NotImplementedError

    def get_block(self, cidr: str) -> tuple[dict, int] | None:  # pragma: no cover
        raise NotImplementedError

    def claim(self, cidr: str, family: int, block_size: int, claim: bytes, record: bytes, spec: bytes) -> tuple[str, int]:  # pragma: no cover
        """Create the block's claim if absent: ("ok", revision) | ("taken", 0) | ("grid", actual size)."""
        raise NotImplementedError

    def release(self, cidr: str, revision: int, record: bytes) -> bool:  # pragma: no cover
        """Delete the claim if its revision is still ``revision``; publish ``record`` with it."""
        raise NotImplementedError

    def publish(self, record: bytes, verify: list[str]) -> dict[str, tuple[dict, int] | None]:  # pragma: no cover
        """Write the node record and read the ``verify`` blocks, in one round trip."""
        raise NotImplementedError


class EtcdStore(ClusterStore):
    def __init__(self, settings: EtcdSettings, pool: str, node: str) -> None:
        self.settings = settings
        self.pool = pool
        self.node = node
        self._client = None
        self._errors = None

    @property
    def round_trips(self) -> int:
        return self._client.round_trips if self._client is not None else 0

    def client(self):
        if self._client is None:
            from cni_ipam.cluster import etcd  # only calls that need etcd pay for the import

            self._errors = (etcd.EtcdUnavailable, etcd.EtcdError)
            s = self.settings
            password = None
            if s.password_file:
                try:
                    with open(s.password_file, "rb") as fh:
                        password = fh.read(4096).decode("utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise CniError(INVALID_CONFIG, f"cannot read ipam.pool.etcd.passwordFile {s.password_file}: {exc}",
                                   "key ipam.pool.etcd.passwordFile") from None
            try:
                self._client = etcd.EtcdClient(s.endpoints, ca_file=s.ca_file, cert_file=s.cert_file, key_file=s.key_file,
                                               username=s.username, password=password, timeout=s.timeout)
            except etcd.EtcdError as exc:
                raise CniError(INVALID_CONFIG, f"pool {self.pool}: etcd client: {exc}", "key ipam.pool.etcd") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass

    def _do(self, what: str, fn, *args):
        client = self.client()
        from cni_ipam.cluster.etcd import EtcdUnavailable

        try:
            return fn(client, *args)
        except EtcdUnavailable as exc:
            raise CniError(TRY_AGAIN_LATER, f"pool {self.pool}: etcd unreachable while {what}: {exc}",
                           ", ".join(self.settings.endpoints)) from None
        except self._errors[1] as exc:
            raise CniError(TRY_AGAIN_LATER, f"pool {self.pool}: etcd refused {what}: {exc}", ", ".join(self.settings.endpoints)) from None

    def _key(self, cidr: str) -> bytes:
        return block_key(self.settings.prefix, self.pool, cidr)

    def blocks(self):
        prefix = self.settings.prefix
        out = {}
        for key, value, mod_rev, _create in self._do("listing blocks", lambda c: c.range_prefix(blocks_prefix(prefix, self.pool))):
            cidr = parse_block_key(prefix, self.pool, key)
            if cidr is not None:
                out[cidr] = (decode_json(value) or {}, mod_rev)
        return out

    def get_block(self, cidr):
        got = self._do("reading a block", lambda c: c.get(self._key(cidr)))
        return None if got is None else (decode_json(got[0]) or {}, got[1])

    def claim(self, cidr, family, block_size, claim, record, spec):
        from cni_ipam.cluster.etcd import cmp_create, cmp_value, op_put

        prefix, key = self.settings.prefix, self._key(cidr)
        grid = grid_key(prefix, self.pool, family)
        size = str(block_size).encode()
        node = node_key(prefix, self.pool, self.node)

        def attempt(c):
            return c.txn([cmp_create(key, "=", 0), cmp_value(grid, "=", size)],
                         [op_put(key, claim), op_put(node, record), op_put(spec_key(prefix, self.pool), spec)], [])

        for _ in range(2):
            ok, _responses, revision = self._do(f"claiming block {cidr}", attempt)
            if ok:
                return "ok", revision
            now = self._do("reading a block", lambda c: c.get(key))
            if now is not None and now[0] == claim:  # our own claim, applied by an attempt that timed out
                return "ok", now[1]
            have = self._do("reading the block grid", lambda c: c.get(grid))
            if have is None:  # the pool's first claim of this family: pin the block size
                from cni_ipam.cluster.etcd import cmp_create as create

                self._do("creating the block grid", lambda c: c.txn([create(grid, "=", 0)], [op_put(grid, size)], []))
                continue
            if have[0] != size:
                return "grid", int(have[0]) if have[0].isdigit() else -1
            return "taken", 0
        return "taken", 0

    def release(self, cidr, revision, record):
        from cni_ipam.cluster.etcd import cmp_mod, op_delete, op_put

        key = self._key(cidr)
        node = node_key(self.settings.prefix, self.pool, self.node)
        ok, _r, _rev = self._do(f"releasing block {cidr}",
                                lambda c: c.txn([cmp_mod(key, "=", revision)], [op_delete(key), op_put(node, record)], []))
        return ok

    def publish(self, record, verify):
        from cni_ipam.cluster.etcd import op_get, op_put

        node = node_key(self.settings.prefix, self.pool, self.node)
        out: dict[str, tuple[dict, int] | None] = {}
        # etcd allows 128 operations per txn (--max-txn-ops): the put, then the reads in chunks
        for first in range(0, max(len(verify), 1), TXN_READS):
            chunk = verify[first:first + TXN_READS]
            ops = ([op_put(node, record)] if first == 0 else []) + [op_get(self._key(c)) for c in chunk]
            _ok, responses, _rev = self._do("publishing usage", lambda c: c.txn([], ops, []))
            for cidr, resp in zip(chunk, responses[1:] if first == 0 else responses):
                kvs = resp.get("kvs") or []
                out[cidr] = (decode_json(kvs[0][1]) or {}, kvs[0][2]) if kvs else None
        return out


# ---------------------------------------------------------------------------------- the local record
class Record:
    """``.cni-ipam/pool.json``: what this node holds.  Read and written under the network lock."""

    def __init__(self, doc: dict | None) -> None:
        doc = doc if isinstance(doc, dict) and doc.get("v") == _RECORD_VERSION else {}
        self.blocks: list[dict] = [b for b in _list(doc.get("blocks")) if _good_block_entry(b)]
        self.pending: list[dict] = [b for b in _list(doc.get("pending")) if isinstance(b, dict) and isinstance(b.get("cidr"), str)
                                      and _valid_cidr(b["cidr"]) and isinstance(b.get("set", 0), int)]
        self.pool = doc.get("pool") if isinstance(doc.get("pool"), str) else None
        self.node = doc.get("node") if isinstance(doc.get("node"), str) else None
        self.network = doc.get("network") if isinstance(doc.get("network"), str) else None
        self.etcd = doc.get("etcd")
        self.verified = _float(doc.get("verified"))
        self.published = _float(doc.get("published"))
        self.etcd_failed = _float(doc.get("etcdFailed"))
        self.interval = _float(doc.get("verifyInterval", DEFAULT_VERIFY_INTERVAL))
        keep = doc.get("keepBlocks", DEFAULT_KEEP_BLOCKS)
        self.keep = keep if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0 else DEFAULT_KEEP_BLOCKS
        self.dirty = False

    @classmethod
    def load(cls, store: NetworkStore) -> Record:
        data = store.read_meta(RECORD_FILE)
        return cls(decode_json(data))

    def save(self, store: NetworkStore) -> None:
        doc = {"v": _RECORD_VERSION, "pool": self.pool, "node": self.node, "network": self.network, "etcd": self.etcd,
               "blocks": self.blocks, "pending": self.pending, "verified": self.verified, "published": self.published,
               "etcdFailed": self.etcd_failed, "keepBlocks": self.keep, "verifyInterval": self.interval}
        store.write_meta(RECORD_FILE, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        self.dirty = False

    def held(self, set_idx: int) -> list[str]:
        """CIDRs this node may hand out from in range set ``set_idx`` (conflicts excluded)."""
        return sorted((b["cidr"] for b in self.blocks if b["set"] == set_idx and b.get("state", "held") == "held"), key=_cidr_key)

    def entry(self, cidr: str) -> dict | None:
        return next((b for b in self.blocks if b["cidr"] == cidr), None)

    def add(self, cidr: str, set_idx: int, revision: int, now: float) -> None:
        old = self.entry(cidr)
        if old is not None:
            self.blocks.remove(old)
        self.blocks.append({"cidr": cidr, "set": set_idx, "rev": revision, "claimed": round(now, 3), "state": "held"})
        self.dirty = True

    def drop(self, cidr: str) -> None:
        self.blocks = [b for b in self.blocks if b["cidr"] != cidr]
        self.dirty = True


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _good_block_entry(b: object) -> bool:
    return (isinstance(b, dict) and isinstance(b.get("cidr"), str) and isinstance(b.get("set"), int)
            and isinstance(b.get("rev"), int) and _valid_cidr(b["cidr"]))


def _valid_cidr(text: str) -> bool:
    try:
        return str(ipaddress.ip_network(text)) == text
    except ValueError:
        return False


def _cidr_key(cidr: str) -> tuple[int, int]:
    version, lo, _ = block_bounds(cidr)
    return version, lo


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


# ---------------------------------------------------------------------------------- one call's session
class _SetView:
    """The store seen by the allocator for one range set: cursor index 0 maps to ``idx``, so
    allocating set by set keeps each set's own ``last_reserved_ip.<idx>``."""

    def __init__(self, store: NetworkStore, idx: int) -> None:
        self._store = store
        self._idx = idx

    def last_reserved(self, _range_id: int):
        return self._store.last_reserved(self._idx)

    def set_last_reserved(self, _range_id: int, addr) -> None:
        self._store.set_last_reserved(self._idx, addr)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


class Session:
    """The pool side of one ADD, DEL, GC or STATUS call on one node, under the network lock."""

    def __init__(self, store: NetworkStore, network: str, pool: PoolConfig | None, range_sets=None,
                 record: Record | None = None, now: float | None = None) -> None:
        self.store = store
        self.network = network
        self.cfg = pool
        self.range_sets = range_sets
        self.record = record if record is not None else Record.load(store)
        self.now = time.time() if now is None else now
        rec = self.record
        if pool is not None:
            self.pool_name, self.node, settings = pool.name, node_name(pool.node), pool.etcd
            if ((rec.pool, rec.node, rec.network, rec.etcd, rec.keep, rec.interval)
                    != (pool.name, self.node, network, settings.to_json(), pool.keep_blocks, pool.verify_interval)):
                if rec.pool not in (None, pool.name) or rec.node not in (None, self.node):
                    # A renamed pool or node: the old claims are not ours under the new names.
                    _warn(f"pool record of network {network} was for pool {rec.pool} node {rec.node}; "
                          f"now pool {pool.name} node {self.node}: the old blocks are forgotten here (release them with cni-ipam pool release-node)")
                    rec.blocks, rec.pending = [], []
                rec.pool, rec.node, rec.network, rec.etcd = pool.name, self.node, network, settings.to_json()
                rec.keep, rec.interval = pool.keep_blocks, pool.verify_interval
                rec.dirty = True
        else:
            self.pool_name, self.node = rec.pool, rec.node
            settings = EtcdSettings.from_json(rec.etcd)
        self.backend: ClusterStore | None = (
            EtcdStore(settings, self.pool_name, self.node) if settings is not None and self.pool_name and self.node else None
        )

    # ------------------------------------------------------------------ helpers
    def _etcd_ok_recently(self) -> bool:
        return self.now - self.record.etcd_failed >= ETCD_RETRY_AFTER

    def _failed(self) -> None:
        self.record.etcd_failed = self.now
        self.record.dirty = True

    def node_record(self) -> bytes:
        """The usage this node publishes: per block used/capacity, totals, conflicts, timestamps."""
        rec = self.record
        blocks = {}
        used = capacity = 0
        for b in rec.blocks:
            u = used_in_block(self.store.dir_fd, b["cidr"])
            cap = block_capacity(self.range_sets[b["set"]], b["cidr"]) if self.range_sets and b["set"] < len(self.range_sets) else b.get("capacity", 0)
            b["capacity"] = cap
            blocks[b["cidr"]] = {"used": u, "capacity": cap, "state": b.get("state", "held")}
            if b.get("state", "held") != "conflict":  # held, or being claimed in this very txn
                used += u
                capacity += cap
        doc = {"v": 1, "node": self.node, "network": self.network, "lastSeen": round(self.now, 3),
               "published": round(self.now, 3), "blocks": blocks, "used": used, "capacity": capacity,
               "conflicts": sorted(b["cidr"] for b in rec.blocks if b.get("state") == "conflict")}
        rec.published = self.now
        rec.dirty = True
        return json.dumps(doc, sort_keys=True).encode()

    def spec(self) -> bytes:
        sets = [{"family": r.version, "blockSize": s, "ranges": r.to_json()} for r, s in zip(self.range_sets, self.cfg.block_sizes)]
        return json.dumps({"sets": sets}, sort_keys=True).encode()

    def save(self) -> None:
        if self.record.dirty:
            self.record.save(self.store)

    def close(self) -> None:
        if self.backend is not None and isinstance(self.backend, EtcdStore):
            self.backend.close()

    # ------------------------------------------------------------------ crash recovery and verification
    def resolve_pending(self) -> None:
        """Claims a killed process left in flight: etcd says whether each one happened."""
        rec = self.record
        for p in list(rec.pending):
            got = self.backend.get_block(p["cidr"])
            if got is not None and got[0].get("node") == self.node and got[0].get("network") == self.network:
                rec.add(p["cidr"], int(p.get("set", 0)), got[1], self.now)
            rec.pending.remove(p)
            rec.dirty = True

    def verify(self) -> None:
        """Publish usage and re-read every held block in one round trip; a block etcd no longer
        shows as ours is not handed out from again (see docs/cluster.md, "Re-verification")."""
        rec = self.record
        cidrs = [b["cidr"] for b in rec.blocks]
        seen = self.backend.publish(self.node_record(), cidrs)
        for cidr in cidrs:
            self.apply_seen(cidr, seen.get(cidr))
        rec.verified = self.now
        rec.dirty = True

    def apply_seen(self, cidr: str, got: tuple[dict, int] | None) -> None:
        rec = self.record
        entry = rec.entry(cidr)
        if entry is None:
            return
        if got is not None and got[0].get("node") == self.node and got[0].get("network") == self.network:
            if entry.get("state") != "held" or entry["rev"] != got[1]:
                entry["state"], entry["rev"] = "held", got[1]
                rec.dirty = True
            return
        used = used_in_block(self.store.dir_fd, cidr)
        if got is None:
            if used and self.cfg is not None and self.range_sets is not None:
                # Released behind our back (an admin's release-node on a live node) while pods still
                # use it: claim it again, the same create-if-absent way.
                status, rev = self.backend.claim(cidr, block_bounds(cidr)[0], self.cfg.block_sizes[entry["set"]],
                                                 claim_value(self.node, self.network, _claim_id(), self.now), self.node_record(), self.spec())
                if status == "ok":
                    entry["state"], entry["rev"] = "held", rev
                    rec.dirty = True
                    return
                got = self.backend.get_block(cidr)
            if got is None or not used:
                rec.drop(cidr)
                return
        if not used:
            rec.drop(cidr)
            return
        if entry.get("state") != "conflict":
            owner = got[0].get("node") if got else "?"
            _warn(f"pool {self.pool_name}: block {cidr} of node {self.node} is held by node {owner} "
                  f"(network {got[0].get('network') if got else '?'}) in etcd; no new address is handed out from it "
                  f"({used} reservation(s) remain here)")
            entry["state"] = "conflict"
            entry["owner"] = owner
            rec.dirty = True

    # ------------------------------------------------------------------ claims
    def claim(self, idx: int, want: str | None = None) -> None:
        """Get one more block for range set ``idx`` (``want``: that block, for a requested IP).
        Adopts a block etcd shows as this node's (a claim whose local record was lost) first."""
        rset = self.range_sets[idx]
        size = self.cfg.block_sizes[idx]
        family = rset.version
        rec = self.record
        try:
            for _scan in range(CLAIM_SCANS):
                taken = self.backend.blocks()
                mine_here = {b["cidr"] for b in rec.blocks}
                adopted = False
                for cidr, (claim, rev) in taken.items():
                    if (claim.get("node") == self.node and claim.get("network") == self.network and cidr not in mine_here
                            and block_bounds(cidr)[0] == family and cidr.endswith(f"/{size}")):
                        rec.add(cidr, idx, rev, self.now)
                        adopted = True
                if adopted and (want is None or rec.entry(want) is not None):
                    return
                if want is not None:
                    holder = taken.get(want)
                    if holder is not None:
                        if holder[0].get("node") == self.node and holder[0].get("network") == self.network:
                            rec.add(want, idx, holder[1], self.now)
                            return
                        raise CniError(REQUESTED_IP_TAKEN, f"pool {self.pool_name}: block {want} is held by node {holder[0].get('node')}",
                                       f"network {holder[0].get('network')}")
                    candidates = [want]
                else:
                    # Nodes start at different places (hash of the node name): fewer collisions.
                    candidates = free_blocks(rset, size, set(taken) | mine_here, _stable_hash(self.node))
                tried = 0
                for cidr in candidates:
                    if tried >= CLAIM_ATTEMPTS:
                        break
                    if block_capacity(rset, cidr) == 0:
                        continue
                    tried += 1
                    if self._claim_one(idx, cidr, family, size):
                        return
                    if want is not None:
                        break
                if not tried and want is None:
                    raise CniError(POOL_EXHAUSTED, f"pool {self.pool_name} is exhausted: no free block of /{size} left "
                                   f"for range set {idx} ({rset}) and the blocks of node {self.node} are full",
                                   f"{len(taken)} blocks claimed")
            raise CniError(TRY_AGAIN_LATER, f"pool {self.pool_name}: could not claim a block for range set {idx} "
                           f"(other nodes took every candidate first); try again", f"node {self.node}")
        except CniError as exc:
            if exc.code == TRY_AGAIN_LATER:
                self._failed()
            raise

    def _claim_one(self, idx: int, cidr: str, family: int, size: int) -> bool:
        rec = self.record
        claim_id = _claim_id()
        value = claim_value(self.node, self.network, claim_id, self.now)
        # The intent is on disk before the claim: a kill -9 after etcd applied it cannot lose the block.
        rec.pending.append({"cidr": cidr, "set": idx, "claim": claim_id})
        rec.save(self.store)
        rec.add(cidr, idx, 0, self.now)  # so the published record counts it
        rec.blocks[-1]["state"] = "claiming"
        try:
            status, rev = self.backend.claim(cidr, family, size, value, self.node_record(), self.spec())
        except BaseException:
            rec.drop(cidr)
            raise
        rec.pending = [p for p in rec.pending if p.get("claim") != claim_id]
        if status == "ok":
            rec.add(cidr, idx, rev, self.now)
            rec.verified = rec.verified or self.now
            rec.published = self.now
            rec.save(self.store)
            return True
        rec.drop(cidr)
        if status == "grid":
            raise CniError(INVALID_CONFIG, f"pool {self.pool_name}: etcd has IPv{family} blocks of /{rev}, this node's config says /{size} "
                           f"(every node of a pool must use the same block size)", "key ipam.pool.blockSize")
        return False

    # ------------------------------------------------------------------ returning blocks
    def release_empty(self, force: bool = False) -> list[str]:
        """Return emptied blocks to the pool (each set keeps ``keepBlocks`` blocks).  Skipped for
        ``ETCD_RETRY_AFTER`` seconds after etcd failed, unless ``force``.  Never raises for etcd."""
        rec = self.record
        keep = self.cfg.keep_blocks if self.cfg is not None else rec.keep
        empty: list[dict] = []
        by_set: dict[int, list[dict]] = {}
        for b in rec.blocks:
            if b.get("state") == "conflict":
                if not used_in_block(self.store.dir_fd, b["cidr"]):
                    rec.drop(b["cidr"])  # not ours in etcd; nothing left here: forget it
                continue
            by_set.setdefault(b["set"], []).append(b)
        for _idx, blocks in by_set.items():
            usage = [(used_in_block(self.store.dir_fd, b["cidr"]), b) for b in blocks]
            kept = sum(1 for u, _ in usage if u)
            for u, b in sorted(usage, key=lambda t: _cidr_key(t[1]["cidr"])):
                if u:
                    continue
                if kept < keep:
                    kept += 1
                    continue
                empty.append(b)
        if not empty or self.backend is None or not (force or self._etcd_ok_recently()):
            return []
        released = []
        try:
            for b in empty:
                rec.drop(b["cidr"])
                if self.backend.release(b["cidr"], b["rev"], self.node_record()):
                    released.append(b["cidr"])
                    continue
                got = self.backend.get_block(b["cidr"])
                if got is not None and got[0].get("node") == self.node and got[0].get("network") == self.network:
                    if self.backend.release(b["cidr"], got[1], self.node_record()):
                        released.append(b["cidr"])
                    else:
                        rec.blocks.append(b)
        except CniError as exc:
            rec.blocks.append(b)
            rec.dirty = True
            self._failed()
            _warn(f"pool {self.pool_name}: emptied block(s) stay held until etcd answers: {exc.msg}")
        return released


def _claim_id() -> str:
    return os.urandom(8).hex()


def _stable_hash(text: str) -> int:
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def _warn(msg: str) -> None:
    try:
        os.write(2, f"cni-ipam: {msg}\n".encode("utf-8", "replace"))
    except OSError:
        pass


# ---------------------------------------------------------------------------------- entry points (plugin)
def allocate(store: NetworkStore, cfg, cid: str, ifname: str) -> list:
    """ADD in a pool: one address per range set, from this node's blocks, claiming a block only
    when the held ones are full (or a requested address lies in a free block)."""
    from cni_ipam.plugin import allocator

    session = Session(store, cfg.name, cfg.pool, cfg.range_sets)
    rec = session.record
    try:
        if rec.pending and session._etcd_ok_recently():  # etcd just failed: not on every ADD
            try:
                session.resolve_pending()
            except CniError:
                session._failed()  # the pending blocks are not used until etcd confirms them
        interval = cfg.pool.verify_interval
        if rec.blocks and session.now - rec.verified >= interval and session._etcd_ok_recently():
            try:
                session.verify()
            except CniError as exc:
                session._failed()
                _warn(f"pool {session.pool_name}: could not re-verify this node's blocks (serving from them meanwhile): {exc.msg}")
        # Requested addresses: each must be in the pool; its block is ours, or free (claim it).
        wanted: dict[int, list] = {}
        for ip in dict.fromkeys(cfg.requested):
            idx = next((i for i, r in enumerate(cfg.range_sets) if r.contains(ip)), None)
            if idx is None:
                raise CniError(REQUESTED_IP_INVALID, f"requested ip {ip} is not in pool {session.pool_name}", "no range set contains it")
            rng = cfg.range_sets[idx].range_for(ip)
            if not rng.can_hand_out(ip):  # a gateway, excluded or special address: before any claim
                raise CniError(REQUESTED_IP_INVALID, f"requested ip {ip} is a gateway, excluded or reserved in pool {session.pool_name}",
                               f"range set {idx}")
            cidr = block_of(ip, cfg.pool.block_sizes[idx])
            entry = rec.entry(cidr)
            if entry is not None and entry.get("state") == "conflict":
                raise CniError(REQUESTED_IP_TAKEN, f"requested ip {ip}: block {cidr} of pool {session.pool_name} is held by node {entry.get('owner')}",
                               "block in conflict")
            if entry is None:
                session.claim(idx, want=cidr)
            wanted.setdefault(idx, []).append(ip)
        held_now = store.owned_by(cid, ifname)
        out = []
        for idx, rset in enumerate(cfg.range_sets):
            for ip in held_now:
                if rset.contains(ip):
                    raise CniError(DUPLICATE_ALLOCATION, f"{ip} has been allocated to {cid}, duplicate allocation is not allowed", f"range set {idx}")
            view = _SetView(store, idx)
            for _attempt in range(CLAIM_SCANS * CLAIM_ATTEMPTS):
                held = held_range_set(rset, rec.held(idx))
                if held is None:
                    session.claim(idx)
                    continue
                try:
                    out += allocator.allocate(view, [held], wanted.get(idx, []), cid, ifname)
                    break
                except CniError as exc:
                    if exc.code != RANGE_EXHAUSTED or wanted.get(idx):
                        raise
                session.claim(idx)
            else:  # pragma: no cover - claims that keep bringing full blocks
                raise CniError(TRY_AGAIN_LATER, f"pool {session.pool_name}: no room found after several claims", f"range set {idx}")
        return out
    finally:
        try:
            session.save()
        finally:
            session.close()


def after_release(store: NetworkStore, pool_cfg: PoolConfig | None = None, range_sets=None, force: bool = False) -> list[str]:
    """DEL / GC: return emptied blocks to the pool (when etcd answers) and publish usage now and
    then.  Uses the local record's etcd settings when ``pool_cfg`` is None; never fails the call."""
    try:
        rec = Record.load(store)
        if not rec.blocks and not rec.pending:
            return []
        session = Session(store, store.network, pool_cfg, range_sets, record=rec)
        try:
            released = session.release_empty(force=force)
            if (not released and session.backend is not None and rec.blocks and session._etcd_ok_recently()
                    and session.now - rec.published >= (pool_cfg.verify_interval if pool_cfg else rec.interval)):
                try:
                    session.backend.publish(session.node_record(), [])
                except CniError:
                    session._failed()
            return released
        finally:
            try:
                session.save()
            finally:
                session.close()
    except CniError as exc:
        _warn(f"pool: returning emptied blocks failed (kept for the next call): {exc.msg}")
        return []
    except Exception as exc:  # DEL and GC never fail because of the pool's bookkeeping
        _warn(f"pool: returning emptied blocks failed (kept for the next call): {type(exc).__name__}: {exc}")
        return []


def status_problem(cfg) -> str | None:
    """STATUS: why an ADD could not succeed now, or None.  No etcd call while held blocks have room."""
    net_dir = os.path.join(cfg.data_dir, cfg.name)
    if not os.path.isdir(net_dir):
        rec = Record(None)
        fd = -1
    else:
        try:
            fd = safefs.open_dir(net_dir)
        except OSError as exc:
            return f"cannot open {net_dir}: {exc.strerror or exc}"
        rec = Record(decode_json(_read_record_at(fd)))
    try:
        needs = []
        for idx, rset in enumerate(cfg.range_sets):
            room = 0
            for cidr in rec.held(idx):
                room += max(block_capacity(rset, cidr) - (used_in_block(fd, cidr) if fd >= 0 else 0), 0)
            if not room:
                needs.append(idx)
        if not needs:
            return None
        node = node_name(cfg.pool.node)
        backend = EtcdStore(cfg.pool.etcd, cfg.pool.name, node)
        try:
            taken = backend.blocks()
        except CniError as exc:
            return f"this node's blocks are full and etcd cannot be reached to claim one: {exc.msg}"
        finally:
            backend.close()
        for idx in needs:
            rset, size = cfg.range_sets[idx], cfg.pool.block_sizes[idx]
            if next(free_blocks(rset, size, set(taken) | {b["cidr"] for b in rec.blocks}), None) is None:
                return (f"pool {cfg.pool.name} is exhausted: no free block left for range set {idx} ({rset}) "
                        f"and the blocks of node {node} are full")
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def _read_record_at(net_dir_fd: int) -> bytes | None:
    """pool.json read without the lock (STATUS is advisory), through the store's dir-fd reader
    (``store.fs``): neither ``.cni-ipam`` nor ``pool.json`` followed as a symlink, a regular file
    only (a FIFO or a device is never read), at most ``RECORD_LIMIT`` bytes; None otherwise."""
    from cni_ipam.store.layout import META_DIR

    try:
        meta_fd = safefs.open_dir(META_DIR, net_dir_fd)
    except OSError:
        return None
    try:
        return safefs.read_regular(meta_fd, RECORD_FILE, RECORD_LIMIT)
    finally:
        os.close(meta_fd)
