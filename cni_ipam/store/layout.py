"""The names and formats of a network directory ``<dataDir>/<network>/`` (host-local compatible)
and of the owner index we keep beside it in ``.cni-ipam/``: pure names, parsers and shape checks
(the only I/O: ``read_boot_id``, ``read_reservation``, ``inode_generation``).  What each file
holds, and when the index is trusted, is described in one place: docs/core.md, "On-disk layout".
"""

from __future__ import annotations

import json
import os

from cni_ipam.addr import ip_address
from cni_ipam.store.fs import SPECIAL, read_entry
from cni_ipam.store import ifname_problem, is_container_id

META_DIR = ".cni-ipam"
INDEX_DIR = "index"

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


def read_boot_id(path: str = BOOT_ID_PATH, kernel_only: bool = True) -> str:
    """The running kernel's boot id, or "" when it cannot be read or is not provably the kernel's.

    A boot id is compared between readers in different mount namespaces (the plugin in the node's,
    ``cni-ipam gc`` in a DaemonSet's), and LXC and systemd-nspawn bind-mount a random file over
    this path in every system container: two readers of one kernel would disagree, and a
    disagreement would look like a reboot.  So the id counts only when the file read is on the
    same superblock as ``/proc`` itself (a file bind-mounted from elsewhere is not); "" proves
    nothing (see docs/core.md).  ``kernel_only=False`` (tests with their own file) skips that check."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if kernel_only and os.fstat(fd).st_dev != os.stat("/proc").st_dev:
            return ""
        # bytes, then str's own ascii decoder: a text-mode open would import encodings.ascii (cold path)
        return os.read(fd, 4096).decode("ascii").strip()
    except (OSError, ValueError):  # unreadable, or not ASCII: no boot id (nothing is judged by it)
        return ""
    finally:
        os.close(fd)


def parse_ip_name(name: str):
    """The address a reservation file is named after, or None for any other file."""
    if not name or name[0] == "." or name == LOCK_FILE or name.startswith(LAST_RESERVED_PREFIX):
        return None
    try:
        addr = ip_address(name)
    except ValueError:
        return None
    return addr if str(addr) == name else None


def parse_content(data: bytes | None, ifname_problem=ifname_problem) -> tuple[str, str | None, str | None]:
    """(kind, containerID, ifname) of a reservation file's content: OWNED with the owner (ifname
    None for ID-only files), EMPTY, or OPAQUE when the content is not a valid owner.
    ``ifname_problem``: the check of the interface name (``content_parser`` passes a remembering one)."""
    try:
        text = (data or b"").decode("utf-8").strip()
    except UnicodeDecodeError:
        return OPAQUE, None, None
    if not text:
        return EMPTY, None, None
    cid, sep, ifname = text.partition(LINE_BREAK)
    cid = cid.strip()
    if not is_container_id(cid) or (sep and ifname_problem(ifname)):
        return OPAQUE, None, None
    return OWNED, cid, (ifname if sep else None)


def parse_owner(data: bytes | None) -> tuple[str, str | None] | None:
    """(containerID, ifname) of a reservation file's content; None when empty or not a valid owner."""
    kind, cid, ifname = parse_content(data)
    return (cid, ifname) if kind == OWNED and cid is not None else None


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
    ident = file_ident(st, dir_fd, name) if st is not None else None
    path = os.path.join(dir_path, name)
    if kind != "file":
        return Reservation(addr, None, None, path, SPECIAL, ident)
    owner_kind, cid, ifname = parse_content(data)
    return Reservation(addr, cid, ifname, path, owner_kind, ident)


# ---------------------------------------------------------------------- the owner index's formats
STATE_VERSION = 3
DELTA_MAX = 128  # own changes kept in ``state`` before ``files`` is rewritten

ADDRESS_CHARS = "0123456789abcdef.:"  # every character of a canonical address name


_FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode generation (ext2/3/4, others)
_SECOND = 1_000_000_000


