"""Debian's podman 4.3 (CNI backend, runc) driving bridge + cni-ipam: what a podman user gets.

The world (tests/runtime/podman_world.py) is private: temp --root/--runroot, CONTAINERS_CONF, a
mount namespace and a network namespace of the test's own.  Every test names its containers
uniquely and removes them.
"""

import ipaddress

from tests.runtime.podman_world import EXCLUDED, NETWORK, SUBNET


def test_two_containers_get_distinct_addresses_and_reach_each_other(podman_world):
    w = podman_world
    w.run("two-a")
    w.run("two-b")
    try:
        a, b = w.ip_of("two-a"), w.ip_of("two-b")
        assert a != b
        for ip in (a, b):
            assert ip in ipaddress.ip_network(SUBNET) and str(ip) != EXCLUDED
        ida, idb = w.container_id("two-a"), w.container_id("two-b")
        res = w.reservations()
        assert res[str(a)] == f"{ida}\r\neth0"
        assert res[str(b)] == f"{idb}\r\neth0"
        # the address podman reports is the one configured inside the container
        assert f"inet {a}/24" in w.exec("two-a", "ip", "-4", "addr", "show", "eth0").stdout
        ping = w.exec("two-a", "ping", "-c", "1", "-W", "3", str(b))
        assert ping.returncode == 0, ping.stdout + ping.stderr
        ping = w.exec("two-b", "ping", "-c", "1", "-W", "3", str(a))
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        w.podman("rm", "-f", "-t", "0", "two-a", "two-b")
    assert str(a) not in w.reservations() and str(b) not in w.reservations()


def test_requested_ip_free_taken_excluded(podman_world):
    w = podman_world
    wanted = "10.231.0.200"
    w.run("ip-free", "--ip", wanted)
    try:
        assert str(w.ip_of("ip-free")) == wanted
        free_id = w.container_id("ip-free")
        assert w.held_by(free_id) == [wanted]

        before = w.reservations()
        taken = w.run("ip-taken", "--ip", wanted, check=False)
        assert taken.returncode != 0
        assert "10.231.0.200" in taken.stderr and "held by" in taken.stderr, taken.stderr
        assert w.held_by(w.container_id("ip-taken")) == []

        excluded = w.run("ip-excl", "--ip", EXCLUDED, check=False)
        assert excluded.returncode != 0
        assert "excluded" in excluded.stderr, excluded.stderr
        assert w.held_by(w.container_id("ip-excl")) == []
        assert w.reservations() == before  # the failures reserved nothing, took nothing away
    finally:
        w.podman("rm", "-f", "-t", "0", "ip-free", "ip-taken", "ip-excl")
    assert wanted not in w.reservations()


def test_stop_and_rm_release(podman_world):
    w = podman_world
    w.run("stoprm")
    cid = w.container_id("stoprm")
    try:
        assert len(w.held_by(cid)) == 1
        w.podman("stop", "-t", "0", "stoprm", check=True)
        assert w.held_by(cid) == []  # podman tears the network down on stop: DEL
        w.podman("start", "stoprm", check=True)
        again = w.held_by(cid)
        assert len(again) == 1 and str(w.ip_of("stoprm")) == again[0]
    finally:
        w.podman("rm", "-f", "-t", "0", "stoprm", check=True)
    assert w.held_by(cid) == []


def test_network_reload_keeps_the_address(podman_world):
    w = podman_world
    w.run("reload")
    try:
        cid = w.container_id("reload")
        ip = str(w.ip_of("reload"))
        assert w.held_by(cid) == [ip]
        out = w.podman("network", "reload", "reload")
        assert out.returncode == 0, out.stderr
        # podman tears down and sets up again, asking for the same address (IP= in CNI_ARGS)
        assert str(w.ip_of("reload")) == ip
        assert w.held_by(cid) == [ip]
        assert f"inet {ip}/24" in w.exec("reload", "ip", "-4", "addr", "show", "eth0").stdout
    finally:
        w.podman("rm", "-f", "-t", "0", "reload")


def test_failed_start_leaves_nothing_reserved(podman_world):
    w = podman_world
    before = w.reservations()
    # The network is set up before runc starts the process; an executable that does not exist
    # fails the start afterwards, and podman must tear the network down again (DEL).
    failed = w.run("failstart", cmd=("/bin/no-such-program",), check=False)
    try:
        assert failed.returncode != 0
        assert "no-such-program" in failed.stderr, failed.stderr
        assert w.held_by(w.container_id("failstart")) == []
        assert w.reservations() == before
        # and the next container still gets an address
        w.run("afterfail")
        assert len(w.held_by(w.container_id("afterfail"))) == 1
    finally:
        w.podman("rm", "-f", "-t", "0", "failstart", "afterfail")
    assert w.reservations() == before


def test_podman_network_is_ours(podman_world):
    """The conflist podman sees is the test's (not the machine's /etc/cni/net.d)."""
    out = podman_world.podman("network", "ls", "--format", "{{.Name}}", check=True).stdout.split()
    assert NETWORK in out
