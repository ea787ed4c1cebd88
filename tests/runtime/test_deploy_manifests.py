"""deploy/cni-ipam.yaml: valid YAML, and consistent with the image and scripts/install.sh."""

import os
import re

import pytest

from tests.helpers import ROOT

yaml = pytest.importorskip("yaml")

MANIFEST = os.path.join(ROOT, "deploy", "cni-ipam.yaml")
ENTRY = os.path.join(ROOT, "deploy", "image", "cni-ipam-node")
BUILD = os.path.join(ROOT, "deploy", "image", "build-image.sh")
INSTALL = os.path.join(ROOT, "scripts", "install.sh")


@pytest.fixture(scope="module")
def docs():
    with open(MANIFEST) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def _one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} documents"
    return found[0]


def _env(container):
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _mounts(pod, container):
    """mountPath -> (hostPath path, mount entry) for one container."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in container["volumeMounts"]:
        out[m["mountPath"]] = (volumes[m["name"]]["hostPath"]["path"], m)
    return out


def test_kinds_and_rbac(docs):
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
    role = _one(docs, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    binding, sa, ds = _one(docs, "ClusterRoleBinding"), _one(docs, "ServiceAccount"), _one(docs, "DaemonSet")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert ds["metadata"]["namespace"] == sa["metadata"]["namespace"]


def test_image_is_the_one_build_image_tags(docs):
    with open(os.path.join(ROOT, "cni_ipam", "__init__.py")) as fh:
        version = re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)
    with open(BUILD) as fh:
        default_tag = re.search(r'^TAG="([^"]+)"', fh.read(), re.M).group(1).replace("$VERSION", version)
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert images == {default_tag}


def test_install_paths_match_install_sh_and_the_entry_point(docs):
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    install = pod["initContainers"][0]
    assert install["args"] == ["install"]
    env = _env(install)
    bin_dir, lib_dir = env["CNI_BIN_DIR"], env["CNI_LIB_DIR"]
    with open(INSTALL) as fh:
        script = fh.read()
    with open(ENTRY) as fh:
        entry = fh.read()
    # the entry point passes them as install.sh flags that exist
    for flag in ("--bin-dir", "--lib-dir", "--from"):
        assert f"{flag})" in script and flag in entry
    # install.sh's default lib dir is <bin>/../cni-ipam.d; the manifest says the same
    assert lib_dir == os.path.join(os.path.dirname(bin_dir), "cni-ipam.d")
    # install.sh links bin/cni-ipam to an absolute lib-dir path: both must be seen at the host's own paths
    mounts = _mounts(pod, install)
    for path in (bin_dir, lib_dir):
        covering = [mp for mp in mounts if path == mp or path.startswith(mp.rstrip("/") + "/")]
        assert covering, f"{path} is not on a host mount"
        host_path, _ = mounts[covering[0]]
        assert host_path == covering[0], f"{covering[0]} is mounted from {host_path}: the symlink would dangle"
    kubeconfig = env["KUBECONFIG_OUT"]
    assert any(kubeconfig.startswith(mp + "/") for mp in mounts)


def test_reclaim_container_sees_what_liveness_needs(docs):
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    reclaim = pod["containers"][0]
    assert reclaim["args"] == ["reclaim"]
    assert pod["hostPID"] is True  # /proc/<pid>/ns/net of the host's processes
    env = _env(reclaim)
    mounts = _mounts(pod, reclaim)
    assert mounts[env["CNI_DATA_DIR"]][0] == env["CNI_DATA_DIR"] == "/var/lib/cni/networks"
    host, netns = mounts["/run/netns"]
    assert host == "/run/netns" and netns["mountPropagation"] == "HostToContainer" and netns.get("readOnly")
    assert env["TEXTFILE_DIR"] in mounts
    sock = re.search(r"--runtime cri:(\S+)", env["GC_ARGS"]).group(1)
    assert mounts[sock][0] == sock
    assert int(env["RECLAIM_INTERVAL"]) >= 60
    for var in ("RECLAIM_INTERVAL", "GC_ARGS", "TEXTFILE_DIR", "CNI_DATA_DIR", "METRICS_ARGS", "KUBECONFIG_OUT"):
        with open(ENTRY) as fh:
            assert var in fh.read(), f"{var} is not read by the entry point"
