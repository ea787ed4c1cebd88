"""Liveness rules: is a reservation still used (live), provably abandoned (stranded), or unknown?

The rules read the GC metadata that ADD records in the owner index (``plugin.attachment_meta``:
``created``, ``bootId``, ``netns``, ``netnsDev``, ``netnsIno``, ``k8s``) and, when asked, outside
evidence (libcni's result cache, a list of valid container IDs).  Nothing here deletes anything:
``cni_ipam.plugin.verbs`` (GC) and ``cni_ipam.admin.gc`` act on the verdicts, under the network lock.

Verdicts, in the order the rules are tried (docs/gc.md has the same table):

* ``live/grace-period`` - younger than the grace period (``created``, else the file's mtime).  Never
  stranded, whatever else is true: protects an ADD still in progress.
* ``stranded/previous-boot`` - our recorded ``bootId`` differs from the running kernel's boot id;
  without one, the owner index's ``seenBoot`` (the boot id under which the index first saw that exact
  file) differs.  No clock is consulted: a clock can be wrong, a boot id cannot.
* ``live/current-boot`` - with ``previous_boot_only`` (the boot unit) the other rules are skipped.
* The namespace rules.  The kernel is the authority: ADD records the namespace's kernel id
  (``netnsId``, never reused; ``netnsAlso`` when the attachment was added twice) and the kernel
  answers for it (nsfs file handles, Linux 6.18; ``cni_ipam.plugin.nsfs``).

  - ``stranded/netns-gone`` - the kernel no longer has any namespace the attachment was added in
    (``ESTALE``, after a positive control on our own namespace).
  - ``live/netns-alive`` - the kernel still has one of them; or, where the kernel cannot answer,
    evidence of life: the path still is the recorded namespace, or the /proc walk
    (``cni_ipam.plugin.nsscan``) saw a holder (the detail names it).  A namespace found by its
    inode number is evidence only when its kernel id (``NS_GET_ID``, readable in any PID namespace)
    is the recorded ``netnsId``: the kernel gives a freed inode number to the next namespace, so one
    with another id is another pod's (the detail says so).  Without a recorded id, or where the
    found one's id cannot be read, the inode alone keeps (never frees).
  - ``unknown/netns-unsure`` - the kernel cannot answer (before 6.18, no permission, no id
    recorded) and nothing showed life.  A walk of /proc that finds no holder proves nothing (fds
    in flight, io_uring, sockets, threads with their own fd table are invisible to it): kept.
  - ``unknown/netns-not-nsfs`` - the path exists but is not a namespace file, or the recorded
    identity was never on nsfs.
  - ``unknown/netns-no-identity`` - the path is gone and no identity was recorded.
  - ``unknown/netns-unreadable`` - the path cannot be checked and nothing else settled it.
* ``stranded/not-in-runtime-cache`` - a runtime cache directory was given and libcni holds no
  ``<network>-<containerID>-<ifname>`` result for the attachment.
* ``stranded/not-in-valid-list`` - a list of valid container IDs was given and this ID is not in it.
* ``stranded/not-in-runtime`` - the container runtime was asked (``runtime_ids``, from
  ``cni_ipam.admin.runtimes``) and does not know this container ID (tried before the cache and the list).
* ``live/no-evidence`` (a reservation with our metadata but no namespace to check) otherwise.

A namespace that is alive wins over the runtime, the cache and the valid list, and one whose fate
no authority can tell wins over the cache and the list (the verdict stays ``live`` or ``unknown``
and ``detail`` says what was claimed): releasing an address that an interface still uses would
hand it out twice, worse than a leak.  The runtime (``--runtime``) is the authority on its own
sandboxes: where the kernel cannot tell and nothing showed life, its "gone" decides.

Reservations without metadata (written by host-local, or adopted from a file someone else wrote) are
``unknown/no-metadata`` and left alone, except for the ``seenBoot`` proof of a previous boot.  With
``include_unknown`` they are also judged by the runtime cache and the valid list; without such
evidence they stay ``unknown``.

Everything the rules read from the machine is injectable (``boot_id``, ``netns_root``, ``proc``,
``scanner``, ``kernel``, ``runtime_cache``, ``now``) so tests can simulate a reboot or a vanished namespace.

API (used by ``cni-ipam gc``, ``show --ips`` and ``metrics``)::

    checker = Checker(grace=300)                     # or Checker(now=..., boot_id=..., ...)
    verdict = checker.classify(entry, network="net") # entry: owner-index dict, Reservation, Finding
    with NetworkStore(data_dir, "net", create=False) as store:
        findings = scan_store(store, checker)        # [Finding] under the network lock
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any, Callable, Iterable

from cni_ipam.admin.verdicts import (
    CURRENT_BOOT,
    EMPTY_FILE,
    FOREIGN_CONTENT,
    GRACE_PERIOD,
    LIVE,
    NETNS_ALIVE,
    NETNS_GONE,
    NETNS_NO_IDENTITY,
    NETNS_NOT_NSFS,
    NETNS_REPLACED,
    NETNS_UNREADABLE,
    NETNS_UNSURE,
    NO_EVIDENCE,
    NO_METADATA,
    NOT_A_FILE,
    NOT_IN_RUNTIME,
    NOT_IN_RUNTIME_CACHE,
    NOT_IN_VALID_LIST,
    PREVIOUS_BOOT,
    STRANDED,
    STRANDED_REASONS,
    UNKNOWN,
    Finding,
    Verdict,
)
from cni_ipam.plugin import nsfs, nsscan
from cni_ipam.plugin.proof import boot_proof
from cni_ipam.store.layout import BOOT_ID_PATH, EMPTY, OPAQUE, OWNED, Reservation, owner_key, read_boot_id
from cni_ipam.store.network import NetworkStore

# the verdict vocabulary lives in verdicts; callers import it from here with the rules
__all__ = [
    "LIVE", "STRANDED", "UNKNOWN", "GRACE_PERIOD", "PREVIOUS_BOOT", "CURRENT_BOOT", "NETNS_GONE",
    "NETNS_REPLACED", "NETNS_UNREADABLE", "NETNS_ALIVE", "NOT_IN_RUNTIME_CACHE", "NOT_IN_VALID_LIST",
    "NETNS_UNSURE", "NETNS_NOT_NSFS", "NETNS_NO_IDENTITY", "NOT_IN_RUNTIME", "NO_METADATA", "EMPTY_FILE",
    "FOREIGN_CONTENT", "NOT_A_FILE", "NO_EVIDENCE", "STRANDED_REASONS", "Verdict", "Finding", "DEFAULT_GRACE",
    "DEFAULT_RUNTIME_CACHE", "Checker", "scan_store", "environment_warnings", "read_boot_time", "has_metadata"
]

DEFAULT_GRACE = 300.0  # seconds
DEFAULT_RUNTIME_CACHE = "/var/lib/cni/results"  # libcni's default cacheDir + "/results"
_META_KEYS = ("created", "bootId", "netns")


def read_boot_time(path: str = "/proc/stat") -> float | None:
    """When the running kernel booted (seconds since the epoch), or None."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def has_metadata(meta: dict | None) -> bool:
    return isinstance(meta, dict) and any(meta.get(k) not in (None, "") for k in _META_KEYS)


