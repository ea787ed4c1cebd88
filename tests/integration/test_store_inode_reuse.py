"""The owner index on a file system with whole-second timestamps (ext4 made with 128-byte inodes,
which mke2fs picks for small file systems): host-local deletes a reservation and creates one for
another owner within the same second, and the new file gets the old one's inode and ctime.  The
index must still see that the file changed (the inode generation is part of its identity)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from tests.helpers import have_host_local, is_root, run_host_local, run_plugin

pytestmark = pytest.mark.skipif(not (is_root() and have_host_local()), reason="needs root (loop mount) and host-local")

NET = "reuse-net"


@pytest.fixture
def coarse_fs(tmp_path):
    """A loop-mounted ext4 with 128-byte inodes (no sub-second timestamps); unmounted afterwards."""
    for tool in ("mkfs.ext4", "losetup", "mount"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            pytest.skip(f"needs {tool}")
    image = tmp_path / "fs.img"
    with open(image, "wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", "-L", "r" + uuid.uuid4().hex[:8], str(image)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        probe = mnt / "probe"
        probe.write_bytes(b"")
        if os.stat(probe).st_ctime_ns % 1_000_000_000:
            pytest.skip("this ext4 keeps sub-second timestamps even with 128-byte inodes")
        probe.unlink()
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def conf(data_dir, plugin):
    return {"cniVersion": "1.0.0", "name": NET, "type": "bridge",
            "ipam": {"type": plugin, "dataDir": str(data_dir), "subnet": "10.83.0.0/30"}}


def test_same_inode_same_second_for_another_owner(coarse_fs):
    data = coarse_fs / "data"
    ours, theirs = conf(data, "cni-ipam"), conf(data, "host-local")
    for _attempt in range(5):
        for cid in ("pod1", "pod2"):
            run_plugin("DEL", ours, container_id=cid)
        # from the start of a second: our ADD of pod1, host-local's DEL of pod1 and ADD of pod2
        while time.time() % 1 > 0.1:
            time.sleep(0.01)
        assert run_plugin("ADD", ours, container_id="pod1")[0] == 0  # indexed by us: .2 is pod1's
        path = data / NET / "10.83.0.2"
        before = os.stat(path)
        assert run_host_local("DEL", theirs, container_id="pod1")[0] == 0
        rc, res, out, err = run_host_local("ADD", theirs, container_id="pod2")
        assert rc == 0, out + err
        after = os.stat(path)
        if (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns):
            break
    else:
        pytest.skip("host-local's new file never got the old inode and ctime in 5 tries")
    assert path.read_bytes() == b"pod2\r\neth0"
    # our DEL of pod2 must release it (the index must know the file is pod2's now) ...
    assert run_plugin("DEL", ours, container_id="pod2")[0] == 0
    assert not path.exists(), "DEL of the new owner released nothing: the index still believes the old file"
    # ... and an ADD now hands out .2 again, not a second address to anyone
    rc, res, out, err = run_plugin("ADD", ours, container_id="pod3")
    assert rc == 0 and res["ips"][0]["address"] == "10.83.0.2/30", out + err
