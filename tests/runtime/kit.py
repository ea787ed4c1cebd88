"""Test kit for real container runtimes (podman, containerd): a private mount namespace, a busybox
root filesystem, and teardown that kills every process the test started.

Why a mount namespace of the test's own: both runtimes write outside their ``--root``: podman 4.3's
CNI backend keeps libcni's result cache in ``/var/lib/cni`` and bind-mounts container namespaces
under ``/run/netns``; ``ctr run --cni`` (containerd 1.6) reads its networks only from
``/etc/cni/net.d`` and its plugins only from ``/opt/cni/bin``.  ``PrivateMounts`` starts a holder
process in a new mount namespace (``unshare --mount --propagation private``) where those paths are
tmpfs or bind mounts of the test's temp dir; every runtime command runs inside it (``nsenter
--mount``) and inside the test's own network namespace (``--net``), so nothing touches the machine's
``/etc``, ``/opt``, ``/var/lib/cni``, ``/run/netns`` or network.  (``ip netns exec`` is not used: it
remounts ``/sys`` and so hides the cgroup mounts runc needs.)

Teardown kills, by pid, every process whose mount namespace is the private one (containers, conmon,
containerd and its shims: all started by the test), then the holder; the mounts vanish with the
namespace.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import time

BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "sleep", "ping", "ip", "cat", "ls", "true", "false", "ifconfig", "hostname", "echo")


def missing_tools(*tools: str) -> "str | None":
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} missing (bash scripts/setup.d/30-runtimes.sh)"
    return None


def busybox_rootfs(path: str) -> str:
    """A minimal root filesystem: static busybox and its applets under ``/bin``."""
    bindir = os.path.join(path, "bin")
    os.makedirs(bindir, exist_ok=True)
    for sub in ("etc", "proc", "sys", "dev", "tmp", "run"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(bindir, "busybox"))
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(bindir, applet))
    return path


def mnt_ns_of(pid: int) -> "str | None":
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class PrivateMounts:
    """A mount namespace held by one process; ``setup`` lines run (sh -e) before it settles.

    ``exec_cmd`` replaces the holder's ``sleep`` (e.g. containerd, so the daemon itself holds it).
    """

    def __init__(self, setup: "list[str]", exec_cmd: "list[str] | None" = None, log_path: "str | None" = None) -> None:
        body = "\n".join(setup + ["echo ready"]) + "\nexec " + (
            " ".join(shlex.quote(a) for a in exec_cmd) if exec_cmd else "sleep 100000"
        )
        stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", body],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True,
            )
        finally:
            if log_path:
                stderr.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.close()
            raise RuntimeError(f"private mount namespace did not come up (setup: {setup}); see {log_path}")
        self.pid = self.proc.pid
        self.ns = mnt_ns_of(self.pid)

    def argv(self, argv: "list[str]", netns: "str | None" = None) -> "list[str]":
        """``argv`` run inside this mount namespace (and the named network namespace)."""
        pre = ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt"]
        if netns:
            pre.append(f"--net=/var/run/netns/{netns}")
        return pre + list(argv)

    def members(self) -> "list[int]":
        """Pids living in this mount namespace, the holder excluded."""
        if not getattr(self, "ns", None):
            return []
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.proc.pid and mnt_ns_of(int(entry)) == self.ns:
                out.append(int(entry))
        return out

    def close(self) -> None:
        """Kill every process in the namespace (started by the test), then the holder."""
        for _ in range(3):
            pids = self.members()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def run(argv: "list[str]", env: "dict | None" = None, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "CONTAINERS_"))}
    env.update(extra)
    return env
