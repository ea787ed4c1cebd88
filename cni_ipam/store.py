"""The on-disk contract, host-local compatible.  The only module that touches reservation files.

Layout of ``<dataDir>/<network>/``:

* ``lock`` - ``flock(LOCK_EX)`` for the whole of an ADD, DEL, CHECK or GC (host-local locks the same
  file, so both plugins can share a directory).  Waiting is bounded: code 11 after the timeout.
* ``<ip>`` - one file per reserved address, content ``containerID\\r\\nifname`` (old files holding
  only the container ID are honoured), mode 0600.  Created by writing a temporary file, fsync, then
  ``link()`` into place (fails if the name exists: an exclusive create that is never half-written),
  then fsync of the directory.
* ``last_reserved_ip.<rangeSetIndex>`` - the round-robin cursor, replaced atomically.
* ``.cni-ipam/`` - our own bookkeeping, which host-local never reads as a reservation:
  ``owners/<containerID>:<ifname>`` (JSON: the addresses of that attachment and GC metadata),
  ``state`` (a marker that says the owner index matches the directory) and ``tmp/``.

Why an owner index: host-local reads every reservation file on each ADD and DEL (O(n)).  We keep an
index by owner so ADD and DEL cost the same at 60,000 reservations as at none.  The index is
trusted only while the network directory is exactly as we left it: after each change we set the
directory's mtime to a marker one second in the past and record it.  Any create or unlink by someone
else (host-local, an admin, a crash half-way) sets the mtime to "now" and the marker no longer
matches.  The next call then catches up: it stats every entry but reads only the files whose ctime
is newer than the marker (host-local never rewrites a reservation, it creates or removes them), so
a host-local write costs us a directory scan, not a read of every file.  Two guards keep a clock
step from hiding a file: the state records the wall time of our last change (a clock now behind it
forces a rebuild) and the number of directory entries (more new entries than new ctimes forces a
rebuild).  Without a usable state
file (first use of a host-local directory, a new boot id after a power cut) the index is rebuilt
from every reservation file, once.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import stat
import time

from cni_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CniError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, Iterator, List, Optional, Tuple

META_DIR = ".cni-ipam"
OWNERS_DIR = "owners"
TMP_DIR = "tmp"
STATE_FILE = "state"
LOCK_FILE = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_STATE_VERSION = 1
_RESERVE_TMP = "reserve"
_WRITE_TMP = "write"
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _LockTimeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - timing dependent
    raise _LockTimeout()


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


def parse_owner(data: bytes) -> "Optional[Tuple[str, Optional[str]]]":
    """(containerID, ifname) of a reservation file's content; ifname None for ID-only files."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None
    cid, sep, ifname = text.partition(LINE_BREAK)
    return (cid.strip(), ifname if sep else None)


def owner_key(cid: str, ifname: "Optional[str]") -> str:
    key = f"{cid}:{ifname or ''}"
    if len(key.encode()) > 200:  # keep file names under NAME_MAX whatever the ID length
        import hashlib

        key = "sha256-" + hashlib.sha256(key.encode()).hexdigest()
    return key


class Reservation:
    """One reserved address as found on disk."""

    __slots__ = ("address", "container_id", "ifname", "path")

    def __init__(self, address, container_id: "Optional[str]", ifname: "Optional[str]", path: str) -> None:
        self.address = address
        self.container_id = container_id
        self.ifname = ifname
        self.path = path

    def __repr__(self) -> str:
        return f"Reservation({self.address}, {self.container_id!r}, {self.ifname!r})"


