"""The same conflist with host-local and with cni-ipam, driven by libcni: the same addresses.

Each IPAM plugin gets its own world (host namespace with the bridge, containers, dataDir, libcni
cache); the same sequence of runtime calls runs in both, with the same container IDs: ADDs that
cross from one range to the next, a DEL, round robin after it, requested addresses through CNI_ARGS
and CAP_ARGS, exhaustion.  At each step the results, the namespaces and finally the reservation
files must be equal.
"""

from __future__ import annotations

import os
import socket

from tests.integration.netns import link_addresses, routes

NET = "rt-same"


def conflist(rt, ipam_type):
    rt.conflist(NET, [{
        "type": "bridge", "bridge": "rt-br0", "isGateway": False, "capabilities": {"ips": True},
        "ipam": {
            "type": ipam_type,
            "dataDir": rt.data_dir,
            "ranges": [
                [{"subnet": "10.251.0.0/29"}, {"subnet": "10.251.1.0/29", "rangeStart": "10.251.1.3"}],
                [{"subnet": "fd52:7274:0:2::/64", "rangeStart": "fd52:7274:0:2::10", "rangeEnd": "fd52:7274:0:2::1f"}],
            ],
            # Gateways come from each address's range (10.251.0.1 or 10.251.1.1, fd52:7274:0:2::1).
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        },
    }])


# (verb, container index, env for the driver)
SCENARIO = (
    [("add", i, {}) for i in range(6)]
    + [("del", 2, {}), ("add", 6, {})]
    + [("add", 7, {"cni_args": "IgnoreUnknown=1;IP=10.251.0.4"})]  # the address c2 gave back
    + [("add", 8, {"cap_args": {"ips": ["fd52:7274:0:2::1e/64"]}})]
    + [("add", 9, {}), ("add", 10, {})]  # the IPv4 set is full: both plugins refuse
    + [("check", i, {}) for i in (0, 5, 7, 8)]
    + [("del", 0, {}), ("add", 11, {})]
)


def strip(result):
    """The IPAM part of a result: what must not depend on which IPAM plugin ran."""
    if result is None:
        return None
    return {
        "ips": [{k: ip.get(k) for k in ("address", "gateway")} for ip in result.get("ips", [])],
        "routes": result.get("routes"),
        "dns": result.get("dns"),
    }


def play(rt, ipam_type):
    conflist(rt, ipam_type)
    host = rt.netns("host")
    # The node's bridge, made beforehand with a fixed MAC: without isGateway, bridge 1.1.1 leaves
    # the MAC to the kernel, which takes the lowest port MAC, and its CHECK then fails on
    # "Bridge interface rt-br0 Mac doesn't match" whenever a later port has a lower one.
    from tests.integration.netns import sh

    sh("ip", "-n", host, "link", "add", "rt-br0", "type", "bridge")
    sh("ip", "-n", host, "link", "set", "rt-br0", "address", "02:72:74:00:00:01")
    sh("ip", "-n", host, "link", "set", "rt-br0", "up")
    ctrs = {}
    log = []
    for verb, i, env in SCENARIO:
        if i not in ctrs:
            ctrs[i] = rt.netns(f"c{i}")
            # No IPv6 DAD in the containers: nothing here needs it and it costs seconds per ADD.
            rt_sysctl(ctrs[i])
        res = rt.driver(verb, NET, ctrs[i], host=host, container_id=f"rt-ctr-{i}", **env)
        state = None
        if verb == "add" and res.rc == 0:
            state = (
                sorted(str(a) for a in link_addresses(ctrs[i], "eth0")),
                sorted(routes(ctrs[i], socket.AF_INET)),
                sorted(r for r in routes(ctrs[i], socket.AF_INET6) if r[0] != "fe80::/64"),
            )
        log.append((verb, i, res.rc, strip(res.json) if res.rc == 0 else None, state))
    files = {}
    net_dir = rt.network_dir(NET)
    for name in sorted(os.listdir(net_dir)):
        path = os.path.join(net_dir, name)
        if os.path.isfile(path) and name != "lock":
            with open(path, "rb") as fh:
                files[name] = fh.read()
    return log, files


def rt_sysctl(ns):
    from tests.integration.netns import sh

    sh(
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.all.accept_dad=0",
    )


def test_host_local_and_cni_ipam_give_the_same_addresses(runtime):
    from tests.integration.netns import Runtime

    theirs_rt = Runtime()  # a second, separate world for host-local
    try:
        theirs, theirs_files = play(theirs_rt, "host-local")
    finally:
        theirs_rt.cleanup()
    ours, ours_files = play(runtime, "cni-ipam")

    # The scenario means something: 10 addresses handed out, the full set refused, CHECK passing.
    rcs = [(v, i, rc) for v, i, rc, _r, _s in theirs]
    assert [step for step in rcs if step[2] != 0] == [("add", 10, 1)], rcs
    for step, (a, b) in enumerate(zip(theirs, ours)):
        assert a == b, f"step {step} {SCENARIO[step][:2]}: host-local {a} != cni-ipam {b}"
    assert ours_files == theirs_files, "reservation files differ"
    v4 = sorted(n for n in ours_files if n.startswith("10."))
    assert len(v4) == 9, v4  # all 9 usable IPv4 addresses of the set: c11 took what c0 gave back