def file_ident(st: os.stat_result, dir_fd: int = -1, name: str | None = None) -> list:
    """A file's identity as owner entries record it: [inode, change stamp].

    The stamp is the ctime in ns.  Where timestamps have whole seconds only (ext4 with 128-byte
    inodes, which mke2fs picks for small file systems; ext3), a file deleted and re-created within
    one second usually gets the same inode and the same ctime: the stamp then also carries the
    inode's generation (``FS_IOC_GETVERSION``, new for every file the inode number is given to),
    folded into the sub-second digits the file system never sets, so a reused inode is another
    identity.  ``name`` (relative to ``dir_fd``) lets us read it; without it, or where the file
    system has no generation, the stamp is the bare ctime."""
    stamp = st.st_ctime_ns
    if stamp % _SECOND == 0 and name is not None:
        gen = inode_generation(dir_fd, name, st.st_ino)
        if gen is not None:
            stamp += 1 + gen % (_SECOND - 1)  # never a whole second again: "coarse, with generation"
    return [st.st_ino, stamp]


def inode_generation(dir_fd: int, name: str, ino: int) -> int | None:
    """The inode generation of the regular file ``name`` when it still is inode ``ino``, else None."""
    import fcntl  # a builtin module (the store imports it for flock anyway)

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_ino != ino:
            return None
        return int.from_bytes(fcntl.ioctl(fd, _FS_IOC_GETVERSION, bytes(8))[:4], "little")
    except OSError:
        return None
    finally:
        os.close(fd)


def set_key(ident: list) -> str:
    """The same identity as the recorded set (``files``, ``delta``) keeps it: "inode ctime_ns"."""
    return f"{ident[0]} {ident[1]}"


def from_set_key(text: str) -> list:
    ino, ctime = text.split(" ")
    return [int(ino), int(ctime)]


def entry_meta(entry: dict | None, ip: str, st: os.stat_result | None, dir_fd: int = -1) -> dict:
    """The GC metadata of a valid owner entry for the file ``ip`` with stat ``st``: {} unless the
    entry recorded exactly that file (for lock-free readers; under the lock catch-up ensures it)."""
    if not entry or st is None or entry["files"].get(ip) != file_ident(st, dir_fd, ip):
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
        well_formed = ident is None or (isinstance(ident, str) and ident.count(" ") == 1)
        if not name or name.strip(ADDRESS_CHARS) or not well_formed:
            return False
    return True


def loads_or_none(data: bytes | None) -> object:
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


# The owner index (``.cni-ipam/index/``): INDEX_BUCKETS bucket files named by their number, each
# holding one line per attachment (UTF-8, "\n" after each line):
#
#     <containerID> TAB <ifname, empty for an ID-only owner> TAB <ip> <inode> <ctime_ns>[,...] TAB <tail>
#
# where <tail> is JSON ``{"meta": {...}, "seenBoot": "..."}``.  An attachment's line lives in bucket
# ``bucket_of(index_field(cid, ifname))``.  Why lines in buckets and not a file per owner: the first
# call on a directory host-local wrote (and the first call after a reboot) indexes every owner at
# once; 256 files are written in a few ms where 60,000 took seconds, and a lookup still reads one
# bucket (~235 lines, ~25 KB at 60,000 owners).  Nothing here is trusted: ``parse_line`` checks every field.
INDEX_BUCKETS = 256  # a power of two: the top 8 bits of the multiplicative hash
_M61 = (1 << 61) - 1
_FIB = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: multiplicative (Fibonacci) hashing


def index_field(cid: str, ifname: str | None) -> str:
    """The start of an attachment's index line (and what its bucket is computed from)."""
    return f"{cid}\t{ifname or ''}"


def bucket_of(field: str) -> int:
    """The bucket of an index line: the UTF-8 bytes of its field as a number, folded modulo 2**61-1
    and spread by a multiplicative hash (stable across processes and platforms, unlike ``hash``;
    no zlib or hashlib to import on the plugin path; IDs that differ in one digit land apart)."""
    value = int.from_bytes(field.encode("utf-8", "surrogateescape"), "little") % _M61
    return ((value * _FIB) & 0xFFFFFFFFFFFFFFFF) >> 56


