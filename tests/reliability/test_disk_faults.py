"""Full and read-only disks: ADD fails with code 5 and a clear message, nothing is half-written and the
earlier reservations are intact.  Real mounts: a 64 KiB tmpfs filled to the last page, a read-only
remount of it and a read-only bind mount of one network directory (root only)."""

import errno
import os
import subprocess

import pytest

from tests.helpers import plugin_argv, run_cni
from tests.reliability.relhelpers import inspect_network, net_conf, result_addresses, run_inproc

SUBNETS = ("10.97.0.0/27", "fd00:97::/123")
PAGE = 4096


def _mount(*args):
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _umount(path):
    subprocess.run(["umount", path], capture_output=True)
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.fixture
def tiny_fs(sandbox, need_root):
    mnt = os.path.join(sandbox, "mnt")
    os.mkdir(mnt)
    try:
        _mount("-t", "tmpfs", "-o", "size=64k,mode=0755", "rel-tmpfs", mnt)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        _umount(mnt)


def _fill(path):
    """Write PAGE-sized chunks to ``path`` until ENOSPC; returns the open fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"x" * PAGE
    while True:
        try:
            if os.write(fd, chunk) < PAGE:
                break
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            break
    return fd


def _assert_intact(net_dir, expected, context):
    st = inspect_network(net_dir, SUBNETS)
    st.assert_ok(context)
    for ip, owner in expected.items():
        assert st.reservations.get(ip) == owner, f"{context}: reservation {ip} {owner} lost ({st.reservations.get(ip)})"
    return st


def test_full_disk_page_by_page(tiny_fs, capsys):
    conf = net_conf(tiny_fs + "/data", name="rel-full", subnets=SUBNETS)
    net_dir = os.path.join(tiny_fs, "data", "rel-full")
    for i in range(3):
        assert run_inproc("ADD", conf, container_id=f"rel-early{i}")[0] == 0
    earlier = inspect_network(net_dir, SUBNETS).reservations
    assert len(earlier) == 6
    filler = os.path.join(tiny_fs, "filler")
    fd = _fill(filler)
    size = os.fstat(fd).st_size
    outcomes = []
    try:
        for free_pages in range(0, 10):
            os.ftruncate(fd, max(size - free_pages * PAGE, 0))
            cid = f"rel-full{free_pages}"
            rc, out, raw, err = run_cni(plugin_argv(), "ADD", conf, container_id=cid)
            assert "Traceback" not in err
            st = _assert_intact(net_dir, earlier, f"{free_pages} free pages")
            mine = {ip for ip, o in st.reservations.items() if o[0] == cid}
            if rc == 0:
                assert set(result_addresses(out)) == mine and len(mine) == 2, (out, mine)
                outcomes.append((free_pages, "ok"))
                break
            assert out["code"] == 5, raw
            assert "No space left on device" in out["msg"], out["msg"]
            assert mine == set(), f"failed ADD left reservations {mine}"
            assert not any(k.startswith(cid + ":") for k in st.owners), (
                f"failed ADD left an index entry {sorted(st.owners)}"
            )
            outcomes.append((free_pages, "ENOSPC"))
        assert outcomes[0] == (0, "ENOSPC") and outcomes[-1][1] == "ok", outcomes
        # DEL must work on a full disk (a runtime has to be able to tear down)
        os.ftruncate(fd, size)
        rc, out, raw, _ = run_cni(plugin_argv(), "DEL", conf, container_id="rel-early0")
        del_on_full = rc
        assert rc == 0, raw
        st = _assert_intact(net_dir, {ip: o for ip, o in earlier.items() if o[0] != "rel-early0"}, "DEL on a full disk")
        assert not any(o[0] == "rel-early0" for o in st.reservations.values())
    finally:
        os.close(fd)
        os.unlink(filler)
    with capsys.disabled():
        print(f"\n[rel] full disk: {outcomes}, DEL on a full disk rc={del_on_full}")
    rc, out, raw = run_inproc("ADD", conf, container_id="rel-after")
    assert rc == 0, raw
    st = inspect_network(net_dir, SUBNETS)
    st.assert_ok("after freeing the disk")
    assert st.index_current


def _ro_checks(conf, net_dir, earlier, capsys, label):
    for command in ("ADD", "DEL"):
        rc, out, raw, err = run_cni(
            plugin_argv(), command, conf, container_id="rel-ro0" if command == "DEL" else "rel-new"
        )
        assert rc == 1, raw
        assert out["code"] == 5 and "Read-only file system" in out["msg"], raw
        assert "Traceback" not in err
        with capsys.disabled():
            print(f"\n[rel] {label} {command}: code {out['code']}: {out['msg']}")
    _assert_intact(net_dir, earlier, label)


def test_read_only_remount(tiny_fs, capsys):
    conf = net_conf(tiny_fs + "/data", name="rel-ro", subnets=SUBNETS)
    net_dir = os.path.join(tiny_fs, "data", "rel-ro")
    for i in range(2):
        assert run_inproc("ADD", conf, container_id=f"rel-ro{i}")[0] == 0
    earlier = inspect_network(net_dir, SUBNETS).reservations
    _mount("-o", "remount,ro", tiny_fs)
    try:
        _ro_checks(conf, net_dir, earlier, capsys, "read-only filesystem")
    finally:
        _mount("-o", "remount,rw", tiny_fs)
    assert run_inproc("DEL", conf, container_id="rel-ro0")[0] == 0
    assert run_inproc("ADD", conf, container_id="rel-new")[0] == 0
    inspect_network(net_dir, SUBNETS).assert_ok("after remounting rw")


def test_read_only_bind_of_the_network_directory(sandbox, need_root, capsys):
    conf = net_conf(sandbox + "/data", name="rel-robind", subnets=SUBNETS)
    net_dir = os.path.join(sandbox, "data", "rel-robind")
    for i in range(2):
        assert run_inproc("ADD", conf, container_id=f"rel-ro{i}")[0] == 0
    earlier = inspect_network(net_dir, SUBNETS).reservations
    try:
        _mount("--bind", net_dir, net_dir)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot bind-mount here: {exc.stderr.decode().strip()}")
    try:
        _mount("-o", "remount,bind,ro", net_dir)
        _ro_checks(conf, net_dir, earlier, capsys, "read-only bind mount")
    finally:
        _umount(net_dir)
    assert run_inproc("DEL", conf, container_id="rel-ro0")[0] == 0
    inspect_network(net_dir, SUBNETS).assert_ok("after the bind mount is gone")