class Checker:
    """The rules with their inputs fixed for one pass.  Every machine input is injectable:

    ``now`` (epoch seconds, default time.time()), ``grace`` (seconds), ``boot_id`` (default the
    kernel's), ``netns_root`` (prefix joined to recorded namespace paths, default "/"), ``proc``
    (the procfs the namespace scan walks, default /proc), ``node_pidns`` (the caller vouches that
    ``proc`` shows every process of the node although it is not the host PID namespace),
    ``scanner`` (a callable ``idents -> nsscan.Scan``, default ``nsscan.scan``: evidence of life only),
    ``kernel`` (an ``nsfs.Kernel``, the authority on namespaces), ``runtime_cache``
    (a libcni results directory to consult, None to skip), ``valid_ids`` (container IDs known to be
    valid, None to skip), ``include_unknown`` and ``previous_boot_only`` (see the module docstring).
    ``boot_time`` is accepted for compatibility and only reported: no rule compares clocks.
    """

    def __init__(
        self,
        now: float | None = None,
        grace: float = DEFAULT_GRACE,
        boot_id: str | None = None,
        boot_time: float | None = None,
        netns_root: str = "/",
        runtime_cache: str | None = None,
        valid_ids: Iterable[str] | None = None,
        include_unknown: bool = False,
        previous_boot_only: bool = False,
        boot_id_path: str = BOOT_ID_PATH,
        proc: str = "/proc",
        node_pidns: bool = False,
        scanner: Callable | None = None,
        runtime_ids: Iterable[str] | None = None,
        runtime_name: str = "the runtime",
        kernel: Any = None,
    ) -> None:
        self.now = time.time() if now is None else float(now)
        self.grace = float(grace)
        self.boot_id = (
            read_boot_id(boot_id_path, kernel_only=boot_id_path == BOOT_ID_PATH) if boot_id is None else boot_id
        )
        self.boot_time = read_boot_time() if boot_time is None else boot_time
        self.netns_root = netns_root or "/"
        self.runtime_cache = runtime_cache
        self.valid_ids = None if valid_ids is None else frozenset(valid_ids)
        self.include_unknown = include_unknown
        self.previous_boot_only = previous_boot_only
        self.proc = proc
        self.node_pidns = node_pidns
        self.scanner = scanner or (lambda idents: nsscan.scan(idents, self.proc, self.node_pidns))
        self.kernel = kernel if kernel is not None else nsfs.Kernel()
        self._kernel_answers: dict[tuple[int, int], tuple[str, str]] = {}
        self._cache_names: frozenset | None = None
        self._scans: dict[tuple[int, int], Any] = {}  # ident -> the Scan that looked for it
        self._nsfs_dev: int | None = None
        self.scan_problems: list[str] = []  # why some namespace scan was unsure (for warnings)
        # IDs the container runtime knows (cni_ipam.admin.runtimes.evidence), None when not asked or unanswered
        self.runtime_ids = None if runtime_ids is None else frozenset(runtime_ids)
        self.runtime_name = runtime_name

    # ------------------------------------------------------------------ inputs
    def cache_names(self) -> frozenset:
        """File names in the runtime cache directory (read once).  Raises OSError when unreadable:
        a missing cache must never make every reservation look stranded."""
        if self._cache_names is None:
            self._cache_names = frozenset(os.listdir(self.runtime_cache)) if self.runtime_cache else frozenset()
        return self._cache_names

    def netns_path(self, path: str) -> str:
        if self.netns_root in ("", "/"):
            return path
        return os.path.join(self.netns_root, path.lstrip("/"))

    def nsfs_dev(self) -> int | None:
        if self._nsfs_dev is None:
            self._nsfs_dev = nsscan.nsfs_device(self.proc)
        return self._nsfs_dev

    def prescan(self, metas: Iterable[dict]) -> None:
        """Look for every namespace identity of ``metas`` that neither the kernel nor its path
        settles, in one scan of the node (``classify`` would otherwise scan once per reservation)."""
        idents = set()
        for meta in metas:
            ident = _identity(meta)
            if ident is None or ident in self._scans or not isinstance(meta.get("netns"), str):
                continue
            if self._kernel_verdict(meta) is not None:
                continue
            if self._path_state(meta["netns"], ident, _ns_id(meta))[0] != "same":
                idents.add(ident)
        if idents:
            self._run_scan(idents)

    def _kernel_verdict(self, meta: dict) -> Verdict | None:
        """The kernel's answer for every namespace ``meta`` records: stranded when all are gone,
        live when one exists, None when it cannot tell (then the evidence rules run)."""
        idents = nsfs.recorded(meta)
        if not idents:
            return None
        answers = []
        for ident in idents:
            answer = self._kernel_answers.get(ident)
            if answer is None:
                answer = self._kernel_answers[ident] = self.kernel.state(*ident)
            answers.append(answer)
        alive = [detail for state, detail in answers if state == nsfs.ALIVE]
        if alive:
            return Verdict(LIVE, NETNS_ALIVE, alive[0])
        if all(state == nsfs.GONE for state, _ in answers):
            netns = meta.get("netns") if isinstance(meta.get("netns"), str) and meta.get("netns") else None
            why = "; ".join(detail for _, detail in answers)
            now = nsfs.identity(self.netns_path(netns)).get("netnsId") if netns else None
            if now is not None:
                return Verdict(STRANDED, NETNS_REPLACED, f"{netns} now names another namespace (id {now}); {why}")
            return Verdict(STRANDED, NETNS_GONE, f"{netns or 'its network namespace'}: {why}")
        return None

    def _run_scan(self, idents: set[tuple[int, int]]) -> Any:
        result = self.scanner(idents)
        for ident in idents:
            self._scans[ident] = result
        for problem in result.problems:
            if problem not in self.scan_problems:
                self.scan_problems.append(problem)
        return result

    def _scan(self, ident: tuple[int, int]) -> Any:
        result = self._scans.get(ident)
        return result if result is not None else self._run_scan({ident})

    def _path_state(self, netns: str, ident: tuple[int, int] | None, ns_id: int | None = None) -> tuple[str, str]:
        """What the recorded path says: ("same" | "other" | "not-nsfs" | "gone" | "unreadable", detail).
        With a recorded kernel id ``ns_id``, the same inode is the same namespace only with the same id."""
        try:
            st = os.stat(self.netns_path(netns))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESRCH):
                return "gone", f"{netns} no longer exists"
            return "unreadable", f"cannot check {netns}: {exc.strerror or exc}"
        if ident is not None and (st.st_dev, st.st_ino) == ident:
            now = nsfs.identity(self.netns_path(netns)).get("netnsId") if ns_id is not None else None
            if now is None or now == ns_id:
                return "same", f"{netns} is still the namespace recorded at ADD"
            return (
                "other",
                f"{netns} now names another namespace with the recorded inode number (id {now}, recorded id {ns_id})",
            )
        if st.st_dev != self.nsfs_dev():
            return "not-nsfs", f"{netns} exists but is not a namespace file (dev/inode {st.st_dev}/{st.st_ino})"
        return (
            "other",
            f"{netns} now names another namespace (dev/inode {st.st_dev}/{st.st_ino}, recorded {_fmt(ident)})",
        )

    # ------------------------------------------------------------------ the rules
    def classify(self, entry: Any, network: str = "", meta: dict | None = None, mtime: float | None = None) -> Verdict:
        """Judge one attachment.  ``entry`` is an owner-index entry (dict with containerID, ifname,
        meta, seenBoot), a ``store.Reservation`` (pass its owner's ``meta``) or a ``Finding``."""
        seen = None
        if isinstance(entry, Finding):
            network = network or entry.network
            meta = entry.meta if meta is None else meta
            mtime = entry.mtime if mtime is None else mtime
            seen = entry.seen_boot
            entry = entry.reservation
        if isinstance(entry, Reservation):
            cid, ifname = entry.container_id, entry.ifname
        elif isinstance(entry, dict):
            cid, ifname = entry.get("containerID"), entry.get("ifname")
            seen = entry.get("seenBoot")
            if meta is None:
                meta = entry.get("meta")
        else:
            raise TypeError(f"cannot classify {type(entry).__name__}")
        meta = meta if isinstance(meta, dict) else {}
        return self._classify(cid, ifname, meta, mtime, network, seen)

    def _classify(
        self,
        cid: str | None,
        ifname: str | None,
        meta: dict,
        mtime: float | None,
        network: str,
        seen: str | None = None,
    ) -> Verdict:
        with_meta = has_metadata(meta)
        created = meta.get("created")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            created = mtime
        proof = boot_proof({"meta": meta, "seenBoot": seen}, self.boot_id)
        # The grace period protects an ADD in progress; a file the index saw in a previous boot is none.
        graced = with_meta or (self.include_unknown and proof is None)
        if graced and created is not None and self.now - created < self.grace:
            return Verdict(
                LIVE, GRACE_PERIOD, f"created {max(self.now - created, 0):.0f}s ago, grace period is {self.grace:g}s"
            )
        if proof is not None:
            return Verdict(STRANDED, PREVIOUS_BOOT, proof[1])
        if not with_meta and not self.include_unknown:
            return Verdict(
                UNKNOWN, NO_METADATA, "no liveness metadata (written by host-local?); use --include-unknown to judge it"
            )
        if self.previous_boot_only:
            return Verdict(
                LIVE if with_meta else UNKNOWN,
                CURRENT_BOOT if with_meta else NO_METADATA,
                "reserved in the running boot (only previous boots were checked)",
            )

        netns = meta.get("netns") if with_meta and isinstance(meta.get("netns"), str) and meta.get("netns") else None
        ident = _identity(meta) if with_meta else None
        ns_verdict = self._kernel_verdict(meta) if with_meta else None
        if ns_verdict is None and (netns or ident):
            ns_verdict = self._netns_verdict(netns, ident, _ns_id(meta))
        if ns_verdict is not None and ns_verdict.state == STRANDED:
            return ns_verdict

        doubts = []
        if self.runtime_ids is not None and cid is not None and cid not in self.runtime_ids:
            doubts.append((NOT_IN_RUNTIME, f"container {cid} is unknown to {self.runtime_name}"))
        if self.runtime_cache is not None and cid is not None:
            name = f"{network}-{cid}-{ifname or ''}"
            if name not in self.cache_names() and not (
                ifname is None and _cache_has_id(self.cache_names(), network, cid)
            ):
                doubts.append(
                    (NOT_IN_RUNTIME_CACHE, f"no {os.path.join(self.runtime_cache, name)} in the runtime's result cache")
                )
        if self.valid_ids is not None and cid is not None and cid not in self.valid_ids:
            doubts.append((NOT_IN_VALID_LIST, f"container {cid} is not in the list of valid IDs"))
        if ns_verdict is not None and ns_verdict.state == UNKNOWN and doubts and doubts[0][0] == NOT_IN_RUNTIME:
            # The runtime is the authority on its own sandboxes: where nothing showed the namespace
            # alive and the kernel cannot tell, its word decides (a cache or a list never does).
            return Verdict(STRANDED, NOT_IN_RUNTIME, f"{doubts[0][1]}; {ns_verdict.detail}")
        if ns_verdict is not None:
            if doubts:
                why = "; ".join(d for _, d in doubts)
                return Verdict(ns_verdict.state, ns_verdict.reason, f"{ns_verdict.detail}; kept although {why}")
            return ns_verdict
        if doubts:
            return Verdict(STRANDED, doubts[0][0], doubts[0][1])
        if not with_meta:
            return Verdict(UNKNOWN, NO_METADATA, "no liveness metadata and no evidence that it is stranded")
        return Verdict(LIVE, NO_EVIDENCE, "reserved in the running boot; no namespace recorded to check")

    def _netns_verdict(self, netns: str | None, ident: tuple[int, int] | None, ns_id: int | None = None) -> Verdict:
        """The evidence rules where the kernel cannot answer (module docstring): live or unknown, never stranded.
        With a recorded kernel id ``ns_id`` a namespace found by inode counts only when its id is ``ns_id``."""
        if netns:
            state, detail = self._path_state(netns, ident, ns_id)
        else:
            state, detail = "gone", "no namespace path was recorded"
        if state == "same":
            return Verdict(LIVE, NETNS_ALIVE, detail)
        if ident is None:
            if state == "gone":
                return Verdict(
                    UNKNOWN, NETNS_NO_IDENTITY, f"{detail}, and no namespace identity was recorded to look for"
                )
            if state == "unreadable":
                return Verdict(UNKNOWN, NETNS_UNREADABLE, detail)
            if state == "not-nsfs":
                return Verdict(UNKNOWN, NETNS_NOT_NSFS, f"{detail}: it proves nothing")
            return Verdict(LIVE, NETNS_ALIVE, f"network namespace {netns} exists (no identity was recorded to compare)")
        dev = self.nsfs_dev()
        if dev is None or ident[0] != dev:
            return Verdict(
                UNKNOWN,
                NETNS_NOT_NSFS,
                f"{detail}; the recorded identity {_fmt(ident)} is not on nsfs: nothing to look for",
            )
        result = self._scan(ident)
        holder = result.held.get(ident)
        found_id = getattr(result, "ids", {}).get(ident)
        other = ""
        if holder is not None and (ns_id is None or found_id is None or found_id == ns_id):
            # no id to compare (recorded or readable): the inode alone, which only ever keeps
            same = ns_id is not None and found_id == ns_id
            what = "the recorded namespace" if same else "a namespace with the recorded inode"
            return Verdict(LIVE, NETNS_ALIVE, f"{detail}, but {what} is alive: {holder}")
        if holder is not None:
            other = (
                f"; the namespace now carrying the recorded inode number is another one (id {found_id}, "
                f"recorded id {ns_id}), not this pod's: {holder}"
            )
        if state == "not-nsfs":
            return Verdict(UNKNOWN, NETNS_NOT_NSFS, f"{detail}: it proves nothing")
        why = self.kernel.why_not() or "no kernel namespace id was recorded at ADD"
        reason = NETNS_UNREADABLE if state == "unreadable" else NETNS_UNSURE
        return Verdict(
            UNKNOWN,
            reason,
            f"{detail}{other}; no holder of the recorded namespace was seen, which proves nothing, "
            f"and the kernel cannot tell ({why})",
        )


