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
  ``index/<bucket>`` (the owner index: one line per attachment with its addresses, the identity of
  each file, ``seenBoot`` and GC metadata; format in ``store.layout``), ``state`` (a marker that
  says the owner index matches the directory), ``files`` (the (inode, ctime) of every
  address-named entry at the last full scan) and ``tmp/``.

Nothing read from disk is trusted as a path or a type:

* Address-named entries are ``lstat``-ed first and read only when they are regular files, opened
  ``O_NONBLOCK|O_NOFOLLOW`` and checked again with ``fstat``: a FIFO, device, socket, directory or
  symlink named like an address is *special* - reserved by someone unknown, never opened, never
  released by us.
* A reservation file's content is checked with the rules ``CNI_CONTAINERID`` and ``CNI_IFNAME``
  obey (``protocol.is_container_id``/``ifname_problem``).  Content that fails is *opaque*: kept,
  reported, never used to build a name.  Empty content (host-local killed mid-write) is *empty*.
* An owner-index line is believed only when it has exactly the expected shape (containerID and
  ifname valid and matching its bucket, a non-empty list of canonical addresses each with its
  [inode, ctime], ``meta`` an object, ``seenBoot`` a string, one line per attachment).  A line
  that lies is discarded and the index rebuilt from the files.  Even a valid entry is never
  believed without the file: every lookup re-reads the reservation's owner.

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
host-local directory, a new boot id, a torn write, the previous version's index) the index is
rebuilt from every file, once: one pass over the directory (each regular file opened once, the
listing's d_type standing in for the lstat), the lines grouped in memory per bucket, 256 bucket
files written (not one file per owner), ``files`` streamed to disk as it is listed.

Our own changes (``save_owner``, releases) are kept in memory and written at ``commit``, one write
per bucket touched, however many attachments a GC pass releases.  Catch-up and rebuild write what
they learnt at once: it is true of the directory whatever this call does next.

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
    DELTA_MAX,
    EMPTY,
    FILES_FILE,
    INDEX_BUCKETS,
    INDEX_DIR,
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
    bucket_of,
    content_parser,
    file_ident,
    format_line,
    format_tail,
    index_field,
    is_address_name,
    loads_or_none,
    owner_key,
    parse_content,
    parse_ip_name,
    parse_line,
    parse_owner,
    parse_tail,
    read_boot_id,
    set_key,
    split_bucket,
    valid_entry,
    valid_state,
)


