"""The node image (deploy/image/build-image.sh) built offline with podman, run against temp host dirs.

The executable is tests/integration/test_built_binary.py's, built at most once per test run (the session
fixture ``built_binary`` in tests/conftest.py: CNI_IPAM_BUILT_EXE, a fresh dist/cni-ipam, else
scripts/build.sh into a temp dir); the image goes into the podman world's private store.  Each
container runs with --network none and a temporary "host" directory mounted
where the DaemonSet (deploy/cni-ipam.yaml) mounts the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import pytest

from tests.helpers import ROOT, run_cni, run_plugin
from tests.runtime import kit

TAG = "localhost/cni-ipam-test:1"


@pytest.fixture(scope="module")
def image(podman_world, built_binary):
    w = podman_world
    started = time.monotonic()
    proc = kit.run(["bash", os.path.join(ROOT, "deploy", "image", "build-image.sh"), "--exe", built_binary,
                    "--tag", TAG], env=dict(w.env, PODMAN=" ".join(w.argv())), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == TAG
    print(f"image built in {time.monotonic() - started:.1f}s")
    return TAG


@pytest.fixture
def host(podman_world):
    d = tempfile.mkdtemp(prefix="rt-image-host-", dir=podman_world.rt.dir)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _run(w, image, *args, mounts=(), env=(), opts=()):
    argv = ["run", "--rm", "--network", "none", *w.ulimits, *opts]
    for src, dst in mounts:
        argv += ["-v", f"{src}:{dst}"]
    for item in env:
        argv += ["-e", item]
    return w.podman(*argv, image, *args, timeout=120)


def _conf(data_dir):
    return {"cniVersion": "1.0.0", "name": "imgnet", "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": data_dir, "ranges": [[{"subnet": "10.236.0.0/24"}]]}}


def test_install_copies_a_working_plugin_into_the_host_dir(podman_world, image, host):
    w = podman_world
    opt = os.path.join(host, "opt", "cni")
    os.makedirs(opt)
    out = _run(w, image, "install", mounts=[(opt, "/opt/cni")])
    assert out.returncode == 0, out.stderr
    installed = os.path.join(opt, "bin", "cni-ipam")
    # one regular file in the host's bin directory, nothing beside it (tests/portable/test_deploy.py)
    assert os.listdir(opt) == ["bin"] and os.listdir(os.path.join(opt, "bin")) == ["cni-ipam"]
    assert not os.path.islink(installed)
    rc, version, raw, err = run_cni([installed], "VERSION", {}, stdin=b"")
    assert rc == 0 and "1.0.0" in version["supportedVersions"], (raw, err)
    data = os.path.join(host, "data")
    rc, result, raw, err = run_cni([installed], "ADD", _conf(data), container_id="img-c1")
    assert rc == 0, (raw, err)
    assert result["ips"][0]["address"] == "10.236.0.2/24"
    with open(os.path.join(data, "imgnet", "10.236.0.2"), newline="") as fh:
        assert fh.read() == "img-c1\r\neth0"
    # and again: idempotent, the plugin still answers
    again = _run(w, image, "install", mounts=[(opt, "/opt/cni")])
    assert again.returncode == 0, again.stderr
    assert run_cni([installed], "VERSION", {}, stdin=b"")[0] == 0
    # the image's own entry point answers VERSION too
    out = _run(w, image, "version")
    assert json.loads(out.stdout)["supportedVersions"]


def test_install_refuses_a_foreign_cni_ipam(podman_world, image, host):
    w = podman_world
    opt = os.path.join(host, "opt", "cni")
    os.makedirs(os.path.join(opt, "bin"))
    foreign = os.path.join(opt, "bin", "cni-ipam")
    with open(foreign, "w") as fh:
        fh.write("#!/bin/sh\necho someone else's cni-ipam\n")
    os.chmod(foreign, 0o755)
    out = _run(w, image, "install", mounts=[(opt, "/opt/cni")])
    assert out.returncode != 0
    assert "not a cni-ipam install" in out.stderr or "not ours" in out.stderr or "refus" in out.stderr, out.stderr
    with open(foreign) as fh:
        assert "someone else" in fh.read()
    assert not os.path.islink(foreign)


def test_reclaim_pass_releases_stranded_and_writes_textfile_metrics(podman_world, image, host):
    w = podman_world
    data, textfile = os.path.join(host, "networks"), os.path.join(host, "textfile")
    os.makedirs(textfile)
    # a reservation whose namespace is gone (the DEL never came): a real namespace, so its identity is
    # recorded at ADD, deleted afterwards
    gone = w.rt.netns("img-gone")
    rc, _, raw, err = run_plugin("ADD", _conf(data), container_id="gone-1", netns=w.rt.path(gone))
    assert rc == 0, (raw, err)
    kit.run(["ip", "netns", "del", gone], check=True)
    # As the DaemonSet runs it (hostPID, capabilities: all dropped but SYS_PTRACE and DAC_READ_SEARCH):
    # the container shares the podman world's PID namespace, which is not the initial one, and has no
    # SYS_ADMIN: the kernel cannot answer for the namespace there, and a walk of /proc proves nothing,
    # so the reservation is kept as unknown (only a runtime or a previous boot could release it).
    out = _run(w, image, "reclaim", mounts=[(data, "/var/lib/cni/networks"), (textfile, "/textfile")],
               env=["RECLAIM_ITERATIONS=1", "GC_ARGS=--grace 0 --pidns-is-node", "TEXTFILE_DIR=/textfile",
                    "METRICS_ARGS=--conf-dir="],
               opts=("--pid", "host", "--cap-drop", "ALL", "--cap-add", "SYS_PTRACE,DAC_READ_SEARCH"))
    assert out.returncode == 0, out.stderr
    assert [f for f in os.listdir(os.path.join(data, "imgnet")) if f.startswith("10.")] == ["10.236.0.2"], out.stdout
    assert "unknown" in out.stdout and "netns-unsure" in out.stdout, out.stdout
    metrics = "".join(open(os.path.join(textfile, f)).read() for f in os.listdir(textfile) if f.endswith(".prom"))
    assert "cni_ipam_gc_last_run_timestamp_seconds" in metrics, metrics[:500]


def test_install_writes_the_usepodcidr_kubeconfig_from_the_service_account(podman_world, image, host):
    import yaml

    w = podman_world
    opt, net, sa = (os.path.join(host, p) for p in ("opt", "net", "sa"))
    for d in (opt, net, sa):
        os.makedirs(d)
    with open(os.path.join(sa, "token"), "w") as fh:
        fh.write("tok-123")
    with open(os.path.join(sa, "ca.crt"), "w") as fh:
        fh.write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = _run(w, image, "install",
               mounts=[(opt, "/opt/cni"), (net, "/etc/cni/net.d"),
                       (sa, "/var/run/secrets/kubernetes.io/serviceaccount")],
               env=["KUBECONFIG_OUT=/etc/cni/net.d/cni-ipam.d/cni-ipam.kubeconfig",
                    "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443"])
    assert out.returncode == 0, out.stderr
    path = os.path.join(net, "cni-ipam.d", "cni-ipam.kubeconfig")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as fh:
        conf = yaml.safe_load(fh)
    assert conf["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert conf["users"][0]["user"]["token"] == "tok-123"
