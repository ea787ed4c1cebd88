"""result.py: the IPAM result in the shape of every CNI version 0.1.0 … 1.1.0."""

import ipaddress
import json

import pytest

from cni_ipam.plugin import netconf as config
from cni_ipam.plugin.skel import SUPPORTED_VERSIONS
from cni_ipam.plugin.result import IpamResult, addresses_in

IFACE = ipaddress.ip_interface
IP = ipaddress.ip_address

ROUTES = [
    {"dst": "0.0.0.0/0"},
    {
        "dst": "192.168.0.0/16",
        "gw": "10.0.0.254",
        "mtu": 1400,
        "advmss": 1360,
        "priority": 5,
        "table": 100,
        "scope": 253,
    },
    {"dst": "::/0", "gw": "fd00::1", "table": 7},
]
DNS = {"nameservers": ["10.0.0.53"], "domain": "example.org", "search": ["example.org"], "options": ["ndots:2"]}


def routes(items=ROUTES):
    return config.load({"cniVersion": "1.1.0", "name": "n",
                        "ipam": {"subnet": "10.0.0.0/24", "routes": items}}, {}).routes


def dual():
    return IpamResult(
        [(IFACE("10.0.0.2/24"), IP("10.0.0.1")), (IFACE("fd00::2/64"), IP("fd00::1"))], routes(), dict(DNS)
    )


def all_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from all_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_keys(v)


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_02x_shape_ip4_ip6_with_routes_split_by_family(version):
    assert dual().to_json(version) == {
        "cniVersion": version,
        "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"}]},
        "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
        "dns": DNS,
    }


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_02x_single_family_without_routes(version):
    res = IpamResult([(IFACE("10.0.0.2/24"), None)], (), {})
    assert res.to_json(version) == {"cniVersion": version, "ip4": {"ip": "10.0.0.2/24"}, "dns": {}}
    res6 = IpamResult([(IFACE("fd00::9/64"), IP("fd00::1"))], routes([{"dst": "0.0.0.0/0"}]), {})
    assert res6.to_json(version) == {
        "cniVersion": version,
        "ip6": {"ip": "fd00::9/64", "gateway": "fd00::1"},
        "dns": {},
    }


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_03x_04x_shape_with_ip_version(version):
    assert dual().to_json(version) == {
        "cniVersion": version,
        "ips": [
            {"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
            {"version": "6", "address": "fd00::2/64", "gateway": "fd00::1"},
        ],
        "routes": [
            {"dst": "0.0.0.0/0"},
            {"dst": "192.168.0.0/16", "gw": "10.0.0.254"},
            {"dst": "::/0", "gw": "fd00::1"},
        ],
        "dns": DNS,
    }


def test_100_shape_without_version_or_11_fields():
    assert dual().to_json("1.0.0") == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64", "gateway": "fd00::1"}],
        "routes": [
            {"dst": "0.0.0.0/0"},
            {"dst": "192.168.0.0/16", "gw": "10.0.0.254"},
            {"dst": "::/0", "gw": "fd00::1"},
        ],
        "dns": DNS,
    }


def test_110_shape_with_route_fields():
    assert dual().to_json("1.1.0") == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64", "gateway": "fd00::1"}],
        "routes": [
            {"dst": "0.0.0.0/0"},
            {
                "dst": "192.168.0.0/16",
                "gw": "10.0.0.254",
                "mtu": 1400,
                "advmss": 1360,
                "priority": 5,
                "table": 100,
                "scope": 253,
            },
            {"dst": "::/0", "gw": "fd00::1", "table": 7},
        ],
        "dns": DNS,
    }


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_no_interfaces_and_no_interface_index_in_any_version(version):
    out = dual().to_json(version)
    keys = set(all_keys(out))
    assert "interfaces" not in keys and "interface" not in keys
    assert out["cniVersion"] == version
    json.dumps(out)  # serialisable as is
    extra = {"mtu", "advmss", "priority", "table", "scope"} & keys
    assert extra == (set() if version != "1.1.0" else {"mtu", "advmss", "priority", "table", "scope"})


def test_no_routes_key_without_routes_and_dns_always_present():
    out = IpamResult([(IFACE("10.0.0.2/24"), IP("10.0.0.1"))], (), {}).to_json("1.0.0")
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}], "dns": {}}


def test_multiple_addresses_per_family_keep_set_order():
    res = IpamResult([(IFACE("10.0.0.2/24"), IP("10.0.0.1")), (IFACE("10.1.0.2/24"), IP("10.1.0.1"))], (), {})
    assert [e["address"] for e in res.to_json("0.3.1")["ips"]] == ["10.0.0.2/24", "10.1.0.2/24"]
    assert res.to_json("0.2.0")["ip4"]["ip"] == "10.0.0.2/24"


def test_addresses_in_every_prev_result_shape():
    for version in SUPPORTED_VERSIONS:
        assert addresses_in(dual().to_json(version)) == {"10.0.0.2", "fd00::2"}
    assert addresses_in(None) == set()
    assert addresses_in({"ips": "x", "ip4": 5}) == set()
    assert addresses_in({"ips": [{"address": 5}, {"address": "10.9.9.9/8"}]}) == {"10.9.9.9"}
