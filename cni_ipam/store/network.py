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
  ``owners/<containerID>:<ifname>`` (JSON: the addresses of that attachment, the identity of each
  file, ``seenBoot`` and GC metadata), ``state`` (a marker that says the owner index matches the
  directory), ``files`` (the (inode, ctime) of every address-named entry at the last full scan)
  and ``tmp/``.

Nothing read from disk is trusted as a path or a type:

* Address-named entries are ``lstat``-ed first and read only when they are regular files, opened
  ``O_NONBLOCK|O_NOFOLLOW`` and checked again with ``fstat``: a FIFO, device, socket, directory or
  symlink named like an address is *special* - reserved by someone unknown, never opened, never
  released by us.
* A reservation file's content is checked with the rules ``CNI_CONTAINERID`` and ``CNI_IFNAME``
  obey (``protocol.is_container_id``/``ifname_problem``).  Content that fails is *opaque*: kept,
  reported, never used to build a name.  Empty content (host-local killed mid-write) is *empty*.
* An owner-index entry is believed only when it has exactly the expected shape (containerID and
  ifname valid and matching its file name, ``ips`` a non-empty list of canonical addresses,
  ``files`` giving [inode, ctime] for each of them, ``meta`` an object, ``seenBoot`` a string).
  An entry that lies is discarded and the index rebuilt from the files.  Even a valid entry is
  never believed without the file: every lookup re-reads the reservation's owner.

Why an owner index: host-local reads every reservation file on each ADD and DEL (O(n)).  We keep an
index by owner so ADD and DEL cost the same at 60,000 reservations as at none.

When the index is trusted: after each change we set the directory's mtime to a marker and record it
in ``state`` with the directory's inode and the boot id.  Any create or unlink by someone else
(host-local, an admin, a crash half-way) sets the mtime to the kernel's "now", which is never the
marker.  The next call then *catches up*: it lists the directory with the (inode, ctime) of every
address-named entry and compares that set with the one recorded (``files`` plus the ``delta`` of
our own changes kept in ``state``).  Only entries that are new or whose inode or ctime differ are
read; nothing depends on the order of timestamps, so no clock step can hide a change (an inode
number reused by a new file still has another ctime).  Without a usable state (first use of a
host-local directory, a new boot id, a torn write) the index is rebuilt from every file, once.

Metadata belongs to the exact file: an entry carries ``meta`` only for files our ADD linked.  When
catch-up or a rebuild adopts a file someone else wrote (or one whose inode/ctime differ from those
recorded), the entry loses its ``meta``.  ``seenBoot`` is the boot id under which the index first saw
the entry's files; it survives a catch-up or rebuild while every file is the same (inode, ctime),
and is the running boot's id for anything new or changed (never an older boot than the truth).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time

