"""The shipped executable on the node systems people run: one static file that needs nothing of the root.

Each test copies the executable (the session fixture ``built_binary``: scripts/build.sh) to
/opt/cni/bin/cni-ipam inside a root of its own (tests/portable/roots.py) and runs it with chroot:

* ``debian11``: a Debian 11 root (glibc 2.31, older than the build machine's 2.36);
* ``busybox``: nothing but a static busybox: no libc, no dynamic loader at all.

In both: VERSION, the bare command and ``cni-ipam version``; ADD, CHECK (which enters the container's
network namespace through pyroute2), GC, STATUS and DEL on a private dataDir, with a namespace the
test makes (bound into the root); the admin ``gc``; a cluster-pool ADD and ``cni-ipam pool show`` and
``pool gc --kubeconfig`` over TLS with client certificates to a loopback etcd; a usePodCidr ADD over
TLS to the stand-in Kubernetes API server (tests/integration/podcidr_apiserver.py).  Plus the arm64
build (scripts/build.sh --arch arm64) under qemu-aarch64-static: VERSION, ADD, DEL, GC.

Needs root (chroot, mounts, namespaces); the Debian 11 root comes from the cache that
scripts/setup.d/11-portable-roots.sh fills (made here when missing).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import tempfile
import uuid

import pytest

from tests.cluster.conftest import etcd_tls  # noqa: F401  (the session fixture: one TLS etcd member)
from tests.helpers import ROOT, is_root
from tests.integration.podcidr_apiserver import ApiServer, Pki, write_kubeconfig
from tests.portable.roots import PLUGIN, Root

ROOT_KINDS = ["debian11", "busybox"]
DATA = "/var/lib/cni-test"
SUBNET = "10.93.0.0/24"


@pytest.fixture(autouse=True)
def _root(need_root):
    for tool in ("chroot", "mount", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@pytest.fixture(params=ROOT_KINDS)
def root(request, built_binary):
    r = Root(request.param, built_binary)
    yield r
    r.close()


@pytest.fixture
def netns():
    """A network namespace with an eth0 (up); removed afterwards."""
    name = f"cnichr-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        # a veth pair inside the namespace (no dummy driver needed)
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"], check=True,
                       timeout=30)
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def conf(version="1.1.0", **ipam):
    body = {"type": "cni-ipam", "dataDir": DATA, "ranges": [[{"subnet": SUBNET}]]}
    body.update(ipam)
    return {"cniVersion": version, "name": "chroot-net", "type": "bridge", "ipam": body}


def cni(root_or_argv, command, netconf=None, cid="chr-c1", netns_path="/var/run/netns/none", env=None, stdin=None):
    """One CNI call: (rc, parsed stdout, stderr)."""
    call_env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_NETNS": netns_path,
                "CNI_PATH": "/opt/cni/bin"}
    call_env.update(env or {})
    call_env = {k: v for k, v in call_env.items() if v is not None}
    data = stdin if stdin is not None else json.dumps(netconf or {}).encode()
    if isinstance(root_or_argv, Root):
        proc = root_or_argv.run([PLUGIN], env=call_env, stdin=data)
    else:
        proc = subprocess.run(root_or_argv, input=data, env={"PATH": "/usr/bin:/bin", **call_env},
                              capture_output=True, timeout=120)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert "Traceback" not in out + err, out + err
    return proc.returncode, (json.loads(out) if out.strip() else None), err


def admin(root, *args, env=None):
    proc = root.run([PLUGIN, *args], env=env)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert "Traceback" not in out + err, out + err
    return proc.returncode, out, err


def reservations(root, network="chroot-net"):
    d = root.inside(os.path.join(DATA, network))
    return sorted(n for n in os.listdir(d) if n[0].isdigit()) if os.path.isdir(d) else []


# ------------------------------------------------------------------ the file itself
def elf_facts(path):
    """(machine, has PT_INTERP, has PT_DYNAMIC) of a 64-bit little-endian ELF file."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1, f"{path}: not a 64-bit LE ELF file"
        machine = struct.unpack_from("<H", head, 18)[0]
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        fh.seek(phoff)
        types = [struct.unpack_from("<I", fh.read(phentsize))[0] for _ in range(phnum)]
    return machine, 3 in types, 2 in types


def test_the_executable_is_one_static_file(built_binary):
    machine, interp, dynamic = elf_facts(built_binary)
    assert machine == 62 and not interp and not dynamic, (machine, interp, dynamic)  # x86-64, no loader, no libs
    import zipfile

    with zipfile.ZipFile(built_binary) as zf:  # the module archive appended to it
        names = set(zf.namelist())
    assert {"cni_ipam/__init__.pyc", "cni_ipam/admin/cli.pyc", "ssl.pyc", "pyroute2/__init__.pyc"} <= names


