"""One containerd world per test module: Debian's containerd 1.6 + runc, ``ctr run --cni``.

The fixture starts its own containerd (private ``root``, ``state``, gRPC and ttrpc sockets in the
test's temp dir; the CRI plugin disabled, as ``ctr`` does not use it) inside a mount namespace of
the test's own and the test's host network namespace.  ``ctr run --cni`` (go-cni, inside the
``ctr`` process) has no flag for its directories: it reads ``/etc/cni/net.d`` and execs plugins
from ``/opt/cni/bin``, and libcni caches results in ``/var/lib/cni``.  In the private mount
namespace those three paths are tmpfs/bind mounts of the temp dir, so the machine's ``/etc/cni``
and ``/opt`` are never read or written.

The image is an OCI layout built here from busybox-static (``kit.oci_archive``) and loaded with
``ctr images import``; nothing is pulled.  The CNI container ID ``ctr`` uses is
``<namespace>-<container id>`` and the netns ``/proc/<task pid>/ns/net``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time

from tests.runtime import kit

NETWORK = "ctrnet"
SUBNET = "10.232.0.0/24"
NAMESPACE = "cnitest"
IMAGE = "localhost/cni-ipam-test/busybox:1"


def skip_reason() -> "str | None":
    return kit.skip_reason(
        "containerd, runc, network namespaces", "containerd", "containerd-shim-runc-v2", "ctr", "runc"
    )


class ContainerdWorld(kit.World):
    network = NETWORK

    def _setup(self) -> None:
        self.foreground: "list[subprocess.Popen]" = []
        d = self.rt.dir
        for sub in ("ctrd/root", "ctrd/state", "cnicache", "cnibin"):
            os.makedirs(os.path.join(d, sub))
        self.sock = os.path.join(d, "ctrd", "sock")
        self.log = os.path.join(d, "ctrd", "log")
        # go-cni looks for plugins in one directory only: Debian's plugins and cni-ipam side by side.
        cnibin = os.path.join(d, "cnibin")
        for plugin in ("bridge", "loopback", "host-local"):
            os.symlink(os.path.join("/usr/lib/cni", plugin), os.path.join(cnibin, plugin))
        os.symlink(self.rt.plugin_exe, os.path.join(cnibin, "cni-ipam"))
        self.host = self.rt.netns("host")
        self.bridge = f"rt{self.rt.token}cb"
        kit.bridge_conflist(self.rt, NETWORK, SUBNET, self.bridge)
        config = os.path.join(d, "ctrd", "config.toml")
        with open(config, "w") as fh:
            fh.write(
                "version = 2\n"
                f'root = "{d}/ctrd/root"\n'
                f'state = "{d}/ctrd/state"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{self.sock}"\n'
                f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            )
        self.mounts = kit.PrivateMounts(
            [
                # /etc/cni exists wherever podman or containernetworking-plugins is installed;
                # mkdir only for a bare machine (an empty directory, the mount hides everything else)
                "mkdir -p /etc/cni /opt /var/lib/cni",
                "mount -t tmpfs -o mode=0755 tmpfs /etc/cni",
                "mkdir /etc/cni/net.d",
                f"mount --bind {self.rt.netconfpath} /etc/cni/net.d",
                # /opt/cni/bin: a tmpfs over /opt/cni when it exists, else over /opt (private view only)
                "if [ -d /opt/cni ]; then mount -t tmpfs tmpfs /opt/cni; else mount -t tmpfs tmpfs /opt; fi",
                "mkdir -p /opt/cni/bin",
                f"mount --bind {cnibin} /opt/cni/bin",
                f"mount --bind {d}/cnicache /var/lib/cni",
            ],
            exec_cmd=["containerd", "--config", config],
            log_path=self.log,
            netns=self.host,
        )
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            if time.monotonic() > deadline or self.mounts.proc.poll() is not None:
                with open(self.log, errors="replace") as fh:
                    tail = fh.read()[-3000:]
                raise RuntimeError(f"containerd did not start (socket {self.sock}):\n{tail}")
            time.sleep(0.1)
        rootfs = kit.busybox_rootfs(os.path.join(d, "rootfs"))
        archive = kit.oci_archive(rootfs, os.path.join(d, "busybox-oci.tar"), IMAGE, ["sh"])
        self.ctr("images", "import", archive, check=True, timeout=120)

    # ------------------------------------------------------------------ ctr
    def ctr_argv(self, *args: str) -> "list[str]":
        return self.mounts.argv(["ctr", "--address", self.sock, "-n", NAMESPACE, *args], netns=self.host)

    def ctr(self, *args: str, check: bool = False, timeout: float = 60):
        return kit.run(self.ctr_argv(*args), env=kit.clean_env(), timeout=timeout, check=check)

    @staticmethod
    def cni_id(name: str) -> str:
        return f"{NAMESPACE}-{name}"

    def run_foreground(self, name: str, *cmd: str) -> subprocess.Popen:
        """``ctr run --cni --rm IMAGE name cmd`` in the background: ctr sends ADD after the task
        starts and, once the task has exited and been deleted, DEL."""
        proc = subprocess.Popen(self.ctr_argv("run", "--cni", "--rm", IMAGE, name, *(cmd or ("sleep", "600"))),
                                env=kit.clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.foreground.append(proc)
        return proc

    def run_detached(self, name: str, *cmd: str):
        return self.ctr("run", "--cni", "-d", IMAGE, name, *(cmd or ("sleep", "600")), check=True)

    def wait_reserved(self, name: str, proc: "subprocess.Popen | None" = None, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            held = self.held_by(self.cni_id(name))
            if held:
                return held[0]
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"ctr run {name} exited {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no reservation for {self.cni_id(name)} after {timeout}s: {self.reservations()}")
            time.sleep(0.1)

    def exec(self, name: str, *cmd: str, timeout: float = 30):
        return self.ctr("task", "exec", "--exec-id", f"x{time.monotonic_ns()}", name, *cmd, timeout=timeout)

    def kill(self, name: str) -> None:
        self.ctr("task", "kill", "-s", "KILL", name)

    def remove_behind_the_plugins_back(self, name: str) -> None:
        """Kill and delete a detached task and its container: ctr sends no DEL for that."""
        self.kill(name)
        deadline = time.monotonic() + 20
        while self.ctr("task", "delete", name).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"task {name} could not be deleted")
            time.sleep(0.1)
        self.ctr("containers", "delete", name, check=True)

    def in_subnet(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET)

    def close(self) -> None:
        try:
            if self.mounts is not None:
                for line in self.ctr("tasks", "ls", "-q").stdout.split():
                    self.kill(line)
                for proc in getattr(self, "foreground", []):
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
                self.mounts.close()
        finally:
            for proc in getattr(self, "foreground", []):
                if proc.poll() is None:
                    proc.kill()
                for stream in (proc.stdout, proc.stderr):
                    if stream:
                        stream.close()
            self.rt.cleanup()
