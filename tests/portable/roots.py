"""Root filesystems to run the shipped executable in (tests/portable/test_roots.py).

* Debian 11 (bullseye, glibc 2.31): ``debootstrap --variant=minbase bullseye``, made once and kept as a
  tarball outside the checkout (``$CNI_IPAM_ROOTS_CACHE``, default /var/cache/cni-ipam-build/roots;
  scripts/setup.d/11-portable-roots.sh makes it before the tests); every test unpacks its own copy.
* busybox only: Debian's static busybox (busybox-static) and its applet links, nothing else: no libc,
  no dynamic loader.
* ``Root.bind(path)`` makes a host file or directory (a network namespace, TLS material) visible at
  the same path inside; ``Root.close()`` undoes every mount and removes the copy.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import tempfile

CACHE = os.environ.get("CNI_IPAM_ROOTS_CACHE", "/var/cache/cni-ipam-build/roots")


def _debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (its first non-security source)."""
    uris = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as fh:
            uris += [line.split()[1] for line in fh if line.startswith("URIs:") and len(line.split()) > 1]
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if os.path.exists(path):
            with open(path) as fh:
                uris += [line.split()[1] for line in fh if line.startswith("deb ") and len(line.split()) > 1]
    return next((u for u in uris if "security" not in u), "")


MIRROR = os.environ.get("CNI_IPAM_DEBIAN_MIRROR") or _debian_mirror()
BULLSEYE_TAR = os.path.join(CACHE, "bullseye-minbase.tar")
BUSYBOX = "/bin/busybox"
PLUGIN = "/opt/cni/bin/cni-ipam"


def bullseye_tarball() -> str:
    """The cached Debian 11 root (made when missing: debootstrap from the Debian mirror, a few minutes)."""
    if os.path.exists(BULLSEYE_TAR):
        return BULLSEYE_TAR
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(BULLSEYE_TAR):
            return BULLSEYE_TAR
        work = tempfile.mkdtemp(prefix="bullseye-", dir=CACHE)
        try:
            target = os.path.join(work, "root")
            proc = subprocess.run(["debootstrap", "--variant=minbase", "bullseye", target, MIRROR],
                                  capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"debootstrap failed: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
            tmp_tar = os.path.join(work, "root.tar")
            subprocess.run(["tar", "-C", target, "--numeric-owner", "-cf", tmp_tar, "."], check=True, timeout=600)
            os.rename(tmp_tar, BULLSEYE_TAR)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)
    return BULLSEYE_TAR


class Root:
    """A root directory of its own under /tmp, with the executable at /opt/cni/bin/cni-ipam."""

    def __init__(self, kind: str, exe: str) -> None:
        self.kind = kind
        self.path = tempfile.mkdtemp(prefix=f"cnichr-{kind}-")
        self.mounts: list = []
        try:
            if kind == "debian11":
                subprocess.run(["tar", "-C", self.path, "--numeric-owner", "-xf", bullseye_tarball()], check=True,
                               timeout=600)
            elif kind == "busybox":
                os.makedirs(os.path.join(self.path, "bin"))
                shutil.copy2(BUSYBOX, os.path.join(self.path, "bin", "busybox"))
                for applet in ("sh", "ls", "cat", "mkdir"):
                    os.symlink("busybox", os.path.join(self.path, "bin", applet))
                for d in ("tmp", "etc", "run", "var/lib", "proc"):
                    os.makedirs(os.path.join(self.path, d), exist_ok=True)
            else:
                raise ValueError(kind)
            os.makedirs(os.path.join(self.path, "opt", "cni", "bin"), exist_ok=True)
            os.makedirs(os.path.join(self.path, "run", "netns"), exist_ok=True)
            shutil.copy2(exe, self.inside(PLUGIN))
            os.chmod(self.inside(PLUGIN), 0o755)
        except BaseException:
            self.close()
            raise

    def inside(self, path: str) -> str:
        """The host path of ``path`` inside the root."""
        return os.path.join(self.path, path.lstrip("/"))

    def libc_files(self) -> list:
        return [p for pattern in ("lib*/**/libc.so*", "lib*/**/ld-linux*", "usr/lib*/**/libc.so*", "lib*/ld-musl*")
                for p in glob.glob(os.path.join(self.path, pattern), recursive=True)]

    def write(self, path: str, data: bytes, mode: int = 0o600) -> str:
        host = self.inside(path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as fh:
            fh.write(data)
        os.chmod(host, mode)
        return path

    def bind(self, host_path: str) -> None:
        """host_path (a file or a directory) visible at the same path inside."""
        target = self.inside(host_path)
        if os.path.isdir(host_path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        subprocess.run(["mount", "--bind", host_path, target], check=True, timeout=30)
        self.mounts.append(target)

    def run(self, argv, env=None, stdin: bytes = b"", timeout: float = 120):
        """argv inside the root (chroot), with only the given environment (and PATH)."""
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        full_env.update(env or {})
        return subprocess.run(["chroot", self.path, *argv], input=stdin, env=full_env, capture_output=True,
                              timeout=timeout)

    def close(self) -> None:
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", target], check=False, timeout=30)
        self.mounts.clear()
        if os.path.isdir(self.path):
            # --one-file-system: never into a mount that outlived the umount above
            subprocess.run(["rm", "-rf", "--one-file-system", self.path], check=False, timeout=300)
