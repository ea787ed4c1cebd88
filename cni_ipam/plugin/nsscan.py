"""Is a network namespace still held by anything on the node?  A walk of /proc for *evidence of life*
(stdlib ``os`` only).  ``cni-ipam gc`` uses it where the kernel cannot answer (``plugin.nsfs``): a
holder found keeps a reservation; not finding one proves nothing, and no code path frees an
address on it (fds in flight over unix sockets, io_uring registrations, sockets and tap fds made in
the namespace, threads with their own fd table or mount namespace, a process whose main thread
exited: none of them shows here; docs/gc.md has the table).  The heal never runs it.

A network namespace lives while anything holds it: a task whose network namespace it is, an open
file descriptor on it, or an nsfs mount of it (``ip netns add`` bind-mounts one under /run/netns).
A path such as ``/proc/<pid>/ns/net`` or ``/run/netns/x`` is only one of those holders.  We identify a
namespace by the identity of its nsfs file, ``(st_dev, st_ino)``, which ADD records, and look for that
identity in every place of ``/proc`` that can hold it:

* ``/proc/<pid>/task/<tid>/ns/net`` of every thread of every process (threads may ``setns``);
* ``/proc/<pid>/fd/*`` of every process (the table of the thread group; see *limits*);
* the nsfs mounts in ``/proc/<pid>/mountinfo``, read once per distinct mount namespace.

API::

    held = find_held(idents, proc="/proc")
        # idents: iterable of (dev, ino).  Returns the subset (set of tuples) held by anything.
        # Raises Unsure (with .held and .problems) when some ident was not found AND the scan could
        # not look everywhere.  Even a normal return proves nothing about the missing idents.
    result = scan(idents, proc="/proc", node_pidns=False)
        # result.held: {ident: "who holds it"}; result.ids: {ident: NS_GET_ID of the namespace found
        # with that inode, None when unreadable}; result.problems: [why the scan is unsure];
        # result.sure; result.gone(ident) -> not seen by a sure walk (NOT a proof); result.foreign: idents not
        # on the nsfs device (never a namespace: nothing to look for, never gone, find_held: Unsure).

What makes a scan unsure (``problems`` not empty, so nothing it did not find counts as gone):

* ``proc`` does not show the host's PID namespace (pid 2 is not the kernel thread ``kthreadd``):
  processes outside it are invisible.  ``node_pidns=True`` says the caller knows this PID namespace
  holds every process of the node (a kind / sysbox node container);
* a process or thread whose namespace link, fd table or mountinfo cannot be read (EACCES: an LSM, a
  non-dumpable process); a thread whose namespace we cannot read is resolved, when possible, through
  ``/proc/<pid>/task/<tid>/net/dev`` (its inode is per network namespace);
* a mount namespace referenced by an fd or an nsfs mount that no visible process lives in (its
  mounts cannot be read);
* processes still appearing after the pid list was re-read three times.

A namespace found nowhere is looked for a second time (a full second pass) before it counts as gone,
so a holder handing the namespace over (fd -> mount, parent -> child) between our reads is caught.

Limits (documented in docs/gc.md): every holder the kernel keeps without a /proc trace is missed.
An inode number is reused by the next namespace made, so a holder found by inode may be another
namespace: every holder found is opened and its kernel id read (``NS_GET_ID``, Linux 6.18, any PID
namespace) into ``Scan.ids``; the caller compares it with the id recorded at ADD.
"""

import os

PF_KTHREAD = 0x00200000
_NET = "net:["
_MNT = "mnt:["


class Unsure(Exception):
    """``find_held`` could not look everywhere; ``held`` is what it did find, ``problems`` why."""

    def __init__(self, held, problems):
        Exception.__init__(self, "namespace scan incomplete: " + "; ".join(problems[:5]))
        self.held = held
        self.problems = problems


