"""usePodCidr: the node's pod CIDR(s), from the Kubernetes API, a static setting or flannel, cached.

``config`` calls :func:`subnet_for` when a range's subnet is ``usePodCidr`` or ``usePodCidrIPv6``.
Sources are tried in the order of ``ipam.podCidr.sources`` (default: kubernetes, static, flannel);
the first source that is *configured* answers, and a configured source that fails is an error, not
a silent fall-through (a node must never get addresses from a different source's range by accident):

``kubernetes``
    configured when ``podCidr.kubeconfig`` is set, or the default kubeconfig
    ``/etc/cni/net.d/cni-ipam.d/cni-ipam.kubeconfig`` exists, or the plugin runs in a pod
    (``KUBERNETES_SERVICE_HOST`` set and a service-account token present).  ``GET
    /api/v1/nodes/<node>`` reads ``spec.podCIDRs`` (``spec.podCIDR`` as fallback).  The answer is
    cached in ``<dataDir>/.cni-ipam-podcidr/<node>.json`` for ``cacheTTL`` seconds; an ADD with a
    fresh cache makes no API call (and imports neither YAML nor TLS code).  When a refresh fails and
    a cached answer exists, the cached answer is used (and the next try waits ``min(cacheTTL, 30)``).
``static``
    ``podCidr.static`` (a list of CIDRs) or ``podCidr.staticFile`` (a file holding them): the
    kubelet ``--pod-cidr`` case.  Read on every call, never cached.
``flannel``
    configured when ``podCidr.flannelSubnetEnv`` (default ``/run/flannel/subnet.env``) exists:
    ``FLANNEL_SUBNET`` and ``FLANNEL_IPV6_SUBNET``.  Read on every call, never cached.

Every pod CIDR, whatever its source (node object, static, file, flannel, cache), must be one network
per family, no host bits (flannel's files excepted), not IPv4-mapped, not loopback/link-local/
multicast and no wider than /8 (IPv4) or /32 (IPv6): a node object that says ``0.0.0.0/0`` is refused
with code 104 naming the node, and a refused answer never replaces a good cache.  The cache is read
and written as the store treats its files (docs/security.md): through a directory fd, never following
a symlink, regular files only, at most 64 KiB, modes 0755/0644 whatever the umask.  Errors never
quote the content of a file the netconf points at.

The read-only admin commands resolve through :func:`offline_subnet_for` instead (passed to
``netconf.load`` as ``podcidr_resolver``): the same sources, the kubernetes one from its cache only
(never the API, never a write), :class:`NotKnownOffline` when there is no usable cache.

Error codes: malformed ``ipam.podCidr`` keys are 7; an API server that cannot be reached (refused,
timeout, 429/5xx) with no cached answer is 11 (try again later); everything else (no source,
credentials rejected, TLS failure, unknown node, node without a pod CIDR of the asked family,
unreadable files) is 104 ``PODCIDR_UNAVAILABLE`` with a message naming the node and the kubeconfig.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time

from cni_ipam.store import fs as safefs
from cni_ipam.store import is_node_name
from cni_ipam.store import node_name as store_node_name
from cni_ipam.errors import PODCIDR_UNAVAILABLE, CniError, config_error
from cni_ipam.podcidr.cidrs import parse_cidr_list

DEFAULT_KUBECONFIG = "/etc/cni/net.d/cni-ipam.d/cni-ipam.kubeconfig"
DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_FLANNEL_SUBNET_ENV = "/run/flannel/subnet.env"
DEFAULT_CACHE_TTL = 300.0
DEFAULT_TIMEOUT = 5.0
RETRY_AFTER_FAILURE = 30.0  # after a failed refresh, the cached answer is trusted this long
CACHE_DIR = ".cni-ipam-podcidr"  # inside dataDir; not a valid network name, so never a network
MAX_CACHE_FILE = 64 << 10  # a cache file is a few hundred bytes; anything bigger is damage
MAX_SOURCE_FILE = 1 << 20  # staticFile, flannel subnet.env
SOURCES = ("kubernetes", "static", "flannel")
KEYS = (
    "sources",
    "kubeconfig",
    "serviceAccountDir",
    "nodeName",
    "timeout",
    "cacheTTL",
    "static",
    "staticFile",
    "flannelSubnetEnv",
)
# A Kubernetes node name is a DNS subdomain (RFC 1123): it is used in a URL and a file name.

_memo: dict[
    tuple[str, str], tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], str]
] = {}  # one resolution per process


class Settings:
    """The validated ``ipam.podCidr`` object (attributes named as its keys)."""

    __slots__ = KEYS

    def __init__(
        self,
        *,
        sources: tuple[str, ...],
        kubeconfig: str | None,
        serviceAccountDir: str,
        nodeName: str | None,
        timeout: float,
        cacheTTL: float,
        static: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None,
        staticFile: str | None,
        flannelSubnetEnv: str,
    ) -> None:
        self.sources = sources
        self.kubeconfig = kubeconfig
        self.serviceAccountDir = serviceAccountDir
        self.nodeName = nodeName
        self.timeout = timeout
        self.cacheTTL = cacheTTL
        self.static = static
        self.staticFile = staticFile
        self.flannelSubnetEnv = flannelSubnetEnv


def forget() -> None:
    """Drop this process's memo of resolved CIDRs (tests call it between cases)."""
    _memo.clear()


