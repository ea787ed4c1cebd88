"""A config cannot cost minutes or gigabytes.

Counts over the documented limits are code 7 before anything is parsed; a global ``exclude`` is kept
per range only where it applies; overlap checks are a sorted sweep; IPv4-mapped IPv6 subnets are
refused as host-local refuses them.  (Time and memory at the limits are measured for
docs/security.md, not asserted here.)
"""

import ipaddress
import random
import tracemalloc

import pytest

from cni_ipam.plugin import netconf as config
from cni_ipam.errors import INVALID_CONFIG, CniError

IP = ipaddress.ip_address


def load(ipam, **top):
    conf = {"cniVersion": "1.0.0", "name": "limits", "type": "bridge"}
    conf["ipam"] = dict({"type": "cni-ipam", "dataDir": "/tmp/limits-x"}, **ipam)
    conf.update(top)
    return config.load(conf, {})


def error_of(ipam, **top):
    with pytest.raises(CniError) as info:
        load(ipam, **top)
    return info.value


def v4_ranges(n):
    return [{"subnet": f"10.{i // 256}.{i % 256}.0/24"} for i in range(n)]


@pytest.mark.parametrize("what", ["ranges", "range-sets", "ipRanges", "exclude", "range-exclude", "routes", "ips"])
def test_over_the_limits_is_code_7_naming_the_key(what):
    over = {
        "ranges": ({"ranges": [v4_ranges(config.MAX_RANGES + 1)]}, {}, "ipam.ranges"),
        "range-sets": ({"ranges": [[r] for r in v4_ranges(config.MAX_RANGES + 1)]}, {}, "ipam.ranges"),
        "ipRanges": (
            {"ranges": [v4_ranges(1)]},
            {"runtimeConfig": {"ipRanges": [v4_ranges(config.MAX_RANGES)]}},
            "ipam.ranges",
        ),
        "exclude": ({"subnet": "10.0.0.0/8", "exclude": ["10.0.0.5"] * (config.MAX_EXCLUDES + 1)}, {}, "ipam.exclude"),
        "range-exclude": (
            {"ranges": [[dict(r, exclude=["10.0.0.5"] * 9000) for r in v4_ranges(2)]]},
            {},
            "ipam.exclude",
        ),
        "routes": (
            {"subnet": "10.0.0.0/8", "routes": [{"dst": "0.0.0.0/0"}] * (config.MAX_ROUTES + 1)},
            {},
            "ipam.routes",
        ),
        "ips": (
            {"subnet": "10.0.0.0/8"},
            {"runtimeConfig": {"ips": ["10.0.0.5"] * (config.MAX_REQUESTED_IPS + 1)}},
            "runtimeConfig.ips",
        ),
    }
    ipam, top, key = over[what]
    err = error_of(ipam, **top)
    assert err.code == INVALID_CONFIG and key in err.msg and "limit" in err.msg, err
    assert len(err.msg) < 300  # the message names the count, never echoes the list


def test_at_the_limits_is_accepted():
    cfg = load({"ranges": [v4_ranges(config.MAX_RANGES)],
                "exclude": [f"10.{k % 4}.{k // 64 % 256}.{k % 64 + 2}" for k in range(config.MAX_EXCLUDES)],
                "routes": [{"dst": f"172.16.{i % 256}.0/24"} for i in range(config.MAX_ROUTES)]})
    assert len(cfg.range_sets[0].ranges) == config.MAX_RANGES and len(cfg.routes) == config.MAX_ROUTES


