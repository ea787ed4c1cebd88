"""bridge + cni-ipam driven by libcni (the cnitool-style driver) in real network namespaces.

The bridge lives in a dedicated host namespace; the containers are further namespaces.  We check
what the container really got (pyroute2), that containers reach each other and the gateway, CHECK
(also after breaking the namespace), DEL twice, and GC/STATUS through the driver.
"""

from __future__ import annotations

import ipaddress
import json
import os

import pytest

from tests.integration.netns import link_addresses, link_index, ping, ping_until, remove_address, routes

NET = "rt-bridge"
SUBNET = ipaddress.ip_network("10.251.0.0/24")
GATEWAY = "10.251.0.1"
START, END = ipaddress.ip_address("10.251.0.10"), ipaddress.ip_address("10.251.0.50")


def bridge_conf(rt, name=NET, **ipam_extra):
    ipam = {
        "type": "cni-ipam",
        "dataDir": rt.data_dir,
        "ranges": [[{"subnet": str(SUBNET), "rangeStart": str(START), "rangeEnd": str(END), "gateway": GATEWAY}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.77.0/24", "gw": "10.251.0.254"}],
    }
    ipam.update(ipam_extra)
    rt.conflist(name, [{"type": "bridge", "bridge": "rt-br0", "isGateway": True, "ipam": ipam}])


def add(rt, host, ctr, cid, name=NET):
    res = rt.driver("add", name, ctr, host=host, container_id=cid)
    assert res.rc == 0, res
    assert res.json and res.json["cniVersion"] == "1.0.0", res
    return res.json


def test_add_gives_address_routes_gateway_check_del(runtime):
    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    bridge_conf(rt)
    result = add(rt, host, ctr, "rt-ctr-1")

    # The result: one address in the range, on the container's eth0, gateway and routes from config.
    assert len(result["ips"]) == 1, result
    ip = result["ips"][0]
    iface = ipaddress.ip_interface(ip["address"])
    assert iface.network == SUBNET and START <= iface.ip <= END, ip
    assert ip["gateway"] == GATEWAY
    sandbox = result["interfaces"][ip["interface"]]
    assert sandbox["name"] == "eth0" and sandbox["sandbox"] == rt.path(ctr), result
    assert result["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "192.168.77.0/24", "gw": "10.251.0.254"}]

    # The namespace: the address is on eth0, the routes go where the config says.
    assert link_addresses(ctr, "eth0") == [iface]
    got = routes(ctr)
    assert ("0.0.0.0/0", GATEWAY, "eth0") in got, got
    assert ("192.168.77.0/24", "10.251.0.254", "eth0") in got, got
    # The bridge and its gateway address are in the host namespace, not the root one.
    assert ipaddress.ip_interface(f"{GATEWAY}/24") in link_addresses(host, "rt-br0")

    # The reservation, owned by (container ID, ifname).
    assert rt.reservations(NET) == {str(iface.ip): "rt-ctr-1\r\neth0"}

    assert ping_until(ctr, GATEWAY), "container cannot reach its gateway"

    res = rt.driver("check", NET, ctr, host=host, container_id="rt-ctr-1")
    assert res.rc == 0, res

    res = rt.driver("del", NET, ctr, host=host, container_id="rt-ctr-1")
    assert res.rc == 0, res
    assert rt.reservations(NET) == {}
    assert not os.listdir(os.path.join(rt.cache_dir, "results"))
    res = rt.driver("del", NET, ctr, host=host, container_id="rt-ctr-1")
    assert res.rc == 0, f"second DEL failed: {res}"
    assert rt.reservations(NET) == {}


def test_check_fails_when_the_address_is_removed_in_the_netns(runtime):
    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    bridge_conf(rt)
    result = add(rt, host, ctr, "rt-ctr-1")
    cidr = result["ips"][0]["address"]
    address = cidr.split("/")[0]

    assert rt.driver("check", NET, ctr, host=host, container_id="rt-ctr-1").rc == 0
    remove_address(ctr, "eth0", cidr)
    res = rt.driver("check", NET, ctr, host=host, container_id="rt-ctr-1")
    assert res.rc != 0, "CHECK passed although the address is gone from the namespace"
    assert res.json is not None, res
    assert res.json["code"] == 105, res  # CHECK_FAILED: our IPAM CHECK ran before bridge's own
    msg = res.json["msg"]
    assert address in msg and "eth0" in msg and rt.path(ctr) in msg, msg

    # DEL still releases the reservation.
    assert rt.driver("del", NET, ctr, host=host, container_id="rt-ctr-1").rc == 0
    assert rt.reservations(NET) == {}


def test_check_fails_when_the_interface_is_gone(runtime):
    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    bridge_conf(rt)
    add(rt, host, ctr, "rt-ctr-1")
    from tests.integration.netns import sh

    sh("ip", "-n", ctr, "link", "set", "eth0", "down")
    sh("ip", "-n", ctr, "link", "set", "eth0", "name", "rt-moved0")
    res = rt.driver("check", NET, ctr, host=host, container_id="rt-ctr-1")
    assert res.rc != 0 and res.json and res.json["code"] == 105, res
    assert "interface eth0 not found" in res.json["msg"] and rt.path(ctr) in res.json["msg"], res.json


def test_two_namespaces_reach_each_other_and_the_gateway(runtime):
    rt = runtime
    host = rt.netns("host")
    c1, c2 = rt.netns("c1"), rt.netns("c2")
    bridge_conf(rt)
    a1 = add(rt, host, c1, "rt-ctr-1")["ips"][0]["address"].split("/")[0]
    a2 = add(rt, host, c2, "rt-ctr-2")["ips"][0]["address"].split("/")[0]
    assert a1 != a2
    assert ping_until(c1, a2), f"{c1} cannot reach {a2}"
    assert ping(c2, a1), f"{c2} cannot reach {a1}"
    assert ping(c1, GATEWAY) and ping(c2, GATEWAY)
    assert ping(host, a1) and ping(host, a2)
    # An address nobody holds does not answer: the pings above really test reachability.
    assert not ping(c1, "10.251.0.49", wait=1)

    for ctr, cid in ((c1, "rt-ctr-1"), (c2, "rt-ctr-2")):
        assert rt.driver("check", NET, ctr, host=host, container_id=cid).rc == 0
        assert rt.driver("del", NET, ctr, host=host, container_id=cid).rc == 0
    assert rt.reservations(NET) == {}


def test_default_container_id_is_derived_from_the_netns_path(runtime):
    """As cnitool: without CNI_CONTAINERID the ID is cnitool-<sha512(netns)[:10]>; add/check/del agree."""
    import hashlib

    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    bridge_conf(rt)
    res = rt.driver("add", NET, ctr, host=host)
    assert res.rc == 0, res
    cid = "cnitool-" + hashlib.sha512(rt.path(ctr).encode()).hexdigest()[:20]
    assert list(rt.reservations(NET).values()) == [f"{cid}\r\neth0"]
    assert rt.driver("check", NET, ctr, host=host).rc == 0
    assert rt.driver("del", NET, ctr, host=host).rc == 0
    assert rt.reservations(NET) == {}


def test_gc_through_the_driver_releases_only_what_the_runtime_no_longer_knows(runtime):
    rt = runtime
    host = rt.netns("host")
    c1, c2 = rt.netns("c1"), rt.netns("c2")
    bridge_conf(rt)
    a1 = add(rt, host, c1, "rt-ctr-1")["ips"][0]["address"].split("/")[0]
    add(rt, host, c2, "rt-ctr-2")["ips"][0]["address"].split("/")[0]

    # The runtime forgets c2 (its libcni cache entry goes, as after a crash between ADD and bookkeeping).
    os.unlink(os.path.join(rt.cache_dir, "results", f"{NET}-rt-ctr-2-eth0"))
    res = rt.driver("gc", NET, host=host)
    assert res.rc == 0, res
    assert "cni-ipam (ipam of bridge) ok" in res.err, res
    assert rt.reservations(NET) == {a1: "rt-ctr-1\r\neth0"}, "GC must keep c1 and release c2"

    # An explicit valid list naming the other interface of c1 only: c1's eth0 reservation goes too.
    res = rt.driver(
        "gc",
        NET,
        host=host,
        extra={"CNI_VALID_ATTACHMENTS": json.dumps([{"containerID": "rt-ctr-1", "ifname": "net9"}])},
    )
    assert res.rc == 0, res
    assert rt.reservations(NET) == {}


def test_status_through_the_driver(runtime):
    rt = runtime
    host = rt.netns("host")
    c1 = rt.netns("c1")
    # A range of exactly one address: free before the ADD, full after it.  A full range fails
    # STATUS only when the user opts in (statusOnExhaustion): by default the node stays Ready.
    ipam = {"type": "cni-ipam", "dataDir": rt.data_dir,
            "ranges": [[{"subnet": "10.251.1.0/24", "rangeStart": "10.251.1.5", "rangeEnd": "10.251.1.5"}]]}

    def conf(**extra):
        rt.conflist("rt-tiny", [{"type": "bridge", "bridge": "rt-br1", "isGateway": True, "ipam": dict(ipam, **extra)}])

    conf(statusOnExhaustion="fail")
    res = rt.driver("status", "rt-tiny", host=host)
    assert res.rc == 0, res
    conf()
    assert rt.driver("add", "rt-tiny", c1, host=host, container_id="rt-ctr-1").rc == 0
    res = rt.driver("status", "rt-tiny", host=host)
    assert res.rc == 0, res  # full, but the default keeps the node Ready
    conf(statusOnExhaustion="fail")
    res = rt.driver("status", "rt-tiny", host=host)
    assert res.rc == 1 and res.json and res.json["code"] == 50, res
    assert "10.251.1.5" in res.json["msg"] or "no free address" in res.json["msg"], res.json
    assert rt.driver("del", "rt-tiny", c1, host=host, container_id="rt-ctr-1").rc == 0
    assert rt.driver("status", "rt-tiny", host=host).rc == 0


@pytest.mark.parametrize("bad", ["route", "address"])
def test_a_broken_namespace_is_seen(runtime, bad):
    """The assertions above can fail: break the namespace and our readers notice."""
    rt = runtime
    host, ctr = rt.netns("host"), rt.netns("c1")
    bridge_conf(rt)
    cidr = add(rt, host, ctr, "rt-ctr-1")["ips"][0]["address"]
    from tests.integration.netns import sh

    if bad == "route":
        sh("ip", "-n", ctr, "route", "del", "192.168.77.0/24")
        assert ("192.168.77.0/24", "10.251.0.254", "eth0") not in routes(ctr)
    else:
        remove_address(ctr, "eth0", cidr)
        assert ipaddress.ip_interface(cidr) not in link_addresses(ctr, "eth0")
    assert link_index(ctr, "eth0") > 0


def test_check_never_creates_a_missing_netns(runtime):
    """CHECK with a CNI_NETNS that does not exist skips the in-namespace part and creates nothing
    (pyroute2's default flags would create the namespace)."""
    from tests.helpers import run_plugin

    rt = runtime
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": rt.data_dir, "ranges": [[{"subnet": str(SUBNET)}]]}}
    absent = rt.path(rt.ns_name("absent"))
    rc, out, raw, _err = run_plugin("ADD", conf, container_id="rt-ctr-1", netns=absent)
    assert rc == 0, raw
    conf["prevResult"] = out
    rc, _out, raw, _err = run_plugin("CHECK", conf, container_id="rt-ctr-1", netns=absent)
    assert rc == 0, raw
    assert not os.path.exists(absent), "CHECK created the namespace it was asked to look into"
    assert run_plugin("DEL", conf, container_id="rt-ctr-1", netns=absent)[0] == 0
