"""Lock-free, read-only views of the data directory, beside the store and its format.

For STATUS (``usable_problem``, ``reserved_names``: names only, no reads) and for the admin
commands (``list_networks``, ``scan_network_dir``, ``read_owner_index``): they read what is on disk
now without taking the network lock, so a report never delays an ADD.  Nothing here writes, except
the probe file ``usable_problem`` creates and removes in ``.cni-ipam/tmp``.  Every read goes through
``store.fs``: no link followed below the data directory, nothing blocking opened.
"""

from __future__ import annotations

import errno
import os
from stat import S_ISREG

from cni_ipam.store.fs import O_DIR, read_entry, unlink_quietly
from cni_ipam.store.layout import (
    INDEX_BUCKETS,
    INDEX_DIR,
    LOCK_FILE,
    META_DIR,
    TMP_DIR,
    owner_key,
    parse_ip_name,
    parse_line,
    parse_owner,
    split_bucket,
)
from cni_ipam.store import is_cni_name

TYPE_CHECKING = False  # true for type checkers only: no ``typing`` import on the STATUS path
if TYPE_CHECKING:
    from typing import Any

# ---------------------------------------------------------------------- lock-free checks (STATUS)
def usable_problem(data_dir: str, network: str) -> str:
    """Why an ADD could not use ``<data_dir>/<network>`` now, or '' when it could.

    The same walk as ``NetworkStore._open`` (the data directory followed as host-local does, then
    every level below by dir fd with ``O_NOFOLLOW``), without the lock and creating nothing but a
    probe file in ``.cni-ipam/tmp`` (which never changes the network directory's mtime, so the
    index marker stays valid).  What does not exist yet must be creatable."""
    try:
        data_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return _creatable(data_dir)
    except OSError as exc:
        return f"cannot open {data_dir}: {exc.strerror or exc}"
    fds = [data_fd]
    path = data_dir
    try:
        for name in (network, META_DIR, TMP_DIR):
            parent_path, path = path, os.path.join(path, name)
            try:
                fds.append(os.open(name, O_DIR, dir_fd=fds[-1]))
            except FileNotFoundError:  # ADD creates it (and what lies below it) here
                return _dir_problem(fds[-1], parent_path)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return f"{path} is not a directory (a symlink or a file is in the way)"
                return f"cannot open {path}: {exc.strerror or exc}"
            if name == network:
                try:
                    st = os.stat(LOCK_FILE, dir_fd=fds[-1], follow_symlinks=False)
                    if not S_ISREG(st.st_mode) and not _stat_is_fifo(st):
                        return f"{os.path.join(path, LOCK_FILE)} is not a regular file"
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    return f"cannot stat {os.path.join(path, LOCK_FILE)}: {exc.strerror or exc}"
            if name == META_DIR:
                try:
                    st = os.stat(INDEX_DIR, dir_fd=fds[-1], follow_symlinks=False)
                    if not _stat_is_dir(st):
                        return f"{os.path.join(path, INDEX_DIR)} is not a directory (a symlink or a file is in the way)"
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    return f"cannot stat {os.path.join(path, INDEX_DIR)}: {exc.strerror or exc}"
        # A name no earlier probe can hold: a STATUS killed between create and unlink leaves its
        # probe behind, and a runtime that runs plugins as pid 1 of a fresh PID namespace gives
        # every STATUS the same pid (an ADD opening the store removes the leftover).
        probe = f".status-probe.{os.getpid()}.{os.urandom(6).hex()}"
        try:
            fd = os.open(
                probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fds[-1]
            )
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                unlink_quietly(probe, fds[-1])  # an ADD opening the store may have cleaned tmp/ already
        except OSError as exc:
            return f"cannot create a file in {path}: {exc.strerror or exc}"
        return ""
    finally:
        for fd in fds:
            os.close(fd)


def reserved_names(data_dir: str, network: str) -> list[str]:
    """Address-named entries of a network directory, by name only (no lock, no reads, no links
    followed); [] when the directory does not exist."""
    try:
        data_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        fd = os.open(network, O_DIR, dir_fd=data_fd)
    except OSError:
        return []
    finally:
        os.close(data_fd)
    try:
        return [name for name in os.listdir(fd) if parse_ip_name(name) is not None]
    finally:
        os.close(fd)


def _stat_is_dir(st: os.stat_result) -> bool:
    from stat import S_ISDIR

    return S_ISDIR(st.st_mode)


def _stat_is_fifo(st: os.stat_result) -> bool:
    from stat import S_ISFIFO

    return S_ISFIFO(st.st_mode)


def _dir_problem(dir_fd: int, path: str) -> str:
    """'' when we may create entries in the open directory ``dir_fd`` (read-only mounts included)."""
    return "" if os.access(".", os.W_OK | os.X_OK, dir_fd=dir_fd) else f"cannot create entries in {path}: not writable"


