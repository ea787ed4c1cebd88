"""The network configuration: the decoded JSON from stdin turned, once per call, into what the verb needs.

``plugin.skel`` decodes stdin, negotiates the version and calls ``parse`` with what the verb table
(``cni_ipam.__main__.VERBS``) says the verb needs:

* ``"full"`` (ADD, CHECK, STATUS; the admin commands call ``load``): a validated ``IpamConfig``.
  Accepts everything host-local accepts, with the same meaning and defaults (``ranges``, the legacy
  top-level ``subnet``/``rangeStart``/``rangeEnd``/``gateway``, ``routes``, ``dataDir``,
  ``resolvConf``, ``runtimeConfig.ipRanges``, requested IPs from ``CNI_ARGS``, ``args.cni.ips`` and
  ``runtimeConfig.ips``) plus ``exclude``, ``lockTimeout`` and our other keys.
* ``"status"`` (STATUS): ``"full"``, except that a pod CIDR that cannot be resolved (104) is
  answered 50, not available: STATUS says whether an ADD could work now, and it could not.
* ``"ref"`` (DEL): a ``NetworkRef``, the name, cniVersion, ``ipam.dataDir`` and ``ipam.lockTimeout``
  only, so an edit that broke the ranges does not leak the addresses of a DEL; no range code loads.
* ``"gc"`` (GC): the runtime's ``cni.dev/valid-attachments`` list first; a ``NetworkRef`` carrying it,
  or None when the list is absent (then GC releases nothing and needs nothing else).

Every error names the key and value.  The only I/O is reading ``resolvConf`` (and, for
``usePodCidr``, the lazily imported ``podcidr``).  ``plugin.ranges`` is imported by the functions
that build ranges, so a DEL or GC never loads it.

This module owns the call's view (``IpamConfig``, ``NetworkRef``, the GC list, the scalar keys such
as ``dataDir`` and ``pidnsIsNode``) and ``load``; ``plugin.netconf_values`` parses the values of the
section (range sets, excludes, routes, the ``resolvConf`` key, requested IPs) within its limits.
"""

from __future__ import annotations

import os

from cni_ipam.addr import IP
from cni_ipam.plugin.netconf_values import (  # `X as X`: also read as netconf.X
    MAX_EXCLUDES as MAX_EXCLUDES,
    MAX_RANGES as MAX_RANGES,
    MAX_REQUESTED_IPS as MAX_REQUESTED_IPS,
    MAX_ROUTES as MAX_ROUTES,
    POD_CIDR_PLACEHOLDERS as POD_CIDR_PLACEHOLDERS,
    Route,
    check_limits,
    check_sets,
    parse_exclude,
    parse_ip as parse_ip,
    parse_range_set,
    parse_resolv_conf_key,
    parse_routes,
    requested_ips,
    with_global_exclude,
)
from cni_ipam.errors import INVALID_CONFIG, INVALID_ENV, NOT_AVAILABLE, PODCIDR_UNAVAILABLE, CniError, config_error

# The type checker's view of modules this one imports lazily (a plain constant, not typing's: the
# plugin path does not import typing).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni_ipam.cluster.config import PoolConfig
    from cni_ipam.plugin.ranges import RangeSet

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
DEFAULT_LOCK_TIMEOUT = 30.0
KNOWN_CNI_ARGS = (
    "IgnoreUnknown",
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
)