def _identity(meta: dict) -> tuple[int, int] | None:
    """The recorded (netnsDev, netnsIno), for the path check and the walk (evidence of life only)."""
    dev, ino = meta.get("netnsDev"), meta.get("netnsIno")
    if type(dev) is not int or type(ino) is not int or dev < 0 or ino < 0:
        return None
    return dev, ino


def _ns_id(meta: dict) -> int | None:
    """The kernel id (``netnsId``) recorded at ADD, or None."""
    nid = meta.get("netnsId")
    return nid if type(nid) is int and nid > 0 else None


def _fmt(ident: tuple[int, int] | None) -> str:
    return "-" if ident is None else f"{ident[0]}/{ident[1]}"


def _cache_has_id(names: frozenset, network: str, cid: str) -> bool:
    prefix = f"{network}-{cid}-"
    return any(n.startswith(prefix) for n in names)


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# ---------------------------------------------------------------------- the environment
NETNS_DIRS = ("run/netns", "var/run/netns")


def environment_warnings(
    netns_root: str = "/", proc: str = "/proc", node_pidns: bool = False, mountinfo: str = "/proc/self/mountinfo"
) -> list[str]:
    """Why the namespace rules cannot see the whole node from here (run from a container), or []."""
    out = []
    if not node_pidns and not nsscan.host_pidns(proc):
        out.append(
            f"not in the host's PID namespace ({proc}/2 is not kthreadd): the kernel answers for other "
            "namespaces only in the initial one and processes holding pod namespaces are invisible, so no "
            "namespace is judged gone; run with hostPID: true (or --pidns-is-node when this PID namespace "
            "really holds every pod, as in a kind node: then only the runtime and previous boots release)"
        )
    if netns_root not in ("", "/"):
        mounts = _mounts(mountinfo)
        for rel in NETNS_DIRS:
            path = os.path.join(netns_root, rel)
            if not os.path.isdir(path):
                continue
            real = os.path.realpath(path)
            best = None
            for point, optional in mounts:
                if real == point or real.startswith(point.rstrip("/") + "/"):
                    if best is None or len(point) >= len(best[0]):
                        best = (point, optional)
            if best is not None and not any(f.startswith(("shared:", "master:")) for f in best[1]):
                out.append(
                    f"{path} is on mount {best[0]} with private propagation: namespaces created after this "
                    "container started appear there as empty files (judged unknown, never stranded); mount the "
                    "host's /run/netns and /var/run/netns with mountPropagation: HostToContainer (rslave)"
                )
    return out