class Scan(object):
    """``held``: {ident: who holds it}; ``problems``: why the scan was unsure (empty: sure);
    ``foreign``: idents not on the nsfs device (never namespaces: neither held nor gone)."""

    __slots__ = ("wanted", "held", "ids", "problems", "foreign", "nsfs_dev")

    def __init__(self, wanted, nsfs_dev):
        self.wanted = wanted
        self.held = {}
        # ident -> the kernel id (NS_GET_ID) of the namespace found with that inode, None when unreadable:
        # an inode number is reused, so only this id says *which* namespace was found
        self.ids = {}
        self.problems = []
        self.foreign = set()
        self.nsfs_dev = nsfs_dev

    @property
    def sure(self):
        return not self.problems

    def gone(self, ident):
        """True only when ``ident`` was looked for everywhere and found nowhere."""
        ident = tuple(ident)
        return not self.problems and ident in self.wanted and ident not in self.held and ident not in self.foreign


def _ino(link, prefix):
    """The inode of a ``net:[123]`` style link target, or None."""
    if link.startswith(prefix) and link.endswith("]"):
        try:
            return int(link[len(prefix):-1])
        except ValueError:
            return None
    return None


def _unescape(field):
    """A mountinfo path field as a path (the kernel octal-escapes space, tab, newline, backslash)."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _comm(proc, pid):
    try:
        with open(os.path.join(proc, pid, "comm"), "rb") as fh:
            return fh.read(64).decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def nsfs_device(proc="/proc"):
    """st_dev of the nsfs filesystem (one per kernel)."""
    for path in (os.path.join(proc, "thread-self", "ns", "net"), "/proc/thread-self/ns/net", "/proc/self/ns/net"):
        try:
            return os.stat(path).st_dev
        except OSError:
            continue
    return None


def host_pidns(proc="/proc"):
    """True when ``proc`` shows the host's (initial) PID namespace: pid 2 is a kernel thread."""
    try:
        with open(os.path.join(proc, "2", "stat"), "rb") as fh:
            data = fh.read(4096)
        fields = data[data.rindex(b")") + 2:].split()
        return bool(int(fields[6]) & PF_KTHREAD)
    except (OSError, ValueError, IndexError):
        return False


