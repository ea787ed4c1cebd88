"""One podman world per test module: Debian's podman 4.3 + runc, CNI backend, bridge + cni-ipam.

Everything is private: ``--root``, ``--runroot``, ``--tmpdir`` and the containers.conf
(``CONTAINERS_CONF``: ``network_backend = "cni"``, ``network_config_dir``, ``cni_plugin_dirs``)
live in the test's temp dir; podman runs in a mount namespace of the test's own (``kit.PrivateMounts``:
``/var/lib/cni`` and ``/run/netns`` are the temp dir's) and in the test's host network namespace,
which holds the bridge.  Containers run from a busybox root filesystem (``--rootfs``): no image is
pulled.
"""

from __future__ import annotations

import ipaddress
import json
import os

from tests.runtime import kit

NETWORK = "podnet"
SUBNET = "10.231.0.0/24"
EXCLUDED = "10.231.0.9"

# This sandbox denies the container's init raising a hard rlimit (runc: "error setting rlimit type 7
# / 6: operation not permitted"): podman asks for RLIMIT_NOFILE 1048576 and RLIMIT_NPROC at the
# host's maximum by default.  Small explicit limits, at or below what we hold, always work.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


def skip_reason() -> "str | None":
    return kit.skip_reason("podman with runc, network namespaces", "podman", "runc", "conmon")


class PodmanWorld(kit.World):
    network = NETWORK

    def _setup(self) -> None:
        d = self.rt.dir
        self.rootfs = kit.busybox_rootfs(os.path.join(d, "rootfs"))
        for sub in ("root", "runroot", "tmp", "cnicache", "netns"):
            os.makedirs(os.path.join(d, sub))
        self.host = self.rt.netns("host")
        self.bridge = f"rt{self.rt.token}br"
        kit.bridge_conflist(self.rt, NETWORK, SUBNET, self.bridge, exclude=[EXCLUDED])
        self.conf = os.path.join(d, "containers.conf")
        with open(self.conf, "w") as fh:
            fh.write(
                "[network]\n"
                'network_backend = "cni"\n'
                f"network_config_dir = {json.dumps(self.rt.netconfpath)}\n"
                f"cni_plugin_dirs = {json.dumps([self.rt.bin_dir, '/usr/lib/cni'])}\n"
                "[engine]\n"
                'runtime = "runc"\n'
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'tmp_dir = {json.dumps(os.path.join(d, "tmp"))}\n'
            )
        self.mounts = kit.PrivateMounts([
            "mkdir -p /var/lib/cni /run/netns",
            f"mount --bind {d}/cnicache /var/lib/cni",
            f"mount --bind {d}/netns /run/netns",
        ])
        self.env = kit.clean_env(CONTAINERS_CONF=self.conf)
        self.ulimits = ULIMITS

    # ------------------------------------------------------------------ podman
    def argv(self, *args: str) -> "list[str]":
        d = self.rt.dir
        return self.mounts.argv(
            ["podman", "--root", f"{d}/root", "--runroot", f"{d}/runroot", "--tmpdir", f"{d}/tmp",
             "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args],
            netns=self.host,
        )

    def podman(self, *args: str, check: bool = False, timeout: float = 90):
        return kit.run(self.argv(*args), env=self.env, timeout=timeout, check=check)

    def run(self, name: str, *opts: str, cmd: "tuple" = ("sleep", "600"), check: bool = True):
        """``podman run -d`` a busybox container on the test network; returns the process result."""
        return self.podman("run", "-d", "--name", name, *ULIMITS, "--network", NETWORK, *opts,
                           "--rootfs", self.rootfs, *cmd, check=check)

    def container_id(self, name: str) -> str:
        return self.podman("inspect", "--format", "{{.Id}}", name, check=True).stdout.strip()

    def ip_of(self, name: str) -> ipaddress.IPv4Address:
        out = self.podman("inspect", "--format", f"{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}",
                          name, check=True).stdout.strip()
        return ipaddress.ip_address(out)

    def exec(self, name: str, *cmd: str, timeout: float = 30):
        return self.podman("exec", name, *cmd, timeout=timeout)

    def close(self) -> None:
        try:
            if self.mounts is not None:
                try:
                    self.podman("rm", "-a", "-f", "-t", "0", timeout=60)
                except Exception:  # noqa: BLE001 - teardown goes on; the kill below is the safety net
                    pass
                self.mounts.close()
        finally:
            self.rt.cleanup()
