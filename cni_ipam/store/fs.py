"""The one home of careful file I/O: the reservation store, the usePodCidr cache, the metrics
textfiles and the pool's metadata all open files through these steps.

Every step works relative to an open directory (``dir_fd``), follows no symlink in the last
component, opens nothing blocking (a FIFO or a device in the way is "not a regular file", never a
hang), reads at most a bounded number of bytes, and sets modes explicitly so that the umask of
whoever runs us (000 included) never makes a file or a directory group- or world-writable.
Stdlib only: it is on the ADD path.
"""

from __future__ import annotations

import os
import stat

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o755  # data and network directories (0700 for .cni-ipam and below), whatever the umask
SPECIAL = "special"  # read_entry: not a regular file (FIFO, device, socket, directory, symlink) or unreadable


def read_entry(
    dir_fd: int, name: str, limit: int = 1 << 16
) -> "tuple[str | None, bytes | None, os.stat_result | None]":
    """Read ``name`` without ever blocking or following a link: ("file", content, stat) for a regular
    file, (SPECIAL, None, stat) for anything else that exists or cannot be read, (None, None, None)
    when it does not exist.  The lstat comes first so a device is never opened."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None, None, None
    except OSError:
        return SPECIAL, None, None
    if not stat.S_ISREG(st.st_mode):
        return SPECIAL, None, st
    try:
        fd = os.open(name, O_READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None, None
    except OSError:
        return SPECIAL, None, st
    return _read_opened(fd, limit, st)


def _read_opened(fd: int, limit: int, st: "os.stat_result | None") -> "tuple[str, bytes | None, os.stat_result | None]":
    """The end of ``read_entry``/``read_listed``: ``fd`` (opened ``O_NONBLOCK|O_NOFOLLOW``) is
    ``fstat``-checked (a file swapped for something else since the lstat or the listing is caught),
    read up to ``limit`` and closed; ``st`` is what an unreadable file reports."""
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            return SPECIAL, None, fst
        return "file", os.read(fd, limit), fst
    except OSError:
        return SPECIAL, None, st
    finally:
        os.close(fd)


def read_listed(
    dir_fd: int, entry: "os.DirEntry", limit: int = 1 << 16
) -> "tuple[str | None, bytes | None, os.stat_result | None]":
    """``read_entry`` for an entry of ``os.scandir(dir_fd)``: the type the directory listing gave
    (``d_type``) stands in for the ``lstat`` where the file system reports it, so a full scan costs
    one ``lstat`` less per file; anything not listed as a regular file is ``lstat``-ed and never
    opened, and what is opened is still ``O_NONBLOCK|O_NOFOLLOW`` and ``fstat``-checked (an entry
    swapped since the listing is caught there, as one swapped since an ``lstat`` is)."""
    try:
        regular = entry.is_file(follow_symlinks=False)  # d_type; an lstat when the fs gives DT_UNKNOWN
    except OSError:
        return SPECIAL, None, None
    if not regular:
        return read_entry(dir_fd, entry.name, limit)
    try:
        fd = os.open(entry.name, O_READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None, None
    except OSError:
        return read_entry(dir_fd, entry.name, limit)  # e.g. ELOOP: a symlink swapped in since the listing
    return _read_opened(fd, limit, None)


def makedirs(path: str, mode: int = DIR_MODE) -> None:
    """``os.makedirs`` that gives every directory it creates ``mode`` (os.makedirs leaves the
    parents to the umask: 0777 under umask 000).  The umask can only make them tighter."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass


def unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def remove_junk(name: str, dir_fd: int) -> None:
    """Remove a leftover of ours; a directory planted there is removed when empty, else left."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except (IsADirectoryError, PermissionError):
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError:
            pass
    except FileNotFoundError:
        pass


def open_private_subdir(parent_fd: int, name: str) -> int:
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    return os.open(name, O_DIR, dir_fd=parent_fd)


def mkdir_at(dir_fd: int, name: str, mode: int = 0o755) -> None:
    """``mkdir`` of one directory inside ``dir_fd`` at ``mode`` or tighter (an existing one is kept)."""
    old = os.umask(0o022)
    try:
        os.umask(old | 0o022 | (0o777 & ~mode))
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    finally:
        os.umask(old)


def open_dir(name: str, dir_fd: "int | None" = None, follow: bool = False) -> int:
    """An fd of the directory ``name``; a symlink as the last component is refused (ELOOP) unless
    ``follow`` (for a directory the operator named, e.g. ``--textfile-dir``)."""
    flags = O_DIR if not follow else O_DIR & ~os.O_NOFOLLOW
    return os.open(name, flags, dir_fd=dir_fd)


def private_to_us(fd: int) -> bool:
    """Is the directory ``fd`` ours alone: owned by our effective uid, writable by nobody else?"""
    st = os.fstat(fd)
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


class NotRegular(Exception):
    """A FIFO, a device, a socket or a directory where a regular file was expected."""


class TooLarge(Exception):
    """A file longer than the caller's limit."""


def read_path(path: str, limit: int) -> bytes:
    """The content of the regular file ``path`` (symlinks followed: a path the operator configured),
    opened non-blocking so a FIFO is refused (``NotRegular``) rather than waited on; ``TooLarge``
    beyond ``limit`` bytes; OSError when it cannot be opened or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(path)
        data = _read_upto(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(path)
    return data


def _read_upto(fd: int, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_regular(dir_fd: int, name: str, limit: int) -> "bytes | None":
    """The content of the regular file ``name`` (no symlink, FIFO, device or directory), or None when
    it is missing, not a regular file, unreadable or longer than ``limit`` bytes."""
    try:
        fd = os.open(name, O_READ, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = _read_upto(fd, limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def write_atomic(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``name`` inside ``dir_fd`` with ``data``: a new temporary file (``O_EXCL|O_NOFOLLOW``,
    so nothing planted is followed or reused), ``mode`` set with ``fchmod`` (no umask applies),
    fsynced, then one ``rename``; a symlink at ``name`` is replaced, never written through.
    Raises OSError; leaves no temporary file behind."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, O_NEW, 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
