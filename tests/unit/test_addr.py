"""cni_ipam.addr against the stdlib ipaddress: the same acceptance, values and canonical text.

Differential (Hypothesis) over generated text that is close to an address - valid forms, then the
same forms mutated (leading zeros, extra or missing parts, zones, masks, stray characters) - plus
the edge cases named one by one.  ipaddress is the reference: whatever it accepts we accept with
the same value and text, whatever it refuses we refuse with the same message.
"""

import ipaddress
import pickle

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cni_ipam.addr import IP, Interface, host_bits, ip_address, parse_cidr, text_of


def reference_address(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        return exc


def reference_cidr(text):
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        return exc
    iface = ipaddress.ip_interface(text)  # accepts exactly what ip_network(strict=False) accepts
    return net, iface


def check_address(text):
    want = reference_address(text)
    if isinstance(want, ValueError):
        with pytest.raises(ValueError) as info:
            ip_address(text)
        assert str(info.value) == str(want)
        return
    got = ip_address(text)
    assert (got.version, int(got), str(got), repr(got)) == (want.version, int(want), str(want), repr(want))
    assert got == want and want == got and hash(got) == hash(want)
    assert getattr(got, "_scope_id", None) == getattr(want, "_scope_id", None)


def check_cidr(text):
    want = reference_cidr(text)
    if isinstance(want, ValueError):
        with pytest.raises(ValueError) as info:
            parse_cidr(text)
        assert str(info.value) == str(want)
        with pytest.raises(ValueError):
            ipaddress.ip_interface(text)
        return
    net, iface = want
    version, value, prefixlen = parse_cidr(text)
    assert (version, value, prefixlen) == (net.version, int(iface.ip), net.prefixlen)
    assert value & ~host_bits(version, prefixlen) == int(net.network_address)
    assert value | host_bits(version, prefixlen) == int(net.broadcast_address)
    if "%" not in text:  # a zone stays on ipaddress's interface text; we never print one in a CIDR
        assert str(Interface(IP(value, version), prefixlen)) == str(iface)
        assert f"{text_of(value & ~host_bits(version, prefixlen), version)}/{prefixlen}" == str(net)


# ------------------------------------------------------------------------------ generated text
octet = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["", "00", "01", "007", "256", "999", "1000", "-1", "+1", "0x1", " 1", "١"]),
)
dotted = st.lists(octet, min_size=3, max_size=5).map(".".join)
hextet = st.one_of(st.integers(0, 0xFFFF).map(lambda n: "%x" % n), st.integers(0, 0xFFFF).map(lambda n: "%04X" % n),
                   st.sampled_from(["", "0", "00000", "g", "ffff", "FFFF", "12345", " 1", "-1", "0x1"]))
