"""The node image's entry point (deploy/image/cni-ipam-node install, what deploy/cni-ipam.yaml's init
container runs) puts exactly one plugin file into the host's CNI bin directory.

The image's root filesystem is assembled by ``deploy/image/build-image.sh --rootfs-only`` (no podman
needed) around the executable under test (the session fixture ``built_binary``); a temporary "host"
directory is bind-mounted where the DaemonSet mounts the host's /opt/cni, and the entry point runs
in that root with chroot.  Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from tests.helpers import ROOT


@pytest.fixture(autouse=True)
def _root(need_root):
    yield


@pytest.fixture(scope="module")
def rootfs(built_binary):
    work = tempfile.mkdtemp(prefix="cnidep-")
    rfs = os.path.join(work, "rootfs")
    try:
        proc = subprocess.run(["bash", os.path.join(ROOT, "deploy", "image", "build-image.sh"), "--exe", built_binary,
                               "--rootfs-only", rfs], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # as a container runtime gives the container a /dev
        subprocess.run(["mount", "--bind", "/dev", os.path.join(rfs, "dev")], check=True, timeout=30)
        try:
            yield rfs
        finally:
            subprocess.run(["umount", "-l", os.path.join(rfs, "dev")], check=False, timeout=30)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)


@pytest.fixture
def host(rootfs):
    """A host /opt/cni (temporary), mounted at <rootfs>/opt/cni for the test."""
    d = tempfile.mkdtemp(prefix="cnidep-host-")
    target = os.path.join(rootfs, "opt", "cni")
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "--bind", d, target], check=True, timeout=30)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", target], check=False, timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def entry(rootfs, *args):
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return subprocess.run([chroot, rootfs, "/usr/local/bin/cni-ipam-node", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin"}, timeout=300)


def version_of(path):
    proc = subprocess.run([path], env={"CNI_COMMAND": "VERSION"}, input=b"", capture_output=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout or b"null")


def test_install_puts_exactly_one_file_into_the_host_bin_dir(rootfs, host):
    for _ in range(2):  # twice: an upgrade in place leaves nothing beside it either
        proc = entry(rootfs, "install")
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(host) == ["bin"], os.listdir(host)
        assert os.listdir(os.path.join(host, "bin")) == ["cni-ipam"]
        plugin = os.path.join(host, "bin", "cni-ipam")
        st = os.lstat(plugin)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
        rc, answer = version_of(plugin)
        assert rc == 0 and "1.1.0" in answer["supportedVersions"]


def test_install_replaces_the_earlier_two_level_layout(rootfs, host):
    """An earlier release: <bin>/cni-ipam -> /opt/cni/cni-ipam.d/cni-ipam -> current/cni-ipam, with a
    manifest; the new install leaves one file in <bin> and removes that directory."""
    lib = os.path.join(host, "cni-ipam.d")
    version = os.path.join(lib, "versions", "20260101T000000.1.1")
    os.makedirs(version)
    shutil.copy2(os.path.join(rootfs, "opt", "cni-ipam", "cni-ipam"), os.path.join(version, "cni-ipam"))
    with open(os.path.join(lib, ".cni-ipam-install"), "w") as fh:
        fh.write("# cni-ipam install manifest 1: this directory and the entries below belong to scripts/install.sh\n"
                 "versions/\ncurrent\ncni-ipam\n.cni-ipam-install\nlink /opt/cni/bin/cni-ipam\n")
    os.symlink("versions/20260101T000000.1.1", os.path.join(lib, "current"))
    os.symlink("current/cni-ipam", os.path.join(lib, "cni-ipam"))
    os.makedirs(os.path.join(host, "bin"))
    os.symlink("/opt/cni/cni-ipam.d/cni-ipam", os.path.join(host, "bin", "cni-ipam"))
    open(os.path.join(host, "bin", "host-local"), "w").close()  # someone else's plugin stays
    proc = entry(rootfs, "install")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(os.path.join(host, "bin"))) == ["cni-ipam", "host-local"]
    assert not os.path.islink(os.path.join(host, "bin", "cni-ipam"))
    assert not os.path.exists(lib), os.listdir(lib)
    assert version_of(os.path.join(host, "bin", "cni-ipam"))[0] == 0


def test_install_refuses_a_foreign_cni_ipam(rootfs, host):
    os.makedirs(os.path.join(host, "bin"))
    foreign = os.path.join(host, "bin", "cni-ipam")
    with open(foreign, "w") as fh:
        fh.write("#!/bin/sh\n# someone else's\n")
    os.chmod(foreign, 0o755)
    proc = entry(rootfs, "install")
    assert proc.returncode == 1 and "not a cni-ipam install" in proc.stderr, proc
    assert open(foreign).read().endswith("someone else's\n")
    assert os.listdir(os.path.join(host, "bin")) == ["cni-ipam"]
