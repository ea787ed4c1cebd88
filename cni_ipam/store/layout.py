"""The names and formats of a network directory ``<dataDir>/<network>/`` (host-local compatible),
and the owner metadata we keep beside it.  ``store.network`` explains the locking and the index.

* ``lock`` - ``flock(LOCK_EX)`` for the whole of an ADD, DEL, CHECK or GC (host-local locks the same
  file, so both plugins can share a directory).
* ``<ip>`` - one file per reserved address, content ``containerID\\r\\nifname`` (old files holding
  only the container ID are honoured), mode 0600.
* ``last_reserved_ip.<rangeSetIndex>`` - the round-robin cursor.
* ``.cni-ipam/`` - our own bookkeeping, which host-local never reads as a reservation:
  ``owners/<containerID>:<ifname>`` (JSON: the addresses of that attachment, the identity of each
  file, ``seenBoot`` and GC metadata: ``store.index``), ``state``, ``files``, ``tmp/`` and
  ``gc-stats.json`` (``store.gcstats``).
"""

from __future__ import annotations

import ipaddress
import os

from cni_ipam.store.fs import SPECIAL, read_entry
from cni_ipam.store.names import ifname_problem, is_container_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional, Tuple

META_DIR = ".cni-ipam"
OWNERS_DIR = "owners"

TMP_DIR = "tmp"
STATE_FILE = "state"

FILES_FILE = "files"
LOCK_FILE = "lock"

LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
GC_STATS_FILE = "gc-stats.json"  # <dataDir>/<network>/.cni-ipam/gc-stats.json

# What an address-named entry of the network directory is (``Reservation.kind``).
OWNED = "owned"  # a regular file naming a valid (containerID, ifname) or an ID-only owner
EMPTY = "empty"  # a regular file with no content (host-local killed mid-write)

OPAQUE = "opaque"  # a regular file whose content is not a valid owner: kept, never used as a name


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def parse_ip_name(name: str):
    """The address a reservation file is named after, or None for any other file."""
    if not name or name[0] == "." or name == LOCK_FILE or name.startswith(LAST_RESERVED_PREFIX):
        return None
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return None
    return addr if str(addr) == name else None


def parse_content(data: bytes) -> "Tuple[str, Optional[str], Optional[str]]":
    """(kind, containerID, ifname) of a reservation file's content: OWNED with the owner (ifname
    None for ID-only files), EMPTY, or OPAQUE when the content is not a valid owner."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return OPAQUE, None, None
    if not text:
        return EMPTY, None, None
    cid, sep, ifname = text.partition(LINE_BREAK)
    cid = cid.strip()
    if not is_container_id(cid) or (sep and ifname_problem(ifname)):
        return OPAQUE, None, None
    return OWNED, cid, (ifname if sep else None)


def parse_owner(data: bytes) -> "Optional[Tuple[str, Optional[str]]]":
    """(containerID, ifname) of a reservation file's content; None when empty or not a valid owner."""
    kind, cid, ifname = parse_content(data)
    return (cid, ifname) if kind == OWNED else None


def owner_key(cid: str, ifname: "Optional[str]") -> str:
    """The owner-index file name of (cid, ifname); callers pass validated names only."""
    key = f"{cid}:{ifname or ''}"
    if len(key.encode()) > 200:  # keep file names under NAME_MAX whatever the ID length
        import hashlib

        key = "sha256-" + hashlib.sha256(key.encode()).hexdigest()
    return key


class Reservation:
    """One address-named entry as found on disk; ``kind`` is OWNED, EMPTY, OPAQUE or SPECIAL and
    ``container_id``/``ifname`` are set only for OWNED."""

    __slots__ = ("address", "container_id", "ifname", "path", "kind", "ident")

    def __init__(self, address, container_id: "Optional[str]", ifname: "Optional[str]", path: str,
                 kind: str = OWNED, ident: "Optional[list]" = None) -> None:
        self.address = address
        self.container_id = container_id
        self.ifname = ifname
        self.path = path
        self.kind = kind
        self.ident = ident  # [inode, ctime_ns] when read

    def __repr__(self) -> str:
        return f"Reservation({self.address}, {self.container_id!r}, {self.ifname!r}, {self.kind})"


def read_reservation(dir_fd: int, name: str, addr, dir_path: str) -> "Optional[Reservation]":
    """The Reservation of the address-named entry ``name`` (None when it vanished)."""
    kind, data, st = read_entry(dir_fd, name)
    if kind is None:
        return None
    ident = [st.st_ino, st.st_ctime_ns] if st is not None else None
    path = os.path.join(dir_path, name)
    if kind != "file":
        return Reservation(addr, None, None, path, SPECIAL, ident)
    owner_kind, cid, ifname = parse_content(data)
    return Reservation(addr, cid, ifname, path, owner_kind, ident)

