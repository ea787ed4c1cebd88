"""Capability args (``ips``, ``ipRanges`` via CAP_ARGS) and ``IP=`` via CNI_ARGS, through libcni.

libcni passes a capability arg to a plugin only when its conflist entry declares the capability;
bridge hands its stdin (with ``runtimeConfig``) to the IPAM plugin unchanged.
"""

from __future__ import annotations

import ipaddress

from tests.integration.netns import link_addresses

NET = "rt-caps"


def caps_conf(rt, capabilities=None, name=NET):
    plugin = {
        "type": "bridge", "bridge": "rt-br0", "isGateway": True,
        "ipam": {"type": "cni-ipam", "dataDir": rt.data_dir,
                 "ranges": [[{"subnet": "10.251.0.0/24", "rangeStart": "10.251.0.10", "rangeEnd": "10.251.0.90"}]]},
    }
    if capabilities:
        plugin["capabilities"] = {c: True for c in capabilities}
    rt.conflist(name, [plugin])


def addresses(res):
    return [ipaddress.ip_interface(ip["address"]) for ip in res.json["ips"]]


def test_cap_args_ips(runtime):
    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    caps_conf(rt, ["ips"])
    res = rt.driver("add", NET, ctr, host=host, container_id="rt-ctr-1", cap_args={"ips": ["10.251.0.77/24"]})
    assert res.rc == 0, res
    assert addresses(res) == [ipaddress.ip_interface("10.251.0.77/24")]
    assert link_addresses(ctr, "eth0") == [ipaddress.ip_interface("10.251.0.77/24")]
    assert rt.reservations(NET) == {"10.251.0.77": "rt-ctr-1\r\neth0"}
    # CHECK and DEL get the same runtimeConfig from libcni's cache and agree.
    assert rt.driver("check", NET, ctr, host=host, container_id="rt-ctr-1").rc == 0
    assert rt.driver("del", NET, ctr, host=host, container_id="rt-ctr-1").rc == 0
    assert rt.reservations(NET) == {}


def test_cap_args_ips_taken_and_invalid(runtime):
    rt = runtime
    host, c1, c2 = rt.netns("host"), rt.netns("c1"), rt.netns("c2")
    caps_conf(rt, ["ips"])
    assert rt.driver("add", NET, c1, host=host, container_id="rt-ctr-1", cap_args={"ips": ["10.251.0.77/24"]}).rc == 0
    res = rt.driver("add", NET, c2, host=host, container_id="rt-ctr-2", cap_args={"ips": ["10.251.0.77/24"]})
    assert res.rc == 1 and res.json and res.json["code"] == 101, res  # REQUESTED_IP_TAKEN
    assert "10.251.0.77" in res.json["msg"], res.json
    # As a runtime does after a failed ADD: DEL, which must not touch rt-ctr-1's reservation.
    assert rt.driver("del", NET, c2, host=host, container_id="rt-ctr-2").rc == 0
    res = rt.driver("add", NET, c2, host=host, container_id="rt-ctr-2", cap_args={"ips": ["10.251.5.5/24"]})
    assert res.rc == 1 and res.json and res.json["code"] == 102, res  # REQUESTED_IP_INVALID
    assert rt.driver("del", NET, c2, host=host, container_id="rt-ctr-2").rc == 0
    assert rt.reservations(NET) == {"10.251.0.77": "rt-ctr-1\r\neth0"}, "a failed ADD must not leak a reservation"


def test_cap_args_ignored_without_the_capability(runtime):
    """libcni filters capability args: a conflist that does not declare ``ips`` gets a range address."""
    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    caps_conf(rt, None)
    res = rt.driver("add", NET, ctr, host=host, container_id="rt-ctr-1", cap_args={"ips": ["10.251.0.77/24"]})
    assert res.rc == 0, res
    assert addresses(res) == [ipaddress.ip_interface("10.251.0.10/24")]


