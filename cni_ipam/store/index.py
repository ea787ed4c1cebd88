"""The owner index's formats: owner entries (``.cni-ipam/owners/<containerID>:<ifname>``) and the
``state``/``files`` record that says when the index matches the directory (``store.network``
explains when it is trusted).  Pure functions over decoded JSON and stat results: no I/O.
"""

from __future__ import annotations

import json

from cni_ipam.store.layout import owner_key, parse_ip_name
from cni_ipam.store.names import ifname_problem, is_container_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    import os
    from typing import Optional

STATE_VERSION = 2
DELTA_MAX = 128  # own changes kept in ``state`` before ``files`` is rewritten

ADDRESS_CHARS = "0123456789abcdef.:"  # every character of a canonical address name


def file_ident(st: "os.stat_result") -> list:
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


def entry_meta(entry: "Optional[dict]", ip: str, st: "Optional[os.stat_result]") -> dict:
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


def loads_or_none(data: "Optional[bytes]") -> object:
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None

