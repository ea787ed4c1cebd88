"""Real-runtime test kit: network namespaces, the libcni driver, a plugin dir holding ``cni-ipam``.

A ``Runtime`` is one test's world: a temp dir with ``net/`` (NETCONFPATH), ``bin/`` (a ``cni-ipam``
executable: ``CNI_IPAM_EXE`` when set, else a wrapper running ``python -m cni_ipam`` from this
tree), ``cache/`` (libcni's result cache) and ``data/`` (the IPAM dataDir), plus every network
namespace it made.  Everything carries the ``rt-`` prefix and a per-run token, so two runs (for
instance one against a PyInstaller build) never collide; the fixture removes it all.

The main plugin runs inside a dedicated host namespace (``rt-<token>-host``): the bridge, its
gateway address and IP forwarding live there, never in the machine's root namespace, so all traffic
stays between the test's own namespaces.

Use from a test module::

    from tests.integration.netns import runtime  # noqa: F401  (the fixture)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from tests.helpers import CNI_BIN_DIR, ROOT, is_root

DRIVER = os.path.join(ROOT, "tests", "libcni-driver", "cnidriver")
NETNS_DIR = "/var/run/netns"
PREFIX = "rt-"


def skip_reason() -> "str | None":
    """Why the real-runtime tests cannot run here, or None."""
    if not is_root():
        return "needs root for network namespaces (run as root: sudo scripts/test.sh)"
    if not os.access(DRIVER, os.X_OK):
        return f"libcni driver not built: {DRIVER} (bash scripts/setup.d/20-libcni-driver.sh)"
    for plugin in ("bridge", "macvlan", "host-local"):
        if not os.access(os.path.join(CNI_BIN_DIR, plugin), os.X_OK):
            return f"{CNI_BIN_DIR}/{plugin} missing (apt-get install containernetworking-plugins)"
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install iproute2 iputils-ping)"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 missing (python3 -m pip install pyroute2)"
    return None


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def write_plugin_exe(bin_dir: str) -> str:
    """``bin_dir/cni-ipam``: a symlink to CNI_IPAM_EXE, or a wrapper for ``python -m cni_ipam``."""
    path = os.path.join(bin_dir, "cni-ipam")
    exe = os.environ.get("CNI_IPAM_EXE")
    if exe and len(shlex.split(exe)) == 1 and os.path.isfile(shlex.split(exe)[0]):
        os.symlink(os.path.abspath(shlex.split(exe)[0]), path)
        return path
    # sys.executable as it is: resolving a venv's python link would run the base interpreter without
    # the venv's packages (pyroute2 for CHECK)
    argv = exe if exe else f"{shlex.quote(os.path.abspath(sys.executable))} -m cni_ipam"
    body = f'PYTHONPATH={shlex.quote(ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}\nexport PYTHONPATH\n'
    # A runtime (podman, containerd) starts its plugins with an environment of its own: the bytecode
    # prefix that keeps __pycache__/ out of the checkout is written into the wrapper.
    prefix = os.environ.get("PYTHONPYCACHEPREFIX")
    if prefix:
        body += f'PYTHONPYCACHEPREFIX=${{PYTHONPYCACHEPREFIX:-{shlex.quote(prefix)}}}\nexport PYTHONPYCACHEPREFIX\n'
    body += f'exec {argv} "$@"\n'
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


class DriverResult:
    """One cnidriver run: exit status, stdout parsed as JSON when it is, stderr."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        try:
            self.json = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"DriverResult(rc={self.rc}, out={self.out.strip()!r}, err={self.err.strip()!r})"


