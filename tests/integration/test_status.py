"""STATUS through the executable: it follows no symlink and agrees with ADD; a full
range is STATUS-ok unless ``statusOnExhaustion`` is "fail"; it never takes the network lock."""

import fcntl
import os

import pytest

from tests.helpers import run_plugin

NET = "status-net"


def conf(data_dir, subnet="10.79.0.0/29", **ipam):
    return {"cniVersion": "1.1.0", "name": NET, "type": "bridge",
            "ipam": dict({"type": "cni-ipam", "dataDir": str(data_dir), "subnet": subnet}, **ipam)}


def status(c):
    rc, parsed, out, err = run_plugin("STATUS", c, container_id=None, ifname=None, netns=None)
    assert not err.strip() or "Traceback" not in err, err
    return rc, parsed


def add(c, cid):
    return run_plugin("ADD", c, container_id=cid, netns="/var/run/netns/status-none")


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


@pytest.mark.parametrize("which", ["network", ".cni-ipam", ".cni-ipam/tmp"])
def test_a_symlink_in_the_state_directory_fails_status_as_it_fails_add(tmp_path, which):
    c = conf(tmp_path / "data")
    assert add(c, "c1")[0] == 0
    net = tmp_path / "data" / NET
    target = tmp_path / "elsewhere"
    os.makedirs(target / ".cni-ipam" / "tmp")
    os.makedirs(target / "tmp")
    victim = net if which == "network" else net / which
    os.rename(victim, tmp_path / "moved")
    os.symlink({"network": target, ".cni-ipam": target / ".cni-ipam", ".cni-ipam/tmp": target / "tmp"}[which], victim)
    before = tree(target)
    rc_add, out_add, _, _ = add(c, "c2")
    rc, out = status(c)
    assert rc_add == 1 and out_add["code"] == 5
    assert rc == 1 and out["code"] == 50, out
    assert "symlink" in out["msg"] or "not a directory" in out["msg"]
    assert tree(target) == before  # no probe made (or left) in the link's target


def test_a_full_range_is_available_by_default_and_fails_only_when_asked(tmp_path):
    c = conf(tmp_path)  # .2 .. .6 usable
    for i in range(5):
        assert add(c, f"c{i}")[0] == 0
    assert add(c, "c9")[1]["code"] == 100
    assert status(c) == (0, None)
    rc, out = status(conf(tmp_path, statusOnExhaustion="fail"))
    assert rc == 1 and out["code"] == 50 and "range set 0" in out["msg"]
    rc, out = status(conf(tmp_path, statusOnExhaustion="sometimes"))
    assert rc == 1 and out["code"] == 7 and "statusOnExhaustion" in out["msg"]


def test_status_does_not_wait_for_the_network_lock(tmp_path):
    c = conf(tmp_path, lockTimeout=0.5)
    assert add(c, "c1")[0] == 0
    fd = os.open(tmp_path / NET / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert status(c) == (0, None)
    finally:
        os.close(fd)


def test_status_leaves_the_index_marker_valid(tmp_path):
    c = conf(tmp_path)
    assert add(c, "c1")[0] == 0
    before = os.stat(tmp_path / NET).st_mtime_ns
    assert status(c) == (0, None)
    assert os.stat(tmp_path / NET).st_mtime_ns == before
    assert os.listdir(tmp_path / NET / ".cni-ipam" / "tmp") == []


def test_status_with_a_fifo_named_like_an_address_answers(tmp_path):
    c = conf(tmp_path, statusOnExhaustion="fail")
    assert add(c, "c1")[0] == 0
    os.mkfifo(tmp_path / NET / "10.79.0.5")
    assert status(c) == (0, None)


@pytest.mark.usefixtures("need_root")
def test_a_probe_left_behind_does_not_fail_later_status(tmp_path):
    """A STATUS killed between creating its probe and removing it: every later STATUS with the
    same pid (pid 1 of a fresh PID namespace, as some runtimes run plugins) must still answer."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    c = conf(tmp_path / "data")
    assert add(c, "c1")[0] == 0
    tmp = tmp_path / "data" / NET / ".cni-ipam" / "tmp"
    for pid in (1, 2):
        (tmp / f".status-probe.{pid}").write_bytes(b"x")  # left by a killed STATUS
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(CNI_COMMAND="STATUS", CNI_PATH="/usr/lib/cni", PYTHONPATH=ROOT)
    import json

    proc = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-m", "cni_ipam"],
                          input=json.dumps(c).encode(), env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(os.listdir(tmp)) == [".status-probe.1", ".status-probe.2"]  # STATUS removes only its own
