"""50 namespaces attached at once through libcni (bridge + cni-ipam): 50 distinct addresses, all reachable.

All 50 ``cnidriver add`` processes start together and race for the network's lock; then every
container is pinged from the host namespace (the gateway) and from a container, each ping bounded.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

from tests.integration.netns import link_addresses

NET = "rt-par"
COUNT = 50
SUBNET = ipaddress.ip_network("10.251.0.0/24")


def start_all(rt, verb, host, ctrs):
    procs = []
    for i, ctr in enumerate(ctrs):
        procs.append(subprocess.Popen(
            rt.driver_argv(verb, NET, ctr, host),
            env=rt.driver_env(container_id=f"rt-ctr-{i}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append((p.returncode, stdout, stderr))
    return out


def ping_many(src_ns, addresses, wait=2):
    """Ping every address from ``src_ns`` (25 pings in flight at most, one retry for a silent one,
    each ping bounded by ``wait`` seconds); returns the addresses that never answered."""
    silent = _ping_batch(src_ns, addresses, wait)
    return _ping_batch(src_ns, silent, wait) if silent else silent


def _ping_batch(src_ns, addresses, wait):
    silent = []
    for start in range(0, len(addresses), 25):
        batch = addresses[start:start + 25]
        procs = [
            (a, subprocess.Popen(["ip", "netns", "exec", src_ns, "ping", "-n", "-q", "-c", "1", "-W", str(wait), a],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for a in batch
        ]
        for a, p in procs:
            if p.wait(timeout=wait + 20) != 0:
                silent.append(a)
    return silent


def test_fifty_namespaces_in_parallel(runtime):
    rt = runtime
    host = rt.netns("host")
    rt.conflist(NET, [{
        "type": "bridge", "bridge": "rt-br0", "isGateway": True,
        "ipam": {"type": "cni-ipam", "dataDir": rt.data_dir, "ranges": [[{"subnet": str(SUBNET)}]],
                 "routes": [{"dst": "0.0.0.0/0"}]},
    }])
    ctrs = [rt.netns(f"p{i}") for i in range(COUNT)]

    t0 = time.monotonic()
    results = start_all(rt, "add", host, ctrs)
    add_s = time.monotonic() - t0
    failed = [(i, rc, err.strip()) for i, (rc, _out, err) in enumerate(results) if rc != 0]
    assert not failed, f"{len(failed)} of {COUNT} parallel ADDs failed: {failed[:3]}"

    import json

    addrs = [ipaddress.ip_interface(json.loads(out)["ips"][0]["address"]) for _rc, out, _err in results]
    assert len({a.ip for a in addrs}) == COUNT, "two containers got the same address"
    assert all(a.network == SUBNET and a.ip not in (SUBNET[0], SUBNET[1], SUBNET[-1]) for a in addrs)
    # Each namespace really holds the address its result names, and each reservation names its owner.
    for ctr, a in zip(ctrs, addrs):
        assert link_addresses(ctr, "eth0") == [a], ctr
    assert rt.reservations(NET) == {str(a.ip): f"rt-ctr-{i}\r\neth0" for i, a in enumerate(addrs)}

    t0 = time.monotonic()
    targets = [str(a.ip) for a in addrs]
    silent = ping_many(host, targets)
    assert not silent, f"not reachable from the gateway namespace: {silent}"
    silent = ping_many(ctrs[0], targets[1:])
    assert not silent, f"not reachable from {ctrs[0]}: {silent}"
    ping_s = time.monotonic() - t0

    t0 = time.monotonic()
    results = start_all(rt, "del", host, ctrs)
    del_s = time.monotonic() - t0
    assert [rc for rc, _o, _e in results] == [0] * COUNT, [e for rc, _o, e in results if rc]
    assert rt.reservations(NET) == {}
    print(f"{COUNT} parallel ADDs through libcni+bridge: {add_s:.2f}s; {2 * COUNT - 1} pings: {ping_s:.2f}s; "
          f"{COUNT} parallel DELs: {del_s:.2f}s")