from cni_ipam.addr import ip_address
from cni_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CniError
from cni_ipam.store.fs import DIR_MODE, O_DIR, O_READ, makedirs, open_private_subdir, read_entry, remove_junk, unlink_quietly
from cni_ipam.store.layout import (
    ADDRESS_CHARS,
    DELTA_MAX,
    EMPTY,
    FILES_FILE,
    LAST_RESERVED_PREFIX,
    LINE_BREAK,
    LOCK_FILE,
    META_DIR,
    OWNED,
    OWNERS_DIR,
    STATE_FILE,
    STATE_VERSION,
    TMP_DIR,
    Reservation,
    file_ident,
    from_set_key,
    loads_or_none,
    owner_key,
    parse_content,
    parse_ip_name,
    parse_owner,
    read_boot_id,
    read_reservation,
    set_key,
    valid_entry,
    valid_state,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterator

_RESERVE_TMP = "reserve"
_WRITE_TMP = "write"


class _LockTimeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - timing dependent
    raise _LockTimeout()


class NetworkStore:
    """The locked state of one network.  Use as a context manager::

        with NetworkStore(data_dir, name, timeout) as store:
            store.reserve(addr, cid, ifname)
            store.save_owner(cid, ifname, [addr], meta)
            store.set_last_reserved(0, addr)

    Reservations and releases happen as the methods are called; ``commit()`` (called by ``__exit__``
    when no exception escaped) writes the owner entries of ``save_owner``, the cursors and the index
    marker.  ``rollback()`` (called when an exception escaped) removes the reservation files this
    instance created and nothing else.
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
        self._created: list[str] = []  # reservation files made by this instance (for rollback)
        self._saved_owners: dict[str, bytes | None] = {}  # owner entries before this call wrote them
        self._pending: dict[str, tuple[str, str, list[str], dict]] = {}  # save_owner, written at commit
        self._cursors: dict[int, str] = {}
        self._reserve_tmp_owner: str | None = None
        self._index_written = False  # an owner entry changed since open
        self._snap = ""  # id of the ``files`` snapshot the state refers to
        self._delta: dict[str, str | None] = {}  # our changes since that snapshot (name: set key)
        self._delta_at_open: dict[str, str | None] = {}
        self._scanned: dict[str, str] | None = None  # the whole set, when this call listed it

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
                raise CniError(IO_FAILURE, f"{self.path} is not a directory (a symlink or a file is in the way)", self.path) from None
            raise self._io_error("open network directory", self.path, exc) from None
        finally:
            os.close(data_fd)
        self.exists = True
        try:
            self._lock_fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600, dir_fd=self.dir_fd)
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
            self._meta_fd = open_private_subdir(self.dir_fd, META_DIR)
            self._owners_fd = open_private_subdir(self._meta_fd, OWNERS_DIR)
            self._tmp_fd = open_private_subdir(self._meta_fd, TMP_DIR)
            for name in os.listdir(self._tmp_fd):  # left by a process killed mid-write
                remove_junk(name, self._tmp_fd)
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
        state = self._read_json(self._meta_fd, STATE_FILE)
        try:
            st = os.fstat(self.dir_fd)
        except OSError as exc:
            raise self._io_error("stat", self.path, exc) from None
        if not valid_state(state, st.st_ino, self._boot_id):
            self.rebuild_index()
            return
        self._snap = state["snap"]
        self._delta = state["delta"]
        self._delta_at_open = dict(self._delta)
        if state["mtime"] != st.st_mtime_ns and not self.catch_up():
            self.rebuild_index()

    def _scan_idents(self) -> dict[str, str]:
        """{name: "inode ctime_ns"} of every entry that may be a reservation, whatever its type
        (a cheap name filter: parsing 60,000 addresses would cost more than the stats)."""
        out: dict[str, str] = {}
        with os.scandir(self.dir_fd) as entries:
            for entry in entries:
                name = entry.name
                if not name or name.strip(ADDRESS_CHARS):  # lock, .cni-ipam, cursors, junk: never addresses
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    out[name] = f"{st.st_ino} {st.st_ctime_ns}"
                except OSError:
                    continue
        return out

    def catch_up(self) -> bool:
        """Index what changed since the recorded set, whoever changed it and whatever the clocks say.

        Lists the directory with (inode, ctime) and reads only the entries that are new or differ.
        Returns False (having changed nothing) when the recorded set is unusable or an entry to
        update does not have the shape we write: only a rebuild is safe then.
        """
        lines = self._snapshot_lines()
        if lines is None:
            return False
        current = self._scan_idents()
        # Set arithmetic on "name inode ctime" lines (C speed): only the few names that differ
        # from the snapshot, plus those our own delta touched, are looked at one by one.
        new_lines = {f"{name} {ident}" for name, ident in current.items()}
        old = dict(line.split(" ", 1) for line in lines - new_lines if " " in line)
        differ = {line.split(" ", 1)[0] for line in new_lines - lines}.union(old, self._delta)
        changes: dict[str, str | None] = {}
        for name in differ:
            expected = self._delta[name] if name in self._delta else old.get(name)
            if current.get(name) != expected:
                changes[name] = current.get(name)
        found: dict[str, tuple[str, str | None, list[str]]] = {}
        for name, ident in changes.items():
            if ident is None or parse_ip_name(name) is None:
                continue
            kind, data, st = read_entry(self.dir_fd, name)
            if kind != "file" or st is None:
                continue
            current[name] = set_key(file_ident(st))
            owner_kind, cid, ifname = parse_content(data)
            if owner_kind == OWNED:
                found.setdefault(owner_key(cid, ifname), (cid, ifname, []))[2].append(name)
        entries = {}
        for key in found:
            raw = self._read_owner_raw(key)
            entry = loads_or_none(raw)
            if raw is not None and not valid_entry(entry, key):
                return False
            entries[key] = entry
        for key, (cid, ifname, names) in found.items():
            self._adopt(key, cid, ifname, names, entries[key], current)
        # What changed goes into the delta: ``files`` (60,000 lines) is rewritten only when the
        # delta grows past DELTA_MAX, not on every foreign write.
        for name in changes:
            self._delta[name] = current.get(name)
        if len(self._delta) > DELTA_MAX:
            self._new_snapshot(current)
        self._delta_at_open = dict(self._delta)
        self._dirty = True
        return True

    def _snapshot_lines(self) -> set | None:
        """The ``<name> <inode> <ctime_ns>`` lines of the ``files`` snapshot the state refers to, or
        None when it is missing, not ours or unreadable."""
        kind, data, _ = read_entry(self._meta_fd, FILES_FILE, 64 << 20)
        if kind != "file":
            return None
        try:
            head, _, body = data.decode("ascii").partition("\n")
        except UnicodeDecodeError:
            return None
        if head != "snap " + self._snap:
            return None
        lines = set(body.split("\n"))
        lines.discard("")
        return lines  # a malformed line matches no entry: its name is read again, nothing is lost

    def _recorded_set(self, base: dict[str, str] | None = None) -> dict[str, str] | None:
        """{name: "inode ctime"} as the index knows the directory: ``base`` (else the ``files``
        snapshot the state refers to) with our delta applied; None when the snapshot is unusable.

        ``files`` is text, not JSON (60,000 lines parse and print several times faster): a first
        line ``snap <id>``, then one ``<name> <inode> <ctime_ns>`` line per entry."""
        if base is None:
            lines = self._snapshot_lines()
            if lines is None:
                return None
            base = dict(line.split(" ", 1) for line in lines if " " in line)
        for name, ident in self._delta.items():
            if ident is None:
                base.pop(name, None)
            else:
                base[name] = ident
        return base

    def _adopt(self, key: str, cid: str, ifname: str | None, names: list[str], entry: dict | None,
               current: dict[str, list]) -> None:
        """Add files someone else wrote to (cid, ifname)'s entry.  Addresses whose file is gone or
        changed are dropped, and so is our metadata: it described other files."""
        ips, files = [], {}
        if entry is not None:
            for ip in entry["ips"]:
                if ip not in names and current.get(ip) == set_key(entry["files"][ip]):
                    ips.append(ip)
                    files[ip] = entry["files"][ip]
        for ip in names:
            ips.append(ip)
            files[ip] = from_set_key(current[ip])
        self._write_owner_file(key, {"containerID": cid, "ifname": ifname, "ips": ips, "files": files, "meta": {}, "seenBoot": self._boot_id})

    def rebuild_index(self) -> None:
        """Make ``.cni-ipam/owners`` describe exactly the reservation files (one O(n) pass).

        An entry keeps its ``meta`` and ``seenBoot`` only while every file it is rebuilt from is the
        very file it recorded (same inode and ctime); anything else starts afresh in this boot."""
        current: dict[str, str] = {}
        found: dict[str, tuple[str, str | None, list[str]]] = {}
        for res in self._scan():
            if res.ident is not None:
                current[str(res.address)] = set_key(res.ident)
            if res.kind == OWNED and res.ident is not None:
                found.setdefault(owner_key(res.container_id, res.ifname), (res.container_id, res.ifname, []))[2].append(str(res.address))
        for key in os.listdir(self._owners_fd):
            raw = self._read_owner_raw(key)
            entry = loads_or_none(raw)
            group = found.pop(key, None)
            if group is None or not valid_entry(entry, key):
                if group is None:
                    self._index_written = True
                    remove_junk(key, self._owners_fd)
                    continue
                entry = None
            cid, ifname, names = group
            files = {ip: from_set_key(current[ip]) for ip in names}
            same = entry is not None and all(entry["files"].get(ip) == files[ip] for ip in names)
            body = {
                "containerID": cid,
                "ifname": ifname,
                "ips": names,
                "files": files,
                "meta": entry["meta"] if same else {},
                "seenBoot": entry["seenBoot"] if same else self._boot_id,
            }
            if body != entry:
                self._write_owner_file(key, body)
        for key, (cid, ifname, names) in found.items():
            files = {ip: from_set_key(current[ip]) for ip in names}
            self._write_owner_file(key, {"containerID": cid, "ifname": ifname, "ips": names, "files": files, "meta": {}, "seenBoot": self._boot_id})
        self._delta = {}
        self._new_snapshot(current)

    def _new_snapshot(self, current: dict[str, str]) -> None:
        """The whole set is known now: ``files`` is rewritten at commit and the delta starts empty."""
        self._scanned = current
        self._delta = {}
        self._delta_at_open = {}
        self._dirty = True

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
        return True

    def _entry(self, key: str) -> dict | None:
        """The owner entry ``key``; an entry that exists but lies makes us rebuild the index first."""
        raw = self._read_owner_raw(key)
        if raw is None:
            return None
        entry = loads_or_none(raw)
        if valid_entry(entry, key):
            return entry
        self.rebuild_index()
        raw = self._read_owner_raw(key)
        entry = loads_or_none(raw)
        return entry if valid_entry(entry, key) else None

    def _held_by_owner(self, cid: str, ifname: str) -> Iterator[tuple[str, dict, list[str]]]:
        """(index key, entry, addresses the reservation files confirm) for (cid, ifname) and for
        cid's old ID-only reservations; index entries are never believed without the file."""
        for key, want_ifname in ((owner_key(cid, ifname), ifname), (owner_key(cid, None), None)):
            entry = self._entry(key)
            if entry is not None:
                yield key, entry, [ip for ip in entry["ips"] if self.holder(ip) == (cid.strip(), want_ifname)]

    def owned_by(self, cid: str, ifname: str) -> list:
        """Addresses held by (cid, ifname), including old ID-only reservations of cid."""
        return [ip_address(ip) for _, _, held in self._held_by_owner(cid, ifname) for ip in held]

    def owner_entry(self, cid: str, ifname: str | None) -> dict | None:
        """The valid owner-index entry of (cid, ifname) (with ``meta`` and ``seenBoot``), or None."""
        return self._entry(owner_key(cid, ifname))

    def save_owner(self, cid: str, ifname: str, addrs: list, meta: dict) -> None:
        """Record (cid, ifname) as holding ``addrs`` (reserved by this call) in addition to what it
        already held; written at commit, when the new files' identities are final."""
        key = owner_key(cid, ifname)
        prev = self._pending.get(key)
        names = (prev[2] if prev else []) + [str(a) for a in addrs]
        merged = dict(prev[3]) if prev else {}
        merged.update(meta)
        self._pending[key] = (cid, ifname, names, merged)

    def _write_pending(self, idents: dict[str, list]) -> None:
        for key, (cid, ifname, names, meta) in self._pending.items():
            entry = self._entry(key)
            ips, files = [], {}
            foreign = False
            if entry is not None:  # what it still holds from before this call
                for ip in entry["ips"]:
                    kind, data, st = read_entry(self.dir_fd, ip)
                    if ip not in names and kind == "file" and parse_owner(data) == (cid, ifname):
                        ips.append(ip)
                        files[ip] = file_ident(st)
                        foreign = foreign or st.st_ino != entry["files"][ip][0]  # another file now
            # Our metadata describes the files we link; an entry that still holds a file someone
            # else wrote (adopted, so without meta, or replaced since) keeps carrying none.
            foreign = bool(ips) and (foreign or not entry["meta"])
            old_meta = entry["meta"] if ips else {}
            for ip in names:
                if ip in idents:
                    ips.append(ip)
                    files[ip] = idents[ip]
            if ips:
                body = {"containerID": cid, "ifname": ifname, "ips": ips, "files": files,
                        "meta": {} if foreign else dict(old_meta, **meta), "seenBoot": self._boot_id}
                self._write_owner_file(key, body)
        self._pending.clear()

    def release_owner(self, cid: str, ifname: str) -> list:
        """Release every address of (cid, ifname) and its ID-only reservations; returns them."""
        released = []
        for key, _, held in self._held_by_owner(cid, ifname):
            released += [ip_address(ip) for ip in held if self._unlink_reservation(ip)]
            self._remove_owner_file(key)
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
        if res.kind == OWNED:
            key = owner_key(cid, ifname)
            entry = self._entry(key)
            if entry is not None:
                rest = [ip for ip in entry["ips"] if ip != name]
                if rest:
                    files = {ip: entry["files"][ip] for ip in rest}
                    for ip in rest:  # a sibling linked to the same inode got a new ctime
                        if files[ip][0] == st.st_ino:
                            try:
                                files[ip] = file_ident(os.stat(ip, dir_fd=self.dir_fd, follow_symlinks=False))
                                self._delta[ip] = set_key(files[ip])
                            except OSError:
                                pass
                    self._write_owner_file(key, dict(entry, ips=rest, files=files))
                else:
                    self._remove_owner_file(key)
        return True

    def reservations(self) -> list[Reservation]:
        """Every address-named entry of the network (a full scan: for GC and reports, not ADD)."""
        return list(self._scan())

    def _scan(self) -> Iterator[Reservation]:
        for name in os.listdir(self.dir_fd):
            addr = parse_ip_name(name)
            if addr is None:
                continue
            res = read_reservation(self.dir_fd, name, addr, self.path)
            if res is not None:
                yield res

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

    def meta_owner_entries(self) -> dict[str, dict]:
        """Every valid owner index entry (for GC and reports); entries that lie are left out."""
        out = {}
        for name in os.listdir(self._owners_fd):
            entry = loads_or_none(self._read_owner_raw(name))
            if valid_entry(entry, name):
                out[name] = entry
        return out

    # ----------------------------------------------------------------- side records (cluster pool, issue 12)
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
                idents[name] = file_ident(os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False))
                self._delta[name] = set_key(idents[name])
            if self._pending:
                self._write_pending(idents)
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
            except OSError:
                pass
        self._created.clear()
        self._cursors.clear()
        self._pending.clear()
        # Restore the owner entries this call wrote (a failed commit): an entry must never name a
        # file this call did not keep.
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
            if self._dirty and not self._index_written and self._scanned is None:
                # The directory holds what it held before plus nothing: the index is still right.
                self._delta = self._delta_at_open
                self._write_marker()
        except OSError:
            pass  # the marker stays stale: the next call catches up

    def _write_marker(self) -> None:
        if self._scanned is not None or len(self._delta) > DELTA_MAX:
            self._write_snapshot()
        st = os.fstat(self.dir_fd)
        marker = time.time_ns() - 1_000_000_000
        os.utime(self.dir_fd, ns=(st.st_atime_ns, marker))
        state = {"v": STATE_VERSION, "mtime": marker, "ino": st.st_ino, "boot": self._boot_id, "snap": self._snap, "delta": self._delta}
        self._replace(self._meta_fd, STATE_FILE, json.dumps(state).encode(), fsync=False)
        self._dirty = False

    def _write_snapshot(self) -> None:
        """Rewrite ``files``: the set listed by this call (plus its own changes since), or the old
        snapshot with the delta folded in."""
        files = self._recorded_set(self._scanned)
        if files is None:
            self._snap = ""  # unusable: the next catch-up falls back to a rebuild
            self._delta = {}
            return
        self._snap = os.urandom(8).hex()
        body = "".join([f"snap {self._snap}\n"] + [f"{name} {ident}\n" for name, ident in files.items()])
        self._replace(self._meta_fd, FILES_FILE, body.encode("ascii"), fsync=False)
        self._delta = {}
        self._scanned = None

    # ----------------------------------------------------------------- file helpers
    def _read_owner_raw(self, key: str) -> bytes | None:
        kind, data, _ = read_entry(self._owners_fd, key)
        if kind is None:
            return None
        return data if data is not None else b""  # something that is not a file: never believed

    def _read_json(self, dir_fd: int, name: str, limit: int = 1 << 20) -> object:
        kind, data, _ = read_entry(dir_fd, name, limit)
        return loads_or_none(data) if kind == "file" else None

    def _write_owner_file(self, key: str, body: dict) -> None:
        if key not in self._saved_owners:
            self._saved_owners[key] = self._read_owner_raw(key)
        self._index_written = True
        self._replace(self._owners_fd, key, json.dumps(body, sort_keys=True).encode(), fsync=False)

    def _remove_owner_file(self, key: str) -> None:
        if key not in self._saved_owners:
            self._saved_owners[key] = self._read_owner_raw(key)
        try:
            os.unlink(key, dir_fd=self._owners_fd)
            self._index_written = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._io_error("remove owner entry", os.path.join(self.path, META_DIR, OWNERS_DIR, key), exc) from None

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
                unlink_quietly(name, self._tmp_fd)

    def _replace(self, dir_fd: int, name: str, data: bytes, fsync: bool) -> None:
        try:
            self._write_tmp(_WRITE_TMP, data, fsync)
            try:
                try:
                    os.rename(_WRITE_TMP, name, src_dir_fd=self._tmp_fd, dst_dir_fd=dir_fd)
                except IsADirectoryError:  # an (empty) directory planted under our name
                    remove_junk(name, dir_fd)
                    os.rename(_WRITE_TMP, name, src_dir_fd=self._tmp_fd, dst_dir_fd=dir_fd)
            except OSError:
                unlink_quietly(_WRITE_TMP, self._tmp_fd)
                raise
        except OSError as exc:
            raise self._io_error("write", name, exc) from None

    def _io_error(self, what: str, path: str, exc: OSError | None = None) -> CniError:
        reason = exc.strerror if exc is not None and exc.strerror else (str(exc) if exc else "missing")
        return CniError(IO_FAILURE, f"cannot {what} {path}: {reason}", path)


# ---------------------------------------------------------------------- lock-free checks (STATUS)
