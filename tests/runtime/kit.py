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

Why a PID namespace of the test's own too (``unshare --pid --mount-proc``, entered with ``nsenter
--pid``): ``cni-ipam gc`` releases a reservation by namespace only when a scan of every process on
the node finds the recorded namespace nowhere, and a scan of a /proc it cannot fully read (this
sandbox's pid 1 is closed even to root) is never sure.  Inside the world's PID namespace every
process (runtime, conmon, shims, containers, gc) is one the test started, so ``gc --pidns-is-node``
(what hostPID gives the DaemonSet on a real node) can be sure, and the verdicts are the real ones.

Teardown kills, by pid, every process whose mount or PID namespace is the private one (containers,
conmon, containerd and its shims: all started by the test), then the holder; the kernel kills
whatever is left in the PID namespace with its init, and the mounts vanish with the namespace.
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


def skip_reason(what: str, *tools: str) -> "str | None":
    """Why a real-runtime world cannot be built here (``what`` says what root is needed for), or None."""
    if os.geteuid() != 0:
        return f"needs root ({what})"
    reason = missing_tools(*tools, "nsenter", "unshare", "ip")
    if reason:
        return reason
    if not os.access(BUSYBOX, os.X_OK):
        return f"{BUSYBOX} missing (apt-get install busybox-static)"
    if not os.access("/usr/lib/cni/bridge", os.X_OK):
        return "/usr/lib/cni/bridge missing (apt-get install containernetworking-plugins)"
    return None


class World:
    """What both runtime worlds share: ``self.rt`` (tests.integration.netns.Runtime) and one
    cni-ipam network ``self.network`` in ``rt.data_dir``."""

    network = ""

    def __init__(self) -> None:
        from tests.integration.netns import Runtime

        self.rt = Runtime()  # temp dir with bin/ (cni-ipam), net/, data/; namespaces rt-<token>-*
        self.mounts: "PrivateMounts | None" = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def reservations(self) -> "dict[str, str]":
        return self.rt.reservations(self.network)

    def held_by(self, container_id: str) -> "list[str]":
        return sorted(ip for ip, owner in self.reservations().items() if owner.split("\r\n")[0] == container_id)


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


def ns_of(pid: "int | str", kind: str = "mnt") -> "str | None":
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


class PrivateMounts:
    """A mount namespace held by one process; ``setup`` lines run (sh -e) before it settles.

    The holder (``unshare --pid --kill-child --mount-proc``) also makes a PID namespace with its own
    ``/proc``; every ``argv`` enters it, so the runtimes, their containers and ``cni-ipam gc`` share
    one PID namespace that holds nothing but the test's processes (``gc --pidns-is-node``).

    ``exec_cmd`` runs instead of the holder's ``sleep`` (e.g. containerd: the world ends with it);
    ``netns`` names the network namespace it runs in (default: the caller's).
    """

    def __init__(self, setup: "list[str]", exec_cmd: "list[str] | None" = None, log_path: "str | None" = None,
                 netns: "str | None" = None) -> None:
        # sh stays the PID namespace's init: it reaps what daemonizes (conmon, shims) while it
        # waits; the world ends when its command (containerd, or sleep) does.
        body = "\n".join(setup + ["echo ready"]) + "\n" + (
            " ".join(shlex.quote(a) for a in exec_cmd) if exec_cmd else "sleep 100000"
        ) + " &\nwait $!\n"
        stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                (["nsenter", f"--net=/var/run/netns/{netns}"] if netns else [])
                + ["unshare", "--pid", "--kill-child", "--mount-proc", "--propagation", "private", "--",
                   "sh", "-ec", body],
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
        self.ns = ns_of(self.pid)
        self.pidns = ns_of(self.pid, "pid_for_children")

    def argv(self, argv: "list[str]", netns: "str | None" = None) -> "list[str]":
        """``argv`` run inside this mount namespace (and the named network namespace)."""
        pre = ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt", f"--pid=/proc/{self.pid}/ns/pid_for_children"]
        if netns:
            pre.append(f"--net=/var/run/netns/{netns}")
        return pre + list(argv)

    def members(self) -> "list[int]":
        """Pids living in this mount or PID namespace, the holder excluded."""
        ours = {ns for ns in (getattr(self, "ns", None), getattr(self, "pidns", None)) if ns}
        if not ours:
            return []
        return [int(e) for e in os.listdir("/proc")
                if e.isdigit() and int(e) != self.proc.pid and (ns_of(e) in ours or ns_of(e, "pid") in ours)]

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


def run(
    argv: "list[str]", env: "dict | None" = None, timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "CONTAINERS_"))}
    env.update(extra)
    return env