def _creatable(path: str) -> str:
    """'' when ``makedirs(path)`` could succeed: the nearest existing ancestor is a writable directory."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"cannot create directories in {path}: not writable"
    return ""


# ---------------------------------------------------------------------- lock-free scan (admin)
def list_networks(data_dir: str) -> list[str]:
    """Network directories under ``data_dir`` (names as CNI allows them), sorted."""
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return []
    return sorted(
        n
        for n in names
        if is_cni_name(n) and os.path.isdir(os.path.join(data_dir, n)) and not os.path.islink(os.path.join(data_dir, n))
    )


class Entry:
    """One reservation file as read without the lock, with its owner's metadata and verdict."""

    __slots__ = ("address", "container_id", "ifname", "meta", "mtime", "set_index", "verdict")

    def __init__(self, address, container_id, ifname, meta: dict, mtime: float | None) -> None:
        self.address = address
        self.container_id = container_id
        self.ifname = ifname
        self.meta = meta
        self.mtime = mtime
        self.set_index: int | None = None
        self.verdict: Any = None  # an admin.liveness.Verdict, set by the admin commands

    @property
    def created(self) -> tuple[float | None, str]:
        created = self.meta.get("created")
        if isinstance(created, (int, float)) and not isinstance(created, bool):
            return float(created), "meta"
        return self.mtime, "mtime"

    @property
    def attachment(self) -> tuple:
        """(container ID, ifname); a file whose owner cannot be read is an attachment of its own."""
        return (self.container_id, self.ifname) if self.container_id is not None else ("", str(self.address))

    @property
    def stranded(self) -> bool:
        return self.verdict is not None and self.verdict.stranded

    @property
    def pod(self) -> dict | None:
        k8s = self.meta.get("k8s")
        return k8s if isinstance(k8s, dict) and k8s else None

    def to_json(self, now: float) -> dict:
        created, source = self.created
        out = {
            "ip": str(self.address),
            "containerID": self.container_id,
            "ifname": self.ifname,
            "rangeSet": self.set_index,
            "pod": self.pod,
            "created": created,
            "createdFrom": source if created is not None else None,
            "ageSeconds": None if created is None else round(max(now - created, 0.0), 3),
        }
        if self.verdict is not None:
            out["liveness"] = self.verdict.to_json()
        return out


def _read(dir_fd: int, name: str) -> tuple[bytes | None, float | None]:
    """(content, mtime); never blocks or follows a link (``store.read_entry``).  Something that is not
    a regular file (FIFO, device, directory) reads as empty: reserved, owner unknown."""
    kind, data, st = read_entry(dir_fd, name)
    if kind is None:
        return None, None
    return (data if data is not None else b""), (st.st_mtime if st is not None else None)


def read_owner_index(path: str) -> dict[str, dict]:
    """The owner index of a network directory by ``owner_key`` ({} for a host-local directory):
    ``.cni-ipam/index/`` (entries checked as the store checks them; lines that lie are left out)."""
    out: dict[str, dict] = {}
    try:
        fd = os.open(
            os.path.join(path, META_DIR, INDEX_DIR), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError:
        return out
    try:
        for name in os.listdir(fd):
            if not (name.isdigit() and name.isascii() and str(int(name)) == name and int(name) < INDEX_BUCKETS):
                continue
            data, _ = _read(fd, name)
            try:
                lines = split_bucket(data.decode("utf-8")) if data else None
            except UnicodeDecodeError:
                lines = None
            for line in (lines or {}).values():
                entry = parse_line(line, int(name))
                if entry is not None:
                    out[owner_key(entry["containerID"], entry["ifname"])] = entry
    finally:
        os.close(fd)
    return out


def scan_network_dir(path: str) -> list[Entry]:
    """Every reservation of the network directory ``path``, sorted by address; [] if it is missing.

    Raises OSError when the directory exists but cannot be read."""
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    owners = read_owner_index(path)
    entries: list[Entry] = []
    try:
        for name in os.listdir(dir_fd):
            if name == LOCK_FILE:
                continue
            addr = parse_ip_name(name)
            if addr is None:
                continue
            data, mtime = _read(dir_fd, name)
            if data is None:  # released between listdir and open
                continue
            owner = parse_owner(data)
            cid, ifname = owner if owner else (None, None)
            meta: dict = {}
            if cid is not None:
                entry = owners.get(owner_key(cid, ifname))
                if entry is not None and isinstance(entry.get("meta"), dict):
                    meta = entry["meta"]
            entries.append(Entry(addr, cid, ifname, meta, mtime))
    finally:
        os.close(dir_fd)
    entries.sort(key=lambda e: (e.address.version, int(e.address)))
    return entries
