"""The etcd key schema of cluster pools and the JSON records stored under it.

Shared by the node side (the plugin's ADD/DEL/GC/STATUS) and the admin commands; standard library
only, nothing here talks to etcd.  Keys of one pool, under ``<prefix>/pools/<pool>/``::

    grid/<4|6>                     "<prefix length>": the block size of the family
    spec                           the range sets and block sizes the last claiming node saw
    blocks/<cidr>                  the claim of one block (``ClaimRecord``)
    addrs/<4|6>/<hex address>      one allocated address (``AddrRecord``); the address is written
                                   as fixed-width lowercase hex (8 digits for IPv4, 32 for IPv6),
                                   so the addresses of one block are one contiguous key range
    nodes/<name>                   the identity of the machine using that node name (``NodeRecord``)

The exact value bytes of a claim are its fencing token: every fenced txn compares them with
``cmp_value``.  A claim holds a random claim id, so the bytes never repeat, not even after etcd is
restored from a backup (where revisions do repeat).
"""

from __future__ import annotations

import ipaddress
import json
import os

DEFAULT_PREFIX = "/cni-ipam"
HEX_WIDTH = {4: 8, 6: 32}
ADDR_BITS = {4: 32, 6: 128}


# ------------------------------------------------------------------------------------ keys
def pool_prefix(prefix: str, pool: str) -> str:
    """``<prefix>/pools/<pool>/``: every key of one pool."""
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


def parse_block_key(prefix: str, pool: str, key: bytes) -> str | None:
    """The CIDR a block key names (only its canonical form), or None for any other key."""
    head = blocks_prefix(prefix, pool)
    if not key.startswith(head):
        return None
    try:
        text = key[len(head):].decode("ascii")
        net = ipaddress.ip_network(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return text if str(net) == text else None


def nodes_prefix(prefix: str, pool: str) -> bytes:
    return f"{pool_prefix(prefix, pool)}nodes/".encode()


def node_key(prefix: str, pool: str, node: str) -> bytes:
    return nodes_prefix(prefix, pool) + node.encode()


def parse_node_key(prefix: str, pool: str, key: bytes) -> str | None:
    head = nodes_prefix(prefix, pool)
    if not key.startswith(head) or len(key) == len(head):
        return None
    try:
        return key[len(head):].decode("ascii")
    except UnicodeDecodeError:
        return None


def addrs_prefix(prefix: str, pool: str, family: int) -> bytes:
    """``addrs/<family>/``: every address record of one family."""
    return f"{pool_prefix(prefix, pool)}addrs/{family}/".encode()


def addr_hex(family: int, value: int) -> str:
    """An address (as an int) in fixed-width lowercase hex: key order is address order."""
    return format(value, f"0{HEX_WIDTH[family]}x")


def addr_key(prefix: str, pool: str, family: int, value: int) -> bytes:
    return addrs_prefix(prefix, pool, family) + addr_hex(family, value).encode()


def parse_addr_key(prefix: str, pool: str, key: bytes) -> tuple[int, int] | None:
    """(family, address as int) of an address key, or None for any other key."""
    for family in (4, 6):
        head = addrs_prefix(prefix, pool, family)
        if key.startswith(head):
            tail = key[len(head):]
            if len(tail) != HEX_WIDTH[family] or tail.strip(b"0123456789abcdef"):
                return None
            return family, int(tail, 16)
    return None


def addr_range(prefix: str, pool: str, family: int, first: int, last: int) -> tuple[bytes, bytes]:
    """``[start, end)`` of the address keys of ``first..last`` (inclusive): one etcd range.  A
    block that ends at the family's last address ends at the end of the family's key prefix."""
    start = addr_key(prefix, pool, family, first)
    if last + 1 >= 1 << ADDR_BITS[family]:
        head = addrs_prefix(prefix, pool, family)
        return start, head[:-1] + bytes([head[-1] + 1])
    return start, addr_key(prefix, pool, family, last + 1)


def block_addr_range(prefix: str, pool: str, cidr: str) -> tuple[bytes, bytes]:
    """The key range of every address record inside one block (see ``addr_range``)."""
    net = ipaddress.ip_network(cidr)
    return addr_range(prefix, pool, net.version, int(net.network_address), int(net.broadcast_address))


def random_id() -> str:
    """A claim id or an instance id: 64 random bits in hex."""
    return os.urandom(8).hex()


# ------------------------------------------------------------------------------------ records
def encode(doc: dict) -> bytes:
    """The one encoding of every record we write: sorted keys, no spaces, so one record has one
    byte string (the fencing compares bytes)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_json(value: bytes | None) -> dict | None:
    """A stored value as a dict; None when absent, not JSON or not a JSON object."""
    if not value:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _text(doc: dict, key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


class ClaimRecord:
    """``blocks/<cidr>``: which node (name and instance) claimed the block, with which claim id."""

    __slots__ = ("node", "instance", "claim", "network", "node_uid")

    def __init__(self, node: str, instance: str, claim: str, network: str, node_uid: str = "") -> None:
        self.node = node
        self.instance = instance
        self.claim = claim
        self.network = network
        self.node_uid = node_uid

    def encode(self) -> bytes:
        doc = {"node": self.node, "instance": self.instance, "claim": self.claim, "network": self.network}
        if self.node_uid:
            doc["nodeUid"] = self.node_uid
        return encode(doc)

    @classmethod
    def parse(cls, value: bytes | None) -> ClaimRecord | None:
        """Tolerant: missing or mistyped fields read as "" (a claim of nobody we know); None only
        when the value is not a JSON object."""
        doc = decode_json(value)
        if doc is None:
            return None
        return cls(_text(doc, "node"), _text(doc, "instance"), _text(doc, "claim"), _text(doc, "network"),
                   _text(doc, "nodeUid"))


class AddrRecord:
    """``addrs/<family>/<hex>``: one allocated address, under the claim of the block holding it."""

    __slots__ = ("node", "instance", "claim", "network", "cid", "ifname")

    def __init__(self, node: str, instance: str, claim: str, network: str, cid: str, ifname: str) -> None:
        self.node = node
        self.instance = instance
        self.claim = claim
        self.network = network
        self.cid = cid
        self.ifname = ifname

    def encode(self) -> bytes:
        return encode({"node": self.node, "instance": self.instance, "claim": self.claim, "network": self.network,
                       "cid": self.cid, "ifname": self.ifname})

    @classmethod
    def parse(cls, value: bytes | None) -> AddrRecord | None:
        doc = decode_json(value)
        if doc is None:
            return None
        return cls(_text(doc, "node"), _text(doc, "instance"), _text(doc, "claim"), _text(doc, "network"),
                   _text(doc, "cid"), _text(doc, "ifname"))


class NodeRecord:
    """``nodes/<name>``: the machine (instance id, host name, Kubernetes Node UID if known) that
    uses this node name."""

    __slots__ = ("instance", "hostname", "node_uid")

    def __init__(self, instance: str, hostname: str, node_uid: str = "") -> None:
        self.instance = instance
        self.hostname = hostname
        self.node_uid = node_uid

    def encode(self) -> bytes:
        doc = {"instance": self.instance, "hostname": self.hostname}
        if self.node_uid:
            doc["nodeUid"] = self.node_uid
        return encode(doc)

    @classmethod
    def parse(cls, value: bytes | None) -> NodeRecord | None:
        doc = decode_json(value)
        if doc is None:
            return None
        return cls(_text(doc, "instance"), _text(doc, "hostname"), _text(doc, "nodeUid"))
