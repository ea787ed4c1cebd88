"""macvlan + cni-ipam, dual stack, through libcni in real namespaces.

The macvlan master is a dummy interface (an ifb where the kernel has no dummy driver) inside its
own host namespace; two containers get an IPv4 and an IPv6 address each (two range sets) and reach
each other over both families.
"""

from __future__ import annotations

import ipaddress
import socket

from tests.integration.netns import link_addresses, make_master, ping_until, routes

NET = "rt-macvlan"
V4 = ipaddress.ip_network("10.252.0.0/24")
V6 = ipaddress.ip_network("fd52:7274:0:1::/64")


def macvlan_conf(rt, master):
    rt.conflist(
        NET,
        [
            {
                "type": "macvlan",
                "master": master,
                "mode": "bridge",
                "ipam": {
                    "type": "cni-ipam",
                    "dataDir": rt.data_dir,
                    "ranges": [
                        [{"subnet": str(V4), "rangeStart": "10.252.0.100", "rangeEnd": "10.252.0.120"}],
                        [{"subnet": str(V6), "rangeStart": "fd52:7274:0:1::100", "rangeEnd": "fd52:7274:0:1::1ff"}],
                    ],
                    # Explicit gateways: the main plugins' own CHECK (ip.ValidateExpectedRoute in plugins
                    # 1.1.1) looks for a route whose gateway equals the result's, and a gw-less result route
                    # is installed via the range gateway, so it would never match (same with host-local).
                    "routes": [
                        {"dst": "10.99.0.0/16", "gw": "10.252.0.1"},
                        {"dst": "fd52:7274:99::/48", "gw": "fd52:7274:0:1::1"},
                    ],
                },
            }
        ],
    )


def test_macvlan_dual_stack(runtime):
    rt = runtime
    host = rt.netns("mvhost")
    kind = make_master(host, "rt-mv0")
    print(f"macvlan master rt-mv0 is a {kind} interface")
    macvlan_conf(rt, "rt-mv0")
    ctrs = [rt.netns("c1"), rt.netns("c2")]
    got = []
    for i, ctr in enumerate(ctrs, 1):
        res = rt.driver("add", NET, ctr, host=host, container_id=f"rt-ctr-{i}", ifname="net1")
        assert res.rc == 0, res
        ips = [ipaddress.ip_interface(ip["address"]) for ip in res.json["ips"]]
        assert [i.version for i in ips] == [4, 6], res.json
        v4, v6 = ips
        assert v4.network == V4 and ipaddress.ip_address("10.252.0.100") <= v4.ip <= ipaddress.ip_address(
            "10.252.0.120"
        )
        assert v6.network == V6 and ipaddress.ip_address("fd52:7274:0:1::100") <= v6.ip <= ipaddress.ip_address(
            "fd52:7274:0:1::1ff"
        )
        # Both addresses on the requested interface name inside the container.
        assert sorted(link_addresses(ctr, "net1"), key=lambda a: a.version) == [v4, v6]
        r4, r6 = routes(ctr, socket.AF_INET), routes(ctr, socket.AF_INET6)
        assert ("10.99.0.0/16", "10.252.0.1", "net1") in r4, r4
        assert ("fd52:7274:99::/48", "fd52:7274:0:1::1", "net1") in r6, r6
        assert set(rt.reservations(NET)) >= {str(v4.ip), str(v6.ip)}
        assert rt.reservations(NET)[str(v4.ip)] == f"rt-ctr-{i}\r\nnet1"
        got.append((v4.ip, v6.ip))
    assert got[0][0] != got[1][0] and got[0][1] != got[1][1]
    assert len(rt.reservations(NET)) == 4

    # Sibling macvlans in bridge mode reach each other over both families (v6 waits for DAD).
    assert ping_until(ctrs[0], str(got[1][0])), "IPv4 between macvlan siblings"
    assert ping_until(ctrs[0], str(got[1][1]), deadline=10), "IPv6 between macvlan siblings"
    assert ping_until(ctrs[1], str(got[0][1]), deadline=10)

    for i, ctr in enumerate(ctrs, 1):
        res = rt.driver("check", NET, ctr, host=host, container_id=f"rt-ctr-{i}", ifname="net1")
        assert res.rc == 0, res

    # CHECK sees a missing IPv6 address too.
    from tests.integration.netns import remove_address

    remove_address(ctrs[0], "net1", f"{got[0][1]}/64")
    res = rt.driver("check", NET, ctrs[0], host=host, container_id="rt-ctr-1", ifname="net1")
    assert res.rc != 0 and res.json and res.json["code"] == 105, res
    assert str(got[0][1]) in res.json["msg"] and "net1" in res.json["msg"], res.json

    for i, ctr in enumerate(ctrs, 1):
        assert rt.driver("del", NET, ctr, host=host, container_id=f"rt-ctr-{i}", ifname="net1").rc == 0
    assert rt.reservations(NET) == {}
    assert rt.driver("del", NET, ctrs[0], host=host, container_id="rt-ctr-1", ifname="net1").rc == 0
