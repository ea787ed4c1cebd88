"""Permissions: reservation files (and every file the plugin writes) are 0600, no directory it
creates is group- or world-writable, whatever the caller's umask; an unprivileged caller gets a
clean code-5 error, not a traceback (the plugin needs root, as every CNI plugin)."""

import os
import stat
import subprocess

import pytest

from tests.helpers import plugin_argv, run_cni
from tests.reliability.relhelpers import inspect_network, net_conf, sub_env

SUBNETS = ("10.95.0.0/28", "fd00:95::/124")


def _with_umask(mask, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_modes_under_any_umask(sandbox, umask, need_host_local):
    data = os.path.join(sandbox, "data")
    conf = net_conf(data, name="rel-perm", subnets=SUBNETS)

    def calls():
        for i in range(3):
            rc, out, raw, _ = run_cni(plugin_argv(), "ADD", conf, container_id=f"rel-p{i}")
            assert rc == 0, raw
        rc, out, raw, _ = run_cni(plugin_argv(), "DEL", conf, container_id="rel-p1")
        assert rc == 0, raw
        gc = dict(conf, cniVersion="1.1.0")
        gc["cni.dev/valid-attachments"] = [{"containerID": "rel-p0", "ifname": "eth0"}]
        rc, out, raw, _ = run_cni(plugin_argv(), "GC", gc, container_id=None, ifname=None, netns=None)
        assert rc == 0, raw
        rc, out, raw, _ = run_cni(plugin_argv(), "ADD", conf, container_id="rel-p3")
        assert rc == 0, raw

    _with_umask(umask, calls)
    net = os.path.join(data, "rel-perm")
    st = inspect_network(net, SUBNETS)
    st.assert_ok()
    assert len(st.reservations) == 4
    report = []
    for dirpath, dirnames, filenames in os.walk(data):
        for d in dirnames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, d)).st_mode)
            report.append((os.path.relpath(os.path.join(dirpath, d), data), oct(mode)))
            assert not mode & 0o022, f"directory {d} is {oct(mode)}: group/world writable"
        for f in filenames:
            path = os.path.join(dirpath, f)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            report.append((os.path.relpath(path, data), oct(mode)))
            assert mode == 0o600, f"{os.path.relpath(path, data)} is {oct(mode)}, expected 0600"
    meta = stat.S_IMODE(os.stat(os.path.join(net, ".cni-ipam")).st_mode)
    assert meta & 0o077 == 0, f".cni-ipam is {oct(meta)}: our bookkeeping is private"
    print(f"[rel] umask {oct(umask)}: {sorted(set(m for _, m in report))}")


def test_reservation_written_by_host_local_keeps_working(sandbox, need_host_local):
    """host-local writes 0644 files; we neither need nor change that, and DEL still releases them."""
    data = os.path.join(sandbox, "data")
    conf = net_conf(data, name="rel-perm", subnets=SUBNETS)
    hl = subprocess.run(["/usr/lib/cni/host-local"], input=__import__("json").dumps(conf).encode(),
                        env=sub_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "rel-hl", "CNI_IFNAME": "eth0",
                                     "CNI_NETNS": "/x", "CNI_PATH": "/usr/lib/cni"}), capture_output=True)
    assert hl.returncode == 0, hl.stdout
    rc, out, raw, _ = run_cni(plugin_argv(), "DEL", conf, container_id="rel-hl")
    assert rc == 0, raw
    assert inspect_network(os.path.join(data, "rel-perm"), SUBNETS).reservations == {}


def test_unprivileged_caller_gets_code_5(sandbox, need_root):
    data = os.path.join(sandbox, "data")
    conf = net_conf(data, name="rel-perm", subnets=SUBNETS)
    rc, out, raw, _ = run_cni(plugin_argv(), "ADD", conf, container_id="rel-root")
    assert rc == 0, raw
    os.chmod(sandbox, 0o755)
    env = sub_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "rel-nobody", "CNI_IFNAME": "eth0",
                   "CNI_NETNS": "/x", "CNI_PATH": "/usr/lib/cni"})
    import json

    argv = plugin_argv()
    if not os.environ.get("CNI_IPAM_EXE") and not _nobody_can_run(argv[0]):
        if not _nobody_can_run("/usr/bin/python3"):
            pytest.skip(f"user nobody cannot run {argv[0]}")
        argv = ["/usr/bin/python3"] + argv[1:]
    for command in ("ADD", "DEL"):
        env["CNI_COMMAND"] = command
        proc = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True,
                              user=65534, group=65534, timeout=60)
        assert proc.returncode == 1, proc
        assert b"Traceback" not in proc.stderr, proc.stderr
        out = json.loads(proc.stdout)
        assert out["code"] == 5 and "Permission denied" in out["msg"], out
        print(f"[rel] {command} as nobody: {out['msg']}")
    st = inspect_network(os.path.join(data, "rel-perm"), SUBNETS)
    st.assert_ok()
    assert {o[0] for o in st.reservations.values()} == {"rel-root"}


def _nobody_can_run(exe):
    try:
        proc = subprocess.run([exe, "-c", "import cni_ipam"], env=sub_env(), capture_output=True, user=65534,
                              group=65534, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0
