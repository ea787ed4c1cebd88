"""Concurrency: 16 processes doing random ADD/DEL/CHECK on one network through the real executable,
with Debian's host-local joining in on the same directory and some calls SIGKILLed at random
moments.  Afterwards no address has two owners, every live container holds exactly its addresses
and nothing is leaked.  A second network on the same data directory is never blocked by the first.

Size knobs: REL_OPS (default 600), REL_WORKERS (16), REL_CHAOS (0.03).  scripts/reliability.py runs
the long version.
"""

import fcntl
import json
import os
import time

from tests.helpers import plugin_argv, run_cni
from tests.reliability.conftest import size
from tests.reliability.relhelpers import Storm, inspect_network, net_conf, run_inproc


def _print(capsys, label, report):
    with capsys.disabled():
        keep = {k: report[k] for k in ("operations", "killed", "live_containers", "reservations", "duplicates",
                                        "leaks", "error_count", "elapsed_s", "by_kind")}
        print(f"\n[rel] {label}: {json.dumps(keep)}")


def _assert_clean(report):
    assert report["errors"] == [], report["errors"]
    assert report["problems"] == [], report["problems"]
    assert report["duplicates"] == 0, report["duplicate_detail"]
    assert report["leaks"] == 0, report["leak_detail"]
    assert report["wrong_or_missing"] == {}, report["wrong_or_missing"]


def _drain(storm):
    """Every live container passes CHECK (which also refreshes our index after host-local's changes),
    the index is then exact, and DEL of everything leaves no reservation."""
    for (cid, ifname) in sorted(storm.live):
        rc, out, raw = run_inproc("CHECK", storm.conf, container_id=cid, ifname=ifname)
        assert rc == 0, raw
    st = inspect_network(storm.net_dir, storm.subnets)
    st.assert_ok("after the storm")
    assert st.index_current
    assert {k: v for k, v in st.by_owner().items()} == storm.live
    for (cid, ifname) in sorted(storm.live):
        rc, out, raw = run_inproc("DEL", storm.conf, container_id=cid, ifname=ifname)
        assert rc == 0, raw
    st = inspect_network(storm.net_dir, storm.subnets)
    st.assert_ok("after deleting everything")
    assert st.reservations == {}
    # Entries may survive only for attachments whose files host-local removed (its DEL, or the
    # rollback of its failed or killed ADD): our index never hears of that; the entry lists addresses
    # nobody holds and is never believed (see store.catch_up)
    by_host_local = {f"{e.cid}:{e.ifname}" for e in storm.events if e.op in ("ADD", "DEL") and e.plugin == "host-local"}
    assert set(st.owners) <= by_host_local, sorted(set(st.owners) - by_host_local)


def test_storm_with_host_local_and_random_kills(sandbox, need_host_local, capsys):
    storm = Storm(sandbox, ops=size("ops", 600), workers=size("workers", 16),
                  chaos=float(os.environ.get("REL_CHAOS", "0.03")), seed=size("seed", 1))
    report = storm.run()
    _print(capsys, "storm", report)
    assert report["operations"] >= size("ops", 600)
    kinds = report["by_kind"]
    assert kinds.get("host-local ADD ok", 0) > 0 and kinds.get("ours ADD ok", 0) > 0, kinds
    assert kinds.get("host-local DEL ok", 0) > 0 and kinds.get("ours DEL ok", 0) > 0, kinds
    _assert_clean(report)
    _drain(storm)


def test_storm_on_an_exhausted_range(sandbox, need_host_local, capsys):
    """A /29 (5 addresses) for 16 workers: most ADDs fail with "no addresses", ranges wrap and roll
    back all the time; still no duplicate, no leak."""
    storm = Storm(sandbox, ops=size("ops_small", 200), workers=16, chaos=0.0, seed=size("seed", 1) + 7,
                  name="rel-tight", subnets=("fd00:98::/125", "10.98.0.0/29"), max_live=1)
    report = storm.run()
    _print(capsys, "exhausted storm", report)
    assert report["by_kind"].get("ours ADD fail", 0) > 0, "the range never ran out: the test proved nothing"
    _assert_clean(report)
    _drain(storm)


def test_second_network_is_not_blocked_by_the_first(sandbox):
    conf1 = net_conf(sandbox, name="rel-first", lockTimeout=30)
    conf2 = net_conf(sandbox, name="rel-second", lockTimeout=30)
    assert run_inproc("ADD", conf1, container_id="rel-a")[0] == 0
    fd = os.open(os.path.join(sandbox, "rel-first", "lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        t = time.monotonic()
        rc, out, raw, _ = run_cni(plugin_argv(), "ADD", conf2, container_id="rel-b")
        add_s = time.monotonic() - t
        rc2, _, raw2, _ = run_cni(plugin_argv(), "DEL", conf2, container_id="rel-b")
        rc3, out3, raw3, _ = run_cni(plugin_argv(), "ADD", dict(conf1, ipam=dict(conf1["ipam"], lockTimeout=0.2)),
                                     container_id="rel-c")
        total_s = time.monotonic() - t
    finally:
        os.close(fd)
    assert rc == 0, raw
    assert rc2 == 0, raw2
    assert rc3 == 1 and out3["code"] == 11, raw3  # proves the first network really was locked
    print(f"[rel] ADD on a second network while the first is locked: {add_s:.2f}s")
    assert add_s < 5 and total_s < 10


def test_host_local_write_after_a_clock_step_back(sandbox, need_host_local):
    """Our last commit happened while the wall clock was 10 s ahead (then NTP stepped it back).
    host-local then reserves an address for a container; our DEL of that container must release it."""
    import subprocess

    from tests.helpers import HOST_LOCAL
    from tests.reliability.relhelpers import sub_env

    conf = net_conf(sandbox, name="rel-clock")
    net = os.path.join(sandbox, "rel-clock")
    assert run_inproc("ADD", conf, container_id="rel-ours")[0] == 0
    state_path = os.path.join(net, ".cni-ipam", "state")
    with open(state_path) as fh:
        state = json.load(fh)
    assert state["mtime"] == os.stat(net).st_mtime_ns
    ahead = state["mtime"] + 10_000_000_000  # what the marker would be had the clock been 10 s ahead
    os.utime(net, ns=(os.stat(net).st_atime_ns, ahead))
    state["mtime"] = ahead
    with open(state_path, "w") as fh:
        json.dump(state, fh)
    env = sub_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "rel-theirs", "CNI_IFNAME": "eth0",
                   "CNI_NETNS": "/x", "CNI_PATH": "/usr/lib/cni"})
    proc = subprocess.run([HOST_LOCAL], input=json.dumps(conf).encode(), env=env, capture_output=True)
    assert proc.returncode == 0, proc.stdout
    rc, out, raw = run_inproc("DEL", conf, container_id="rel-theirs")
    assert rc == 0, raw
    left = {ip for ip, o in inspect_network(net).reservations.items() if o[0] == "rel-theirs"}
    assert not left, f"our DEL left host-local's reservations {left}: leaked"