_RESERVE_TMP = "reserve"
_WRITE_TMP = "write"
_SNAP_TMP = "files"  # a new ``files`` snapshot, renamed into place at commit
_BUCKET_LIMIT = 64 << 20  # a bucket longer than this is not ours: rebuild


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
        self._legacy = False  # the previous version's owners/ directory was migrated: remove it at commit
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
        # Only when contended.  The C module, not ``signal``: that one builds enums on import (about
        # 2 ms of a plugin call, paid by every call that lost the race in a storm).
        import _signal

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
                f"could not lock {os.path.join(self.path, LOCK_FILE)} within {self.lock_timeout:g}s; another operation holds it",
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

    # ----------------------------------------------------------------- index freshness
    def _check_index(self) -> None:
        """Trust, catch up or rebuild the owner index (see the module docstring)."""
        self._boot_id = read_boot_id()
        state = self._read_json(self._meta_fd, STATE_FILE)
        try:
            st = os.fstat(self.dir_fd)
        except OSError as exc:
            raise self._io_error("stat", self.path, exc) from None
        if self._index_lost or not valid_state(state, st.st_ino, self._boot_id):
            self.rebuild_index()
            return
        self._snap = state["snap"]
        self._delta = state["delta"]
        self._delta_at_open = dict(self._delta)
        if state["mtime"] != st.st_mtime_ns and not self.catch_up():
            self.rebuild_index()

    def _listed_lines(self) -> set[str]:
        """{"<name> <inode> <ctime_ns>"} of every entry that may be a reservation, whatever its type
        (a cheap name filter: parsing 60,000 addresses would cost more than the stats).  The
        ``lstat`` of each entry is most of a catch-up's cost (60,000 entries: ~0.2 s here)."""
        fd = self.dir_fd
        stat_at = os.stat
        out: set[str] = set()
        add = out.add
        for name in os.listdir(fd):
            if name.strip(ADDRESS_CHARS):  # lock, .cni-ipam, cursors, junk: never addresses
                continue
            try:
                st = stat_at(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            stamp = st.st_ctime_ns
            if stamp % 1_000_000_000 == 0:  # whole-second timestamps: the generation too (file_ident)
                stamp = file_ident(st, fd, name)[1]
            add(f"{name} {st.st_ino} {stamp}")
        return out

    def _ident_now(self, name: str) -> str | None:
        try:
            return set_key(file_ident(os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False), self.dir_fd, name))
        except OSError:
            return None

    def catch_up(self) -> bool:
        """Index what changed since the recorded set, whoever changed it and whatever the clocks say.

        Lists the directory with (inode, ctime) and reads only the entries that are new or differ.
        Returns False (having changed nothing) when the recorded set is unusable or an entry to
        update does not have the shape we write: only a rebuild is safe then.
        """
        lines = self._snapshot_lines()
        if lines is None:
            return False
        listed = self._listed_lines()
        # Set arithmetic on "name inode ctime" lines (C speed): only the few names that differ
        # from the snapshot, plus those our own delta touched, are looked at one by one.
        old = dict(line.split(" ", 1) for line in lines - listed if " " in line)
        new = dict(line.split(" ", 1) for line in listed - lines)
        lines = None  # type: ignore[assignment]  # (memory: the snapshot is no longer needed)
        changes: dict[str, str | None] = {}
        for name in set(new).union(old, self._delta):
            expected = self._delta[name] if name in self._delta else old.get(name)
            now = new[name] if name in new else (None if name in old else self._ident_now(name))
            if now != expected:
                changes[name] = now
        found: dict[str, tuple[str, str | None, list[str]]] = {}
        for name, ident in changes.items():
            if ident is None or parse_ip_name(name) is None:
                continue
            kind, data, st = read_entry(self.dir_fd, name)
            if kind != "file" or st is None:
                continue
            changes[name] = set_key(file_ident(st, self.dir_fd, name))
            owner_kind, cid, ifname = parse_content(data)
            if owner_kind == OWNED:
                found.setdefault(index_field(cid, ifname), (cid, ifname, []))[2].append(name)
        entries = {}
        for field, (cid, ifname, _) in found.items():
            line = self._line(field)
            entry = parse_line(line, bucket_of(field)) if line is not None else None
            if line is not None and entry is None:
                return False
            entries[field] = entry
        for field, (cid, ifname, names) in found.items():
            self._adopt(cid, ifname, names, entries[field], changes)
        self._flush()
        self._flushed.clear()  # true of the directory whatever this call does next: no rollback
        # What changed goes into the delta: ``files`` (60,000 lines) is rewritten only when the
        # delta grows past DELTA_MAX, not on every foreign write.
        for name, ident in changes.items():
            self._delta[name] = ident
        if len(self._delta) > DELTA_MAX:
            for name, ident in changes.items():  # what was read since the listing
                if ident is not None and name in new and new[name] != ident:
                    listed.discard(f"{name} {new[name]}")
                    listed.add(f"{name} {ident}")
            self._stage_snapshot(listed)
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

    def _stage_snapshot(self, lines) -> None:
        """Write a new ``files`` snapshot (the whole set listed by this call) into tmp/; the commit
        renames it into place and the delta starts empty."""
        snap = os.urandom(8).hex()
        self._write_tmp(_SNAP_TMP, "".join([f"snap {snap}\n"] + [f"{line}\n" for line in lines]).encode("ascii", "surrogateescape"), fsync=False)
        self._new_snap = snap
        self._delta = {}
        self._delta_at_open = {}
        self._dirty = True

    def _adopt(self, cid: str, ifname: str | None, names: list[str], entry: dict | None, changes: dict) -> None:
        """Add files someone else wrote to (cid, ifname)'s entry.  Addresses whose file is gone or
        changed are dropped, and so is our metadata: it described other files."""
        ips, files = [], {}
        if entry is not None:
            for ip in entry["ips"]:
                now = changes[ip] if ip in changes else self._ident_now(ip)
                if ip not in names and now == set_key(entry["files"][ip]):
                    ips.append(ip)
                    files[ip] = entry["files"][ip]
        for ip in names:
            ino, ctime = changes[ip].split(" ")
            ips.append(ip)
            files[ip] = [int(ino), int(ctime)]
        self._put(cid, ifname, format_line(cid, ifname, ips, files, {}, self._boot_id))

    def rebuild_index(self) -> None:
        """Make the owner index describe exactly the reservation files (one O(n) pass).

        An entry keeps its ``meta`` and ``seenBoot`` only while every file it is rebuilt from is the
        very file it recorded (same inode and ctime); anything else starts afresh in this boot.
        The whole pass holds one short string per reservation file (60,000 files: a few MB)."""
        self._buckets.clear()  # whatever this call changed in memory is superseded by the files
        self._changed.clear()
        # Per bucket, one bytearray of "<field>\t<ip> <inode> <ctime>\n" items: 60,000 files take
        # their bytes (~4 MB), not 60,000 Python objects (the peak RSS of the first call).
        groups: list = [None] * INDEX_BUCKETS
        snap = os.urandom(8).hex()
        fd = self.dir_fd
        try:
            out = os.open(_SNAP_TMP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._tmp_fd)
        except OSError as exc:
            raise self._io_error("write", os.path.join(self.path, META_DIR, TMP_DIR, _SNAP_TMP), exc) from None
        try:
            chunk = [f"snap {snap}"]
            parse = content_parser()
            with os.scandir(fd) as listing:
                for entry in listing:
                    name = entry.name
                    if name.strip(ADDRESS_CHARS):
                        continue
                    kind, data, st = read_listed(fd, entry)
                    if kind is None:
                        continue
                    if st is None:
                        try:
                            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        except OSError:
                            continue
                    stamp = st.st_ctime_ns if st.st_ctime_ns % 1_000_000_000 else file_ident(st, fd, name)[1]
                    line = f"{name} {st.st_ino} {stamp}"  # a line of ``files``, an item of the index
                    chunk.append(line)
                    if len(chunk) >= 512:
                        chunk.append("")
                        self._write_all(out, "\n".join(chunk).encode("ascii", "surrogateescape"))
                        chunk = []
                    if kind != "file":
                        continue
                    owner_kind, cid, ifname = parse(data)
                    if owner_kind != OWNED or not is_address_name(name):
                        continue
                    field = f"{cid}\t{ifname or ''}"  # index_field
                    b = bucket_of(field)
                    group = groups[b]
                    if group is None:
                        group = groups[b] = bytearray()
                    group += f"{field}\t{line}\n".encode("utf-8", "surrogateescape")
            chunk.append("")
            self._write_all(out, "\n".join(chunk).encode("ascii", "surrogateescape"))
        except OSError as exc:
            raise self._io_error("rebuild the index of", self.path, exc) from None
        finally:
            os.close(out)
        legacy = self._read_legacy()
        fresh = format_tail({}, self._boot_id)
        try:
            on_disk = set(os.listdir(self._index_fd))
        except OSError as exc:
            raise self._io_error("list", os.path.join(self.path, META_DIR, INDEX_DIR), exc) from None
        for b in range(INDEX_BUCKETS):
            group, groups[b] = groups[b], None
            name = str(b)
            old_text = self._read_bucket_text(b) if name in on_disk else None
            on_disk.discard(name)
            if not group:
                if old_text is not None:
                    self._unlink_bucket(b)
                continue
            old = split_bucket(old_text) or {} if old_text else {}
            extra = legacy.get(b) if legacy else None
            group = group.decode("utf-8", "surrogateescape").split("\n")
            group.pop()  # after the last "\n"
            group.sort()
            lines = []
            i = 0
            while i < len(group):
                field, _, item = group[i].rpartition("\t")
                items = [item]
                i += 1
                while i < len(group):
                    more_field, _, more = group[i].rpartition("\t")
                    if more_field != field:
                        break
                    items.append(more)
                    i += 1
                tail = _kept_tail(old.get(field), items) or (_kept_tail(extra.get(field), items) if extra else None) or fresh
                lines.append(f"{field}\t{','.join(items)}\t{tail}\n")
            text = "".join(lines)
            if text != old_text:
                self._write_bucket(b, text)
        for name in on_disk:  # not a bucket of ours
            self._index_written = True
            remove_junk(name, self._index_fd)
        self._new_snap = snap
        self._delta = {}
        self._delta_at_open = {}
        self._dirty = True

    def _read_legacy(self) -> dict[int, dict[str, str]] | None:
        """The previous version's index (``owners/<key>``, one JSON entry per owner) as index lines
        by bucket, for the rebuild to carry ``meta`` and ``seenBoot`` over; None when there is none.
        Entries that lie are left out; the directory is removed at commit."""
        try:
            fd = os.open(OWNERS_DIR, O_DIR, dir_fd=self._meta_fd)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink or a file in the way: nothing of ours, removed at commit
            self._legacy = True
            return None
        self._legacy = True
        out: dict[int, dict[str, str]] = {}
        try:
            for key in os.listdir(fd):
                kind, data, _ = read_entry(fd, key)
                entry = loads_or_none(data) if kind == "file" else None
                if not valid_entry(entry, key):
                    continue
                field = index_field(entry["containerID"], entry["ifname"])
                line = format_line(entry["containerID"], entry["ifname"], entry["ips"], entry["files"], entry["meta"], entry["seenBoot"])
                out.setdefault(bucket_of(field), {})[field] = line
        except OSError:
            pass
        finally:
            os.close(fd)
        return out

    def _remove_legacy(self) -> None:
        try:
            fd = os.open(OWNERS_DIR, O_DIR, dir_fd=self._meta_fd)
        except FileNotFoundError:
            return
        except OSError:
            remove_junk(OWNERS_DIR, self._meta_fd)
            return
        try:
            for key in os.listdir(fd):
                remove_junk(key, fd)
        finally:
            os.close(fd)
        try:
            os.rmdir(OWNERS_DIR, dir_fd=self._meta_fd)
        except OSError:
            pass

    # ----------------------------------------------------------------- the owner index (buckets)
    def _read_bucket_text(self, b: int) -> str | None:
        """A bucket file's text; None when there is none; "\\0" (never a valid bucket) when it is not
        a regular file, too long or not UTF-8."""
        kind, data, _ = read_entry(self._index_fd, str(b), _BUCKET_LIMIT + 1)
        if kind is None:
            return None
        if kind != "file" or len(data) > _BUCKET_LIMIT:
            return "\0"
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "\0"

    def _bucket(self, b: int) -> dict[str, str] | None:
        """{field: line} of bucket ``b`` as this call sees it; None when the bucket lies (two lines
        for one attachment, not a regular file, not text)."""
        lines = self._buckets.get(b)
        if lines is None:
            text = self._read_bucket_text(b)
            lines = split_bucket(text) if text is not None and "\0" not in text else ({} if text is None else None)
            if lines is None:
                return None
            self._buckets[b] = lines
        return lines

    def _line(self, field: str) -> str | None:
        lines = self._bucket(bucket_of(field))
        return "\0" if lines is None else lines.get(field)

    def _entry(self, cid: str, ifname: str | None) -> dict | None:
        """The owner entry of (cid, ifname); an entry that exists but lies makes us rebuild the index first."""
        field = index_field(cid, ifname)
        line = self._line(field)
        if line is None:
            return None
        entry = parse_line(line, bucket_of(field))
        if entry is not None and entry["containerID"] == cid and entry["ifname"] == ifname:
            return entry
        self.rebuild_index()
        line = self._line(field)
        entry = parse_line(line, bucket_of(field)) if line is not None else None
        return entry if entry is not None and entry["containerID"] == cid and entry["ifname"] == ifname else None

    def _put(self, cid: str, ifname: str | None, line: str | None) -> None:
        """Set (or with None remove) the index line of (cid, ifname) in memory; written at commit."""
        field = index_field(cid, ifname)
        b = bucket_of(field)
        lines = self._bucket(b)
        if lines is None:  # a bucket that lies (callers looked the entry up first, so rarely here)
            self.rebuild_index()
            lines = self._bucket(b)
            if lines is None:
                lines = self._buckets[b] = {}
        if line is None:
            if lines.pop(field, None) is None:
                return
        else:
            lines[field] = line
        self._changed.add(b)

    def _flush(self) -> None:
        """Write the buckets changed in memory (and remember what they held, for a rollback)."""
        for b in sorted(self._changed):
            lines = self._buckets[b]
            if b not in self._flushed:
                kind, data, _ = read_entry(self._index_fd, str(b), _BUCKET_LIMIT + 1)
                self._flushed[b] = data if kind == "file" else None
            if lines:
                self._write_bucket(b, "".join(f"{line}\n" for line in lines.values()))
            else:
                self._unlink_bucket(b)
        self._changed.clear()

    def _write_bucket(self, b: int, text: str) -> None:
        self._index_written = True
        self._replace(self._index_fd, str(b), text.encode("utf-8", "surrogateescape"), fsync=False)

    def _unlink_bucket(self, b: int) -> None:
        try:
            os.unlink(str(b), dir_fd=self._index_fd)
            self._index_written = True
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            remove_junk(str(b), self._index_fd)
        except OSError as exc:
            raise self._io_error("remove index bucket", os.path.join(self.path, META_DIR, INDEX_DIR, str(b)), exc) from None

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
        self._released = True
        return True

    def _held_by_owner(self, cid: str, ifname: str):  # yields (ifname, entry, addresses): tuple[str | None, dict, list[str]]
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

    def _write_pending(self, idents: dict[str, list]) -> None:
        # Every entry is looked up before any is changed: a lie found on the way rebuilds the
        # index, which drops what this call changed in memory so far.
        entries = {key: self._entry(cid, ifname) for key, (cid, ifname, _, _) in self._pending.items()}
        for key, (cid, ifname, names, meta) in self._pending.items():
            entry = entries[key]
            ips, files = [], {}
            foreign = False
            if entry is not None:  # what it still holds from before this call
                for ip in entry["ips"]:
                    kind, data, st = read_entry(self.dir_fd, ip)
                    if ip not in names and kind == "file" and parse_owner(data) == (cid, ifname):
                        ips.append(ip)
                        files[ip] = file_ident(st, self.dir_fd, ip)
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
                merged = {} if foreign else _merge_meta(old_meta, meta)
                self._put(cid, ifname, format_line(cid, ifname, ips, files, merged, self._boot_id))
        self._pending.clear()

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
        if res.kind == OWNED:
            entry = self._entry(cid, ifname)
            if entry is not None:
                rest = [ip for ip in entry["ips"] if ip != name]
                if rest:
                    files = {ip: entry["files"][ip] for ip in rest}
                    for ip in rest:  # a sibling linked to the same inode got a new ctime
                        if files[ip][0] == st.st_ino:
                            try:
                                files[ip] = file_ident(os.stat(ip, dir_fd=self.dir_fd, follow_symlinks=False), self.dir_fd, ip)
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

    def meta_owner_entries(self) -> dict[str, dict]:
        """Every valid owner index entry (for GC and reports) by ``owner_key``; entries that lie are
        left out."""
        out = {}
        try:
            names = os.listdir(self._index_fd)
        except OSError:
            names = []
        buckets = {int(n) for n in names if n.isdigit() and n.isascii() and int(n) < INDEX_BUCKETS and str(int(n)) == n}
        for b in sorted(buckets.union(self._buckets)):
            for line in (self._bucket(b) or {}).values():
                entry = parse_line(line, b)
                if entry is not None:
                    out[owner_key(entry["containerID"], entry["ifname"])] = entry
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
            if self._legacy:
                self._legacy = False
                self._remove_legacy()  # the previous version's index, now carried into index/
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

    def _write_marker(self) -> None:
        if self._new_snap:
            try:
                os.rename(_SNAP_TMP, FILES_FILE, src_dir_fd=self._tmp_fd, dst_dir_fd=self._meta_fd)
            except IsADirectoryError:  # an (empty) directory planted under our name
                remove_junk(FILES_FILE, self._meta_fd)
                os.rename(_SNAP_TMP, FILES_FILE, src_dir_fd=self._tmp_fd, dst_dir_fd=self._meta_fd)
            self._snap, self._new_snap = self._new_snap, ""
        elif len(self._delta) > DELTA_MAX:
            self._fold_snapshot()
        st = os.fstat(self.dir_fd)
        marker = time.time_ns() - 1_000_000_000
        os.utime(self.dir_fd, ns=(st.st_atime_ns, marker))
        state = {"v": STATE_VERSION, "mtime": marker, "ino": st.st_ino, "boot": self._boot_id, "snap": self._snap, "delta": self._delta}
        self._replace(self._meta_fd, STATE_FILE, json.dumps(state).encode(), fsync=False)
        self._dirty = False

    def _fold_snapshot(self) -> None:
        """Rewrite ``files``: the old snapshot with the delta folded in.

        ``files`` is text, not JSON (60,000 lines parse and print several times faster): a first
        line ``snap <id>``, then one ``<name> <inode> <ctime_ns>`` line per entry."""
        lines = self._snapshot_lines()
        if lines is None:
            self._snap = ""  # unusable: the next catch-up falls back to a rebuild
            self._delta = {}
            return
        base = dict(line.split(" ", 1) for line in lines if " " in line)
        for name, ident in self._delta.items():
            if ident is None:
                base.pop(name, None)
            else:
                base[name] = ident
        self._snap = os.urandom(8).hex()
        body = "".join([f"snap {self._snap}\n"] + [f"{name} {ident}\n" for name, ident in base.items()])
        self._replace(self._meta_fd, FILES_FILE, body.encode("ascii", "surrogateescape"), fsync=False)
        self._delta = {}

    # ----------------------------------------------------------------- file helpers
    def _read_json(self, dir_fd: int, name: str, limit: int = 1 << 20) -> object:
        kind, data, _ = read_entry(dir_fd, name, limit)
        return loads_or_none(data) if kind == "file" else None

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def _write_tmp(self, name: str, data: bytes, fsync: bool) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._tmp_fd)
        done = False
        try:
            self._write_all(fd, data)
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