class _Pass(object):
    """One walk of /proc looking for the inodes in ``want`` (a dict ino -> ident)."""

    def __init__(self, proc, want, result):
        self.proc = proc
        self.want = want
        self.result = result
        self.mnt_seen = set()  # mount namespaces whose mountinfo we read (by inode)
        self.mnt_referenced = {}  # mnt inode -> who references it (fd or nsfs mount)
        self.mountinfo_seen = set()  # mountinfo contents already parsed (processes with unreadable ns/mnt)
        self.net_reps = {}  # net ns inode -> a pid living in it (to resolve unreadable threads)
        self.deferred = []  # (pid, tid, net/dev inode) of threads whose ns link was unreadable
        self.problems = []

    def done(self):
        return len(self.result.held) >= len(self.want)

    def found(self, ino, who, path):
        """``path`` opens the holder's namespace now: its id (NS_GET_ID) tells which namespace it is."""
        ident = self.want.get(ino)
        if ident is not None and ident not in self.result.held:
            from cni_ipam.plugin import nsfs

            now = nsfs.identity(path)
            if now and now.get("netnsIno") != ino:
                return False  # the holder moved on between our reads: not evidence, look further
            self.result.held[ident] = who
            self.result.ids[ident] = now.get("netnsId")
        return self.done()

    def run(self):
        seen = set()
        for _round in range(4):
            try:
                pids = [p for p in os.listdir(self.proc) if p.isdigit() and p not in seen]
            except OSError as exc:
                self.problems.append("cannot list %s: %s" % (self.proc, exc.strerror or exc))
                return
            if not pids:
                break
            for pid in pids:
                seen.add(pid)
                if self.process(pid):
                    return
        else:
            self.problems.append("new processes kept appearing while %s was scanned" % self.proc)
        self.resolve_deferred()
        for ino, who in self.mnt_referenced.items():
            if ino not in self.mnt_seen:
                self.problems.append(
                    "mount namespace mnt:[%d] (%s) has no visible process: its mounts cannot be read" % (ino, who))

    def process(self, pid):
        """Scan one process; True when every wanted namespace has been found."""
        proc, base = self.proc, self.proc + "/" + pid
        # 1. the network namespace of every thread
        try:
            tids = os.listdir(base + "/task")
        except FileNotFoundError:
            return False  # exited
        except OSError as exc:
            self.problems.append("pid %s (%s): cannot list threads: %s" % (pid, _comm(proc, pid), exc.strerror or exc))
            tids = []
        for tid in tids:
            tbase = base + "/task/" + tid
            try:
                ino = _ino(os.readlink(tbase + "/ns/net"), _NET)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited, or a zombie: holds nothing
            except OSError:
                try:
                    self.deferred.append((pid, tid, os.stat(tbase + "/net/dev").st_ino))
                except (FileNotFoundError, ProcessLookupError):
                    pass
                except OSError as exc:
                    self.problems.append(
                        "pid %s (%s) thread %s: network namespace unreadable: %s"
                        % (pid, _comm(proc, pid), tid, exc.strerror or exc)
                    )
                continue
            if ino is None:
                continue
            if ino not in self.net_reps:
                self.net_reps[ino] = (pid, tid)
            if ino in self.want:
                who = "pid %s (%s)" % (pid, _comm(proc, pid)) + ("" if tid == pid else " thread %s" % tid)
                if self.found(ino, who + " lives in it", tbase + "/ns/net"):
                    return True
        # 2. open file descriptors (of the thread group's fd table)
        fddir = base + "/fd/"
        try:
            fds = os.listdir(fddir)
        except (FileNotFoundError, ProcessLookupError):
            fds = []
        except OSError as exc:
            self.problems.append("pid %s (%s): cannot list fds: %s" % (pid, _comm(proc, pid), exc.strerror or exc))
            fds = []
        for fd in fds:
            try:
                link = os.readlink(fddir + fd)
            except (FileNotFoundError, ProcessLookupError):
                continue
            except OSError as exc:
                self.problems.append("pid %s (%s): fds unreadable: %s" % (pid, _comm(proc, pid), exc.strerror or exc))
                break
            if link.startswith(_NET):
                ino = _ino(link, _NET)
                if ino in self.want and self.found(
                    ino, "pid %s (%s) holds it open (fd %s)" % (pid, _comm(proc, pid), fd), fddir + fd
                ):
                    return True
            elif link.startswith(_MNT):
                ino = _ino(link, _MNT)
                if ino is not None:
                    self.mnt_referenced.setdefault(ino, "fd %s of pid %s" % (fd, pid))
        # 3. nsfs mounts of its mount namespace (read once per mount namespace)
        try:
            mnt = _ino(os.readlink(base + "/ns/mnt"), _MNT)
        except (FileNotFoundError, ProcessLookupError):
            return False
        except OSError:
            mnt = None  # unreadable link: read its mountinfo anyway (deduplicated by content)
        if mnt is not None:
            if mnt in self.mnt_seen:
                return False
            self.mnt_seen.add(mnt)
        return self.mountinfo(pid, mnt)

    def mountinfo(self, pid, mnt):
        try:
            with open(os.path.join(self.proc, pid, "mountinfo"), "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            if mnt is not None:
                self.mnt_seen.discard(mnt)  # exited before we could read it: another member may
            return False
        except OSError as exc:
            self.problems.append(
                "pid %s (%s): mountinfo unreadable: %s" % (pid, _comm(self.proc, pid), exc.strerror or exc)
            )
            return False
        if mnt is None:
            if data in self.mountinfo_seen:
                return False
            self.mountinfo_seen.add(data)
        if b"nsfs" not in data:
            return False
        for line in data.split(b"\n"):
            fields = line.split(b" ")
            try:
                sep = fields.index(b"-", 6)
            except ValueError:
                continue
            if len(fields) <= sep + 1 or fields[sep + 1] != b"nsfs":
                continue
            root = fields[3].decode("ascii", "replace")
            if root.startswith(_NET):
                ino = _ino(root, _NET)
                if ino in self.want:
                    where = fields[4].decode("utf-8", "replace")
                    path = os.path.join(self.proc, pid, "root", _unescape(where).lstrip("/"))
                    if self.found(ino, "mounted at %s (mount namespace of pid %s)" % (where, pid), path):
                        return True
            elif root.startswith(_MNT):
                ino = _ino(root, _MNT)
                if ino is not None:
                    self.mnt_referenced.setdefault(ino, "mounted in the mount namespace of pid %s" % pid)
        return False

    def resolve_deferred(self):
        """Threads whose ns link was unreadable: match their net/dev inode with known namespaces."""
        if not self.deferred:
            return
        known = {}
        for ino, (pid, tid) in self.net_reps.items():
            try:
                known[os.stat(os.path.join(self.proc, pid, "task", tid, "net", "dev")).st_ino] = ino
            except OSError:
                continue
        for pid, tid, dev_ino in self.deferred:
            ino = known.get(dev_ino)
            if ino is None:
                self.problems.append(
                    "pid %s (%s) thread %s: network namespace unreadable and not one we know"
                    % (pid, _comm(self.proc, pid), tid)
                )
            elif ino in self.want:
                rep = self.net_reps[ino]
                path = os.path.join(self.proc, rep[0], "task", rep[1], "ns", "net")
                self.found(ino, "pid %s (%s) lives in it" % (pid, _comm(self.proc, pid)), path)


def scan(idents, proc="/proc", node_pidns=False, confirm=True):
    """Look for every ident; see the module docstring.  Never raises for what it finds on /proc."""
    wanted = set()
    for ident in idents:
        dev, ino = ident
        wanted.add((int(dev), int(ino)))
    nsfs_dev = nsfs_device(proc)
    result = Scan(wanted, nsfs_dev)
    if not wanted:
        return result
    want = {}
    for dev, ino in wanted:
        if nsfs_dev is not None and dev == nsfs_dev:
            want[ino] = (dev, ino)
        else:
            result.foreign.add((dev, ino))
    if nsfs_dev is None:
        result.problems.append("cannot stat any nsfs file under %s" % proc)
    if not node_pidns and not host_pidns(proc):
        result.problems.append(
            "%s does not show the host's PID namespace (pid 2 is not kthreadd): processes outside it are invisible"
            % proc
        )
    if not want:
        return result
    passes = 2 if confirm else 1
    for _ in range(passes):
        walk = _Pass(proc, want, result)
        walk.run()
        if walk.done():
            return result  # everything found: problems do not matter
        if walk.problems:
            result.problems.extend(walk.problems)
            return result
        if result.problems:
            return result  # unsure anyway: a confirmation pass cannot make it sure
    return result


def find_held(idents, proc="/proc", node_pidns=False):
    """The subset of ``idents`` held by anything on the node (a set of (dev, ino) tuples).

    Raises ``Unsure`` (``.held``: what was found, ``.problems``: why) when some ident was not found
    and the scan could not look everywhere; a normal return proves the others are gone."""
    result = scan(idents, proc, node_pidns)
    held = set(result.held)
    missing = result.wanted - held
    if missing and (result.problems or missing & result.foreign):
        problems = list(result.problems)
        if missing & result.foreign:
            problems.append(
                "%d identit%s not on the nsfs device (%s): not a namespace, cannot be looked for"
                % (len(result.foreign), "y is" if len(result.foreign) == 1 else "ies are", result.nsfs_dev)
            )
        raise Unsure(held, problems)
    return held