def subnet_for(placeholder: str, ipam: dict, data_dir: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The node pod CIDR of the family ``placeholder`` asks for (usePodCidr / usePodCidrIPv6)."""
    family = 6 if placeholder == "usePodCidrIPv6" else 4
    settings = parse_settings(ipam)
    node = node_name(settings)
    key = (data_dir, json.dumps([node, ipam.get("podCidr")], sort_keys=True, default=str))
    if key in _memo and any(n.version == family for n in _memo[key][0]):
        cidrs, origin = _memo[key]
    else:
        cidrs, origin = node_cidrs(settings, node, data_dir, family)
        _memo[key] = (cidrs, origin)
    for net in cidrs:
        if net.version == family:
            return net
    have = ", ".join(map(str, cidrs)) or "none"
    raise CniError(
        PODCIDR_UNAVAILABLE,
        f'"subnet": "{placeholder}": node {node} has no IPv{family} pod CIDR (pod CIDRs: {have}; from {origin})',
        f"node {node}",
    )


class NotKnownOffline(CniError):
    """:func:`offline_subnet_for` cannot tell the node's pod CIDR without asking the API server (no
    usable cache).  Code 104, as the plugin's own failure would be; the admin commands report it as
    "pod CIDR not known offline" instead of failing."""

    def __init__(self, msg: str, details: str) -> None:
        super().__init__(PODCIDR_UNAVAILABLE, msg, details)


def offline_subnet_for(placeholder: str, ipam: dict, data_dir: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """:func:`subnet_for` for the read-only admin commands (``netconf.load(..., podcidr_resolver=...)``).

    The same sources in the same order, but the ``kubernetes`` source answers from its cache only:
    never an API call, never a write (the cache is read through the store's dir-fd reader, as an ADD
    reads it; a cache past its ``refreshAfter`` still answers: it is what the last ADD used).  No
    usable cache raises :class:`NotKnownOffline`.  ``static`` and ``flannel`` read their files as
    the plugin does (reads only); their failures, and malformed ``ipam.podCidr`` keys, are raised as
    the plugin raises them.  Nothing is memoised."""
    return offline_pod_cidr(placeholder, ipam, data_dir)[0]


def offline_pod_cidr(
    placeholder: str, ipam: dict, data_dir: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]:
    """:func:`offline_subnet_for` and a phrase naming where the answer came from (for ``lint``)."""
    family = 6 if placeholder == "usePodCidrIPv6" else 4
    settings = parse_settings(ipam)
    node = node_name(settings)
    cidrs, origin = node_cidrs(settings, node, data_dir, family, offline=True)
    for net in cidrs:
        if net.version == family:
            return net, f"node {node}'s pod CIDR from {origin}"
    have = ", ".join(map(str, cidrs)) or "none"
    raise CniError(
        PODCIDR_UNAVAILABLE,
        f'"subnet": "{placeholder}": node {node} has no IPv{family} pod CIDR (pod CIDRs: {have}; from {origin})',
        f"node {node}",
    )


# ---------------------------------------------------------------------------------- settings
def parse_settings(ipam: dict) -> Settings:
    raw = ipam.get("podCidr")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise config_error("ipam.podCidr", raw, "must be an object")
    unknown = sorted(k for k in raw if k not in KEYS)
    if unknown:
        raise config_error("ipam.podCidr", unknown, f"unknown keys (known: {', '.join(KEYS)})")
    sources = raw.get("sources", list(SOURCES))
    if (
        not isinstance(sources, list)
        or not sources
        or any(s not in SOURCES for s in sources)
        or len(set(sources)) != len(sources)
    ):
        raise config_error(
            "ipam.podCidr.sources", sources, f"must be a non-empty list of distinct names from {list(SOURCES)}"
        )
    paths: dict[str, str | None] = {}
    for name in ("kubeconfig", "serviceAccountDir", "staticFile", "flannelSubnetEnv"):
        value = raw.get(name)
        if value in (None, ""):
            paths[name] = None
        elif not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
            raise config_error(f"ipam.podCidr.{name}", value, "must be an absolute path")
        else:
            paths[name] = value
    node = raw.get("nodeName")
    if node in (None, ""):
        node = None
    elif not isinstance(node, str) or not is_node_name(node):
        raise config_error("ipam.podCidr.nodeName", node, "not a Kubernetes node name (lowercase DNS subdomain)")
    static = raw.get("static")
    if static in (None, "", []):
        static = None
    else:
        static = parse_cidr_list("ipam.podCidr.static", static)
    if static is not None and paths["staticFile"] is not None:
        raise config_error("ipam.podCidr.staticFile", paths["staticFile"], "set either static or staticFile, not both")
    return Settings(
        sources=tuple(sources),
        kubeconfig=paths["kubeconfig"],
        serviceAccountDir=paths["serviceAccountDir"] or DEFAULT_SERVICE_ACCOUNT_DIR,
        nodeName=node,
        timeout=_seconds(raw, "timeout", DEFAULT_TIMEOUT, 0.1),
        cacheTTL=_seconds(raw, "cacheTTL", DEFAULT_CACHE_TTL, 0.0),
        static=static,
        staticFile=paths["staticFile"],
        flannelSubnetEnv=paths["flannelSubnetEnv"] or DEFAULT_FLANNEL_SUBNET_ENV,
    )


def _seconds(raw: dict, name: str, default: float, low: float) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= 86400 * 365):
        raise config_error(f"ipam.podCidr.{name}", value, f"must be a number of seconds in [{low:g}, 31536000]")
    return float(value)


def node_name(settings: Settings) -> str:
    """``podCidr.nodeName``, else ``KUBERNETES_NODE_NAME`` / ``NODE_NAME``, else the host name."""
    return store_node_name(settings.nodeName, "ipam.podCidr.nodeName")


# ---------------------------------------------------------------------------------- sources
def node_cidrs(
    settings: Settings, node: str, data_dir: str, family: int, offline: bool = False
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], str]:
    """The node's pod CIDRs from the first configured source, and a phrase naming that source
    (``offline``: the kubernetes source from its cache only, see :func:`offline_subnet_for`)."""
    skipped = []
    for source in settings.sources:
        if source == "kubernetes":
            target = _kube_target(settings)
            if target is None:
                skipped.append(
                    f"kubernetes: no kubeconfig at {DEFAULT_KUBECONFIG} and not in a pod "
                    f"(KUBERNETES_SERVICE_HOST unset or no token in {settings.serviceAccountDir})"
                )
                continue
            if offline:
                return _from_cache_only(node, data_dir, family)
            return _from_kubernetes(settings, target, node, data_dir, family)
        if source == "static":
            if settings.static is not None:
                return settings.static, "ipam.podCidr.static"
            if settings.staticFile is not None:
                return _read_static_file(settings.staticFile), f"staticFile {settings.staticFile}"
            skipped.append("static: ipam.podCidr.static/staticFile not set")
            continue
        path = settings.flannelSubnetEnv
        if not os.path.exists(path):
            skipped.append(f"flannel: {path} does not exist")
            continue
        return read_flannel_env(path), f"flannel {path}"
    raise CniError(
        PODCIDR_UNAVAILABLE,
        f"usePodCidr: no pod CIDR source is configured for node {node} ({'; '.join(skipped)})",
        "key ipam.podCidr",
    )


def _read_text(path: str, what: str) -> str:
    """A configured file (staticFile, flannel's subnet.env): regular, at most 1 MiB, never a hang."""
    try:
        return safefs.read_path(path, MAX_SOURCE_FILE).decode("utf-8", "replace")
    except OSError as exc:
        raise CniError(PODCIDR_UNAVAILABLE, f"usePodCidr: cannot read {what} {path}: {exc.strerror}", path) from None
    except safefs.NotRegular:
        raise CniError(PODCIDR_UNAVAILABLE, f"usePodCidr: {what} {path} is not a regular file", path) from None
    except safefs.TooLarge:
        raise CniError(
            PODCIDR_UNAVAILABLE, f"usePodCidr: {what} {path} is larger than {MAX_SOURCE_FILE} bytes", path
        ) from None


def _read_static_file(path: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    text = "\n".join(line.split("#", 1)[0] for line in _read_text(path, "staticFile").splitlines())
    return parse_cidr_list(f"staticFile {path}", text, code=PODCIDR_UNAVAILABLE, quote=False)


def read_flannel_env(path: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``FLANNEL_SUBNET`` / ``FLANNEL_IPV6_SUBNET`` of a flannel ``subnet.env`` (host bits allowed:
    flannel writes the bridge address, e.g. ``10.244.1.1/24``)."""
    values = {}
    for line in _read_text(path, "flannel subnet file").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in ("FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET") and value.strip():
            values[key] = value.strip().strip("\"'")
    if not values:
        raise CniError(
            PODCIDR_UNAVAILABLE, f"usePodCidr: {path} has neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET", path
        )
    out = []
    for key in ("FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"):
        if key in values:
            nets = parse_cidr_list(f"{key} in {path}", values[key], strict=False, code=PODCIDR_UNAVAILABLE, quote=False)
            expect = 4 if key == "FLANNEL_SUBNET" else 6
            if nets[0].version != expect or len(nets) != 1:
                raise CniError(PODCIDR_UNAVAILABLE, f"usePodCidr: {key} in {path} is not one IPv{expect} CIDR", path)
            out.append(nets[0])
    return out


# ---------------------------------------------------------------------------------- kubernetes
def _kube_target(settings: Settings) -> tuple[str, str] | None:
    """("kubeconfig", path) or ("in-cluster", service-account dir), or None when not configured.
    Only cheap checks here: the kubeconfig is parsed (PyYAML) only when the API is called."""
    if settings.kubeconfig is not None:
        return ("kubeconfig", settings.kubeconfig)
    if os.path.exists(DEFAULT_KUBECONFIG):
        return ("kubeconfig", DEFAULT_KUBECONFIG)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(os.path.join(settings.serviceAccountDir, "token")):
        return ("in-cluster", settings.serviceAccountDir)
    return None


def cache_path(data_dir: str, node: str) -> str:
    return os.path.join(data_dir, CACHE_DIR, node + ".json")


def _open_cache_dir(path: str, create: bool) -> int:
    """An fd of ``<dataDir>/.cni-ipam-podcidr`` (made 0755 with its parents when ``create``), or -1
    when it is missing, not a directory, a symlink, or not ours alone (owned by another user or
    writable by others: its content could then be anyone's, so it is neither read nor written)."""
    directory = os.path.dirname(path)
    data_dir = os.path.dirname(directory)
    fd = -1
    try:
        if create:
            safefs.makedirs(data_dir)
        parent = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if create:
                safefs.mkdir_at(parent, CACHE_DIR)
            fd = safefs.open_dir(CACHE_DIR, parent)
        finally:
            os.close(parent)
        if safefs.private_to_us(fd):
            return fd
        _warn(f"ignoring the pod CIDR cache {directory}: it is owned by another user or writable by others")
    except OSError as exc:
        import errno

        if create or exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # simply no cache yet
            _warn(f"cannot use the pod CIDR cache directory {directory}: {exc.strerror or exc}")
    if fd >= 0:
        os.close(fd)
    return -1


def read_cache(path: str, node: str) -> dict | None:
    """The cached answer ({"podCIDRs": [networks], "refreshAfter", "fetchedAt", ...}) or None when
    it is missing, damaged, not a small regular file, or holds a pod CIDR that would be refused."""
    fd = _open_cache_dir(path, create=False)
    if fd < 0:
        return None
    try:
        raw = safefs.read_regular(fd, os.path.basename(path), MAX_CACHE_FILE)
    finally:
        os.close(fd)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("node") != node:
            return None
        nets = parse_cidr_list("cache", data["podCIDRs"], code=PODCIDR_UNAVAILABLE)
        float(data["refreshAfter"]), float(data["fetchedAt"])
    except (ValueError, KeyError, TypeError, RecursionError, CniError):
        return None  # damaged or tampered with: ask the API and rewrite it
    data["nets"] = nets
    return data


def write_cache(path: str, record: dict) -> None:
    """Write the cache atomically (temp file + rename, mode 0644); a failure only costs a later API call."""
    fd = _open_cache_dir(path, create=True)
    if fd < 0:
        return
    try:
        data = (json.dumps({k: v for k, v in record.items() if k != "nets"}, indent=2) + "\n").encode()
        safefs.write_atomic(fd, os.path.basename(path), data, 0o644)
    except OSError as exc:
        _warn(f"cannot write the pod CIDR cache {path}: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _from_kubernetes(
    settings: Settings, target: tuple[str, str], node: str, data_dir: str, family: int
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], str]:
    path = cache_path(data_dir, node)
    cached = read_cache(path, node)
    now = time.time()
    if cached is not None and not any(n.version == family for n in cached["nets"]):
        cached = None  # no answer for this family: as good as no cache
    if (
        cached is not None and now < cached["refreshAfter"] and cached["fetchedAt"] <= now + 60
    ):  # (clock went back: refresh)
        return cached["nets"], f"the cache {path} of {cached.get('origin', 'the Kubernetes API')}"
    from cni_ipam.podcidr import kubeapi  # TLS, HTTP and YAML load only when the API is really called

    try:
        try:
            nets, origin = kubeapi.node_pod_cidrs(target, node, settings.timeout, os.path.join(data_dir, CACHE_DIR))
        except CniError:
            raise
        except Exception as exc:  # never a 999 that skips a good cache, never an exception text (a token?)
            raise CniError(
                PODCIDR_UNAVAILABLE,
                f"usePodCidr: asking the API server for node {node} failed ({type(exc).__name__})",
                f"node {node}",
            ) from None
    except CniError as exc:
        if cached is None:
            raise
        cached["refreshAfter"] = now + min(settings.cacheTTL, RETRY_AFTER_FAILURE)
        cached["lastError"] = exc.msg
        cached["lastErrorAt"] = now
        write_cache(path, cached)
        _warn(f"using the cached pod CIDRs of node {node} ({path}): {exc.msg}")
        return cached["nets"], f"the cache {path} (refresh failed: {exc.msg})"
    if nets:  # a node still waiting for its CIDR is not cached: the next ADD asks again
        write_cache(
            path,
            {
                "node": node,
                "podCIDRs": [str(n) for n in nets],
                "origin": origin,
                "fetchedAt": now,
                "refreshAfter": now + settings.cacheTTL,
            },
        )
    return nets, origin


def _from_cache_only(
    node: str, data_dir: str, family: int
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], str]:
    """The cached answer of the kubernetes source, or NotKnownOffline: reads one file, writes nothing."""
    path = cache_path(data_dir, node)
    cached = read_cache(path, node)
    if cached is None:
        raise NotKnownOffline(
            f"usePodCidr: the pod CIDR of node {node} is not known offline: no usable cache {path} "
            "(the first ADD on this node asks the API server and writes it)",
            f"node {node}",
        )
    if not any(n.version == family for n in cached["nets"]):
        raise NotKnownOffline(
            f"usePodCidr: the IPv{family} pod CIDR of node {node} is not known offline: the cache {path} holds "
            f"only {', '.join(map(str, cached['nets']))} (an ADD would ask the API server)",
            f"node {node}",
        )
    stale = "" if time.time() < cached["refreshAfter"] else ", due for a refresh"
    return cached["nets"], f"the cache {path} of {cached.get('origin', 'the Kubernetes API')}{stale}"


def _warn(msg: str) -> None:
    import sys

    try:
        sys.stderr.write(f"cni-ipam: warning: {msg}\n")
        sys.stderr.flush()
    except Exception:
        pass