# ------------------------------------------------------------------ both roots
def test_version_bare_and_admin_version(root):
    from cni_ipam import __version__

    if root.kind == "busybox":
        assert not root.libc_files(), root.libc_files()
        assert root.run(["/bin/busybox", "true"]).returncode == 0
    rc, out, err = cni(root, "VERSION", stdin=b"")
    assert rc == 0 and "1.1.0" in out["supportedVersions"], (out, err)
    proc = root.run([PLUGIN])  # bare: what it is, on stderr, exit 0 (as python -m cni_ipam)
    assert proc.returncode == 0 and f"cni-ipam {__version__}" in proc.stderr.decode(), proc
    rc, out, err = admin(root, "version")
    assert rc == 0 and out.strip() == f"cni-ipam {__version__}", (out, err)
    rc, out, err = admin(root, "--help")
    assert rc == 0 and "pool" in out, (out, err)


def test_plugin_verbs_in_a_namespace(root, netns):
    root.bind(f"/run/netns/{netns}")
    ns_path = f"/run/netns/{netns}"
    rc, out, err = cni(root, "ADD", conf(), cid="chr-c1", netns_path=ns_path)
    assert rc == 0, (out, err)
    addr = ipaddress.ip_interface(out["ips"][0]["address"])
    assert addr.ip in ipaddress.ip_network(SUBNET)
    prev = dict(conf(), prevResult=out)
    # CHECK enters the namespace (pyroute2 through ctypes): the address is not on eth0 yet ...
    rc, out2, err = cni(root, "CHECK", prev, cid="chr-c1", netns_path=ns_path)
    assert rc == 1 and out2["code"] == 105 and str(addr.ip) in out2["msg"], (out2, err)
    subprocess.run(["ip", "-n", netns, "addr", "add", str(addr), "dev", "eth0"], check=True, timeout=30)
    rc, out2, err = cni(root, "CHECK", prev, cid="chr-c1", netns_path=ns_path)  # ... now it is
    assert rc == 0 and out2 is None, (out2, err)
    rc, out2, err = cni(root, "STATUS", conf())
    assert rc == 0, (out2, err)
    rc, out2, err = cni(root, "ADD", conf(), cid="chr-c2", netns_path=ns_path)
    assert rc == 0 and len(reservations(root)) == 2, (out2, err)
    gc_conf = dict(conf(), **{"cni.dev/valid-attachments": [{"containerID": "chr-c1", "ifname": "eth0"}]})
    rc, out2, err = cni(root, "GC", gc_conf, cid=None)
    assert rc == 0 and reservations(root) == [str(addr.ip)], (out2, err, reservations(root))
    rc, out2, err = admin(root, "gc", "--data-dir", DATA, "--json")
    assert rc == 0 and isinstance(json.loads(out2), dict), (out2, err)
    rc, out2, err = cni(root, "DEL", conf(), cid="chr-c1", netns_path=ns_path)
    assert rc == 0 and reservations(root) == [], (out2, err)


def test_etcd_pool_over_tls_plugin_and_admin(root, etcd_tls):  # noqa: F811
    """A cluster-pool ADD (plugin path) and `pool show` / `pool gc --kubeconfig` (admin) over TLS with
    client certificates, from inside the root: the CA and the client pair are copied in."""
    pki = etcd_tls.pki
    files = {}
    for name, src in (("ca.crt", pki.ca), ("client.crt", pki.client_cert), ("client.key", pki.client_key)):
        with open(src, "rb") as fh:
            files[name] = root.write(f"/etc/cni-ipam/etcd/{name}", fh.read())
    prefix = f"/cni-ipam-chroot/{uuid.uuid4().hex[:10]}"
    netconf = {"cniVersion": "1.1.0", "name": "chroot-pool", "type": "bridge",
               "ipam": {"type": "cni-ipam", "dataDir": DATA, "ranges": [[{"subnet": "10.94.0.0/22"}]],
                        "pool": {"name": "p", "blockSize": 28, "nodeName": "chr-node",
                                 "etcd": {"endpoints": etcd_tls.endpoints, "prefix": prefix, "timeout": 5.0,
                                          "caFile": files["ca.crt"], "certFile": files["client.crt"],
                                          "keyFile": files["client.key"]}}}}
    conf_path = root.write("/etc/cni/net.d/10-pool.conf", json.dumps(netconf).encode(), 0o644)
    rc, out, err = cni(root, "ADD", netconf, cid="chr-p1")
    assert rc == 0, (out, err)
    assert ipaddress.ip_interface(out["ips"][0]["address"]).ip in ipaddress.ip_network("10.94.0.0/22")
    rc, text, err = admin(root, "pool", "show", "--json", "--conf", conf_path)
    assert rc == 0, (text, err)
    shown = json.loads(text)
    assert [n["node"] for n in shown["pools"][0]["nodes"]] == ["chr-node"], shown
    # the same through the API server: `pool gc` asks it (TLS + token) whether chr-node still exists
    pki_dir = tempfile.mkdtemp(prefix="cnichr-pki-")
    try:
        kpki = Pki(pki_dir)
        with ApiServer(kpki, nodes={"chr-node": ["10.244.9.0/24"]}, token="chr-token") as api:
            with open(kpki.ca_file, "rb") as fh:
                ca = root.write("/etc/kubernetes/ca.crt", fh.read())
            kc_host = write_kubeconfig(os.path.join(pki_dir, "kc"), api.url, ca_file=ca, token="chr-token")
            with open(kc_host, "rb") as fh:
                kc = root.write("/etc/kubernetes/kubelet.conf", fh.read())
            rc, text, err = admin(root, "pool", "gc", "--json", "--conf", conf_path, "--kubeconfig", kc)
            assert rc == 0, (text, err)
            assert api.node_requests() >= 1
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)
    rc, out, err = cni(root, "DEL", netconf, cid="chr-p1")
    assert rc == 0, (out, err)