def _mounts(mountinfo: str) -> list[tuple[str, list[str]]]:
    """(mount point, optional fields) of every mount, in mountinfo order (later ones on top)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields[6:] or len(fields) < 7:
            continue
        sep = fields.index("-", 6)
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        out.append((point, fields[6:sep]))
    return out


# ---------------------------------------------------------------------- whole networks
def scan_store(store: NetworkStore, checker: Checker) -> list[Finding]:
    """Classify every reservation of an open (locked) store, sorted by address."""
    entries = store.meta_owner_entries()
    rows = []
    for res in store.reservations():
        meta: dict = {}
        seen = None
        if res.container_id is not None:
            entry = entries.get(owner_key(res.container_id, res.ifname))
            if isinstance(entry, dict):
                if isinstance(entry.get("meta"), dict):
                    meta = entry["meta"]
                if isinstance(entry.get("seenBoot"), str):
                    seen = entry["seenBoot"]
        try:
            mtime: float | None = os.stat(res.path, follow_symlinks=False).st_mtime
        except OSError:
            mtime = None
        rows.append((res, meta, mtime, seen))
    checker.prescan(meta for _, meta, _, _ in rows if has_metadata(meta))
    out = []
    for res, meta, mtime, seen in rows:
        if res.kind != OWNED:  # empty, opaque or not a regular file (store.Reservation.kind)
            verdict = _kind_verdict(res.kind, mtime, checker)
        else:
            verdict = checker._classify(res.container_id, res.ifname, meta, mtime, store.network, seen)
        out.append(Finding(store.network, res, meta, mtime, verdict, seen))
    out.sort(key=lambda f: (f.address.version, int(f.address)))
    return out


def _kind_verdict(kind: str, mtime: float | None, checker: Checker) -> Verdict:
    """An empty file (its writer was killed mid-write, host-local #498) is stranded after the grace
    period; opaque content and non-regular entries are never judged: unknown, kept, reported."""
    if kind == EMPTY:
        if mtime is not None and checker.now - mtime < checker.grace:
            return Verdict(
                LIVE,
                GRACE_PERIOD,
                f"empty file written {max(checker.now - mtime, 0):.0f}s ago (may still be being written)",
            )
        return Verdict(STRANDED, EMPTY_FILE, "empty reservation file: no owner, its writer was killed mid-write")
    if kind == OPAQUE:
        return Verdict(
            UNKNOWN, FOREIGN_CONTENT, "content is not a valid container ID / interface name: kept, never used as a name"
        )
    return Verdict(
        UNKNOWN, NOT_A_FILE, "not a regular file (FIFO, device, directory, symlink): reserved by someone unknown"
    )


# ---------------------------------------------------------------------- GC statistics