_NETNS_KEYS = ("netns", "netnsDev", "netnsIno", "netnsId")


def _merge_meta(old: dict, new: dict) -> dict:
    """The metadata of an attachment that already held addresses and is added again.  The newer
    ADD's fields win, but a namespace the older one recorded is never dropped: it goes to
    ``netnsAlso``, and the attachment counts as gone only when every namespace it was added in is
    (two ADDs of one attachment in two namespaces must not share one namespace's proof)."""
    merged = dict(old, **new)
    before = {k: old[k] for k in _NETNS_KEYS if k in old}
    if before and before != {k: new[k] for k in _NETNS_KEYS if k in new}:
        also = old.get("netnsAlso")
        also = list(also) if isinstance(also, list) else ([] if also is None else [also])
        if before not in also:
            also.append(before)
        merged["netnsAlso"] = also
    return merged


def _kept_tail(line: str | None, items: list[str]) -> str | None:
    """The tail (meta, seenBoot) of an old index line when it recorded exactly these files (same
    addresses, inodes and ctimes), else None: metadata belongs to the exact file."""
    if line is None:
        return None
    parts = line.split("\t")
    if len(parts) != 4 or sorted(parts[2].split(",")) != items:
        return None
    return parts[3] if parse_tail(parts[3]) is not None else None


# ---------------------------------------------------------------------- lock-free checks (STATUS)