def test_pod_cidr_from_the_kubernetes_api_over_tls(root):
    pki_dir = tempfile.mkdtemp(prefix="cnichr-pki-")
    try:
        pki = Pki(pki_dir)
        with ApiServer(pki, nodes={"chr-node": ["10.244.7.0/24"]}, token="chr-token") as api:
            with open(pki.ca_file, "rb") as fh:
                ca = root.write("/etc/kubernetes/pki/ca.crt", fh.read())
            kc_host = write_kubeconfig(os.path.join(pki_dir, "kc"), api.url, ca_file=ca, token="chr-token")
            with open(kc_host, "rb") as fh:
                kc = root.write("/etc/kubernetes/kubelet.conf", fh.read())
            netconf = conf(ranges=[[{"subnet": "usePodCidr"}]], podCidr={"kubeconfig": kc, "nodeName": "chr-node"})
            rc, out, err = cni(root, "ADD", netconf, cid="chr-k1")
            assert rc == 0, (out, err)
            assert ipaddress.ip_interface(out["ips"][0]["address"]).ip in ipaddress.ip_network("10.244.7.0/24")
            assert api.node_requests() == 1
            rc, out, err = cni(root, "DEL", netconf, cid="chr-k1")
            assert rc == 0, (out, err)
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)


# ------------------------------------------------------------------ arm64 under qemu-user-static
@pytest.fixture(scope="module")
def arm64_exe():
    given = os.environ.get("CNI_IPAM_BUILT_ARM64")
    if given:
        yield given
        return
    if not is_root():
        pytest.skip("needs root")
    tmp = tempfile.mkdtemp(prefix="cnichr-arm64-")
    try:
        argv = ["bash", os.path.join(ROOT, "scripts", "build.sh"), "--arch", "arm64", "--dist", tmp]
        if not os.path.exists(os.path.join(ROOT, "build", "embed-venv", ".cni-ipam-bundle")):
            argv += ["--venv", os.path.join(tmp, "venv")]  # nothing written into the checkout
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_arm64_under_qemu(arm64_exe):
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        pytest.fail("qemu-aarch64-static is missing (apt-get install qemu-user-static; "
                    "scripts/build.sh --arch arm64 installs it)")
    machine, interp, dynamic = elf_facts(arm64_exe)
    assert machine == 183 and not interp and not dynamic, (machine, interp, dynamic)  # AArch64, static
    data = tempfile.mkdtemp(prefix="cnichr-arm64-data-")
    try:
        argv = [qemu, arm64_exe]
        netconf = {"cniVersion": "1.1.0", "name": "arm-net", "type": "bridge",
                   "ipam": {"type": "cni-ipam", "dataDir": data, "ranges": [[{"subnet": SUBNET}]]}}
        rc, out, err = cni(argv, "VERSION", stdin=b"")
        assert rc == 0 and "1.1.0" in out["supportedVersions"], (out, err)
        proc = subprocess.run([qemu, arm64_exe, "version"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith("cni-ipam "), proc
        got = []
        for cid in ("arm-c1", "arm-c2"):
            rc, out, err = cni(argv, "ADD", netconf, cid=cid)
            assert rc == 0, (out, err)
            got.append(ipaddress.ip_interface(out["ips"][0]["address"]).ip)
        assert len(set(got)) == 2
        files = lambda: sorted(n for n in os.listdir(os.path.join(data, "arm-net")) if n[0].isdigit())  # noqa: E731
        assert files() == sorted(str(ip) for ip in got)
        gc_conf = dict(netconf, **{"cni.dev/valid-attachments": [{"containerID": "arm-c1", "ifname": "eth0"}]})
        rc, out, err = cni(argv, "GC", gc_conf, cid=None)
        assert rc == 0 and files() == [str(got[0])], (out, err, files())
        rc, out, err = cni(argv, "DEL", netconf, cid="arm-c1")
        assert rc == 0 and files() == [], (out, err)
    finally:
        shutil.rmtree(data, ignore_errors=True)
