"""Network namespaces as the kernel names them: an identity recorded at ADD that is never reused,
and the kernel's own answer to "does that namespace still exist?".  (stdlib only: ADD imports it.)

Why not ``(st_dev, st_ino)``: the kernel hands a freed namespace's inode number to the next
namespace it makes, and a container runtime makes a pod's namespace right before its ADD, so the
next pod's namespace usually carries a gone pod's recorded inode.  Since Linux 6.18 every
namespace carries a 64-bit id that is never recycled (``ioctl(fd, NS_GET_ID)``), and nsfs exports
file handles: ``struct nsfs_file_handle { u64 ns_id; u32 ns_type; u32 ns_inum; }``, handle type
``FILEID_NSFS`` (0xf1).  ``open_by_handle_at`` with any nsfs file as the mount fd reopens a
namespace that still exists (whoever holds it: a task, an fd, a mount, a socket, an fd in flight,
an io_uring) and fails with ``ESTALE`` once it is gone; a new namespace with the same inode number
has another id, so it does not answer for the old one.

API::

    ident = identity(path)       # at ADD: {"netnsDev", "netnsIno"[, "netnsId"]} or {}; no ctypes
    kernel = Kernel()            # the checker (loads ctypes on first use)
    state, detail = kernel.state(ns_id, ns_ino)   # ALIVE, GONE or UNKNOWN

``GONE`` is a proof: the kernel decoded a handle of a namespace we know is alive (our own, the
positive control, done once per ``Kernel``) and answered ``ESTALE`` for this one.  Before 6.18 nsfs
has no export operations and ``open_by_handle_at`` answers ``ESTALE`` for *every* nsfs handle: the
control fails and every answer is ``UNKNOWN``.  So is every other error (``EPERM`` without
``CAP_DAC_READ_SEARCH`` or in a user namespace, ``ENOSYS`` under a seccomp filter, ...).
"""

import os

CLONE_NEWNET = 0x40000000
FILEID_NSFS = 0xF1
# _IO(0xb7, 0x3) and _IOR(0xb7, 0xd, __u64): include/uapi/linux/nsfs.h
NS_GET_NSTYPE = 0xB703
NS_GET_ID = (2 << 30) | (8 << 16) | (0xB7 << 8) | 0xD

ALIVE = "alive"
GONE = "gone"
UNKNOWN = "unknown"

_SELF_NET = ("/proc/thread-self/ns/net", "/proc/self/ns/net")


def nsfs_dev():
    """st_dev of nsfs (one per kernel), or None."""
    for path in _SELF_NET:
        try:
            return os.stat(path).st_dev
        except OSError:
            continue
    return None


def identity(path):
    """The identity of the network namespace file ``path``: {} when it is none (not a regular file
    on nsfs, unreadable); ``netnsDev``/``netnsIno`` always, ``netnsId`` where the kernel has
    ``NS_GET_ID`` (6.18).  Never blocks (a FIFO named like a netns is not opened blocking)."""
    import fcntl  # a builtin module

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or st.st_dev != nsfs_dev():
            return {}
        out = {"netnsDev": st.st_dev, "netnsIno": st.st_ino}
        try:
            if fcntl.ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET:
                return {}  # another kind of namespace: not a network namespace at all
            out["netnsId"] = int.from_bytes(fcntl.ioctl(fd, NS_GET_ID, bytes(8)), "little")
        except OSError:
            pass  # before 6.18 (ENOTTY): inode only, which proves nothing later
        return out
    except OSError:
        return {}
    finally:
        os.close(fd)


def handle_bytes(ns_id, ns_ino, ns_type=CLONE_NEWNET):
    """The 16 bytes of an nsfs file handle (little-endian, as the kernel lays the struct out here)."""
    return ns_id.to_bytes(8, "little") + ns_type.to_bytes(4, "little") + ns_ino.to_bytes(4, "little")