class NetworkStore:
    """The locked state of one network.  Use as a context manager::

        with NetworkStore(data_dir, name, timeout) as store:
            store.reserve(addr, cid, ifname)
            store.save_owner(cid, ifname, [addr], meta)
            store.set_last_reserved(0, addr)

    Changes are made as the methods are called; ``commit()`` (called by ``__exit__`` when no
    exception escaped) writes the cursors and the index marker.  ``rollback()`` (called when an
    exception escaped) removes the reservation files this instance created and nothing else.
    """

    def __init__(self, data_dir: str, network: str, lock_timeout: float = 30.0, create: bool = True) -> None:
        self.data_dir = data_dir
        self.network = network
        self.path = os.path.join(data_dir, network)
        self.lock_timeout = lock_timeout
        self.create = create
        self.exists = False
        self.dir_fd = -1
        self._lock_fd = -1
        self._meta_fd = -1
        self._owners_fd = -1
        self._tmp_fd = -1
        self._dirty = False
        self._boot_id = ""
        self._created: "List[str]" = []  # reservation files made by this instance (for rollback)
        self._saved_owners: "Dict[str, Optional[bytes]]" = {}  # owner entries before save_owner (rollback)
        self._cursors: "Dict[int, str]" = {}
        self._reserve_tmp_owner: "Optional[str]" = None
        self._index_written = False  # an owner entry changed since open
        self.rebuilt_index = False  # True when this call rebuilt or caught up the owner index
        self._entries = 0  # directory entries that may be reservations (see _is_entry)

    # ----------------------------------------------------------------- open / lock / close
    def __enter__(self) -> "NetworkStore":
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.commit()
                except BaseException:
                    self.rollback()  # e.g. ENOSPC on the cursor: the call fails, so keep nothing
                    raise
            else:
                self.rollback()
        finally:
            self._close()

    def _open(self) -> None:
        try:
            if self.create:
                os.makedirs(self.data_dir, 0o755, exist_ok=True)
            data_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if self.create:
                raise self._io_error("create data directory", self.data_dir) from None
            return
        except OSError as exc:
            raise self._io_error("open data directory", self.data_dir, exc) from None
        try:
            if self.create:
                try:
                    os.mkdir(self.network, 0o755, dir_fd=data_fd)
                except FileExistsError:
                    pass
            try:
                self.dir_fd = os.open(self.network, _O_DIR, dir_fd=data_fd)
            except FileNotFoundError:
                if self.create:
                    raise
                return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CniError(IO_FAILURE, f"{self.path} is not a directory (a symlink or a file is in the way)", self.path) from None
            raise self._io_error("open network directory", self.path, exc) from None
        finally:
            os.close(data_fd)
        self.exists = True
        try:
            self._lock_fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.dir_fd)
        except OSError as exc:
            raise self._io_error("open lock file", os.path.join(self.path, LOCK_FILE), exc) from None
        self._lock()
        self._open_meta()
        self._check_index()

    def _lock(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        import signal  # only when contended: the module builds enums on import (plugin start-up time)

        previous = signal.signal(signal.SIGALRM, _alarm)
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, self.lock_timeout)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        except _LockTimeout:
            raise CniError(
                TRY_AGAIN_LATER,
                f"could not lock {os.path.join(self.path, LOCK_FILE)} within {self.lock_timeout:g}s; another operation holds it",
                os.path.join(self.path, LOCK_FILE),
            ) from None

    def _open_meta(self) -> None:
        try:
            self._meta_fd = _open_subdir(self.dir_fd, META_DIR)
            self._owners_fd = _open_subdir(self._meta_fd, OWNERS_DIR)
            self._tmp_fd = _open_subdir(self._meta_fd, TMP_DIR)
            for name in os.listdir(self._tmp_fd):  # left by a process killed mid-write
                os.unlink(name, dir_fd=self._tmp_fd)
        except OSError as exc:
            raise self._io_error("prepare", os.path.join(self.path, META_DIR), exc) from None

    def _close(self) -> None:
        for attr in ("_tmp_fd", "_owners_fd", "_meta_fd", "dir_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                try:
                    os.close(fd)  # closing the lock fd releases the flock
                except OSError:
                    pass
                setattr(self, attr, -1)

    @property
    def boot_id(self) -> str:
        return self._boot_id

    # ----------------------------------------------------------------- index freshness
    def _check_index(self) -> None:
        """Trust, catch up or rebuild the owner index (see the module docstring)."""
        self._boot_id = read_boot_id()
        try:
            with open(STATE_FILE, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW, dir_fd=self._meta_fd)) as fh:
                state = json.loads(fh.read())
            st = os.fstat(self.dir_fd)
        except (OSError, ValueError):
            state = None
        if not (
            isinstance(state, dict)
            and state.get("v") == _STATE_VERSION
            and isinstance(state.get("mtime"), int)
            and state.get("ino") == st.st_ino
            and state.get("boot") == self._boot_id
            and isinstance(state.get("entries"), int)
        ):
            self.rebuild_index()
        elif state["mtime"] == st.st_mtime_ns:
            self._entries = state["entries"]
        elif time.time_ns() < state["mtime"]:
            # The wall clock went back since our last change: ctimes cannot be trusted.
            self.rebuild_index()
        # The marker was set one second after our last change; anything created since then
        # has a later ctime.  One more second of slack covers the kernel's coarse clock.
        elif not self.catch_up(state["mtime"] - 1_000_000_000, state["entries"]):
            self.rebuild_index()

    def catch_up(self, since_ns: int, entries_then: int) -> bool:
        """Index the reservation files created since ``since_ns`` (someone else wrote them).

        Costs a stat of each directory entry but reads only the new files.  Entries whose files
        someone else removed stay in the index: every lookup checks the reservation file's owner,
        so they are never believed, and the owner's DEL (or a rebuild) drops them.  Returns False
        (and changes nothing) when the directory grew by more entries than carry a new ctime: a
        file was created with an older timestamp (a clock step), so only a rebuild is safe.
        """
        found: "Dict[str, Tuple[str, Optional[str], List[str]]]" = {}
        total = recent = 0
        with os.scandir(self.dir_fd) as entries:
            for entry in entries:
                name = entry.name
                if not _is_entry(name):
                    continue
                total += 1
                try:
                    if entry.stat(follow_symlinks=False).st_ctime_ns < since_ns:
                        continue
                except OSError:
                    continue
                recent += 1
                if parse_ip_name(name) is None:
                    continue
                data = self._read_file(self.dir_fd, name)
                owner = parse_owner(data) if data is not None else None
                if owner is not None:
                    found.setdefault(owner_key(*owner), (owner[0], owner[1], []))[2].append(name)
        if total - entries_then > recent:
            return False
        self._entries = total
        for key, (cid, ifname, ips) in found.items():
            entry = self._read_owner_file(key) or {}
            known = list(entry.get("ips", []))
            if any(ip not in known for ip in ips):
                self._write_owner_file(key, cid, ifname, known + [ip for ip in ips if ip not in known], entry.get("meta", {}))
        self._dirty = True
        self.rebuilt_index = True
        return True

    def rebuild_index(self) -> None:
        """Make ``.cni-ipam/owners`` describe exactly the reservation files (one O(n) pass)."""
        found: "Dict[str, Tuple[str, Optional[str], List[str]]]" = {}
        self._entries = sum(1 for name in os.listdir(self.dir_fd) if _is_entry(name))
        for res in self._scan():
            if res.container_id is None:
                continue
            key = owner_key(res.container_id, res.ifname)
            found.setdefault(key, (res.container_id, res.ifname, []))[2].append(str(res.address))
        for name in os.listdir(self._owners_fd):
            entry = self._read_owner_file(name)
            if name not in found:
                os.unlink(name, dir_fd=self._owners_fd)
                continue
            cid, ifname, ips = found.pop(name)
            if entry is None or sorted(entry.get("ips", [])) != sorted(ips):
                meta = (entry or {}).get("meta", {})
                self._write_owner_file(name, cid, ifname, ips, meta)
        for name, (cid, ifname, ips) in found.items():
            self._write_owner_file(name, cid, ifname, ips, {})
        self._dirty = True
        self.rebuilt_index = True

    # ----------------------------------------------------------------- reservations
    def reserve(self, addr, cid: str, ifname: str) -> bool:
        """Reserve ``addr`` for (cid, ifname); False when someone already holds it."""
        name = str(addr)
        owner = cid.strip() + LINE_BREAK + ifname
        try:
            if self._reserve_tmp_owner != owner:
                if self._reserve_tmp_owner is not None:
                    # The old temp file is hard-linked to reservations made already: rewriting it
                    # in place would change their owner too.  Start a new inode.
                    os.unlink(_RESERVE_TMP, dir_fd=self._tmp_fd)
                self._write_tmp(_RESERVE_TMP, owner.encode(), fsync=True)
                self._reserve_tmp_owner = owner
            os.link(_RESERVE_TMP, name, src_dir_fd=self._tmp_fd, dst_dir_fd=self.dir_fd, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._io_error("reserve", os.path.join(self.path, name), exc) from None
        self._created.append(name)
        self._entries += 1
        self._dirty = True
        return True

    def holder(self, addr) -> "Optional[Tuple[str, Optional[str]]]":
        """Who holds ``addr`` (containerID, ifname), or None when it is free or unreadable."""
        data = self._read_file(self.dir_fd, str(addr))
        return None if data is None else parse_owner(data)

    def release(self, addr, cid: str, ifname: "Optional[str]") -> bool:
        """Remove the reservation of ``addr`` if (and only if) it belongs to (cid, ifname)."""
        owner = self.holder(addr)
        if owner is None or owner[0] != cid.strip() or owner[1] not in (ifname, None):
            return False
        return self._unlink_reservation(str(addr))

    def _unlink_reservation(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._io_error("release", os.path.join(self.path, name), exc) from None
        self._entries -= 1
        self._dirty = True
        return True

    def _held_by_owner(self, cid: str, ifname: str) -> "Iterator[Tuple[str, List[str]]]":
        """(index key, addresses the reservation files confirm) for (cid, ifname) and for cid's
        old ID-only reservations; index entries are never believed without the file."""
        for key, want_ifname in ((owner_key(cid, ifname), ifname), (owner_key(cid, None), None)):
            entry = self._read_owner_file(key)
            if entry is not None:
                yield key, [ip for ip in entry.get("ips", []) if self.holder(ip) == (cid.strip(), want_ifname)]

    def owned_by(self, cid: str, ifname: str) -> list:
        """Addresses held by (cid, ifname), including old ID-only reservations of cid."""
        return [ipaddress.ip_address(ip) for _, held in self._held_by_owner(cid, ifname) for ip in held]

    def owner_meta(self, cid: str, ifname: "Optional[str]") -> "Optional[dict]":
        entry = self._read_owner_file(owner_key(cid, ifname))
        return None if entry is None else entry.get("meta", {})

    def save_owner(self, cid: str, ifname: str, addrs: list, meta: dict) -> None:
        """Record (cid, ifname) as holding ``addrs`` in addition to what it already held."""
        key = owner_key(cid, ifname)
        if key not in self._saved_owners:
            self._saved_owners[key] = self._read_file(self._owners_fd, key)
        entry = self._read_owner_file(key) or {}
        ips = list(dict.fromkeys(list(entry.get("ips", [])) + [str(a) for a in addrs]))
        merged = dict(entry.get("meta", {}))
        merged.update(meta)
        self._write_owner_file(key, cid, ifname, ips, merged)

    def release_owner(self, cid: str, ifname: str) -> list:
        """Release every address of (cid, ifname) and its ID-only reservations; returns them."""
        released = []
        for key, held in self._held_by_owner(cid, ifname):
            released += [ipaddress.ip_address(ip) for ip in held if self._unlink_reservation(ip)]
            self._remove_owner_file(key)
        return released

    def release_reservation(self, res: Reservation) -> bool:
        """Release one reservation found by ``reservations()`` (GC), keeping the index right."""
        holder = self.holder(res.address)
        if holder != (res.container_id, res.ifname) and not (res.container_id is None and holder is None):
            return False
        if not self._unlink_reservation(str(res.address)):
            return False
        if res.container_id is not None:
            key = owner_key(res.container_id, res.ifname)
            entry = self._read_owner_file(key)
            if entry is not None:
                rest = [ip for ip in entry.get("ips", []) if ip != str(res.address)]
                if rest:
                    self._write_owner_file(key, res.container_id, res.ifname, rest, entry.get("meta", {}))
                else:
                    self._remove_owner_file(key)
        return True

    def reservations(self) -> "List[Reservation]":
        """Every reservation file of the network (a full scan: for GC and reports, not ADD)."""
        return list(self._scan())

    def _scan(self) -> "Iterator[Reservation]":
        for name in os.listdir(self.dir_fd):
            addr = parse_ip_name(name)
            if addr is None:
                continue
            data = self._read_file(self.dir_fd, name)
            if data is None:
                continue
            owner = parse_owner(data)
            cid, ifname = owner if owner else (None, None)
            yield Reservation(addr, cid, ifname, os.path.join(self.path, name))

    # ----------------------------------------------------------------- cursors
    def last_reserved(self, range_id: int):
        pending = self._cursors.get(range_id)
        if pending is not None:
            return ipaddress.ip_address(pending)
        data = self._read_file(self.dir_fd, f"{LAST_RESERVED_PREFIX}{range_id}")
        if not data:
            return None
        try:
            return ipaddress.ip_address(data.decode("ascii", "replace").strip())
        except ValueError:
            return None

    def set_last_reserved(self, range_id: int, addr) -> None:
        """Move the round-robin cursor; written at commit, so a failed ADD leaves it unchanged."""
        self._cursors[range_id] = str(addr)

    def meta_owner_entries(self) -> "Dict[str, dict]":
        """Every owner index entry (for GC and reports)."""
        out = {}
        for name in os.listdir(self._owners_fd):
            entry = self._read_owner_file(name)
            if entry is not None:
                out[name] = entry
        return out

    # ----------------------------------------------------------------- side records (cluster pool, issue 12)
    def read_meta(self, name: str, limit: int = 16 << 20) -> "Optional[bytes]":
        """A file of ours in ``.cni-ipam/`` (e.g. the cluster pool's ``pool.json``), or None."""
        try:
            fd = os.open(name, _O_READ | os.O_NONBLOCK, dir_fd=self._meta_fd)  # a FIFO must not hang us
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            chunks, size = [], 0
            while size < limit:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def write_meta(self, name: str, data: bytes) -> None:
        """Replace a file of ours in ``.cni-ipam/`` durably: temp file, fsync, rename, fsync the dir."""
        self._replace(self._meta_fd, name, data, fsync=True)
        try:
            os.fsync(self._meta_fd)
        except OSError as exc:
            raise self._io_error("write", name, exc) from None

    # ----------------------------------------------------------------- commit / rollback
    def commit(self) -> None:
        if self.dir_fd < 0:
            return
        try:
            for range_id, ip in self._cursors.items():
                self._replace(self.dir_fd, f"{LAST_RESERVED_PREFIX}{range_id}", ip.encode(), fsync=False)
            self._cursors.clear()
            if self._reserve_tmp_owner is not None:
                os.unlink(_RESERVE_TMP, dir_fd=self._tmp_fd)
                self._reserve_tmp_owner = None
            if self._created:
                os.fsync(self.dir_fd)  # the new reservation names are durable before we answer
            if self._dirty:
                self._write_marker()
            self._created.clear()  # only now: a failure above rolls these back
            self._saved_owners.clear()
        except OSError as exc:
            raise self._io_error("commit", self.path, exc) from None

    def rollback(self) -> None:
        """Undo what this instance reserved; other reservations are never touched."""
        if self.dir_fd < 0:
            return
        for name in self._created:
            try:
                os.unlink(name, dir_fd=self.dir_fd)
                self._entries -= 1
            except OSError:
                pass
        self._created.clear()
        self._cursors.clear()
        # Restore the owner entries this call wrote: catch_up never drops an entry, so a failed
        # ADD would otherwise leave one behind for good (one file per retry on a full disk).
        for key, old in self._saved_owners.items():
            try:
                if old is None:
                    os.unlink(key, dir_fd=self._owners_fd)
                else:
                    self._replace(self._owners_fd, key, old, fsync=False)
            except (OSError, CniError):
                pass  # a leftover entry is never believed: lookups check the reservation file
        self._saved_owners.clear()
        try:
            if self._reserve_tmp_owner is not None:
                os.unlink(_RESERVE_TMP, dir_fd=self._tmp_fd)
            if self._dirty and not self._index_written:
                # The directory holds what it held before plus nothing: the index is still right.
                self._write_marker()
        except OSError:
            pass  # the marker stays stale: the next call rebuilds the index

    def _write_marker(self) -> None:
        st = os.fstat(self.dir_fd)
        marker = time.time_ns() - 1_000_000_000
        os.utime(self.dir_fd, ns=(st.st_atime_ns, marker))
        state = {"v": _STATE_VERSION, "mtime": marker, "ino": st.st_ino, "boot": self._boot_id, "entries": self._entries}
        self._replace(self._meta_fd, STATE_FILE, json.dumps(state).encode(), fsync=False)
        self._dirty = False

    # ----------------------------------------------------------------- file helpers
    def _read_owner_file(self, key: str) -> "Optional[dict]":
        data = self._read_file(self._owners_fd, key)
        if data is None:
            return None
        try:
            entry = json.loads(data)
        except ValueError:
            return None
        return entry if isinstance(entry, dict) else None

    def _write_owner_file(self, key: str, cid: str, ifname: "Optional[str]", ips: list, meta: dict) -> None:
        body = {"containerID": cid, "ifname": ifname, "ips": ips, "meta": meta}
        self._index_written = True
        self._replace(self._owners_fd, key, json.dumps(body, sort_keys=True).encode(), fsync=False)

    def _remove_owner_file(self, key: str) -> None:
        try:
            os.unlink(key, dir_fd=self._owners_fd)
            self._index_written = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._io_error("remove owner entry", os.path.join(self.path, META_DIR, OWNERS_DIR, key), exc) from None

    @staticmethod
    def _read_file(dir_fd: int, name: str) -> "Optional[bytes]":
        try:
            fd = os.open(name, _O_READ, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            return os.read(fd, 1 << 16)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _write_tmp(self, name: str, data: bytes, fsync: bool) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._tmp_fd)
        done = False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
            done = True
        finally:
            os.close(fd)
            if not done:  # e.g. ENOSPC: leave no partial file behind
                _unlink_quietly(name, self._tmp_fd)

    def _replace(self, dir_fd: int, name: str, data: bytes, fsync: bool) -> None:
        try:
            self._write_tmp(_WRITE_TMP, data, fsync)
            try:
                os.rename(_WRITE_TMP, name, src_dir_fd=self._tmp_fd, dst_dir_fd=dir_fd)
            except OSError:
                _unlink_quietly(_WRITE_TMP, self._tmp_fd)
                raise
        except OSError as exc:
            raise self._io_error("write", name, exc) from None

    def _io_error(self, what: str, path: str, exc: "Optional[OSError]" = None) -> CniError:
        reason = exc.strerror if exc is not None and exc.strerror else (str(exc) if exc else "missing")
        return CniError(IO_FAILURE, f"cannot {what} {path}: {reason}", path)


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _is_entry(name: str) -> bool:
    """Could ``name`` be a reservation?  (.cni-ipam, lock and last_reserved_ip.* cannot.)"""
    return name[:1] not in ("", ".", "l")


def _open_subdir(parent_fd: int, name: str) -> int:
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    return os.open(name, _O_DIR, dir_fd=parent_fd)
