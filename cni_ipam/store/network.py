"""The locked transaction on one network directory (host-local compatible): the only module that
creates or removes reservation files.  The on-disk layout, the owner index's formats and when the
index is trusted are described in one place: docs/core.md, "On-disk layout".

Every call takes ``flock(LOCK_EX)`` on ``<network>/lock`` (as host-local does) for its whole length,
bounded by ``lockTimeout`` (then code 11).  A reservation is created by linking a fsynced temporary
file into place (an exclusive create that is never half-written), then the directory is fsynced.
Nothing read from disk is trusted as a path or a type: address-named entries are ``lstat``-ed
first and opened ``O_NONBLOCK|O_NOFOLLOW`` only when they are regular files; content that is no
valid owner is *opaque*, never used as a name; anything but a regular file is *special*.  Every
lookup re-reads the reservation's owner: the index only says where to look.  The index half of the
object (catch-up, rebuild, buckets, snapshot, marker) is ``store.index.OwnerIndex``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from cni_ipam.addr import ip_address
from cni_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CniError
from cni_ipam.store.fs import (
    DIR_MODE,
    O_DIR,
    O_READ,
    SPECIAL,
    makedirs,
    open_private_subdir,
    read_entry,
    read_listed,
    remove_junk,
    unlink_quietly,
)
from cni_ipam.store.layout import (
    ADDRESS_CHARS,
    EMPTY,
    INDEX_DIR,
    LAST_RESERVED_PREFIX,
    LINE_BREAK,
    LOCK_FILE,
    META_DIR,
    OWNED,
    TMP_DIR,
    Reservation,
    file_ident,
    format_line,
    index_field,
    parse_content,
    parse_ip_name,
    parse_owner,
    set_key,
)
from cni_ipam.store.index import _SNAP_TMP, OwnerIndex

_RESERVE_TMP = "reserve"


class _LockTimeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - timing dependent
    raise _LockTimeout()


class NetworkStore(OwnerIndex):
    """The locked state of one network.  Use as a context manager::

        with NetworkStore(data_dir, name, timeout) as store:
            store.reserve(addr, cid, ifname)
            store.save_owner(cid, ifname, [addr], meta)
            store.set_last_reserved(0, addr)

    Reservations and releases happen as the methods are called; ``commit()`` (called by ``__exit__``
    when no exception escaped) writes the owner entries of ``save_owner`` and of the releases, the
    cursors and the index marker.  ``rollback()`` (called when an exception escaped) removes the
    reservation files this instance created and nothing else.
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
        self._index_fd = -1
        self._tmp_fd = -1
        self._dirty = False
        self._boot_id = ""
        self._created: list[str] = []  # reservation files made by this instance (for rollback)
        self._released = False  # a reservation file was unlinked by this instance
        self._pending: dict[str, tuple[str, str, list[str], dict]] = {}  # save_owner, written at commit
        self._cursors: dict[int, str] = {}
        self._reserve_tmp_owner: str | None = None
        self._buckets: dict[int, dict[str, str]] = {}  # index buckets read by this call: {field: line}
        self._changed: set[int] = set()  # buckets changed in memory, written at commit
        self._flushed: dict[int, bytes | None] = {}  # buckets a commit wrote: their content before (rollback)
        self._index_written = False  # a bucket file was written since open
        self._snap = ""  # id of the ``files`` snapshot the state refers to
        self._new_snap = ""  # id of a snapshot waiting in tmp/ for the commit (after a full listing)
        self._delta: dict[str, str | None] = {}  # our changes since that snapshot (name: set key)
        self._delta_at_open: dict[str, str | None] = {}
        self._index_lost = False  # index/ did not exist when this call opened the store

    # ----------------------------------------------------------------- open / lock / close
    def __enter__(self) -> NetworkStore:
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
                makedirs(self.data_dir)
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
                    os.mkdir(self.network, DIR_MODE, dir_fd=data_fd)
                except FileExistsError:
                    pass
            try:
                self.dir_fd = os.open(self.network, O_DIR, dir_fd=data_fd)
            except FileNotFoundError:
                if self.create:
                    raise
                return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CniError(
                    IO_FAILURE, f"{self.path} is not a directory (a symlink or a file is in the way)", self.path
                ) from None
            raise self._io_error("open network directory", self.path, exc) from None
        finally:
            os.close(data_fd)
        self.exists = True
        try:
            self._lock_fd = os.open(
                LOCK_FILE,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                0o600,
                dir_fd=self.dir_fd,
            )
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
        except OSError as exc:
            raise self._io_error("lock", os.path.join(self.path, LOCK_FILE), exc) from None
        # Only when contended.  The C module, not ``signal``: that one builds enums on import (about
        # 2 ms of a plugin call, paid by every call that lost the race in a storm).
        import _signal  # type: ignore[import-not-found]

        previous = _signal.signal(_signal.SIGALRM, _alarm)
        try:
            try:
                _signal.setitimer(_signal.ITIMER_REAL, self.lock_timeout)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            finally:
                _signal.setitimer(_signal.ITIMER_REAL, 0)
                _signal.signal(_signal.SIGALRM, previous)
        except _LockTimeout:
            raise CniError(
                TRY_AGAIN_LATER,
                f"could not lock {os.path.join(self.path, LOCK_FILE)} within {self.lock_timeout:g}s; "
                "another operation holds it",
                os.path.join(self.path, LOCK_FILE),
            ) from None

    def _open_meta(self) -> None:
        try:
            self._meta_fd = open_private_subdir(self.dir_fd, META_DIR)
            try:
                os.mkdir(INDEX_DIR, 0o700, dir_fd=self._meta_fd)
                self._index_lost = True  # a state that says "current" cannot describe an index just created
            except FileExistsError:
                pass
            self._index_fd = os.open(INDEX_DIR, O_DIR, dir_fd=self._meta_fd)  # made just above, or there
            self._tmp_fd = open_private_subdir(self._meta_fd, TMP_DIR)
            for name in os.listdir(self._tmp_fd):  # left by a process killed mid-write
                remove_junk(name, self._tmp_fd)
        except OSError as exc:
            raise self._io_error("prepare", os.path.join(self.path, META_DIR), exc) from None

    def _close(self) -> None:
        for attr in ("_tmp_fd", "_index_fd", "_meta_fd", "dir_fd", "_lock_fd"):
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

    # ----------------------------------------------------------------- reservations
    def reserve(self, addr, cid: str, ifname: str) -> bool:
        """Reserve ``addr`` for (cid, ifname); False when someone (or something) already holds it."""
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
        self._dirty = True
        return True

    def unreserve(self, addr) -> None:
        """Undo a ``reserve`` of this call (a cluster pool's etcd refused the address)."""
        name = str(addr)
        if name in self._created:
            self._created.remove(name)
            unlink_quietly(name, self.dir_fd)

    def holder(self, addr) -> tuple[str, str | None] | None:
        """Who holds ``addr`` (containerID, ifname), or None when it is free, not a regular file,
        empty or opaque."""
        kind, data, _ = read_entry(self.dir_fd, str(addr))
        return parse_owner(data) if kind == "file" else None

    def _unlink_reservation(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._io_error("release", os.path.join(self.path, name), exc) from None
        self._delta[name] = None
        self._dirty = True
        self._released = True
        return True

    def _held_by_owner(
        self, cid: str, ifname: str
    ):  # yields (ifname, entry, addresses): tuple[str | None, dict, list[str]]
        """(ifname of the entry, entry, addresses the reservation files confirm) for (cid, ifname)
        and for cid's old ID-only reservations; index entries are never believed without the file."""
        cid = cid.strip()
        for want_ifname in (ifname, None):
            entry = self._entry(cid, want_ifname)
            if entry is not None:
                yield want_ifname, entry, [ip for ip in entry["ips"] if self.holder(ip) == (cid, want_ifname)]

    def owned_by(self, cid: str, ifname: str) -> list:
        """Addresses held by (cid, ifname), including old ID-only reservations of cid."""
        return [ip_address(ip) for _, _, held in self._held_by_owner(cid, ifname) for ip in held]

    def owner_entry(self, cid: str, ifname: str | None) -> dict | None:
        """The valid owner-index entry of (cid, ifname) (with ``meta`` and ``seenBoot``), or None."""
        return self._entry(cid.strip(), ifname)

    def save_owner(self, cid: str, ifname: str, addrs: list, meta: dict) -> None:
        """Record (cid, ifname) as holding ``addrs`` (reserved by this call) in addition to what it
        already held; written at commit, when the new files' identities are final."""
        cid = cid.strip()
        key = index_field(cid, ifname)
        prev = self._pending.get(key)
        names = (prev[2] if prev else []) + [str(a) for a in addrs]
        merged = dict(prev[3]) if prev else {}
        merged.update(meta)
        self._pending[key] = (cid, ifname, names, merged)

    def release_owner(self, cid: str, ifname: str) -> list:
        """Release every address of (cid, ifname) and its ID-only reservations; returns them."""
        released = []
        for want_ifname, _, held in list(self._held_by_owner(cid, ifname)):
            released += [ip_address(ip) for ip in held if self._unlink_reservation(ip)]
            self._put(cid.strip(), want_ifname, None)
        return released

    def release_reservation(self, res: Reservation) -> bool:
        """Release one reservation found by ``reservations()`` (GC), keeping the index right.

        Only an OWNED or EMPTY file that is still the very file that was judged (same owner and
        inode) is removed; opaque and special entries are never released by us."""
        if res.kind not in (OWNED, EMPTY):
            return False
        name = str(res.address)
        kind, data, st = read_entry(self.dir_fd, name)
        # Same inode: the file judged (the lock is held since; a sibling link's release changes
        # the ctime, not the inode).
        if kind != "file" or st is None or (res.ident is not None and st.st_ino != res.ident[0]):
            return False
        now_kind, cid, ifname = parse_content(data)
        if now_kind != res.kind or (cid, ifname) != (res.container_id, res.ifname):
            return False
        if not self._unlink_reservation(name):
            return False
        if res.kind == OWNED and cid is not None:
            entry = self._entry(cid, ifname)
            if entry is not None:
                rest = [ip for ip in entry["ips"] if ip != name]
                if rest:
                    files = {ip: entry["files"][ip] for ip in rest}
                    for ip in rest:  # a sibling linked to the same inode got a new ctime
                        if files[ip][0] == st.st_ino:
                            try:
                                files[ip] = file_ident(
                                    os.stat(ip, dir_fd=self.dir_fd, follow_symlinks=False), self.dir_fd, ip
                                )
                                self._delta[ip] = set_key(files[ip])
                            except OSError:
                                pass
                    self._put(cid, ifname, format_line(cid, ifname, rest, files, entry["meta"], entry["seenBoot"]))
                else:
                    self._put(cid, ifname, None)
        return True

    def reservations(self) -> list[Reservation]:
        """Every address-named entry of the network (a full scan: for GC and reports, not ADD)."""
        return list(self._scan())

    def _scan(self):  # yields Reservation
        fd = self.dir_fd
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                if name.strip(ADDRESS_CHARS):
                    continue
                addr = parse_ip_name(name)
                if addr is None:
                    continue
                kind, data, st = read_listed(fd, entry)
                if kind is None:
                    continue
                ident = file_ident(st, fd, name) if st is not None else None
                path = os.path.join(self.path, name)
                if kind != "file":
                    yield Reservation(addr, None, None, path, SPECIAL, ident)
                    continue
                owner_kind, cid, ifname = parse_content(data)
                yield Reservation(addr, cid, ifname, path, owner_kind, ident)

    # ----------------------------------------------------------------- cursors
    def last_reserved(self, range_id: int):
        pending = self._cursors.get(range_id)
        if pending is not None:
            return ip_address(pending)
        kind, data, _ = read_entry(self.dir_fd, f"{LAST_RESERVED_PREFIX}{range_id}", 256)
        if kind != "file" or not data:
            return None
        try:
            return ip_address(data.decode("ascii", "replace").strip())
        except ValueError:
            return None

    def set_last_reserved(self, range_id: int, addr) -> None:
        """Move the round-robin cursor; written at commit, so a failed ADD leaves it unchanged."""
        self._cursors[range_id] = str(addr)

    # ----------------------------------------------------------------- side records (cluster pool)
    def read_meta(self, name: str, limit: int = 16 << 20) -> bytes | None:
        """A file of ours in ``.cni-ipam/`` (e.g. the cluster pool's ``pool.json``), or None."""
        try:
            fd = os.open(name, O_READ | os.O_NONBLOCK, dir_fd=self._meta_fd)  # a FIFO must not hang us
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
                os.unlink(_RESERVE_TMP, dir_fd=self._tmp_fd)  # changes the ctime of its links: stat after
                self._reserve_tmp_owner = None
            idents = {}
            for name in self._created:
                idents[name] = file_ident(os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False), self.dir_fd, name)
                self._delta[name] = set_key(idents[name])
            if self._pending:
                self._write_pending(idents)
            if self._created:
                os.fsync(self.dir_fd)  # the new reservation names are durable before we answer
            self._flush()
            if self._dirty:
                self._write_marker()
            self._created.clear()  # only now: a failure above rolls these back
            self._flushed.clear()
        except OSError as exc:
            raise self._io_error("commit", self.path, exc) from None

    def rollback(self) -> None:
        """Undo what this instance reserved; other reservations are never touched."""
        if self.dir_fd < 0:
            return
        for name in self._created:
            try:
                os.unlink(name, dir_fd=self.dir_fd)
            except OSError:
                pass
        self._created.clear()
        self._cursors.clear()
        self._pending.clear()
        self._buckets.clear()
        self._changed.clear()
        # Restore the buckets a failed commit wrote: an entry must never name a file this call did
        # not keep.
        for b, old in self._flushed.items():
            try:
                if old is None:
                    os.unlink(str(b), dir_fd=self._index_fd)
                else:
                    self._replace(self._index_fd, str(b), old, fsync=False)
            except (OSError, CniError):
                pass  # a leftover entry is never believed: lookups check the reservation file
        self._flushed.clear()
        if self._new_snap:  # the listing is true, but no marker is written: the next call lists again
            unlink_quietly(_SNAP_TMP, self._tmp_fd)
        try:
            if self._reserve_tmp_owner is not None:
                os.unlink(_RESERVE_TMP, dir_fd=self._tmp_fd)
            if self._dirty and not self._index_written and not self._released and not self._new_snap:
                # The directory holds what it held before plus nothing: the index is still right.
                self._delta = self._delta_at_open
                self._write_marker()
        except OSError:
            pass  # the marker stays stale: the next call catches up
