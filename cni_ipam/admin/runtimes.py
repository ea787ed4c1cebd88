"""Ask the container runtime which containers exist: evidence for ``cni-ipam gc --runtime``.

A runtime knows better than any file which sandboxes are still there.  This module asks it and
returns the set of IDs that a CNI call from that runtime would carry as ``CNI_CONTAINERID``:

* ``containerd[:SOCKET]`` (default ``/run/containerd/containerd.sock``): every container of every
  namespace, through the ``ctr`` CLI (``ctr namespaces ls -q``, ``ctr -n NS containers ls -q``).
  The CRI plugin (Kubernetes, namespace ``k8s.io``) uses the pod sandbox ID, which is the ID of
  the sandbox's (pause) container, as the CNI container ID; ``ctr run --cni`` uses
  ``<namespace>-<container ID>``.  Both forms are in the set.
* ``podman[:ROOT[:RUNROOT]]``: ``podman [--root ROOT --runroot RUNROOT] ps -a --format json``.
  Podman's CNI container ID is the container's ID (for a pod, its infra container's ID).  Run it
  with the same ``CONTAINERS_CONF``/``tmp_dir`` as the podman that made the containers: another
  ``tmp_dir`` makes podman believe the machine rebooted.
* ``podman-api:SOCKET``: the same list from podman's REST API (``podman system service``,
  e.g. ``/run/podman/podman.sock``) over the unix socket, for hosts or containers without the
  ``podman`` binary.
* ``cri[:SOCKET]`` (default ``/run/containerd/containerd.sock``; CRI-O's is
  ``/var/run/crio/crio.sock``): the CRI's ``runtime.v1.RuntimeService/ListPodSandbox``, what kubelet
  itself sees, asked over the socket by ``cni_ipam.admin.cri`` (a small stdlib gRPC client, no
  binary needed).  The CNI container ID of a CRI pod is its sandbox ID.  Every listed sandbox counts,
  READY or NOTREADY: a NOTREADY sandbox may still pin its network namespace (it lost its pause
  process but was not stopped yet) and is released by the runtime's own StopPodSandbox.

A runtime that cannot be asked (binary or socket missing, an error, a timeout, an answer that does
not parse) proves nothing: ``RuntimeAnswer.ids`` is None and its ``error`` says why.  An answer
with no container at all is treated the same way (a wrong ``--root`` makes podman start an empty
store and answer ``[]``; that must not make every reservation look stranded).

Admin code only (``cni-ipam gc``); never imported on the plugin path.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
DEFAULT_PODMAN_SOCKET = "/run/podman/podman.sock"
DEFAULT_TIMEOUT = 10.0
KINDS = ("containerd", "podman", "podman-api", "cri")

# What a runtime may call a namespace or a container (CNI container IDs are at least this strict).
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}")


@dataclass(frozen=True)
class RuntimeSpec:
    kind: str                      # containerd | podman | podman-api | cri
    socket: Optional[str] = None   # containerd, podman-api, cri
    root: Optional[str] = None     # podman
    runroot: Optional[str] = None  # podman

    def __str__(self) -> str:
        if self.kind == "podman":
            return ":".join(p for p in ("podman", self.root, self.runroot) if p)
        return f"{self.kind}:{self.socket}"


@dataclass
class RuntimeAnswer:
    spec: RuntimeSpec
    ids: Optional[frozenset] = None   # None: the runtime could not be asked (proves nothing)
    containers: int = 0
    error: Optional[str] = None
    details: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ids is not None

    def to_json(self) -> dict:
        return {"runtime": str(self.spec), "kind": self.spec.kind, "available": self.ok,
                "containers": self.containers, "error": self.error}


def parse_spec(text: str) -> RuntimeSpec:
    """``containerd[:SOCKET]``, ``podman[:ROOT[:RUNROOT]]``, ``podman-api[:SOCKET]`` or ``cri[:SOCKET]``.
    Raises ValueError naming the problem."""
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"--runtime {text!r}: unknown runtime {kind!r} (use {', '.join(KINDS)})")
    if kind == "podman":
        root, _, runroot = rest.partition(":")
        for what, path in (("root", root), ("runroot", runroot)):
            if path and not os.path.isabs(path):
                raise ValueError(f"--runtime {text!r}: the podman {what} must be an absolute path")
        return RuntimeSpec(kind, root=root or None, runroot=runroot or None)
    path = rest or (DEFAULT_PODMAN_SOCKET if kind == "podman-api" else DEFAULT_CONTAINERD_SOCKET)
    if not os.path.isabs(path):
        raise ValueError(f"--runtime {text!r}: the socket must be an absolute path")
    return RuntimeSpec(kind, socket=path)


def query(spec: RuntimeSpec, timeout: float = DEFAULT_TIMEOUT) -> RuntimeAnswer:
    """Ask one runtime.  Never raises for runtime trouble: the answer carries the error."""
    answer = RuntimeAnswer(spec)
    try:
        if spec.kind == "containerd":
            ids, count = _containerd(spec, timeout)
        elif spec.kind == "cri":
            ids, count = _cri(spec, timeout, answer.details)
        elif spec.kind == "podman":
            ids, count = _podman_cli(spec, timeout)
        else:
            ids, count = _podman_api(spec, timeout)
    except _Unavailable as exc:
        answer.error = str(exc)
        return answer
    if count == 0:
        answer.error = (f"{spec} reports no containers at all; refusing to treat every reservation as stranded "
                        "(wrong socket or --root?)")
        return answer
    answer.ids = frozenset(ids)
    answer.containers = count
    return answer


def evidence(texts: Iterable[str],
             timeout: float = DEFAULT_TIMEOUT) -> Tuple[Optional[frozenset], str, List[RuntimeAnswer]]:
    """Ask every runtime given.  Returns (known IDs or None, a name for reports, the answers).

    The IDs are usable only when *every* runtime answered: a container of a runtime that could
    not be asked would otherwise look unknown.  Raises ValueError for a malformed spec."""
    specs = [parse_spec(t) for t in texts]
    answers = [query(s, timeout) for s in specs]
    name = " + ".join(str(s) for s in specs)
    if not answers or not all(a.ok for a in answers):
        return None, name, answers
    ids: set = set()
    for a in answers:
        ids |= a.ids or frozenset()
    return frozenset(ids), name, answers


class _Unavailable(Exception):
    """The runtime could not be asked; the message says why."""


def _run(argv: List[str], timeout: float) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise _Unavailable(f"{argv[0]} not found (install it or put it on PATH)") from None
    except subprocess.TimeoutExpired:
        raise _Unavailable(f"{' '.join(argv[:4])} … did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise _Unavailable(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise _Unavailable(f"{' '.join(argv[:6])} failed ({proc.returncode}): {msg[:300]}")
    return proc.stdout


def _valid(name: str, what: str, spec: RuntimeSpec) -> str:
    if not _ID_RE.fullmatch(name):
        raise _Unavailable(f"{spec} answered a {what} that is not an ID: {name[:80]!r}")
    return name


def _containerd(spec: RuntimeSpec, timeout: float) -> Tuple[set, int]:
    sock = spec.socket or DEFAULT_CONTAINERD_SOCKET
    if not os.path.exists(sock):
        raise _Unavailable(f"containerd socket {sock} does not exist")
    base = ["ctr", "--address", sock, "--timeout", f"{max(int(timeout), 1)}s"]
    ids: set = set()
    count = 0
    for ns in _run(base + ["namespaces", "ls", "-q"], timeout).split():
        _valid(ns, "namespace", spec)
        for cid in _run(base + ["-n", ns, "containers", "ls", "-q"], timeout).split():
            _valid(cid, "container ID", spec)
            ids.update((cid, f"{ns}-{cid}"))
            count += 1
    return ids, count


def _cri(spec: RuntimeSpec, timeout: float, details: List[str]) -> Tuple[set, int]:
    from cni_ipam.admin import cri

    sock = spec.socket or DEFAULT_CONTAINERD_SOCKET
    try:
        boxes = cri.list_pod_sandboxes(sock, timeout)
    except cri.CriError as exc:
        raise _Unavailable(f"{spec}: {exc}") from None
    ids = {_valid(box.id, "sandbox ID", spec) for box in boxes}
    ready = sum(1 for box in boxes if box.ready)
    details.append(f"{ready} sandbox(es) ready, {len(boxes) - ready} not ready (both count as existing)")
    return ids, len(ids)


def _podman_ids(items: object, spec: RuntimeSpec) -> Tuple[set, int]:
    if not isinstance(items, list):
        raise _Unavailable(f"{spec} answered something that is not a list of containers")
    ids = set()
    for item in items:
        cid = item.get("Id") if isinstance(item, dict) else None
        if not isinstance(cid, str):
            raise _Unavailable(f"{spec} answered a container without an Id")
        ids.add(_valid(cid, "container ID", spec))
    return ids, len(ids)


def _podman_cli(spec: RuntimeSpec, timeout: float) -> Tuple[set, int]:
    argv = ["podman"]
    for flag, path in (("--root", spec.root), ("--runroot", spec.runroot)):
        if path:
            if not os.path.isdir(path):  # podman would create an empty store there and answer []
                raise _Unavailable(f"podman {flag} {path} is not a directory")
            argv += [flag, path]
    out = _run(argv + ["ps", "-a", "--format", "json"], timeout)
    try:
        items = json.loads(out) if out.strip() else []
    except ValueError:
        raise _Unavailable(f"{spec}: podman ps answered something that is not JSON") from None
    return _podman_ids(items, spec)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _podman_api(spec: RuntimeSpec, timeout: float) -> Tuple[set, int]:
    sock = spec.socket or DEFAULT_PODMAN_SOCKET
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        conn.request("GET", "/v4.0.0/libpod/containers/json?all=true")
        resp = conn.getresponse()
        body = resp.read(64 << 20)
    except (OSError, http.client.HTTPException) as exc:
        raise _Unavailable(f"podman API at {sock}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise _Unavailable(f"podman API at {sock} answered HTTP {resp.status}")
    try:
        items = json.loads(body)
    except ValueError:
        raise _Unavailable(f"podman API at {sock} answered something that is not JSON") from None
    return _podman_ids(items, spec)