class IpamConfig:
    """The validated IPAM configuration of one call.  Treat as immutable."""

    __slots__ = (
        "name",
        "cni_version",
        "range_sets",
        "routes",
        "data_dir",
        "resolv_conf",
        "requested",
        "lock_timeout",
        "status_on_exhaustion",
        "reclaim_on_exhaustion",
        "pidns_is_node",
        "prev_result",
        "pool",
    )
    name: str | None
    cni_version: str
    range_sets: tuple[RangeSet, ...]
    routes: tuple[Route, ...]
    data_dir: str
    resolv_conf: str | None
    requested: tuple[IP, ...]
    lock_timeout: float
    status_on_exhaustion: str
    reclaim_on_exhaustion: bool
    pidns_is_node: bool
    prev_result: object
    pool: PoolConfig | None

    def __init__(
        self,
        *,
        name: str | None,
        cni_version: str,
        range_sets: tuple[RangeSet, ...],
        routes: tuple[Route, ...],
        data_dir: str,
        resolv_conf: str | None,
        requested: tuple[IP, ...],
        lock_timeout: float,
        status_on_exhaustion: str,  # ipam.statusOnExhaustion: "ok" or "fail"
        reclaim_on_exhaustion: bool,  # ipam.reclaimOnExhaustion
        pidns_is_node: bool,  # ipam.pidnsIsNode
        prev_result: object,
        pool: PoolConfig | None = None,  # ipam.pool: the cluster pool's settings
    ) -> None:
        setattr_ = object.__setattr__  # __setattr__ below refuses every later change
        setattr_(self, "name", name)
        setattr_(self, "cni_version", cni_version)
        setattr_(self, "range_sets", range_sets)
        setattr_(self, "routes", routes)
        setattr_(self, "data_dir", data_dir)
        setattr_(self, "resolv_conf", resolv_conf)
        setattr_(self, "requested", requested)
        setattr_(self, "lock_timeout", lock_timeout)
        setattr_(self, "status_on_exhaustion", status_on_exhaustion)
        setattr_(self, "reclaim_on_exhaustion", reclaim_on_exhaustion)
        setattr_(self, "pidns_is_node", pidns_is_node)
        setattr_(self, "prev_result", prev_result)
        setattr_(self, "pool", pool)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("IpamConfig is immutable")


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse ``CNI_ARGS`` (``K=V;K=V``) as libcni does; unknown keys need ``IgnoreUnknown``."""
    pairs: dict[str, str] = {}
    if not raw:
        return pairs
    for item in raw.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise CniError(INVALID_ENV, f"CNI_ARGS: invalid pair {item!r} (expected KEY=VALUE)", "CNI_ARGS")
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "false").lower()
    if ignore not in ("1", "true", "0", "false"):
        raise CniError(INVALID_ENV, f"CNI_ARGS: IgnoreUnknown={pairs['IgnoreUnknown']!r} is not a boolean", "CNI_ARGS")
    if ignore not in ("1", "true"):
        unknown = sorted(k for k in pairs if k not in KNOWN_CNI_ARGS)
        if unknown:
            raise CniError(
                INVALID_ENV,
                f"CNI_ARGS: unknown args {unknown} (set IgnoreUnknown=1 to ignore them)",
                "CNI_ARGS",
            )
    return pairs


def network_version(conf: dict) -> str:
    version = conf.get("cniVersion", "0.1.0")
    if version in ("", None):
        return "0.1.0"
    if not isinstance(version, str):
        raise config_error("cniVersion", version, "must be a string")
    return version


def data_dir_of(ipam: object) -> str:
    """``ipam.dataDir`` (default /var/lib/cni/networks); must be an absolute path."""
    value = ipam.get("dataDir") if isinstance(ipam, dict) else None
    if value in (None, ""):
        return DEFAULT_DATA_DIR
    if not isinstance(value, str) or "\0" in value:
        raise config_error("ipam.dataDir", value, "must be a path string")
    if not os.path.isabs(value):
        raise config_error("ipam.dataDir", value, "must be an absolute path")
    return os.path.normpath(value)


def lock_timeout_of(ipam: object) -> float:
    value = ipam.get("lockTimeout") if isinstance(ipam, dict) else None
    if value is None:
        return DEFAULT_LOCK_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 3600):
        raise config_error("ipam.lockTimeout", value, "must be a number of seconds in (0, 3600]")
    return float(value)


def status_on_exhaustion_of(ipam: object) -> str:
    """``ipam.statusOnExhaustion``: "ok" (default: a full range set leaves STATUS available) or "fail"."""
    value = ipam.get("statusOnExhaustion") if isinstance(ipam, dict) else None
    if value is None:
        return "ok"
    if value not in ("ok", "fail"):
        raise config_error("ipam.statusOnExhaustion", value, 'must be "ok" or "fail"')
    return value


def reclaim_on_exhaustion_of(ipam: object) -> bool:
    """``ipam.reclaimOnExhaustion`` (default true): a full ADD first releases provably stranded reservations."""
    return _bool_key(ipam, "reclaimOnExhaustion", True)


def pidns_is_node_of(ipam: object) -> bool:
    """``ipam.pidnsIsNode`` (default false): accepted and validated so that older configs keep working,
    but ignored: no walk of /proc proves a namespace gone any more, so nothing depends on it."""
    return _bool_key(ipam, "pidnsIsNode", False)


def _bool_key(ipam: object, key: str, default: bool) -> bool:
    value = ipam.get(key) if isinstance(ipam, dict) else None
    if value is None:
        return default
    if not isinstance(value, bool):
        raise config_error(f"ipam.{key}", value, "must be true or false")
    return value


class NetworkRef:
    """What DEL and GC need of a netconf: where its reservations live.  Parsed from the network name
    and ``ipam.dataDir``/``ipam.lockTimeout`` only, so an edit that broke the ranges does not leak
    the addresses of a DEL.  ``valid``: GC's list of attachments to keep (None for DEL)."""

    __slots__ = ("name", "cni_version", "data_dir", "lock_timeout", "pooled", "valid")

    def __init__(
        self,
        name: str,
        data_dir: str,
        lock_timeout: float,
        pooled: bool,
        cni_version: str = "",
        valid: ValidAttachments | None = None,
    ) -> None:
        self.name = name
        self.cni_version = cni_version
        self.data_dir = data_dir
        self.lock_timeout = lock_timeout
        self.pooled = pooled
        self.valid = valid


