"""The names and formats of a network directory ``<dataDir>/<network>/`` (host-local compatible),
and the owner index we keep beside it (owner entries with their GC metadata, the ``state`` record
that says when the index matches the directory).  Pure names, parsers and shape checks; the only
I/O is ``read_boot_id`` and ``read_reservation``.  ``store.network`` explains the locking and when
the index is trusted.

* ``lock`` - ``flock(LOCK_EX)`` for the whole of an ADD, DEL, CHECK or GC (host-local locks the same
  file, so both plugins can share a directory).
* ``<ip>`` - one file per reserved address, content ``containerID\\r\\nifname`` (old files holding
  only the container ID are honoured), mode 0600.
* ``last_reserved_ip.<rangeSetIndex>`` - the round-robin cursor.
* ``.cni-ipam/`` - our own bookkeeping, which host-local never reads as a reservation:
  ``owners/<containerID>:<ifname>`` (JSON: the addresses of that attachment, the identity of each
  file, ``seenBoot`` and GC metadata; formats below), ``state``, ``files``, ``tmp/`` and
  ``gc-stats.json`` (``store.gcstats``).
"""

from __future__ import annotations

import json
import os

from cni_ipam.addr import ip_address
from cni_ipam.store.fs import SPECIAL, read_entry
from cni_ipam.store import ifname_problem, is_container_id

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
        addr = ip_address(name)
    except ValueError:
        return None
    return addr if str(addr) == name else None


def parse_content(data: bytes) -> tuple[str, str | None, str | None]:
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


def parse_owner(data: bytes) -> tuple[str, str | None] | None:
    """(containerID, ifname) of a reservation file's content; None when empty or not a valid owner."""
    kind, cid, ifname = parse_content(data)
    return (cid, ifname) if kind == OWNED else None


def owner_key(cid: str, ifname: str | None) -> str:
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

    def __init__(self, address, container_id: str | None, ifname: str | None, path: str,
                 kind: str = OWNED, ident: list | None = None) -> None:
        self.address = address
        self.container_id = container_id
        self.ifname = ifname
        self.path = path
        self.kind = kind
        self.ident = ident  # [inode, ctime_ns] when read

    def __repr__(self) -> str:
        return f"Reservation({self.address}, {self.container_id!r}, {self.ifname!r}, {self.kind})"


def read_reservation(dir_fd: int, name: str, addr, dir_path: str) -> Reservation | None:
    """The Reservation of the address-named entry ``name`` (None when it vanished)."""
    kind, data, st = read_entry(dir_fd, name)
    if kind is None:
        return None
    ident = file_ident(st) if st is not None else None
    path = os.path.join(dir_path, name)
    if kind != "file":
        return Reservation(addr, None, None, path, SPECIAL, ident)
    owner_kind, cid, ifname = parse_content(data)
    return Reservation(addr, cid, ifname, path, owner_kind, ident)


# ---------------------------------------------------------------------- the owner index's formats
STATE_VERSION = 2
DELTA_MAX = 128  # own changes kept in ``state`` before ``files`` is rewritten

ADDRESS_CHARS = "0123456789abcdef.:"  # every character of a canonical address name


def file_ident(st: os.stat_result) -> list:
    """A file's identity as owner entries record it: [inode, ctime_ns]."""
    return [st.st_ino, st.st_ctime_ns]


def set_key(ident: list) -> str:
    """The same identity as the recorded set (``files``, ``delta``) keeps it: "inode ctime_ns"."""
    return f"{ident[0]} {ident[1]}"


def from_set_key(text: str) -> list:
    ino, ctime = text.split(" ")
    return [int(ino), int(ctime)]


def valid_entry(entry: object, key: str) -> bool:
    """Does an owner-index entry have exactly the shape we write (see the module docstring)?"""
    if not isinstance(entry, dict):
        return False
    cid, ifname, ips, files = entry.get("containerID"), entry.get("ifname"), entry.get("ips"), entry.get("files")
    if not isinstance(cid, str) or not is_container_id(cid):
        return False
    if ifname is not None and (not isinstance(ifname, str) or ifname_problem(ifname)):
        return False
    if owner_key(cid, ifname) != key or not isinstance(entry.get("meta"), dict) or not isinstance(entry.get("seenBoot"), str):
        return False
    if not isinstance(ips, list) or not ips or not isinstance(files, dict) or len(files) != len(ips):
        return False
    for ip in ips:
        ident = files.get(ip) if isinstance(ip, str) else None
        if (
            not isinstance(ident, list)
            or len(ident) != 2
            or any(type(v) is not int for v in ident)
            or parse_ip_name(ip) is None
        ):
            return False
    return True


def entry_meta(entry: dict | None, ip: str, st: os.stat_result | None) -> dict:
    """The GC metadata of a valid owner entry for the file ``ip`` with stat ``st``: {} unless the
    entry recorded exactly that file (for lock-free readers; under the lock catch-up ensures it)."""
    if not entry or st is None or entry["files"].get(ip) != file_ident(st):
        return {}
    return entry["meta"]


def valid_state(state: object, dir_ino: int, boot: str) -> bool:
    if not (
        isinstance(state, dict)
        and state.get("v") == STATE_VERSION
        and type(state.get("mtime")) is int
        and state.get("ino") == dir_ino
        and state.get("boot") == boot
        and isinstance(state.get("snap"), str)
        and state["snap"]
        and isinstance(state.get("delta"), dict)
    ):
        return False
    for name, ident in state["delta"].items():
        if not name or name.strip(ADDRESS_CHARS) or not (ident is None or (isinstance(ident, str) and ident.count(" ") == 1)):
            return False
    return True


def loads_or_none(data: bytes | None) -> object:
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None

