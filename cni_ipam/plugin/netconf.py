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
"""

from __future__ import annotations

import os

from cni_ipam.addr import IP, Interface, host_bits, ip_address, parse_cidr, text_of
from cni_ipam.errors import INVALID_CONFIG, INVALID_ENV, NOT_AVAILABLE, PODCIDR_UNAVAILABLE, CniError, config_error

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
DEFAULT_LOCK_TIMEOUT = 30.0
POD_CIDR_PLACEHOLDERS = ("usePodCidr", "usePodCidrIPv6")
# What one config may hold (docs/security.md): beyond these the answer is code 7 at once, before any
# parsing, so a config cannot cost minutes or gigabytes.  The limits count every range set together.
MAX_RANGES = 1024  # ranges in all range sets (ranges, legacy subnet, runtimeConfig.ipRanges)
MAX_EXCLUDES = 16384  # exclude entries: ipam.exclude plus every range's own
MAX_ROUTES = 1024
MAX_REQUESTED_IPS = 1024  # CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips together
# CNI_ARGS keys we understand; any other key is an error unless IgnoreUnknown is set (as libcni).
KNOWN_CNI_ARGS = (
    "IgnoreUnknown",
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
)


class Route:
    """A route handed back in the result (CNI 1.1 fields kept for 1.1.0 results)."""

    __slots__ = ("dst", "gw", "extra")

    def __init__(self, dst, gw, extra: dict) -> None:
        self.dst = dst  # an Interface (cni_ipam.addr): the address as written, with its prefix length
        self.gw = gw
        self.extra = extra  # mtu, advmss, priority, table, scope when given

    @property
    def version(self) -> int:
        return self.dst.version

    def to_json(self, with_11_fields: bool) -> dict:
        out: dict = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        if with_11_fields:
            out.update(self.extra)
        return out


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
        "status_on_exhaustion",  # ipam.statusOnExhaustion: "ok" or "fail"
        "reclaim_on_exhaustion",  # ipam.reclaimOnExhaustion
        "pidns_is_node",  # ipam.pidnsIsNode
        "prev_result",
        "pool",  # cluster pool settings (cni_ipam.cluster.pool.PoolConfig) or None
    )

    def __init__(self, **kw: object) -> None:
        for key in self.__slots__:
            object.__setattr__(self, key, kw[key])

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

    def __init__(self, name: str, data_dir: str, lock_timeout: float, pooled: bool, cni_version: str = "",
                 valid: ValidAttachments | None = None) -> None:
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
    return NetworkRef(conf["name"], data_dir, lock_timeout_of(ipam), isinstance(ipam, dict) and ipam.get("pool") is not None,
                      network_version(conf) if cni_version is None else cni_version)


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
        raise CniError(INVALID_CONFIG, f"invalid {key}: must be a list of {{containerID, ifname}} objects", f"key {key}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise CniError(INVALID_CONFIG, f"invalid {key}[{i}] {item!r}: must be an object with containerID and ifname", f"key {key}")
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or not cid.strip():
            raise CniError(INVALID_CONFIG, f"invalid {key}[{i}].containerID {cid!r}: must be a non-empty string", f"key {key}")
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
        raise CniError(INVALID_CONFIG, "IPAM config missing 'ipam' key" if ipam is None else "'ipam' must be an object", "key ipam")
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

    _check_limits(ipam, raw_sets)
    global_exclude = _parse_exclude("ipam.exclude", ipam.get("exclude"))
    range_sets = [_parse_range_set(key, value, ipam, data_dir, podcidr_resolver) for key, value in raw_sets]
    _check_sets(range_sets, [k for k, _ in raw_sets], version)
    if global_exclude:  # only now, with every range disjoint: each range takes what applies to it
        range_sets = _with_global_exclude(range_sets, global_exclude)
    pool = None
    if ipam.get("pool") is not None:  # cluster pool (issue 12): only such confs import the module
        from cni_ipam.cluster.config import parse_pool

        pool = parse_pool(ipam, range_sets)
    status_on_exhaustion = status_on_exhaustion_of(ipam)
    reclaim_on_exhaustion = reclaim_on_exhaustion_of(ipam)
    pidns_is_node = pidns_is_node_of(ipam)

    return IpamConfig(
        name=conf.get("name"),
        cni_version=version,
        range_sets=tuple(range_sets),
        routes=_parse_routes(ipam.get("routes")),
        data_dir=data_dir,
        resolv_conf=_parse_resolv_conf_key(ipam.get("resolvConf")),
        requested=tuple(_requested_ips(conf, runtime, cni_args)),
        lock_timeout=lock_timeout_of(ipam),
        status_on_exhaustion=status_on_exhaustion,
        reclaim_on_exhaustion=reclaim_on_exhaustion,
        pidns_is_node=pidns_is_node,
        prev_result=conf.get("prevResult"),
        pool=pool,
    )


def _too_many(key: str, count: int, limit: int) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid {key}: {count} entries, more than the limit of {limit} (docs/security.md)", f"key {key}")


def _check_limits(ipam: dict, raw_sets: list[tuple[str, object]]) -> None:
    """Count before parsing: a config over the limits is refused at once (code 7)."""
    ranges = [r for _, s in raw_sets if isinstance(s, list) for r in s]
    if len(ranges) > MAX_RANGES:
        raise _too_many("ipam.ranges", len(ranges), MAX_RANGES)
    excludes = sum(len(r["exclude"]) for r in ranges if isinstance(r, dict) and isinstance(r.get("exclude"), list))
    if isinstance(ipam.get("exclude"), list):
        excludes += len(ipam["exclude"])
    if excludes > MAX_EXCLUDES:
        raise _too_many("ipam.exclude", excludes, MAX_EXCLUDES)
    routes = ipam.get("routes")
    if isinstance(routes, list) and len(routes) > MAX_ROUTES:
        raise _too_many("ipam.routes", len(routes), MAX_ROUTES)


def _span(r, owner: int) -> tuple[int, int, int]:
    """A range (``plugin.ranges.Range``) as a sweep interval of ``owner``."""
    offset = 1 << 129 if r.version == 6 else 0  # the two families never meet in one sweep
    return (r.start + offset, r.end + offset, owner)


def _check_sets(range_sets: list, keys: list[str], version: str) -> None:
    from cni_ipam.plugin.ranges import first_overlap

    v4 = sum(1 for s in range_sets if s.version == 4)
    v6 = len(range_sets) - v4
    if (v4 > 1 or v6 > 1) and version in ("0.1.0", "0.2.0"):
        raise CniError(
            INVALID_CONFIG,
            f"CNI version {version} does not support more than 1 address per family",
            "key cniVersion",
        )
    if len(range_sets) > 1:
        pair = first_overlap([_span(r, i) for i, s in enumerate(range_sets) for r in s.ranges])
        if pair is not None:
            i, j = pair
            raise CniError(INVALID_CONFIG, f"range set {keys[i]} overlaps with {keys[j]}", f"key {keys[j]}")


def _with_global_exclude(range_sets: list, global_exclude: list[tuple[int, int, int]]) -> list:
    """Each range with the part of ``ipam.exclude`` that touches it (the ranges are disjoint, so the
    total stays within ranges + excludes, however many ranges the global list would be copied to)."""
    from cni_ipam.plugin.ranges import RangeSet, clip, merge

    by_family = {}
    for family in (4, 6):
        merged = merge([(lo, hi) for lo, hi, v in global_exclude if v == family])
        by_family[family] = (merged, [lo for lo, _ in merged])
    out = []
    for s in range_sets:
        merged, starts = by_family[s.version]
        if not merged:
            out.append(s)
            continue
        out.append(RangeSet([r.excluding(clip(merged, starts, r.start, r.end)) for r in s.ranges]))
    return out


def _parse_range_set(key: str, value: object, ipam: dict, data_dir: str, podcidr_resolver=None):
    """One range set (a ``plugin.ranges.RangeSet``)."""
    from cni_ipam.plugin.ranges import RangeSet, first_overlap

    if not isinstance(value, list) or not value:
        raise config_error(key, value, "a range set must be a non-empty list of ranges")
    ranges = [_parse_range(f"{key}[{j}]" if key != "ipam" else "ipam", r, ipam, data_dir, podcidr_resolver) for j, r in enumerate(value)]
    family = ranges[0].version
    for j, r in enumerate(ranges):
        if r.version != family:
            raise config_error(f"{key}[{j}].subnet", str(r.subnet), "mixed address families in one range set")
    if len(ranges) > 1:
        pair = first_overlap([_span(r, j) for j, r in enumerate(ranges)])
        if pair is not None:
            k, j = pair
            raise config_error(f"{key}[{j}]", str(ranges[j].subnet), f"overlaps with {key}[{k}]")
    return RangeSet(ranges)


def _parse_range(key: str, value: object, ipam: dict, data_dir: str, podcidr_resolver=None):
    """One range (a ``plugin.ranges.Range``)."""
    from cni_ipam.plugin.ranges import Range, default_bounds

    if not isinstance(value, dict):
        raise config_error(key, value, "a range must be an object with a subnet")
    subnet_value = value.get("subnet")
    if subnet_value in POD_CIDR_PLACEHOLDERS:
        if podcidr_resolver is None:
            from cni_ipam.podcidr import sources as podcidr  # only configs that ask for it pay for it

            podcidr_resolver = podcidr.subnet_for
        subnet = podcidr_resolver(subnet_value, ipam, data_dir)
    elif not isinstance(subnet_value, str) or not subnet_value:
        raise config_error(f"{key}.subnet", subnet_value, "a subnet in CIDR notation is required")
    else:
        try:
            version, given, prefixlen = parse_cidr(_unscoped(subnet_value))
        except ValueError as exc:
            raise config_error(f"{key}.subnet", subnet_value, f"not a CIDR ({exc})") from None
        first = given & ~host_bits(version, prefixlen)
        if given != first:
            raise config_error(
                f"{key}.subnet",
                subnet_value,
                f"network has host bits set; for a /{prefixlen} the network address is {text_of(first, version)}",
            )
        if version == 6 and first >> 32 == 0xFFFF:
            # host-local: "IPNet IP and Mask version mismatch"; its addresses would be IPv4 ones
            raise config_error(f"{key}.subnet", subnet_value, "an IPv4-mapped IPv6 subnet (::ffff:a.b.c.d) is not allowed; use the IPv4 subnet")
        subnet = (version, first, prefixlen)
    # From here the subnet is integers, whoever resolved it (a usePodCidr source gives an ipaddress network).
    version, first, prefixlen = subnet if type(subnet) is tuple else (subnet.version, int(subnet.network_address), subnet.prefixlen)
    last = first | host_bits(version, prefixlen)
    cidr = f"{text_of(first, version)}/{prefixlen}"
    if prefixlen > (32 if version == 4 else 128) - 2:
        raise config_error(f"{key}.subnet", cidr, "network too small to allocate from")

    default_start, default_end, default_gateway = default_bounds((version, first, prefixlen))
    gateway = _addr_in(f"{key}.gateway", value.get("gateway"), version, first, last, cidr)
    if gateway is None:
        gateway = default_gateway
    start = _addr_in(f"{key}.rangeStart", value.get("rangeStart"), version, first, last, cidr)
    end = _addr_in(f"{key}.rangeEnd", value.get("rangeEnd"), version, first, last, cidr)
    start_i = int(start) if start is not None else default_start
    end_i = int(end) if end is not None else default_end
    if start is not None and version == 4 and start_i == last:
        raise config_error(f"{key}.rangeStart", str(start), f"is the broadcast address of {cidr}")
    if start_i > end_i:
        raise config_error(
            f"{key}.rangeStart",
            str(start if start is not None else IP(first + 1, version)),
            f"is after rangeEnd {IP(end_i, version)}",
        )
    # only what touches the range is kept (ipam.exclude is added by _with_global_exclude)
    exclude = [(lo, hi) for lo, hi, v in _parse_exclude(f"{key}.exclude", value.get("exclude")) if v == version and lo <= end_i and hi >= start_i]
    return Range(subnet, start_i, end_i, gateway, exclude)


def _addr_in(key: str, value: object, version: int, first: int, last: int, cidr: str):
    if value in (None, ""):
        return None
    addr = parse_ip(key, value)
    if addr.version != version or not first <= int(addr) <= last:
        raise config_error(key, value, f"not in network {cidr}")
    return addr


def _unscoped(text: str) -> str:
    """``text`` stripped; ValueError for an IPv6 zone (``fd00::5%eth0``).  ``ipaddress`` accepts
    zones, but host-local does not, and ``str()`` keeps the zone: one address would get a second
    reservation file name (``fd00::5%eth0`` next to ``fd00::5``) and be handed out twice."""
    if "%" in text:
        raise ValueError(f"{text!r}: an IPv6 zone (%) is not allowed")
    return text.strip()


def parse_ip(key: str, value: object):
    if not isinstance(value, str):
        raise config_error(key, value, "must be an IP address string")
    try:
        return ip_address(_unscoped(value))
    except ValueError:
        raise config_error(key, value, "not an IP address") from None


def _parse_exclude(key: str, value: object) -> list[tuple[int, int, int]]:
    """``exclude``: addresses and CIDRs as (first, last, family) integer intervals."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise config_error(key, value, "must be a list of addresses or CIDRs")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise config_error(f"{key}[{i}]", item, "must be an address or CIDR string")
        try:
            version, given, prefixlen = parse_cidr(_unscoped(item))
        except ValueError:
            raise config_error(f"{key}[{i}]", item, "not an address or CIDR") from None
        mask = host_bits(version, prefixlen)
        out.append((given & ~mask, given | mask, version))
    return out