colon_form = st.lists(hextet, min_size=1, max_size=10).map(":".join)
v4_tail = st.tuples(st.lists(hextet, min_size=0, max_size=7).map(":".join), st.sampled_from([":", "::"]), dotted).map(
    "".join
)
zone = st.sampled_from(["", "%", "%eth0", "%1", "%%", "%a%b", "%/"])
address_text = st.one_of(
    dotted,
    st.tuples(st.one_of(colon_form, v4_tail), zone).map("".join),
    st.integers(0, (1 << 128) - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    st.integers(0, (1 << 32) - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.builds(
        lambda n, k: str(ipaddress.IPv6Address(n & ~((1 << k) - 1))),
        st.integers(0, (1 << 128) - 1),
        st.integers(0, 128),
    ),
    st.text(alphabet="0123456789abcdefABCDEF:.%/ x", max_size=45),
)
mask = st.one_of(st.integers(0, 130).map(str), st.sampled_from(["", "024", "-1", "+8", " 8", "8 ", "1_0", "0" * 5000]),
                 st.integers(0, 32).map(lambda p: str(ipaddress.IPv4Address(((1 << 32) - 1) ^ ((1 << (32 - p)) - 1)))),
                 st.integers(0, 32).map(lambda p: str(ipaddress.IPv4Address((1 << (32 - p)) - 1))),
                 dotted)
cidr_text = st.one_of(
    address_text,
    st.tuples(address_text, st.just("/"), mask).map("".join),
    st.tuples(address_text, st.just("/"), mask, st.just("/"), mask).map("".join),
)


@settings(max_examples=3000)
@given(address_text)
@example("")
@example("::")
@example("::ffff:10.0.0.1")
@example("::ffff:010.0.0.1")
@example("1:2:3:4:5:6:1.2.3.4")
@example("1:2:3:4:5:6:7:1.2.3.4")
@example("fe80::1%eth0")
@example("fe80::1%")
@example("10.0.0.1%eth0")
def test_ip_address_agrees_with_ipaddress(text):
    check_address(text)


@settings(max_examples=3000)
@given(cidr_text)
@example("10.0.0.0/255.255.255.0")
@example("10.0.0.0/0.0.0.255")
@example("10.0.0.0/255.0.255.0")
@example("10.0.0.0/0.0.0.0")
@example("10.0.0.0/255.255.255.255")
@example("10.0.0.5/024")
@example("10.0.0.0/33")
@example("fd00::/ffff::")
@example("fd00::%eth0/64")
@example("fd00::/129")
@example("10.0.0.0/8/8")
@example("/8")
@example("10.0.0.0/")
def test_parse_cidr_agrees_with_ip_network_and_ip_interface(text):
    check_cidr(text)


@settings(max_examples=3000)
@given(st.integers(0, (1 << 128) - 1), st.integers(0, 128))
def test_ipv6_text_is_rfc5952_as_ipaddress_writes_it(value, zero_bits):
    value &= ~((1 << zero_bits) - 1)  # runs of zero hextets at the end, and anywhere by chance
    for n in (
        value,
        value >> 64,
        value & 0xFFFF0000FFFF0000FFFF0000FFFF0000,
        value & 0x0000FFFF00000000FFFF00000000FFFF,
    ):
        assert text_of(n, 6) == str(ipaddress.IPv6Address(n))
        assert str(ip_address(str(ipaddress.IPv6Address(n)).upper())) == str(ipaddress.IPv6Address(n))


@given(st.integers(0, (1 << 32) - 1))
def test_ipv4_text(value):
    assert text_of(value, 4) == str(ipaddress.IPv4Address(value)) == str(ip_address(value))


@pytest.mark.parametrize("text", [
    "::", "::1", "1::", "1:0:0:1:0:0:0:1", "1:0:0:0:1:0:0:1", "0:0:1:0:0:1:0:0", "1:0:1:0:1:0:1:0",
    "::ffff:1.2.3.4", "::1.2.3.4", "fe80::1%eth0", "2001:db8::", "1:2:3:4:5:6:7:8",
])
def test_named_ipv6_edges(text):
    check_address(text)


@pytest.mark.parametrize(
    "text", ["10.0.0.01", "010.0.0.1", "10.0.0", "10.0.0.0.0", "10.0.0.256", " 10.0.0.1", "10.0.0.1 ", "1.2.3.4/32", ""]
)
def test_ipv4_refusals(text):
    check_address(text)


def test_mixes_with_ipaddress_objects_both_ways():
    mine, real = ip_address("10.0.0.7"), ipaddress.ip_address("10.0.0.7")
    assert {mine} == {real} and real in {mine} and mine in {real}
    assert mine in ipaddress.ip_network("10.0.0.0/24") and mine not in ipaddress.ip_network("10.0.1.0/24")
    assert ip_address("10.0.0.6") < real < ip_address("10.0.0.8") and mine <= real and mine >= real
    assert sorted([ip_address("10.0.0.9"), ip_address("10.0.0.1")]) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("10.0.0.9"),
    ]
    assert mine != ip_address("::a00:7") and ip_address("fe80::1%a") != ipaddress.ip_address("fe80::1%b")
    assert ip_address("fe80::1%a") == ipaddress.ip_address("fe80::1%a") and hash(ip_address("fe80::1%a")) == hash(
        ipaddress.ip_address("fe80::1%a")
    )
    with pytest.raises(TypeError):
        _ = mine < ip_address("::1")
    assert mine + 1 == real + 1 and mine - 7 == ipaddress.ip_address("10.0.0.0")
    with pytest.raises(ValueError):
        _ = ip_address("255.255.255.255") + 1
    # what we do not answer ourselves comes from the real object
    assert (mine.packed, mine.is_private, ip_address("::1").exploded) == (
        real.packed,
        real.is_private,
        ipaddress.ip_address("::1").exploded,
    )
    assert ip_address("fe80::1%eth0").scope_id == "eth0" and f"{mine}" == "10.0.0.7" and f"{mine:b}" == f"{real:b}"
    assert mine.max_prefixlen == 32 and ip_address("::").max_prefixlen == 128
    assert pickle.loads(pickle.dumps(ip_address("fe80::1%eth0"))) == ip_address("fe80::1%eth0")
    iface = Interface(mine, 24)
    assert iface == ipaddress.ip_interface("10.0.0.7/24") and ipaddress.ip_interface("10.0.0.7/24") == iface
    assert hash(iface) == hash(ipaddress.ip_interface("10.0.0.7/24")) and iface.network == ipaddress.ip_network(
        "10.0.0.0/24"
    )
    assert iface != Interface(mine, 25) and (iface.version, str(iface), iface.ip) == (4, "10.0.0.7/24", real)


def test_the_module_does_not_import_ipaddress_for_its_own_work():
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cni_ipam.addr import ip_address, parse_cidr; "
            "a = ip_address('fd00::1'); str(a); hash(a); a == ip_address('fd00::2'); parse_cidr('10.0.0.0/255.0.0.0'); "
            "print('ipaddress' in sys.modules)")
    from tests.helpers import ROOT

    out = subprocess.run([sys.executable, "-S", "-c", code, ROOT], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