class Runtime:
    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:6]
        self.dir = tempfile.mkdtemp(prefix=f"{PREFIX}{self.token}-")
        for sub in ("net", "bin", "cache", "data"):
            os.makedirs(os.path.join(self.dir, sub))
        self.netconfpath = os.path.join(self.dir, "net")
        self.bin_dir = os.path.join(self.dir, "bin")
        self.cache_dir = os.path.join(self.dir, "cache")
        self.data_dir = os.path.join(self.dir, "data")
        self.plugin_exe = write_plugin_exe(self.bin_dir)
        self.namespaces: "list[str]" = []

    # ------------------------------------------------------------------ namespaces
    def ns_name(self, tag: str) -> str:
        return f"{PREFIX}{self.token}-{tag}"

    def netns(self, tag: str) -> str:
        """Create the namespace ``rt-<token>-<tag>`` with lo up; returns its name."""
        name = self.ns_name(tag)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    @staticmethod
    def path(name: str) -> str:
        return os.path.join(NETNS_DIR, name)

    def cleanup(self) -> None:
        # Containers first (their veths die with them), host namespaces last.
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ configs
    def conflist(self, name: str, plugins: list, cni_version: str = "1.0.0") -> str:
        path = os.path.join(self.netconfpath, f"{name}.conflist")
        with open(path, "w") as fh:
            json.dump({"cniVersion": cni_version, "name": name, "plugins": plugins}, fh, indent=2)
        return path

    def network_dir(self, network: str) -> str:
        return os.path.join(self.data_dir, network)

    def reservations(self, network: str) -> "dict[str, str]":
        """Reservation files of ``network``: address -> file content (``containerID\\r\\nifname``)."""
        import ipaddress

        out = {}
        net_dir = self.network_dir(network)
        if not os.path.isdir(net_dir):
            return out
        for entry in os.listdir(net_dir):
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                continue
            with open(os.path.join(net_dir, entry), newline="") as fh:
                out[entry] = fh.read()
        return out

    # ------------------------------------------------------------------ the driver
    def driver_env(self, container_id=None, ifname=None, cni_args=None, cap_args=None, extra=None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") and k not in ("CAP_ARGS", "NETCONFPATH")}
        env.update(
            NETCONFPATH=self.netconfpath,
            CNI_PATH=os.pathsep.join((self.bin_dir, CNI_BIN_DIR)),
            CNI_CACHE_DIR=self.cache_dir,
        )
        if container_id is not None:
            env["CNI_CONTAINERID"] = container_id
        if ifname is not None:
            env["CNI_IFNAME"] = ifname
        if cni_args is not None:
            env["CNI_ARGS"] = cni_args
        if cap_args is not None:
            env["CAP_ARGS"] = cap_args if isinstance(cap_args, str) else json.dumps(cap_args)
        if extra:
            env.update(extra)
        return env

    def driver_argv(self, verb: str, network: str, container: "str | None" = None, host: "str | None" = None) -> list:
        argv = [DRIVER, verb, network] + ([self.path(container)] if container else [])
        return (["ip", "netns", "exec", host] if host else []) + argv

    def driver(self, verb: str, network: str, container: "str | None" = None, host: "str | None" = None,
               timeout: float = 120, **env_kw) -> DriverResult:
        """Run ``cnidriver <verb> <network> /var/run/netns/<container>`` inside namespace ``host``."""
        proc = subprocess.run(
            self.driver_argv(verb, network, container, host),
            env=self.driver_env(**env_kw), capture_output=True, text=True, timeout=timeout,
        )
        return DriverResult(proc)


@pytest.fixture
def runtime():
    from tests.helpers import real_runtime

    yield from real_runtime(skip_reason, Runtime, Runtime.cleanup)


# ---------------------------------------------------------------------- reading a namespace
def link_addresses(ns: str, ifname: str) -> "list":
    """``ip_interface`` objects on ``ifname`` in namespace ``ns`` (link-local IPv6 excluded)."""
    import ipaddress

    from pyroute2 import IPRoute

    with IPRoute(netns=Runtime.path(ns), flags=0) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        assert idx, f"interface {ifname} not found in netns {ns}"
        out = []
        for msg in ipr.get_addr(index=idx[0]):
            iface = ipaddress.ip_interface(f"{msg.get('IFA_LOCAL') or msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            if not iface.ip.is_link_local:
                out.append(iface)
        return out


def link_index(ns: str, ifname: str) -> int:
    from pyroute2 import IPRoute

    with IPRoute(netns=Runtime.path(ns), flags=0) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        assert idx, f"interface {ifname} not found in netns {ns}"
        return idx[0]


def routes(ns: str, family: int = 2) -> "list[tuple]":
    """Main-table unicast routes in ``ns``: (dst CIDR, gateway or None, output ifname)."""
    import ipaddress

    from pyroute2 import IPRoute

    with IPRoute(netns=Runtime.path(ns), flags=0) as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
        out = []
        for msg in ipr.get_routes(family=family, table=254):
            if msg["type"] != 1:  # RTN_UNICAST
                continue
            dst = msg.get("RTA_DST")
            dst = "0.0.0.0" if dst is None and family == 2 else ("::" if dst is None else dst)
            net = str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))
            out.append((net, msg.get("RTA_GATEWAY"), names.get(msg.get("RTA_OIF"))))
        return out


def remove_address(ns: str, ifname: str, cidr: str) -> None:
    sh("ip", "-n", ns, "addr", "del", cidr, "dev", ifname)


def ping(ns: str, address: str, count: int = 1, wait: float = 2) -> bool:
    """One bounded ping from namespace ``ns``; True when a reply came back."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count), "-W", str(int(wait)), address],
        capture_output=True, timeout=wait * count + 10,
    )
    return proc.returncode == 0


def ping_until(ns: str, address: str, deadline: float = 5) -> bool:
    """Ping until a reply or ``deadline`` seconds (IPv6 DAD and bridge learning take a moment)."""
    end = time.monotonic() + deadline
    while True:
        if ping(ns, address, wait=1):
            return True
        if time.monotonic() > end:
            return False


def make_master(ns: str, name: str) -> str:
    """A carrier-up master for macvlan in ``ns``: a dummy, or an ifb where dummy is not built in."""
    kind = "dummy"
    if sh("ip", "-n", ns, "link", "add", name, "type", "dummy", check=False).returncode != 0:
        kind = "ifb"
        sh("ip", "-n", ns, "link", "add", name, "type", "ifb")
    sh("ip", "-n", ns, "link", "set", name, "up")
    return kind