def network_ref(conf: dict, cni_version: str | None = None) -> NetworkRef:
    """The ``NetworkRef`` of a decoded netconf whose name is validated (``skel`` does that)."""
    ipam = conf.get("ipam")
    data_dir = data_dir_of(ipam)
    return NetworkRef(
        conf["name"],
        data_dir,
        lock_timeout_of(ipam),
        isinstance(ipam, dict) and ipam.get("pool") is not None,
        network_version(conf) if cni_version is None else cni_version,
    )


def gc_ref(conf: dict, cni_version: str | None = None) -> NetworkRef | None:
    """GC's netconf: None when it carries no attachment list (GC then releases nothing), else the
    ``NetworkRef`` with ``valid`` set.  The list is read first: a config without one needs nothing else."""
    valid = valid_attachments(conf)
    if valid is None:
        return None
    ref = network_ref(conf, cni_version)
    ref.valid = valid
    return ref


def parse(conf: dict, need: str, cni_args: dict[str, str], cni_version: str | None = None):
    """What a verb needs of the netconf (the module docstring): ``need`` is "full", "ref" or "gc"."""
    if need == "full":
        return load(conf, cni_args, cni_version=cni_version)
    if need == "status":
        try:
            return load(conf, cni_args, cni_version=cni_version)
        except CniError as exc:
            if exc.code == PODCIDR_UNAVAILABLE:
                raise CniError(NOT_AVAILABLE, f"pod CIDR unknown: {exc.msg}", exc.details) from None
            raise
    if need == "ref":
        return network_ref(conf, cni_version)
    if need == "gc":
        return gc_ref(conf, cni_version)
    raise ValueError(f"unknown netconf need {need!r}")


# ----------------------------------------------------------------------------------------- GC
VALID_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class ValidAttachments:
    """The runtime's list: exact (containerID, ifname) pairs plus container IDs listed without ifname."""

    __slots__ = ("pairs", "ids", "whole_ids")

    def __init__(self, pairs: set[tuple[str, str]], whole_ids: set[str]) -> None:
        self.pairs = frozenset(pairs)
        self.whole_ids = frozenset(whole_ids)
        self.ids = frozenset({cid for cid, _ in pairs} | set(whole_ids))

    def keeps(self, cid: str | None, ifname: str | None) -> bool:
        if cid is None:
            return False
        if cid in self.whole_ids:
            return True
        if ifname is None:  # ID-only reservation written by an old host-local
            return cid in self.ids
        return (cid, ifname) in self.pairs

    def __len__(self) -> int:
        return len(self.pairs) + len(self.whole_ids)


def valid_attachments(conf: dict) -> ValidAttachments | None:
    """The list from the config, None when absent or null (then GC releases nothing).  When both
    keys carry a list, an attachment listed under either is kept (the union: the safer reading)."""
    keys = [k for k in VALID_KEYS if conf.get(k) is not None]
    if not keys:
        return None
    pairs: set[tuple[str, str]] = set()
    whole: set[str] = set()
    for key in keys:
        _read_list(key, conf[key], pairs, whole)
    return ValidAttachments(pairs, whole)


def _read_list(key: str, value: object, pairs: set[tuple[str, str]], whole: set[str]) -> None:
    if not isinstance(value, list):
        raise CniError(
            INVALID_CONFIG, f"invalid {key}: must be a list of {{containerID, ifname}} objects", f"key {key}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise CniError(
                INVALID_CONFIG,
                f"invalid {key}[{i}] {item!r}: must be an object with containerID and ifname",
                f"key {key}",
            )
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or not cid.strip():
            raise CniError(
                INVALID_CONFIG, f"invalid {key}[{i}].containerID {cid!r}: must be a non-empty string", f"key {key}"
            )
        if ifname in (None, ""):
            whole.add(cid.strip())
        elif not isinstance(ifname, str):
            raise CniError(INVALID_CONFIG, f"invalid {key}[{i}].ifname {ifname!r}: must be a string", f"key {key}")
        else:
            pairs.add((cid.strip(), ifname))