def test_global_exclude_is_kept_only_where_it_applies():
    """main copied every global exclude into every range: 100 ranges x 100k excludes took 0.9 GB."""
    excludes = [f"10.0.{i}.{j}" for i in range(4) for j in range(10, 60)] + ["10.0.2.0/23", "fd00::5", "192.168.0.0/16"]
    cfg = load({"ranges": [v4_ranges(4)[:2], v4_ranges(4)[2:]], "exclude": excludes})
    for rset in cfg.range_sets:
        for r in rset.ranges:
            third = int(IP(str(r.subnet.network_address))) >> 8 & 0xFF
            for lo, hi in r.exclude:
                assert lo <= r.end and hi >= r.start, (r, IP(lo), IP(hi))  # only what touches the range
            assert r.is_excluded(IP(f"10.0.{third}.10")) and r.is_excluded(IP(f"10.0.{third}.59"))
            assert r.is_excluded(IP(f"10.0.{third}.60")) == (third >= 2)
    # the excludes of one range stay bounded however many ranges there are
    many = load({"ranges": [v4_ranges(200)], "exclude": [f"10.0.7.{j}" for j in range(2, 200)]})
    assert sum(len(r.exclude) for r in many.range_sets[0].ranges) == 1


def test_per_range_exclude_outside_the_range_is_dropped():
    cfg = load(
        {
            "ranges": [
                [
                    {
                        "subnet": "10.1.0.0/24",
                        "rangeStart": "10.1.0.100",
                        "exclude": ["10.1.0.5", "10.1.0.150", "fd00::1"],
                    }
                ]
            ]
        }
    )
    assert cfg.range_sets[0].ranges[0].exclude == ((int(IP("10.1.0.150")),) * 2,)


def test_global_exclude_memory_stays_small_with_many_ranges():
    excludes = [f"10.{k % 4}.{k // 4 % 256}.{k // 1024 + 2}" for k in range(2048)]
    tracemalloc.start()
    try:
        load({"ranges": [v4_ranges(config.MAX_RANGES)], "exclude": excludes})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # main: every range held all 2048 excludes (2 M tuples, ~250 MB); now each holds its own few
    print(f"peak {peak / 1e6:.1f} MB")
    assert peak < 16 << 20, peak


def test_overlap_across_many_range_sets_is_found():
    sets = [[r] for r in v4_ranges(config.MAX_RANGES - 1)] + [[{"subnet": "10.0.0.128/25"}]]
    err = error_of({"ranges": sets})
    assert err.code == INVALID_CONFIG and "ipam.ranges[0] overlaps with ipam.ranges[1023]" in err.msg
    err = error_of({"ranges": [v4_ranges(600) + [{"subnet": "10.1.20.0/22"}]]})
    assert (
        err.code == INVALID_CONFIG
        and "ipam.ranges[0][600]" in err.msg
        and "overlaps with ipam.ranges[0][276]" in err.msg
    )
    # the families never collide, even where their integers do
    load({"ranges": [[{"subnet": "0.0.0.0/8"}], [{"subnet": "::/104"}]]})


def test_first_overlap_agrees_with_the_pairwise_check():
    from cni_ipam.plugin.ranges import first_overlap

    rng = random.Random(16)
    for _ in range(400):
        n = rng.randint(0, 12)
        owners, intervals = {}, []
        for _ in range(n):  # owners with disjoint intervals of their own
            owner = rng.randint(0, 3)
            lo = rng.randint(0, 200)
            hi = lo + rng.randint(0, 20)
            if any(a <= hi and lo <= b for a, b in owners.get(owner, [])):
                continue
            owners.setdefault(owner, []).append((lo, hi))
            intervals.append((lo, hi, owner))
        pairs = {(min(a[2], b[2]), max(a[2], b[2])) for a in intervals for b in intervals
                 if a[2] != b[2] and a[0] <= b[1] and b[0] <= a[1]}
        found = first_overlap(intervals)
        assert (found is None) == (not pairs) and (found is None or found in pairs), (intervals, found, pairs)


@pytest.mark.parametrize("subnet", ["::ffff:10.70.0.0/120", "::ffff:0:0/96", "::ffff:10.70.0.0/112"])
def test_ipv4_mapped_ipv6_subnet_is_rejected(subnet):
    for ipam in ({"ranges": [[{"subnet": subnet}]]}, {"subnet": subnet}):
        err = error_of(ipam)
        assert err.code == INVALID_CONFIG and "IPv4-mapped" in err.msg and subnet in err.msg
    load({"ranges": [[{"subnet": "::/64"}], [{"subnet": "10.70.0.0/24"}]]})  # not mapped: fine
