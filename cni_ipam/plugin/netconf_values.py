"""The values of an ipam section, parsed for ``plugin.netconf.load``: the range sets (``ranges``,
the legacy top-level subnet, ``runtimeConfig.ipRanges``) with their excludes and the overlap checks
between them, ``routes``, the ``resolvConf`` key, and the requested IPs (``CNI_ARGS IP=``,
``args.cni.ips``, ``runtimeConfig.ips``), each under the limits one config may hold.

Every error names the key and value.  ``plugin.ranges`` and, for ``usePodCidr``, ``podcidr`` are
imported by the functions that need them: a DEL or GC loads this module for the names ``netconf``
shares, never the range code.  Nothing here imports ``netconf`` (it sits above this module).
"""

from __future__ import annotations

from cni_ipam.addr import IP, Interface, host_bits, ip_address, parse_cidr, text_of
from cni_ipam.errors import INVALID_CONFIG, INVALID_ENV, CniError, config_error

POD_CIDR_PLACEHOLDERS = ("usePodCidr", "usePodCidrIPv6")
# What one config may hold (docs/security.md): beyond these the answer is code 7 at once, before any
# parsing, so a config cannot cost minutes or gigabytes.  The limits count every range set together.
MAX_RANGES = 1024  # ranges in all range sets (ranges, legacy subnet, runtimeConfig.ipRanges)
MAX_EXCLUDES = 16384  # exclude entries: ipam.exclude plus every range's own
MAX_ROUTES = 1024
MAX_REQUESTED_IPS = 1024  # CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips together


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



def _too_many(key: str, count: int, limit: int) -> CniError:
    return CniError(
        INVALID_CONFIG,
        f"invalid {key}: {count} entries, more than the limit of {limit} (docs/security.md)",
        f"key {key}",
    )


def check_limits(ipam: dict, raw_sets: list[tuple[str, object]]) -> None:
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


def check_sets(range_sets: list, keys: list[str], version: str) -> None:
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


def with_global_exclude(range_sets: list, global_exclude: list[tuple[int, int, int]]) -> list:
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


def parse_range_set(key: str, value: object, ipam: dict, data_dir: str, podcidr_resolver=None):
    """One range set (a ``plugin.ranges.RangeSet``)."""
    from cni_ipam.plugin.ranges import RangeSet, first_overlap

    if not isinstance(value, list) or not value:
        raise config_error(key, value, "a range set must be a non-empty list of ranges")
    ranges = [
        _parse_range(f"{key}[{j}]" if key != "ipam" else "ipam", r, ipam, data_dir, podcidr_resolver)
        for j, r in enumerate(value)
    ]
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
            raise config_error(
                f"{key}.subnet",
                subnet_value,
                "an IPv4-mapped IPv6 subnet (::ffff:a.b.c.d) is not allowed; use the IPv4 subnet",
            )
        subnet = (version, first, prefixlen)
    # From here the subnet is integers, whoever resolved it (a usePodCidr source gives an ipaddress network).
    version, first, prefixlen = (
        subnet if type(subnet) is tuple else (subnet.version, int(subnet.network_address), subnet.prefixlen)
    )
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
    # only what touches the range is kept (ipam.exclude is added by with_global_exclude)
    exclude = [
        (lo, hi)
        for lo, hi, v in parse_exclude(f"{key}.exclude", value.get("exclude"))
        if v == version and lo <= end_i and hi >= start_i
    ]
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


def parse_exclude(key: str, value: object) -> list[tuple[int, int, int]]:
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


def parse_routes(value: object) -> tuple[Route, ...]:
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


def parse_resolv_conf_key(value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "\0" in value:
        raise config_error("ipam.resolvConf", value, "must be a file path")
    return value



def requested_ips(conf: dict, runtime: dict, cni_args: dict[str, str]) -> list:
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
