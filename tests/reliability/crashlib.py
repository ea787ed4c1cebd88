"""Crash-consistency scenarios: SIGKILL the real plugin before each of its file-system mutations.

A scenario builds a base state (with our plugin in-process and, where it matters, Debian's
host-local), counts the mutations of one target call (ADD, DEL or GC), then for every kill point
k = 1..N+1 rebuilds the base state in a fresh directory, runs the call killed before mutation k and
checks that:

* the directory is valid right after the crash (no empty or partial reservation file, no stray
  file, an owner index that says "current" is exact, nobody holds two addresses of one range set),
* other containers' reservations are untouched and the target holds only addresses of its own,
* the next call a runtime would make (DEL after a lost ADD or DEL, then ADD again) succeeds, leaves
  no temporary file, a current and exact index, and hands out no address twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from tests.reliability.relhelpers import (
    CNI_BIN_DIR,
    HOST_LOCAL,
    inspect_network,
    net_conf,
    result_addresses,
    run_inproc,
    run_killed,
    count_ops,
    sub_env,
)

SUBNETS = ("10.99.0.0/27", "fd00:99::/123")
TARGET = "rel-target"
BASE_OTHERS = 4  # containers in the base state (scripts/reliability.py varies it between sweeps)


def _host_local(command, conf, cid, ifname="eth0"):
    env = sub_env({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
                   "CNI_NETNS": "/var/run/netns/rel-none", "CNI_PATH": CNI_BIN_DIR})
    proc = subprocess.run([HOST_LOCAL], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _add(conf, cid, ifname="eth0"):
    rc, out, raw = run_inproc("ADD", conf, container_id=cid, ifname=ifname)
    assert rc == 0, raw
    return out


class Scenario:
    """name, the subnets, how to build the base state, and the call to crash."""

    def __init__(self, name, command, setup, subnets=SUBNETS, expect_rc=0, needs=None):
        self.name = name
        self.command = command
        self.setup = setup
        self.subnets = subnets
        self.expect_rc = expect_rc
        self.needs = needs  # "host-local" when the scenario needs Debian's host-local

    def conf(self, data_dir):
        return net_conf(data_dir, name="rel-crash", subnets=self.subnets)

    def net_dir(self, data_dir):
        return os.path.join(data_dir, "rel-crash")


def _setup_none(conf):
    pass


def _setup_populated(conf):
    for i in range(BASE_OTHERS):
        _add(conf, f"rel-other{i}", "eth0" if i % 2 else "net1")


def _setup_stale(conf):
    _setup_populated(conf)
    _host_local("ADD", conf, "rel-hostlocal")  # a foreign change: our index must be rebuilt


def _setup_with_target(conf):
    _setup_populated(conf)
    _add(conf, TARGET)
    _add(conf, "rel-after")


def _setup_target_by_host_local(conf):
    _setup_populated(conf)
    _host_local("ADD", conf, TARGET)


def _setup_host_local_only(conf):
    # a directory only host-local ever wrote: our first call rebuilds the whole index
    for i in range(3):
        _host_local("ADD", conf, f"rel-hl{i}")


def _setup_target_after_foreign_del(conf):
    # host-local deleted one of ours: our index keeps a stale entry (never believed), then catches up
    _setup_with_target(conf)
    _host_local("DEL", conf, "rel-other1")
    _host_local("ADD", conf, "rel-hl-new")


def _setup_full_v4(conf):
    # the v4 set (/29: .2-.6) is full, so ADD reserves in the v6 set first and then rolls back
    for i in range(5):
        _add(conf, f"rel-fill{i}")


def _setup_gc(conf):
    _setup_populated(conf)
    for i in range(3):
        _add(conf, f"rel-stale{i}")


def scenarios():
    out = [
        Scenario("add-fresh", "ADD", _setup_none),
        Scenario("add-populated", "ADD", _setup_populated),
        Scenario("add-stale-index", "ADD", _setup_stale, needs="host-local"),
        Scenario("add-rollback", "ADD", _setup_full_v4, subnets=("fd00:99::/123", "10.99.0.0/29"), expect_rc=1),
        Scenario("del", "DEL", _setup_with_target),
        Scenario("del-stale-index", "DEL", _setup_target_by_host_local, needs="host-local"),
        Scenario("add-host-local-dir", "ADD", _setup_host_local_only, needs="host-local"),
        Scenario("del-after-foreign-del", "DEL", _setup_target_after_foreign_del, needs="host-local"),
        Scenario("gc", "GC", _setup_gc),
    ]
    return out


def gc_conf(conf, keep):
    """A CNI 1.1 GC call that keeps ``keep`` attachments (all others are stale)."""
    conf = dict(conf, cniVersion="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": ifname} for cid, ifname in keep]
    return conf


class Tally:
    def __init__(self):
        self.kill_points = 0
        self.recovered = 0
        self.problems = []


def run_scenario(scn, work_dir, points=None, tally=None):
    """Crash ``scn`` at every kill point (or the given ones); returns the Tally."""
    tally = tally or Tally()
    probe = os.path.join(work_dir, "probe")
    conf = scn.conf(probe)
    scn.setup(conf)
    target_conf = _target_conf(scn, conf)
    rc, ops, proc = count_ops(target_conf, scn.command if scn.command != "GC" else "GC", TARGET)
    assert rc == scn.expect_rc, (scn.name, rc, proc.stdout, proc.stderr)
    shutil.rmtree(probe)
    n = len(ops)
    wanted = range(1, n + 2) if points is None else [p for p in points if 1 <= p <= n + 1]
    for k in wanted:
        d = os.path.join(work_dir, f"k{k}")
        try:
            _one(scn, d, k, ops, tally)
        except AssertionError as exc:
            tally.problems.append(f"{scn.name} kill before op {k} ({ops[k - 1] if k <= n else 'none'}): {exc}")
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return tally, ops


def _target_conf(scn, conf):
    if scn.command != "GC":
        return conf
    keep = [(f"rel-other{i}", "eth0" if i % 2 else "net1") for i in range(BASE_OTHERS)]
    return gc_conf(conf, keep)


def _one(scn, data_dir, k, ops, tally):
    conf = scn.conf(data_dir)
    scn.setup(conf)
    net = scn.net_dir(data_dir)
    before = inspect_network(net, scn.subnets)
    before.assert_ok("base state")
    others_before = {ip: o for ip, o in before.reservations.items() if o[0] != TARGET}
    target_before = {ip for ip, o in before.reservations.items() if o[0] == TARGET}

    proc = run_killed(_target_conf(scn, conf), scn.command, k, TARGET)
    killed = proc.returncode == -9
    if k <= len(ops):
        assert killed, (
            f"expected a kill before op {k}, got rc={proc.returncode} {proc.stdout[:300]!r} {proc.stderr[-500:]!r}"
        )
        tally.kill_points += 1
    else:
        assert proc.returncode == scn.expect_rc, (proc.returncode, proc.stdout, proc.stderr)
    assert b"Traceback" not in proc.stderr, proc.stderr

    after = inspect_network(net, scn.subnets, allow_tmp=True)
    after.assert_ok("right after the crash")
    others_after = {ip: o for ip, o in after.reservations.items() if o[0] != TARGET}
    target_after = {ip for ip, o in after.reservations.items() if o[0] == TARGET}
    if scn.command == "GC":
        # GC may only have removed reservations of the stale attachments; the kept ones stay
        for ip, owner in others_before.items():
            if owner[0].startswith("rel-other"):
                assert others_after.get(ip) == owner, f"GC crash lost kept reservation {ip} {owner}"
        assert set(others_after) <= set(others_before), "GC crash created reservations"
    else:
        assert others_after == others_before, (
            f"a crash changed other containers' reservations: {others_before} -> {others_after}"
        )
    if scn.command == "DEL":
        assert target_after <= target_before, f"DEL crash created reservations {target_after - target_before}"
    for ip in target_after:
        assert after.reservations[ip] == (TARGET, "eth0"), after.reservations[ip]

    # Recovery: what a runtime does next.
    if scn.command == "GC":
        rc, out, raw = run_inproc("GC", _target_conf(scn, conf), container_id=None, ifname=None, netns=None)
        assert rc == 0, f"GC after a crashed GC failed: {raw}"
        st = inspect_network(net, scn.subnets)
        st.assert_ok("after the GC retry")
        assert not any(o[0].startswith("rel-stale") for o in st.reservations.values()), (
            "GC retry left stale reservations"
        )
    else:
        rc, out, raw = run_inproc("DEL", conf, container_id=TARGET)
        assert rc == 0, f"DEL after the crash failed: {raw}"
        st = inspect_network(net, scn.subnets)
        st.assert_ok("after DEL")
        assert st.index_current or not os.path.isdir(net), "DEL did not leave a current index"
        assert not any(o[0] == TARGET for o in st.reservations.values()), "DEL left the target's reservations"
        assert {ip: o for ip, o in st.reservations.items() if o[0] != TARGET} == others_before, "DEL touched others"
    rc, out, raw = run_inproc("ADD", conf, container_id=TARGET)
    if scn.expect_rc == 0:
        assert rc == 0, f"ADD after the crash failed: {raw}"
        got = set(result_addresses(out))
        st = inspect_network(net, scn.subnets)
        st.assert_ok("after ADD")
        assert st.index_current, "ADD did not leave a current index"
        mine = {ip for ip, o in st.reservations.items() if o == (TARGET, "eth0")}
        assert got == mine, f"ADD answered {got} but the disk holds {mine}"
        if scn.command != "GC":
            assert not (got & set(others_before)), (
                f"ADD handed out an address someone holds: {got & set(others_before)}"
            )
        rc, out, raw = run_inproc("CHECK", conf, container_id=TARGET)
        assert rc == 0, f"CHECK after recovery failed: {raw}"
    else:
        assert rc == 1 and out and out.get("code") == 100, raw
        st = inspect_network(net, scn.subnets)
        st.assert_ok("after the failing ADD")
        assert not any(o[0] == TARGET for o in st.reservations.values()), "a failed ADD left a reservation"
    tally.recovered += 1
