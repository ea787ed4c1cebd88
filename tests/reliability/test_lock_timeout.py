"""Lock waits are bounded: a held ``<net>/lock`` makes ADD/DEL/CHECK fail with code 11 after about
``ipam.lockTimeout`` seconds, instead of hanging until the runtime kills the plugin.  A holder that
dies (even SIGKILLed inside its critical section) never leaves the lock behind."""

import fcntl
import os
import signal
import time

import pytest

from tests.helpers import plugin_argv, run_cni
from tests.reliability.relhelpers import count_ops, inspect_network, net_conf, run_inproc, run_killed

STARTUP_SLACK = 3.0  # interpreter start-up on a loaded 2-core CI machine


def _hold(net_dir):
    os.makedirs(net_dir, exist_ok=True)
    fd = os.open(os.path.join(net_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _baseline():
    """Time of a trivial call (VERSION): the fixed cost to subtract."""
    t = time.monotonic()
    run_cni(plugin_argv(), "VERSION", {})
    return time.monotonic() - t


@pytest.mark.parametrize("timeout", [0.3, 1.5])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_held_lock_fails_with_code_11_within_timeout(sandbox, command, timeout):
    conf = net_conf(sandbox, lockTimeout=timeout)
    net_dir = os.path.join(sandbox, "rel-net")
    assert run_inproc("ADD", conf, container_id="rel-held")[0] == 0
    base = _baseline()
    fd = _hold(net_dir)
    try:
        t = time.monotonic()
        rc, out, raw, err = run_cni(plugin_argv(), command, conf, container_id="rel-held", timeout=timeout + 30)
        elapsed = time.monotonic() - t
    finally:
        os.close(fd)
    assert rc == 1, raw
    assert out["code"] == 11, out
    assert "lock" in out["msg"] and f"{timeout:g}s" in out["msg"], out["msg"]
    assert "Traceback" not in err
    waited = elapsed - base
    print(f"[rel] {command} lockTimeout={timeout}: failed with 11 after {elapsed:.2f}s (start-up {base:.2f}s)")
    assert timeout * 0.9 <= elapsed, f"gave up after {elapsed:.2f}s, before the {timeout}s timeout"
    assert waited <= timeout + STARTUP_SLACK, f"waited {waited:.2f}s for a {timeout}s timeout"
    # the lock is free again: the same call now works and nothing was changed by the refused one
    st = inspect_network(net_dir, ("10.99.0.0/27", "fd00:99::/123"))
    st.assert_ok()
    assert {o for o in st.reservations.values()} == {("rel-held", "eth0")}
    rc, out, raw, _ = run_cni(plugin_argv(), command, conf, container_id="rel-held")
    if command == "ADD":
        assert rc == 1 and out["code"] == 103, raw  # already holds an address in each range set
    else:
        assert rc == 0, raw


def test_waits_and_succeeds_when_lock_is_released_in_time(sandbox):
    conf = net_conf(sandbox, lockTimeout=20)
    fd = _hold(os.path.join(sandbox, "rel-net"))
    import subprocess

    from tests.reliability.relhelpers import sub_env

    env = sub_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "rel-wait", "CNI_IFNAME": "eth0",
                   "CNI_NETNS": "/var/run/netns/rel-none", "CNI_PATH": "/usr/lib/cni"})
    import json

    proc = subprocess.Popen(
        plugin_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    time.sleep(1.0)
    assert proc.poll() is None, "ADD did not wait for the held lock"
    t = time.monotonic()
    os.close(fd)
    out, err = proc.communicate(json.dumps(conf).encode(), timeout=30)
    assert proc.returncode == 0, out + err
    assert time.monotonic() - t < 5
    assert json.loads(out)["ips"]


def test_frozen_holder_inside_critical_section(sandbox):
    """A plugin stopped (SIGSTOP) right after taking the lock, in the middle of its ADD: other
    calls time out with 11; when it continues it completes; when it is killed instead, the kernel
    drops its flock and the next call works at once (no stale lock file to clean)."""
    conf = net_conf(sandbox, lockTimeout=0.5)
    net_dir = os.path.join(sandbox, "rel-net")
    assert run_inproc("ADD", conf, container_id="rel-first")[0] == 0
    rc, ops, _ = count_ops(conf, "ADD", "rel-frozen")
    assert rc == 0
    assert run_inproc("DEL", conf, container_id="rel-frozen")[0] == 0
    stop_at = next(i for i, name in enumerate(ops, 1) if name.startswith("link:"))  # inside the lock
    for ending in ("continue", "kill"):
        proc = run_killed(conf, "ADD", stop_at, "rel-frozen", stop=True)
        try:
            _wait_stopped(proc.pid)
            rc, out, raw, _ = run_cni(plugin_argv(), "ADD", conf, container_id=f"rel-blocked-{ending}")
            assert rc == 1 and out["code"] == 11, raw
            if ending == "continue":
                proc.send_signal(signal.SIGCONT)
                out, err = proc.communicate(timeout=30)
                assert proc.returncode == 0, out + err
            else:
                proc.kill()
                proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        t = time.monotonic()
        rc, out, raw, _ = run_cni(plugin_argv(), "ADD", conf, container_id=f"rel-next-{ending}")
        assert rc == 0, raw
        assert time.monotonic() - t < 5
        assert run_inproc("DEL", conf, container_id="rel-frozen")[0] == 0
        inspect_network(net_dir, ("10.99.0.0/27", "fd00:99::/123")).assert_ok(ending)


def _wait_stopped(pid, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.02)
    raise AssertionError("the plugin never reached the stop point")


@pytest.mark.parametrize("bad", [0, -1, "NaN", "1", True, 1e9])
def test_lock_timeout_must_be_sane(sandbox, bad):
    conf = net_conf(sandbox, lockTimeout=float(bad) if bad == "NaN" else bad)
    rc, out, raw = run_inproc("ADD", conf, container_id="rel-x")
    assert rc == 1 and out["code"] == 7 and "lockTimeout" in out["msg"], raw