def _parse_routes(value: object) -> tuple[Route, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise config_error("ipam.routes", value, "must be a list of routes")
    routes = []
    for i, item in enumerate(value):
        key = f"ipam.routes[{i}]"
        if not isinstance(item, dict):
            raise config_error(key, item, "a route must be an object with dst")
        dst_value = item.get("dst")
        if not isinstance(dst_value, str):
            raise config_error(f"{key}.dst", dst_value, "a destination CIDR is required")
        try:
            version, given, prefixlen = parse_cidr(_unscoped(dst_value))
        except ValueError:
            raise config_error(f"{key}.dst", dst_value, "not a CIDR") from None
        dst = Interface(IP(given, version), prefixlen)
        if "/" not in dst_value:
            raise config_error(f"{key}.dst", dst_value, "not a CIDR (missing /prefix)")
        gw = None
        if item.get("gw") not in (None, ""):
            gw = parse_ip(f"{key}.gw", item["gw"])
            if gw.version != dst.version:
                raise config_error(f"{key}.gw", item["gw"], f"address family differs from dst {dst_value}")
        extra = {}
        for field in ("mtu", "advmss", "priority", "table", "scope"):
            if item.get(field) is None:
                continue
            number = item[field]
            if isinstance(number, bool) or not isinstance(number, int) or number < 0 or number > 0xFFFFFFFF:
                raise config_error(f"{key}.{field}", number, "must be a non-negative integer")
            extra[field] = number
        routes.append(Route(dst, gw, extra))
    return tuple(routes)


def _parse_resolv_conf_key(value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "\0" in value:
        raise config_error("ipam.resolvConf", value, "must be a file path")
    return value


def read_resolv_conf(path: str) -> dict:
    """nameserver/domain/search/options from a resolv.conf-style file, as host-local reads it."""
    import stat  # already loaded by os: free

    try:
        # O_NONBLOCK: a FIFO with no writer must not hang the call; only regular files are read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, encoding="utf-8", errors="replace") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise config_error("ipam.resolvConf", path, "is not a regular file")
            text = fh.read(1 << 20)
    except OSError as exc:
        raise config_error("ipam.resolvConf", path, f"cannot be read ({exc.strerror})") from None
    dns: dict[str, object] = {}
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


def _requested_ips(conf: dict, runtime: dict, cni_args: dict[str, str]) -> list:
    """Requested addresses, in host-local's order: CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips."""
    out = []
    if cni_args.get("IP"):
        for item in cni_args["IP"].split(","):
            try:
                out.append(ip_address(_unscoped(item)))
            except ValueError:
                raise CniError(INVALID_ENV, f"CNI_ARGS: invalid IP {item.strip()!r}", "CNI_ARGS IP") from None
    args = conf.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    ips = cni.get("ips") if isinstance(cni, dict) else None
    out += _ip_list("args.cni.ips", ips)
    out += _ip_list("runtimeConfig.ips", runtime.get("ips"))
    if len(out) > MAX_REQUESTED_IPS:
        raise _too_many("requested IPs (CNI_ARGS IP, args.cni.ips, runtimeConfig.ips)", len(out), MAX_REQUESTED_IPS)
    return out


def _ip_list(key: str, value: object) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise config_error(key, value, "must be a list of addresses")
    if len(value) > MAX_REQUESTED_IPS:
        raise _too_many(key, len(value), MAX_REQUESTED_IPS)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise config_error(f"{key}[{i}]", item, "must be an address string")
        try:
            version, given, _ = parse_cidr(_unscoped(item))
        except ValueError:
            raise config_error(f"{key}[{i}]", item, "not an IP address") from None
        out.append(IP(given, version))
    return out
