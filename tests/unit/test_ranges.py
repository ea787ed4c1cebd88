"""ranges.py: defaults, validation of start/end/gateway, containment, and host-local's RangeIter order."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_ipam.plugin import netconf as config
from cni_ipam.errors import INVALID_CONFIG, CniError
from cni_ipam.plugin.ranges import Range, RangeSet

IP = ipaddress.ip_address


def range_sets(ranges, **extra):
    ipam = {"type": "cni-ipam", "dataDir": "/tmp/core-x", "ranges": ranges}
    ipam.update(extra)
    return config.load({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}, {}).range_sets


def one_range(**kw):
    return range_sets([[kw]])[0].ranges[0]


def order(rset, last=None, limit=None):
    out = []
    for addr, _ in rset.candidates(IP(last) if last else None):
        out.append(str(addr))
        if limit and len(out) == limit:
            break
    return out


# ------------------------------------------------------------------ defaults
@pytest.mark.parametrize("subnet, start, end, gw", [
    ("10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1"),
    ("10.0.0.0/8", "10.0.0.1", "10.255.255.254", "10.0.0.1"),
    ("192.168.7.64/30", "192.168.7.65", "192.168.7.66", "192.168.7.65"),
    ("fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:fffe", "fd00::1"),
    ("2001:db8:1::/120", "2001:db8:1::1", "2001:db8:1::fe", "2001:db8:1::1"),
    ("fd00::/126", "fd00::1", "fd00::2", "fd00::1"),
])
def test_defaults(subnet, start, end, gw):
    r = one_range(subnet=subnet)
    assert (str(r.range_start), str(r.range_end), str(r.gateway)) == (start, end, gw)


def test_v6_last_address_only_when_asked():
    default = one_range(subnet="fd00::/120")
    assert not default.contains(IP("fd00::ff"))
    asked = one_range(subnet="fd00::/120", rangeEnd="fd00::ff")
    assert asked.contains(IP("fd00::ff"))
    assert "fd00::ff" in order(RangeSet([asked]))


def test_v4_never_hands_out_network_or_broadcast_even_when_range_covers_them():
    r = one_range(subnet="10.0.0.0/29", rangeStart="10.0.0.0", rangeEnd="10.0.0.7")
    assert order(RangeSet([r])) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert r.size() == 5


def test_explicit_fields_kept():
    r = one_range(subnet="10.3.0.0/16", rangeStart="10.3.1.10", rangeEnd="10.3.1.20", gateway="10.3.255.254")
    assert (str(r.range_start), str(r.range_end), str(r.gateway)) == ("10.3.1.10", "10.3.1.20", "10.3.255.254")
    assert r.to_json() == {
        "subnet": "10.3.0.0/16",
        "rangeStart": "10.3.1.10",
        "rangeEnd": "10.3.1.20",
        "gateway": "10.3.255.254",
    }
    assert r.contains(IP("10.3.1.10")) and r.contains(IP("10.3.1.20"))
    assert not r.contains(IP("10.3.1.9")) and not r.contains(IP("10.3.1.21")) and not r.contains(IP("fd00::1"))
    assert r.size() == 11


# ------------------------------------------------------------------ rejected ranges (host-local accepts these)
@pytest.mark.parametrize("rng, key, value", [
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.200", "rangeEnd": "10.0.0.100"}, "rangeStart", "10.0.0.200"),
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.255"}, "rangeStart", "10.0.0.255"),
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.255", "rangeEnd": "10.0.0.255"}, "rangeStart", "10.0.0.255"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}, "gateway", "10.0.1.1"),
    ({"subnet": "fd00::/64", "gateway": "fd01::1"}, "gateway", "fd01::1"),
    ({"subnet": "fd00::/64", "rangeStart": "fd00::10", "rangeEnd": "fd00::f"}, "rangeStart", "fd00::10"),
    ({"subnet": "fd00::/120", "rangeStart": "fd00::ff"}, "rangeStart", "fd00::ff"),
])
def test_rejected(rng, key, value):
    with pytest.raises(CniError) as info:
        range_sets([[rng]])
    assert info.value.code == INVALID_CONFIG
    assert f"ipam.ranges[0][0].{key}" in info.value.msg and value in info.value.msg


def test_range_start_equal_end_is_one_address():
    r = one_range(subnet="10.0.0.0/24", rangeStart="10.0.0.9", rangeEnd="10.0.0.9")
    assert order(RangeSet([r])) == ["10.0.0.9"]


# ------------------------------------------------------------------ containment, overlap
def test_range_set_lookup_and_overlap():
    a, b = range_sets([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.19"},
                        {"subnet": "10.0.1.0/24"}], [{"subnet": "fd00::/64"}]])
    assert a.range_for(IP("10.0.0.15")) is a.ranges[0]
    assert a.range_for(IP("10.0.1.15")) is a.ranges[1]
    assert a.range_for(IP("10.0.0.5")) is None and not a.contains(IP("10.0.0.5"))
    assert a.in_subnets(IP("10.0.0.5")) is a.ranges[0]
    assert a.version == 4 and b.version == 6
    assert not a.overlaps(b)
    c = RangeSet([one_range(subnet="10.0.1.128/25")])
    assert a.overlaps(c) and c.overlaps(a)
    assert str(a) == "10.0.0.10-10.0.0.19,10.0.1.1-10.0.1.254"
    assert a.size() == 10 + 253  # second range: .1 is the gateway


def test_size_counts_exclusions_and_gateway_once():
    r = one_range(subnet="10.0.0.0/28", exclude=["10.0.0.1", "10.0.0.4/30", "10.0.0.6"])
    # .1-.14 = 14 addresses; gateway .1 (also excluded) and .4-.7 excluded → 9 left
    assert r.size() == 9
    assert len(order(RangeSet([r]))) == 9


# ------------------------------------------------------------------ order: host-local's RangeIter
def test_order_from_scratch_skips_gateway():
    rset = range_sets([[{"subnet": "10.0.0.0/29"}]])[0]
    assert order(rset) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def test_order_starts_after_last_reserved_and_ends_with_it():
    rset = range_sets([[{"subnet": "10.0.0.0/29"}]])[0]
    assert order(rset, "10.0.0.4") == ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert order(rset, "10.0.0.6") == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def test_order_wraps_across_ranges():
    rset = range_sets([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.12"},
                        {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.1", "rangeEnd": "10.0.1.3"},
                        {"subnet": "10.0.2.0/24", "rangeStart": "10.0.2.5", "rangeEnd": "10.0.2.6"}]])[0]
    every = ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.1.2", "10.0.1.3", "10.0.2.5", "10.0.2.6"]
    assert order(rset) == every
    assert order(rset, "10.0.0.12") == every[3:] + every[:3]  # end of a range → next range's start
    assert order(rset, "10.0.1.2") == every[4:] + every[:4]
    assert order(rset, "10.0.2.6") == every  # end of the last range → around to the first
    assert order(rset, "10.0.1.1") == [
        "10.0.1.2",
        "10.0.1.3",
        "10.0.2.5",
        "10.0.2.6",
        "10.0.0.10",
        "10.0.0.11",
        "10.0.0.12",
    ]


def test_order_ignores_last_reserved_outside_the_set():
    rset = range_sets([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.12"}]])[0]
    assert order(rset, "10.0.0.50") == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    assert order(rset, "fd00::1") == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]


def test_order_skips_excluded_and_returns_the_range():
    rset = range_sets([[{"subnet": "10.0.0.0/28", "exclude": ["10.0.0.3/32", "10.0.0.8/29"]},
                        {"subnet": "10.0.1.0/30"}]], exclude=["10.0.0.5"])[0]
    got = list(rset.candidates(IP("10.0.0.4")))
    assert [str(a) for a, _ in got] == ["10.0.0.6", "10.0.0.7", "10.0.1.2", "10.0.0.2", "10.0.0.4"]
    assert [r for _, r in got] == [rset.ranges[0], rset.ranges[0], rset.ranges[1], rset.ranges[0], rset.ranges[0]]


def test_order_v6_large_subnet_is_lazy():
    rset = range_sets([[{"subnet": "fd00::/64"}]])[0]
    assert order(rset, limit=3) == ["fd00::2", "fd00::3", "fd00::4"]
    assert order(rset, "fd00::ffff:ffff:ffff:fffe", limit=2) == ["fd00::2", "fd00::3"]


def host_local_iter(rset, last):
    """A line-by-line port of host-local's GetIter/RangeIter.Next (plugins v1.1.1), as integers.

    It skips only each range's gateway; network, broadcast and excluded addresses are filtered by
    the caller (host-local hands them out; cni-ipam does not).
    """
    ranges = [(r.start, r.end, int(r.gateway) if r.gateway is not None else None) for r in rset.ranges]
    idx, cur, start_ip = 0, None, None
    if last is not None and rset.contains(last):
        for i, r in enumerate(rset.ranges):
            if r.contains(last):
                idx, cur = i, int(last)
                break
    else:
        start_ip = ranges[0][0]
    out = []
    while True:
        s, e, gw = ranges[idx]
        if cur is None:
            cur = s
            start_ip = cur
            if cur != gw:
                out.append(cur)
            continue
        if cur == e:
            idx = (idx + 1) % len(ranges)
            s, e, gw = ranges[idx]
            cur = s
        else:
            cur += 1
        if start_ip is None:
            start_ip = cur
        elif cur == start_ip:
            return out
        if cur != gw:
            out.append(cur)


@st.composite
def v4_range_sets(draw):
    """1-3 ranges in distinct /27s of 10.5.0.0/24 with random start/end/gateway/exclusions."""
    blocks = draw(st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True))
    ranges = []
    for b in blocks:
        base = b * 32
        lo = draw(st.integers(base, base + 31))
        hi = draw(st.integers(lo, base + 31))
        if lo == base + 31:  # a start at the broadcast address is rejected by design
            lo = hi = base + 30
        rng = {"subnet": f"10.5.0.{base}/27", "rangeStart": f"10.5.0.{lo}", "rangeEnd": f"10.5.0.{hi}"}
        if draw(st.booleans()):
            rng["gateway"] = f"10.5.0.{draw(st.integers(base, base + 31))}"
        if draw(st.booleans()):
            rng["exclude"] = [f"10.5.0.{draw(st.integers(base, base + 31))}"]
        ranges.append(rng)
    last = draw(st.one_of(st.none(), st.integers(0, 255)))
    return ranges, last


@settings(max_examples=300, deadline=None)
@given(v4_range_sets())
def test_order_matches_host_local_range_iter(case):
    ranges, last = case
    rset = range_sets([ranges])[0]
    last_ip = None if last is None else IP(f"10.5.0.{last}")
    expected = [
        str(IP(v)) for v in host_local_iter(rset, last_ip)
        if not rset.range_for(IP(v)).unusable(v) and not rset.range_for(IP(v)).is_excluded(IP(v))
    ]
    assert order(rset, str(last_ip) if last_ip else None) == expected
    assert len(expected) == rset.size()


def test_range_constructor_merges_exclusions():
    net = ipaddress.ip_network("10.0.0.0/24")
    r = Range(net, int(IP("10.0.0.1")), int(IP("10.0.0.254")), IP("10.0.0.1"),
              [(int(IP("10.0.0.10")), int(IP("10.0.0.20"))), (int(IP("10.0.0.15")), int(IP("10.0.0.30"))),
               (int(IP("10.0.0.31")), int(IP("10.0.0.31")))])
    assert r.exclude == ((int(IP("10.0.0.10")), int(IP("10.0.0.31"))),)
    assert r.excluded_until(int(IP("10.0.0.12"))) == int(IP("10.0.0.31"))
    assert r.excluded_until(int(IP("10.0.0.9"))) == -1


@settings(max_examples=200, deadline=None)
@given(v4_range_sets(), st.lists(st.integers(0, 255), max_size=40))
def test_can_hand_out_is_exactly_what_the_walk_yields(case, probes):
    """RangeSet.can_hand_out (the one rule STATUS, show, lint and the pool use) agrees with the
    allocator's walk: an address is handed out by the walk iff can_hand_out says so."""
    ranges, _ = case
    rset = range_sets([ranges])[0]
    walked = {ip for ip, _ in rset.candidates(None)}
    for value in probes + [int(r.start) & 0xFF for r in rset.ranges] + [int(r.end) & 0xFF for r in rset.ranges]:
        ip = IP(f"10.5.0.{value}")
        assert rset.can_hand_out(ip) == (ip in walked), (ip, rset)
    assert not rset.can_hand_out(IP("fd00::1")) and not rset.can_hand_out(IP("10.6.0.1"))


@pytest.mark.parametrize("subnet", ["10.0.0.0/24", "10.0.0.0/30", "fd00::/120", "fd00::/64"])
def test_default_range_of_a_subnet_is_the_one_a_config_without_keys_gets(subnet):
    net = ipaddress.ip_network(subnet)
    parsed = range_sets([[{"subnet": subnet}]])[0].ranges[0]
    default = Range.of_subnet(net)
    assert (default.start, default.end, default.gateway) == (parsed.start, parsed.end, parsed.gateway)
    assert default.is_default() and parsed.is_default() and default.size() == parsed.size()
    assert default.start == int(net.network_address) + 1 and default.end == int(net.broadcast_address) - 1
    assert not range_sets([[{"subnet": subnet, "rangeStart": str(net.network_address + 2)}]])[0].ranges[0].is_default()