class Kernel(object):
    """Asks the kernel whether namespaces exist (``open_by_handle_at``).  ``ctypes`` is loaded on
    the first question: the heal and ``cni-ipam gc`` pay for it, ADD never does."""

    def __init__(self):
        self._libc = None
        self._why_not = None  # set once: why the kernel cannot answer (then every answer is UNKNOWN)
        self._checked = False

    def _open_handle(self, handle, ns_type=CLONE_NEWNET):
        """(fd, 0) or (-1, errno)."""
        import ctypes

        class FileHandle(ctypes.Structure):
            _fields_ = [
                ("handle_bytes", ctypes.c_uint),
                ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 16),
            ]

        fh = FileHandle()
        fh.handle_bytes = 16
        fh.handle_type = FILEID_NSFS
        ctypes.memmove(fh.f_handle, handle, 16)
        mount_fd = -1
        for path in _SELF_NET:
            try:
                mount_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                break
            except OSError:
                continue
        if mount_fd < 0:
            return -1, -1
        try:
            fd = self._libc.open_by_handle_at(mount_fd, ctypes.byref(fh), os.O_RDONLY | os.O_CLOEXEC)
            return (fd, 0) if fd >= 0 else (-1, ctypes.get_errno())
        finally:
            os.close(mount_fd)

    def why_not(self):
        """Why this kernel (or this caller) cannot answer, or None when it can."""
        if self._checked:
            return self._why_not
        self._checked = True
        try:
            import ctypes

            self._libc = ctypes.CDLL(None, use_errno=True)
            self._libc.open_by_handle_at  # noqa: B018 - missing in a very old libc
        except (OSError, AttributeError, ImportError) as exc:
            self._why_not = "cannot call open_by_handle_at: %s" % exc
            return self._why_not
        # The positive control: a namespace we know is alive and that we are not in.  Our own
        # namespace is no control: in a PID namespace other than the initial one, 6.18 decodes the
        # caller's own namespaces but answers ESTALE for every other, alive or not.
        fd, err = self._control_netns()
        if fd < 0:
            self._why_not = "cannot make a network namespace to test the kernel's answers with (%s)" % _errname(err)
            return self._why_not
        try:
            control = identity("/proc/self/fd/%d" % fd)
            if "netnsId" not in control:
                self._why_not = "this kernel has no namespace ids (NS_GET_ID, Linux 6.18)"
                return self._why_not
            handle = handle_bytes(control["netnsId"], control["netnsIno"])
            reopened, err = self._open_handle(handle)
        finally:
            os.close(fd)
        if reopened >= 0:
            os.close(reopened)
            return None
        self._why_not = (
            "the kernel does not reopen a live network namespace by its handle (%s): nsfs file handles "
            "unusable here (before Linux 6.18, not in the initial PID namespace, or no privilege)" % _errname(err)
        )
        return self._why_not

    def _control_netns(self):
        """(fd, 0) of a fresh network namespace that the caller is *not* in, or (-1, errno)."""
        import threading

        box = {"fd": -1, "err": 0}

        def make():  # in a thread of its own: unshare moves only that thread
            import ctypes

            try:
                home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                box["err"] = exc.errno
                return
            try:
                if self._libc.unshare(CLONE_NEWNET) != 0:
                    box["err"] = ctypes.get_errno()
                    return
                try:
                    box["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    box["err"] = exc.errno
                # Back home before the thread ends: an exiting thread must not be seen living in it.
                self._libc.setns(home, CLONE_NEWNET)
            finally:
                os.close(home)

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        return box["fd"], box["err"]

    def state(self, ns_id, ns_ino):
        """(ALIVE | GONE | UNKNOWN, detail) for the namespace recorded as (ns_id, ns_ino)."""
        why = self.why_not()
        if why is not None:
            return UNKNOWN, why
        import errno

        fd, err = self._open_handle(handle_bytes(ns_id, ns_ino))
        if fd >= 0:
            os.close(fd)
            return ALIVE, "the kernel still has network namespace id %d" % ns_id
        if err == errno.ESTALE:
            return GONE, "the kernel no longer has network namespace id %d (nsfs handle: ESTALE)" % ns_id
        return UNKNOWN, "the kernel did not answer for network namespace id %d (%s)" % (ns_id, _errname(err))


def _errname(err):
    import errno

    return errno.errorcode.get(err, str(err)) if err and err > 0 else "no nsfs file to use as mount fd"


def recorded(meta):
    """The kernel identities a reservation's metadata records: [(ns_id, ns_ino)] (empty when none).

    An attachment added twice in two namespaces records both (``netnsAlso``): it is gone only
    when every one of them is."""
    if not isinstance(meta, dict):
        return []
    also = meta.get("netnsAlso", [])
    if not isinstance(also, list):
        return []  # a malformed list: we cannot know every namespace, so prove nothing
    out = []
    for ident in [meta] + also:
        if not isinstance(ident, dict):
            return []
        nid, ino = ident.get("netnsId"), ident.get("netnsIno")
        if _uint(nid) and _uint(ino) and ino < (1 << 32) and nid < (1 << 64):
            out.append((nid, ino))
        elif ident is not meta or ident.get("netns") or ident.get("netnsIno") is not None:
            return []  # a namespace without a kernel id: its death cannot be proven, so neither can the entry's
    return out


def _uint(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
