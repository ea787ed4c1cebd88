"""Debian's containerd 1.6 + ``ctr run --cni`` driving bridge + cni-ipam.

The world (tests/runtime/containerd_world.py) runs its own containerd with private root, state and
socket, in a mount and network namespace of the test's own; the image is built here from
busybox-static and imported with ``ctr images import``.
"""

import ipaddress
import time

from tests.runtime.containerd_world import SUBNET


def _wait_exit(proc, timeout=30):
    proc.wait(timeout)
    return proc.stderr.read()


def test_add_on_start_del_on_task_delete(containerd_world):
    w = containerd_world
    proc = w.run_foreground("fg1")
    ip = w.wait_reserved("fg1", proc)
    assert w.in_subnet(ip)
    assert w.reservations()[ip] == f"{w.cni_id('fg1')}\r\neth0"
    _wait_configured(w, "fg1", ip)
    w.kill("fg1")
    err = _wait_exit(proc)
    # ctr deleted the task (and, --rm, the container), then sent DEL: nothing is left
    assert w.held_by(w.cni_id("fg1")) == [], err
    assert "fg1" not in w.ctr("containers", "ls", "-q").stdout.split()


def _wait_configured(w, name, ip):
    """Until ``name``'s eth0 carries ``ip`` (20 s at most)."""
    deadline = time.monotonic() + 20
    while f"inet {ip}/24" not in (out := w.exec(name, "ip", "-4", "addr", "show", "eth0")).stdout:
        assert time.monotonic() < deadline, out.stdout + out.stderr
        time.sleep(0.2)


def test_parallel_containers_get_distinct_addresses(containerd_world):
    w = containerd_world
    names = [f"par{i}" for i in range(4)]
    procs = {name: w.run_foreground(name) for name in names}
    ips = {name: w.wait_reserved(name, procs[name]) for name in names}
    assert len(set(ips.values())) == len(names), ips
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET) for ip in ips.values())
    # containers reach each other across the test's bridge, once the bridge plugin has put the
    # addresses on (the reservation is written before: IPAM runs inside the bridge plugin's ADD)
    _wait_configured(w, "par0", ips["par0"])
    _wait_configured(w, "par3", ips["par3"])
    ping = w.exec("par0", "ping", "-c", "1", "-W", "3", ips["par3"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    for name in names:
        w.kill(name)
    for name in names:
        _wait_exit(procs[name])
    assert all(w.held_by(w.cni_id(name)) == [] for name in names), w.reservations()


def test_detached_task_removed_without_cni_del_keeps_its_reservation(containerd_world):
    """``ctr run -d`` + ``ctr task delete`` never calls CNI DEL: the leak the reclaim exists for."""
    w = containerd_world
    w.run_detached("leak1")
    ip = w.wait_reserved("leak1")
    w.remove_behind_the_plugins_back("leak1")
    assert w.held_by(w.cni_id("leak1")) == [ip]
