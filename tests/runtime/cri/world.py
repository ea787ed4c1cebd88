"""One containerd CRI world per test module: Debian's containerd 1.6 with its CRI plugin, called
over its socket the way kubelet calls it (RunPodSandbox, StopPodSandbox, RemovePodSandbox,
PodSandboxStatus, ListPodSandbox), with our own ``cri_api.proto`` (grpcio).

Isolation: containerd gets its own ``root``, ``state``, gRPC and ttrpc sockets in the test's temp
dir; the CRI plugin gets its own CNI ``bin_dir`` and ``conf_dir`` there (one conflist: bridge +
cni-ipam), its netns bind mounts under the state dir (``netns_mounts_under_state_dir``) and the
pods a cgroup parent of their own.  containerd runs in a private mount and PID namespace
(``kit.PrivateMounts``) inside the test's own host network namespace: libcni's cache
``/var/lib/cni`` is a bind mount of the temp dir there (over a private tmpfs ``/var/lib``), ``/run``
(containerd's shim sockets, runc state) a tmpfs, and ``/opt/containerd`` is moved into the temp dir
by the config.  containerd is a separate process in that namespace (not its init), so a test can
SIGKILL it and start it again while the pods and their shims live on.

The sandbox image is ``pause.c`` built statically here, packed by ``kit.oci_archive`` and imported
into the ``k8s.io`` namespace with ``ctr images import``: nothing is pulled.  This machine's root
lacks CAP_SYS_RESOURCE, hence ``restrict_oom_score_adj = true``.

The conflist's IPAM is ``lossy-cni-ipam`` (``kit.lossy_ipam``): cni-ipam itself, except that a DEL
is swallowed while the marker file ``lose_del`` exists (a DEL the runtime lost).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid

from tests.runtime import kit
from tests.runtime import cri as cri_kit

NETWORK = "crinet"
SUBNET = "10.236.0.0/24"
IMAGE = "localhost/cni-ipam-test/pause:1"
K8S_NS = "k8s.io"  # the containerd namespace of the CRI plugin


def skip_reason() -> "str | None":
    reason = kit.skip_reason("containerd CRI, runc, network namespaces", "containerd", "containerd-shim-runc-v2",
                             "ctr", "runc", "gcc")
    return reason or cri_kit.grpc_missing()


class CriWorld(kit.World):
    network = NETWORK

    def _setup(self) -> None:
        import grpc  # type: ignore[import-untyped]

        self.proc: "subprocess.Popen | None" = None
        self.channel = None
        d = self.rt.dir
        for sub in ("ctrd/root", "ctrd/state", "ctrd/opt", "cnicache", "cnibin", "pods"):
            os.makedirs(os.path.join(d, sub))
        self.sock = os.path.join(d, "ctrd", "sock")
        self.log = os.path.join(d, "ctrd", "log")
        self.cgroup_parent = f"cniipam-cri-{self.rt.token}"
        cnibin = os.path.join(d, "cnibin")
        self.lose_del = kit.lossy_ipam(self.rt, "lossy-cni-ipam", self.rt.plugin_exe)
        for plugin in ("bridge", "loopback", "host-local"):
            os.symlink(os.path.join("/usr/lib/cni", plugin), os.path.join(cnibin, plugin))
        for plugin in ("cni-ipam", "lossy-cni-ipam"):
            os.symlink(os.path.join(self.rt.bin_dir, plugin), os.path.join(cnibin, plugin))
        self.host = self.rt.netns("host")
        self.bridge = f"rt{self.rt.token}cr"
        kit.bridge_conflist(self.rt, NETWORK, SUBNET, self.bridge, ipam_type="lossy-cni-ipam")
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        self.config = os.path.join(d, "ctrd", "config.toml")
        with open(self.config, "w") as fh:
            fh.write(
                "version = 2\n"
                f'root = "{d}/ctrd/root"\n'
                f'state = "{d}/ctrd/state"\n'
                f'[grpc]\n  address = "{self.sock}"\n'
                f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
                f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/ctrd/opt"\n'
                f"{cri}\n"
                f'  sandbox_image = "{IMAGE}"\n'
                "  restrict_oom_score_adj = true\n"
                "  netns_mounts_under_state_dir = true\n"
                "  disable_apparmor = true\n"
                '  stream_server_address = "127.0.0.1"\n'
                '  stream_server_port = "0"\n'
                f"{cri[:-1]}.cni]\n"
                f'  bin_dir = "{cnibin}"\n'
                f'  conf_dir = "{self.rt.netconfpath}"\n'
                "  max_conf_num = 1\n"
            )
        self.mounts = kit.PrivateMounts(
            [
                # libcni's cache: a bind mount of the temp dir over a private /var/lib (nothing made on the host)
                "mount -t tmpfs -o mode=0755 tmpfs /var/lib",
                "mkdir /var/lib/cni",
                f"mount --bind {d}/cnicache /var/lib/cni",
                # the world's own /run: containerd's shim sockets and runc state (/run/containerd)
                "mount -t tmpfs -o mode=0755 tmpfs /run",
            ],
            log_path=self.log,
            netns=self.host,
        )
        self.start_containerd()
        pause_root = cri_kit.build_pause(os.path.join(d, "pause"))
        archive = kit.oci_archive(pause_root, os.path.join(d, "pause-oci.tar"), IMAGE, [], entrypoint=["/pause"])
        kit.run(self.mounts.argv(["ctr", "--address", self.sock, "-n", K8S_NS, "images", "import", archive],
                                 netns=self.host), env=kit.clean_env(), timeout=120, check=True)
        self.pb, stubs = cri_kit.load_api(os.path.join(d, "proto"))
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.stub = stubs.RuntimeServiceStub(self.channel)
        self.wait_cri()

    # ------------------------------------------------------------------ containerd
    def start_containerd(self) -> None:
        assert self.mounts is not None
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.mounts.argv(["containerd", "--config", self.config], netns=self.host),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=kit.clean_env())
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while not self._accepts():  # a socket file left by a killed containerd does not count
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"containerd did not start (socket {self.sock}):\n{self.log_tail()}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.sock)
                return True
            except OSError:
                return False

    def containerd_pid(self) -> int:
        """containerd's pid (seen from here): the member of the world whose name is containerd."""
        assert self.mounts is not None
        for pid in self.mounts.members():
            try:
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() == "containerd":
                        return pid
            except OSError:
                continue
        raise AssertionError("no containerd in the world")

    def kill_containerd(self) -> None:
        """SIGKILL containerd (not its shims, not the pods): a crash."""
        os.kill(self.containerd_pid(), signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(20)  # its socket file stays behind, as after a crash: connecting is refused

    def wait_cri(self, timeout: float = 60) -> None:
        """Until the CRI answers and its network is ready (it has read our conflist)."""
        deadline = time.monotonic() + timeout
        last: "Exception | None" = None
        while time.monotonic() < deadline:
            try:
                self.stub.Version(self.pb.VersionRequest(), timeout=5)
                return
            except Exception as exc:  # grpc.RpcError until the CRI plugin serves
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"the CRI did not answer: {last}\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as fh:
                return fh.read()[-4000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ the kubelet's calls
    def run_pod(self, name: str, namespace: str = "default", uid: "str | None" = None, timeout: float = 120) -> str:
        pb = self.pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid or str(uuid.uuid4()), namespace=namespace, attempt=0),
            hostname=name,
            log_directory=os.path.join(self.rt.dir, "pods", name),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace},
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"/{self.cgroup_parent}"),
        )
        return self.stub.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=timeout).pod_sandbox_id

    def stop_pod(self, sandbox_id: str) -> None:
        self.stub.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)

    def remove_pod(self, sandbox_id: str) -> None:
        self.stub.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)

    def status(self, sandbox_id: str, verbose: bool = False):
        return self.stub.PodSandboxStatus(self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose),
                                          timeout=30)

    def pod_ip(self, sandbox_id: str) -> str:
        return self.status(sandbox_id).status.network.ip

    def pod_info(self, sandbox_id: str) -> dict:
        """containerd's verbose sandbox info: pid, netns path, ..."""
        return json.loads(self.status(sandbox_id, verbose=True).info["info"])

    def listed(self) -> "dict[str, int]":
        """sandbox ID -> state, as ListPodSandbox answers."""
        items = self.stub.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=30).items
        return {item.id: item.state for item in items}

    # ------------------------------------------------------------------ cni-ipam
    def gc(self, *args: str) -> "tuple[int, dict, str]":
        """``cni-ipam gc --json`` in the world's PID namespace (``--pidns-is-node``): no kernel
        namespace handles there (nsfs file handles decode only in the initial PID namespace)."""
        return kit.gc_report(self.mounts, self.rt, self.host, *args)

    def gc_host_pid(self, *args: str) -> "tuple[int, dict, str]":
        """``cni-ipam gc --json`` as a hostPID DaemonSet runs it: in the machine's (initial) PID
        namespace, where the kernel answers for namespace ids, with the world's mounts (the pods'
        netns files) and a /proc of that PID namespace, mounted in a throwaway mount namespace."""
        assert self.mounts is not None
        gc = shlex.join([self.rt.plugin_exe, "gc", "--json", "--data-dir", self.rt.data_dir, *args])
        argv = ["nsenter", f"--mount=/proc/{self.mounts.pid}/ns/mnt", f"--net=/var/run/netns/{self.host}",
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-ec", f"mount -t proc proc /proc\nexec {gc}"]
        proc = kit.run(argv, env=kit.clean_env(), timeout=120)
        try:
            return proc.returncode, json.loads(proc.stdout), proc.stderr
        except ValueError:
            raise AssertionError(f"gc printed no JSON ({proc.returncode}): {proc.stdout!r} {proc.stderr!r}") from None

    def in_subnet(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET)

    def close(self) -> None:
        try:
            if self.channel is not None:
                try:
                    for sandbox_id in self.listed():
                        try:
                            self.stop_pod(sandbox_id)
                            self.remove_pod(sandbox_id)
                        except Exception:  # teardown goes on: the namespace kill below ends everything
                            pass
                except Exception:
                    pass
                self.channel.close()
            if self.mounts is not None:
                self.mounts.close()  # kills containerd, shims and pods (all in the world's PID namespace)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
            if self.proc is not None:
                self.proc.wait(10)
        finally:
            self._remove_cgroups()
            self.rt.cleanup()

    def _remove_cgroups(self) -> None:
        """runc's cgroups of pods killed by the teardown (not deleted by runc): empty by now."""
        base = "/sys/fs/cgroup"
        try:
            controllers = os.listdir(base)
        except OSError:
            return
        for ctl in controllers:
            top = os.path.join(base, ctl, self.cgroup_parent)
            if not os.path.isdir(top):
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda e: -len(e[0])):
                for _ in range(20):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)  # the last task is still leaving