def oci_archive(rootfs: str, out_path: str, name: str, cmd: "list[str]", entrypoint: "list[str] | None" = None,
                env: "list[str] | None" = None) -> str:
    """Write an OCI image layout tar (one uncompressed layer: ``rootfs``) that ``ctr images import``
    and ``podman load`` accept.  ``name`` (e.g. ``localhost/x:1``) is recorded as the image name."""
    import hashlib
    import io
    import json
    import tarfile

    def blob(data: bytes) -> "tuple[str, bytes]":
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for entry in sorted(dirs) + sorted(files):
                full = os.path.join(top, entry)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    layer_digest, layer = blob(layer_buf.getvalue())
    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Cmd": cmd, "Env": env or ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
                   **({"Entrypoint": entrypoint} if entrypoint else {})},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "tests/runtime/kit.py oci_archive"}],
    }
    config_digest, config_bytes = blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config_bytes)
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = blob(json.dumps(manifest, sort_keys=True).encode())
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    with tarfile.open(out_path, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
            add("blobs/sha256/" + digest.split(":", 1)[1], data)
    return out_path


def bridge_conflist(rt, network: str, subnet: str, bridge: str, exclude: "list[str] | None" = None,
                    ipam_type: str = "cni-ipam", file_name: "str | None" = None) -> str:
    """``rt.netconfpath/<network>.conflist``: bridge (gateway, no masquerade) + cni-ipam (or
    ``ipam_type``) on ``rt.data_dir``."""
    ipam = {
        "type": ipam_type, "dataDir": rt.data_dir, "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]
    }
    if exclude:
        ipam["exclude"] = exclude
    bridge_plugin = {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "ipam": ipam}
    path = rt.conflist(network, [bridge_plugin])
    if file_name:
        os.rename(path, os.path.join(rt.netconfpath, file_name))
        path = os.path.join(rt.netconfpath, file_name)
    return path


def lossy_ipam(rt, name: str, real: str) -> str:
    """``rt.bin_dir/<name>``: an IPAM plugin that passes every call to ``real`` except DEL while
    ``<name>.lose-del`` exists beside it (then it answers success and does nothing): a DEL that
    never reached the plugin, the way a crashed runtime or a removed sandbox loses one."""
    path = os.path.join(rt.bin_dir, name)
    marker = path + ".lose-del"
    with open(path, "w") as fh:
        fh.write(f'#!/bin/sh\nif [ "$CNI_COMMAND" = DEL ] && [ -e {shlex.quote(marker)} ]; then exit 0; fi\n'
                 f'exec {shlex.quote(real)} "$@"\n')
    os.chmod(path, 0o755)
    return marker


def gc_report(mounts, rt, netns: str, *args: str, env: "dict | None" = None) -> "tuple[int, dict, str]":
    """``cni-ipam gc --json --data-dir <rt.data_dir> --pidns-is-node ARGS`` inside the runtime's
    namespaces (the world's PID namespace holds every process that could hold a namespace).  Returns
    (exit status, the JSON report, stderr)."""
    import json

    proc = run(mounts.argv([rt.plugin_exe, "gc", "--json", "--data-dir", rt.data_dir, "--pidns-is-node", *args],
                           netns=netns),
               env=env or clean_env(), timeout=120)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"gc did not print JSON ({proc.returncode}): {proc.stdout!r} {proc.stderr!r}") from None
    return proc.returncode, doc, proc.stderr


def verdicts(doc: dict, network: str) -> "dict[str, tuple[str, str, str]]":
    """containerID -> (state, reason, detail) of one network in a gc JSON report."""
    rows = doc["networks"].get(network, {}).get("reservations", [])
    return {row["containerID"]: (row["state"], row["reason"], row["detail"]) for row in rows}