def test_cap_args_ip_ranges(runtime):
    """ipRanges adds a range set in front of the configured ones (host-local does the same), so the
    container gets two IPv4 addresses; macvlan, because bridge allows one IPv4 gateway per bridge."""
    from tests.integration.netns import make_master

    rt = runtime
    host, c1, c2 = rt.netns("host"), rt.netns("c1"), rt.netns("c2")
    make_master(host, "rt-mv0")
    rt.conflist(NET, [{
        "type": "macvlan", "master": "rt-mv0", "mode": "bridge", "capabilities": {"ipRanges": True},
        "ipam": {"type": "cni-ipam", "dataDir": rt.data_dir,
                 "ranges": [[{"subnet": "10.251.0.0/24", "rangeStart": "10.251.0.10", "rangeEnd": "10.251.0.90"}]]},
    }])
    ranges = {"ipRanges": [[{"subnet": "10.251.9.0/24", "rangeStart": "10.251.9.20", "rangeEnd": "10.251.9.30"}]]}
    res = rt.driver("add", NET, c1, host=host, container_id="rt-ctr-1", cap_args=ranges)
    assert res.rc == 0, res
    # One address per range set: the runtime's set first (as host-local), then the configured one.
    got = addresses(res)
    assert got == [ipaddress.ip_interface("10.251.9.20/24"), ipaddress.ip_interface("10.251.0.10/24")], got
    assert sorted(link_addresses(c1, "eth0")) == sorted(got)
    gateways = [ip.get("gateway") for ip in res.json["ips"]]
    assert gateways == ["10.251.9.1", "10.251.0.1"], gateways
    res2 = rt.driver("add", NET, c2, host=host, container_id="rt-ctr-2", cap_args=ranges)
    assert res2.rc == 0, res2
    assert addresses(res2)[0] == ipaddress.ip_interface("10.251.9.21/24")
    assert addresses(res2)[1] == ipaddress.ip_interface("10.251.0.11/24")
    assert len(rt.reservations(NET)) == 4
    assert rt.driver("check", NET, c1, host=host, container_id="rt-ctr-1").rc == 0
    for ctr, cid in ((c1, "rt-ctr-1"), (c2, "rt-ctr-2")):
        assert rt.driver("del", NET, ctr, host=host, container_id=cid).rc == 0
    assert rt.reservations(NET) == {}


def test_cni_args_ip(runtime):
    rt = runtime
    host, c1, c2 = rt.netns("host"), rt.netns("c1"), rt.netns("c2")
    caps_conf(rt, None)
    # bridge parses CNI_ARGS too and rejects keys it does not know unless IgnoreUnknown is set.
    res = rt.driver("add", NET, c1, host=host, container_id="rt-ctr-1", cni_args="IgnoreUnknown=1;IP=10.251.0.88")
    assert res.rc == 0, res
    assert addresses(res) == [ipaddress.ip_interface("10.251.0.88/24")]
    assert link_addresses(c1, "eth0") == [ipaddress.ip_interface("10.251.0.88/24")]
    assert rt.reservations(NET) == {"10.251.0.88": "rt-ctr-1\r\neth0"}
    # The same address for another container is refused.
    res = rt.driver("add", NET, c2, host=host, container_id="rt-ctr-2", cni_args="IgnoreUnknown=1;IP=10.251.0.88")
    assert res.rc == 1 and res.json and res.json["code"] == 101, res
    # CHECK and DEL with the same CNI_ARGS (libcni replays the cached args too).
    assert (
        rt.driver("check", NET, c1, host=host, container_id="rt-ctr-1", cni_args="IgnoreUnknown=1;IP=10.251.0.88").rc
        == 0
    )
    assert (
        rt.driver("del", NET, c1, host=host, container_id="rt-ctr-1", cni_args="IgnoreUnknown=1;IP=10.251.0.88").rc == 0
    )
    assert rt.reservations(NET) == {}