def format_tail(meta: dict, seen_boot: str) -> str:
    return json.dumps({"meta": meta, "seenBoot": seen_boot}, sort_keys=True)


def format_line(cid: str, ifname: str | None, ips: list, files: dict, meta: dict, seen_boot: str) -> str:
    """The index line of an attachment (callers pass validated names and canonical addresses)."""
    items = ",".join(f"{ip} {files[ip][0]} {files[ip][1]}" for ip in ips)
    return f"{index_field(cid, ifname)}\t{items}\t{format_tail(meta, seen_boot)}"


def parse_tail(text: str) -> tuple[dict, str] | None:
    tail = loads_or_none(text.encode("utf-8", "surrogateescape"))
    if (
        not isinstance(tail, dict)
        or len(tail) != 2
        or not isinstance(tail.get("meta"), dict)
        or not isinstance(tail.get("seenBoot"), str)
    ):
        return None
    return tail["meta"], tail["seenBoot"]


def _digits(text: str) -> bool:
    return text.isdigit() and text.isascii()


def parse_line(line: str, bucket: int | None = None) -> dict | None:
    """The owner entry of an index line (the shape ``valid_entry`` checks), or None when the line lies:
    a field missing or of the wrong form, an invalid owner, a non-canonical or repeated address, a
    line in another owner's bucket."""
    parts = line.split("\t")
    if len(parts) != 4:
        return None
    cid, ifname, items, tail = parts
    if not is_container_id(cid) or (ifname and ifname_problem(ifname)):
        return None
    if bucket is not None and bucket_of(f"{cid}\t{ifname}") != bucket:
        return None
    ips: list[str] = []
    files: dict[str, list] = {}
    for item in items.split(","):
        ip, _, rest = item.partition(" ")
        ino, sep, ctime = rest.partition(" ")
        if not sep or not _digits(ino) or not _digits(ctime) or ip in files or parse_ip_name(ip) is None:
            return None
        ips.append(ip)
        files[ip] = [int(ino), int(ctime)]
    parsed = parse_tail(tail)
    if parsed is None:
        return None
    return {
        "containerID": cid,
        "ifname": ifname or None,
        "ips": ips,
        "files": files,
        "meta": parsed[0],
        "seenBoot": parsed[1],
    }


def split_bucket(text: str) -> dict[str, str] | None:
    """{field: line} of a bucket's text, or None when two lines claim one attachment (a lie).
    Lines are not checked here: ``parse_line`` checks the one that is used."""
    out: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            continue
        first = line.find("\t")
        second = line.find("\t", first + 1) if first >= 0 else -1
        field = line[:second] if second >= 0 else line
        if field in out:
            return None
        out[field] = line
    return out


_OCTETS = frozenset(str(i) for i in range(256))


def is_address_name(name: str) -> bool:
    """``parse_ip_name(name) is not None``, with a fast path for dotted quads (a rebuild asks once per
    file): a name without ':' is an address exactly when it is four octets 0-255 without leading
    zeros, which is what ``parse_ip_name`` accepts for IPv4."""
    if ":" in name:
        return parse_ip_name(name) is not None
    parts = name.split(".")
    return (
        len(parts) == 4 and parts[0] in _OCTETS and parts[1] in _OCTETS and parts[2] in _OCTETS and parts[3] in _OCTETS
    )


def content_parser():
    """``parse_content`` for many files in a row: the same answers, with the verdict on each
    interface name remembered (a directory holds a few names, "eth0" for most files)."""
    verdicts: dict[str, str | None] = {}

    def remembered_problem(ifname: str) -> str | None:
        try:
            return verdicts[ifname]
        except KeyError:
            problem = ifname_problem(ifname)
            if len(verdicts) < 64:  # a directory of unusual names is not remembered name by name
                verdicts[ifname] = problem
            return problem

    def parse(data: bytes) -> tuple[str, str | None, str | None]:
        return parse_content(data, remembered_problem)

    return parse