# ------------------------------------------------------------------------------- the full config
def load(conf: dict, cni_args: dict[str, str], *, cni_version: str | None = None, podcidr_resolver=None) -> IpamConfig:
    """Validate a decoded network config for ADD, CHECK and STATUS (and the admin commands).
    ``cni_version``: the version ``skel`` negotiated (read from ``conf`` when None).

    ``podcidr_resolver(placeholder, ipam, data_dir) -> network`` resolves a ``usePodCidr`` subnet;
    None is the plugin's ``podcidr.sources.subnet_for`` (API call and cache write when needed).  The
    read-only admin commands pass ``podcidr.sources.offline_subnet_for`` (cache only)."""
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise CniError(
            INVALID_CONFIG, "IPAM config missing 'ipam' key" if ipam is None else "'ipam' must be an object", "key ipam"
        )
    version = network_version(conf) if cni_version is None else cni_version
    data_dir = data_dir_of(ipam)
    runtime = conf.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise config_error("runtimeConfig", runtime, "must be an object")

    raw_sets: list[tuple[str, object]] = []
    if "ipRanges" in runtime and runtime["ipRanges"] is not None:
        ip_ranges = runtime["ipRanges"]
        if not isinstance(ip_ranges, list):
            raise config_error("runtimeConfig.ipRanges", ip_ranges, "must be a list of range sets")
        raw_sets += [(f"runtimeConfig.ipRanges[{i}]", s) for i, s in enumerate(ip_ranges)]
    if ipam.get("subnet") not in (None, ""):
        legacy = {k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}
        raw_sets.append(("ipam", [legacy]))
    ranges_value = ipam.get("ranges")
    if ranges_value is not None:
        if not isinstance(ranges_value, list):
            raise config_error("ipam.ranges", ranges_value, "must be a list of range sets")
        raw_sets += [(f"ipam.ranges[{i}]", s) for i, s in enumerate(ranges_value)]
    if not raw_sets:
        raise CniError(INVALID_CONFIG, "no IP ranges specified (set ipam.ranges or ipam.subnet)", "key ipam.ranges")

    check_limits(ipam, raw_sets)
    global_exclude = parse_exclude("ipam.exclude", ipam.get("exclude"))
    range_sets = [parse_range_set(key, value, ipam, data_dir, podcidr_resolver) for key, value in raw_sets]
    check_sets(range_sets, [k for k, _ in raw_sets], version)
    if global_exclude:  # only now, with every range disjoint: each range takes what applies to it
        range_sets = with_global_exclude(range_sets, global_exclude)
    pool = None
    if ipam.get("pool") is not None:  # cluster pool: only such confs import the module
        from cni_ipam.cluster.config import parse_pool

        pool = parse_pool(ipam, range_sets)
    status_on_exhaustion = status_on_exhaustion_of(ipam)
    reclaim_on_exhaustion = reclaim_on_exhaustion_of(ipam)
    pidns_is_node = pidns_is_node_of(ipam)

    return IpamConfig(
        name=conf.get("name"),
        cni_version=version,
        range_sets=tuple(range_sets),
        routes=parse_routes(ipam.get("routes")),
        data_dir=data_dir,
        resolv_conf=parse_resolv_conf_key(ipam.get("resolvConf")),
        requested=tuple(requested_ips(conf, runtime, cni_args)),
        lock_timeout=lock_timeout_of(ipam),
        status_on_exhaustion=status_on_exhaustion,
        reclaim_on_exhaustion=reclaim_on_exhaustion,
        pidns_is_node=pidns_is_node,
        prev_result=conf.get("prevResult"),
        pool=pool,
    )


def read_resolv_conf(path: str) -> dict:
    """nameserver/domain/search/options from a resolv.conf-style file, as host-local reads it."""
    import stat

    try:
        # O_NONBLOCK: a FIFO with no writer must not hang the call; only regular files are read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, encoding="utf-8", errors="replace") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise config_error("ipam.resolvConf", path, "is not a regular file")
            text = fh.read(1 << 20)
    except OSError as exc:
        raise config_error("ipam.resolvConf", path, f"cannot be read ({exc.strerror})") from None
    dns: dict = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        if fields[0] == "nameserver":
            dns.setdefault("nameservers", []).append(fields[1])
        elif fields[0] == "domain":
            dns["domain"] = fields[1]
        elif fields[0] == "search":
            dns.setdefault("search", []).extend(fields[1:])
        elif fields[0] == "options":
            dns.setdefault("options", []).extend(fields[1:])
    return dns


