"""The owner index of a network directory: which attachment holds which reservation files, with
their GC metadata, kept beside host-local's files in ``.cni-ipam/`` (the format and when it is
trusted: docs/core.md, "On-disk layout").  ``OwnerIndex`` is the half of ``NetworkStore`` that keeps
it: the trust check at open, catch-up after someone else's writes, the rebuild from every file,
the 256 bucket files, the ``files`` snapshot with the delta of our own changes since it, and the
marker written at commit.  It runs only under the network lock that ``store.network`` takes, and
shares that object's state (it is a base class, not a second store).  Stdlib only (ADD path).
"""

from __future__ import annotations

import json
import os
import time

from cni_ipam.errors import IO_FAILURE, CniError
from cni_ipam.store.fs import (
    read_entry,
    read_listed,
    remove_junk,
    unlink_quietly,
)
from cni_ipam.store.layout import (
    ADDRESS_CHARS,
    DELTA_MAX,
    FILES_FILE,
    INDEX_BUCKETS,
    INDEX_DIR,
    META_DIR,
    OWNED,
    STATE_FILE,
    STATE_VERSION,
    TMP_DIR,
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
    valid_state,
)

_WRITE_TMP = "write"
_SNAP_TMP = "files"  # a new ``files`` snapshot, renamed into place at commit
_BUCKET_LIMIT = 64 << 20  # a bucket longer than this is not ours: rebuild


class OwnerIndex:
    """The index half of ``store.network.NetworkStore`` (its state is set up there)."""

    path: str
    dir_fd: int
    _meta_fd: int
    _index_fd: int
    _tmp_fd: int
    _dirty: bool
    _boot_id: str
    _index_lost: bool
    _index_written: bool
    _pending: dict[str, tuple[str, str, list[str], dict]]
    _buckets: dict[int, dict[str, str]]
    _changed: set[int]
    _flushed: dict[int, bytes | None]
    _snap: str
    _new_snap: str
    _delta: dict[str, str | None]
    _delta_at_open: dict[str, str | None]

    # ----------------------------------------------------------------- index freshness
    def _check_index(self) -> None:
        """Trust, catch up or rebuild the owner index (see the module docstring)."""
        self._boot_id = read_boot_id()
        state = self._read_json(self._meta_fd, STATE_FILE)
        try:
            st = os.fstat(self.dir_fd)
        except OSError as exc:
            raise self._io_error("stat", self.path, exc) from None
        if self._index_lost or not isinstance(state, dict) or not valid_state(state, st.st_ino, self._boot_id):
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
            if owner_kind == OWNED and cid is not None:
                found.setdefault(index_field(cid, ifname), (cid, ifname, []))[2].append(name)
        entries = {}
        for field in found:
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
        if kind != "file" or data is None:
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
        body = "".join([f"snap {snap}\n"] + [f"{line}\n" for line in lines])
        self._write_tmp(_SNAP_TMP, body.encode("ascii", "surrogateescape"), fsync=False)
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
            out = os.open(
                _SNAP_TMP,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self._tmp_fd,
            )
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
                tail = _kept_tail(old.get(field), items) or fresh
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

    # ----------------------------------------------------------------- the owner index (buckets)
    def _read_bucket_text(self, b: int) -> str | None:
        """A bucket file's text; None when there is none; "\\0" (never a valid bucket) when it is not
        a regular file, too long or not UTF-8."""
        kind, data, _ = read_entry(self._index_fd, str(b), _BUCKET_LIMIT + 1)
        if kind is None:
            return None
        if kind != "file" or data is None or len(data) > _BUCKET_LIMIT:
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
            raise self._io_error(
                "remove index bucket", os.path.join(self.path, META_DIR, INDEX_DIR, str(b)), exc
            ) from None

    def _write_pending(self, idents: dict[str, list]) -> None:
        # Every entry is looked up before any is changed: a lie found on the way rebuilds the
        # index, which drops what this call changed in memory so far.
        entries = {key: self._entry(cid, ifname) for key, (cid, ifname, _, _) in self._pending.items()}
        for key, (cid, ifname, names, meta) in self._pending.items():
            entry = entries[key]
            ips: list[str] = []
            files: dict[str, list] = {}
            foreign = False
            if entry is not None:  # what it still holds from before this call
                for ip in entry["ips"]:
                    kind, data, st = read_entry(self.dir_fd, ip)
                    if ip not in names and kind == "file" and st is not None and parse_owner(data) == (cid, ifname):
                        ips.append(ip)
                        files[ip] = file_ident(st, self.dir_fd, ip)
                        foreign = foreign or st.st_ino != entry["files"][ip][0]  # another file now
            # Our metadata describes the files we link; an entry that still holds a file someone
            # else wrote (adopted, so without meta, or replaced since) keeps carrying none.
            foreign = bool(ips) and entry is not None and (foreign or not entry["meta"])
            old_meta = entry["meta"] if ips and entry is not None else {}
            for ip in names:
                if ip in idents:
                    ips.append(ip)
                    files[ip] = idents[ip]
            if ips:
                merged = {} if foreign else _merge_meta(old_meta, meta)
                self._put(cid, ifname, format_line(cid, ifname, ips, files, merged, self._boot_id))
        self._pending.clear()

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
        state = {
            "v": STATE_VERSION,
            "mtime": marker,
            "ino": st.st_ino,
            "boot": self._boot_id,
            "snap": self._snap,
            "delta": self._delta,
        }
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
            view = view[os.write(fd, view) :]

    def _write_tmp(self, name: str, data: bytes, fsync: bool) -> None:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._tmp_fd
        )
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
