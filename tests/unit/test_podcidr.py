"""usePodCidr without an API server: settings, node name, static, flannel, source order, the cache,
node objects, kubeconfig and in-cluster credential parsing (podcidr.py, kubeapi.py)."""

import ipaddress
import json
import os
import subprocess
import sys
import time

import pytest

from cni_ipam.plugin import netconf as config
from cni_ipam.podcidr import kubeapi
from cni_ipam.podcidr import sources as podcidr
from cni_ipam.errors import INVALID_CONFIG, PODCIDR_UNAVAILABLE, CniError
from tests.helpers import uncovered_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NET = ipaddress.ip_network


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("KUBERNETES_NODE_NAME", "NODE_NAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    podcidr.forget()
    yield
    podcidr.forget()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "podcidr-data"
    d.mkdir()
    return str(d)


def resolve(placeholder, pod, data_dir):
    podcidr.forget()
    return podcidr.subnet_for(placeholder, {"podCidr": pod}, data_dir)


def code_of(fn, *args):
    with pytest.raises(CniError) as info:
        fn(*args)
    return info.value


# ---------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "pod, key",
    [
        ("x", "ipam.podCidr"),
        ({"kubeConfig": "/x"}, "ipam.podCidr"),
        ({"sources": ["kubernetes", "etcd"]}, "ipam.podCidr.sources"),
        ({"sources": []}, "ipam.podCidr.sources"),
        ({"sources": ["static", "static"]}, "ipam.podCidr.sources"),
        ({"kubeconfig": "relative/kc"}, "ipam.podCidr.kubeconfig"),
        ({"nodeName": "Node_A"}, "ipam.podCidr.nodeName"),
        ({"cacheTTL": -1}, "ipam.podCidr.cacheTTL"),
        ({"timeout": 0}, "ipam.podCidr.timeout"),
        ({"timeout": True}, "ipam.podCidr.timeout"),
        ({"static": ["10.1.0.0/24"], "staticFile": "/x"}, "ipam.podCidr.staticFile"),
        ({"static": ["10.1.0.1/24"]}, "ipam.podCidr.static"),
        ({"static": ["10.1.0.0/24", "10.2.0.0/24"]}, "ipam.podCidr.static"),
        ({"static": [5]}, "ipam.podCidr.static"),
    ],
)
def test_bad_settings_are_code_7_naming_the_key(pod, key):
    err = code_of(podcidr.parse_settings, {"podCidr": pod})
    assert err.code == INVALID_CONFIG
    assert key in err.msg + err.details


def test_defaults():
    s = podcidr.parse_settings({})
    assert s.sources == ("kubernetes", "static", "flannel")
    assert s.cacheTTL == podcidr.DEFAULT_CACHE_TTL == 300
    assert s.flannelSubnetEnv == "/run/flannel/subnet.env"
    assert s.kubeconfig is None


def test_node_name_order(monkeypatch):
    host = os.uname().nodename.lower()
    if podcidr.is_node_name(host):
        assert podcidr.node_name(podcidr.parse_settings({})) == host
    monkeypatch.setenv("NODE_NAME", "from-node-name")
    assert podcidr.node_name(podcidr.parse_settings({})) == "from-node-name"
    monkeypatch.setenv("KUBERNETES_NODE_NAME", "from-kubernetes-node-name")
    assert podcidr.node_name(podcidr.parse_settings({})) == "from-kubernetes-node-name"
    assert podcidr.node_name(podcidr.parse_settings({"podCidr": {"nodeName": "from-config"}})) == "from-config"
    monkeypatch.setenv("KUBERNETES_NODE_NAME", "../etc")
    err = code_of(podcidr.node_name, podcidr.parse_settings({}))
    assert err.code == INVALID_CONFIG and "KUBERNETES_NODE_NAME" in err.msg


# ---------------------------------------------------------------------------------- static
def test_static_list_by_family(data_dir):
    pod = {"sources": ["static"], "nodeName": "podcidr-n1", "static": ["10.244.7.0/24", "fd00:7::/64"]}
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.7.0/24")
    assert resolve("usePodCidrIPv6", pod, data_dir) == NET("fd00:7::/64")
    assert not os.path.exists(os.path.join(data_dir, podcidr.CACHE_DIR)), "static answers are never cached"


def test_static_string_and_missing_family_names_the_node(data_dir):
    pod = {"sources": ["static"], "nodeName": "podcidr-n1", "static": "10.244.8.0/24"}
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.8.0/24")
    err = code_of(resolve, "usePodCidrIPv6", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE
    assert "podcidr-n1" in err.msg and "IPv6" in err.msg and "10.244.8.0/24" in err.msg


def test_static_file(tmp_path, data_dir):
    f = tmp_path / "pod-cidr"
    f.write_text("# kubelet --pod-cidr\n10.244.9.0/24   # v4\nfd00:9::/64\n")
    pod = {"nodeName": "podcidr-n1", "staticFile": str(f), "sources": ["static"]}
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.9.0/24")
    assert resolve("usePodCidrIPv6", pod, data_dir) == NET("fd00:9::/64")
    f.write_text("not-a-cidr\n")
    err = code_of(resolve, "usePodCidr", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE and str(f) in err.msg
    f.unlink()
    err = code_of(resolve, "usePodCidr", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE and str(f) in err.msg


# ---------------------------------------------------------------------------------- flannel
FLANNEL_ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


def test_flannel_subnet_env(tmp_path, data_dir):
    f = tmp_path / "subnet.env"
    f.write_text(FLANNEL_ENV)
    pod = {"nodeName": "podcidr-n1", "flannelSubnetEnv": str(f), "sources": ["flannel"]}
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.1.0/24")  # flannel writes the bridge address
    err = code_of(resolve, "usePodCidrIPv6", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE and "podcidr-n1" in err.msg and str(f) in err.msg
    f.write_text(FLANNEL_ENV + "FLANNEL_IPV6_NETWORK=fd00:244::/56\nFLANNEL_IPV6_SUBNET=fd00:244:0:3::1/64\n")
    assert resolve("usePodCidrIPv6", pod, data_dir) == NET("fd00:244:0:3::/64")
    f.write_text("FLANNEL_MTU=1450\n")
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE
    f.write_text("FLANNEL_SUBNET=fd00::1/64\n")
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE


# ---------------------------------------------------------------------------------- source order
def test_first_configured_source_answers(tmp_path, data_dir):
    f = tmp_path / "subnet.env"
    f.write_text(FLANNEL_ENV)
    base = {"nodeName": "podcidr-n1", "flannelSubnetEnv": str(f), "static": ["10.50.0.0/24"]}
    assert resolve("usePodCidr", dict(base, sources=["static", "flannel"]), data_dir) == NET("10.50.0.0/24")
    assert resolve("usePodCidr", dict(base, sources=["flannel", "static"]), data_dir) == NET("10.244.1.0/24")
    # without static, the flannel file is next; an absent kubernetes source is skipped
    pod = {"nodeName": "podcidr-n1", "flannelSubnetEnv": str(f), "sources": ["kubernetes", "static", "flannel"]}
    if not os.path.exists(podcidr.DEFAULT_KUBECONFIG):
        assert resolve("usePodCidr", pod, data_dir) == NET("10.244.1.0/24")


def test_no_source_is_104_listing_what_was_tried(tmp_path, data_dir):
    pod = {
        "nodeName": "podcidr-n1",
        "flannelSubnetEnv": str(tmp_path / "absent.env"),
        "serviceAccountDir": str(tmp_path / "sa"),
    }
    if os.path.exists(podcidr.DEFAULT_KUBECONFIG):
        pytest.skip(f"{podcidr.DEFAULT_KUBECONFIG} exists on this machine")
    err = code_of(resolve, "usePodCidr", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE
    for part in ("podcidr-n1", podcidr.DEFAULT_KUBECONFIG, "static", "absent.env"):
        assert part in err.msg


def test_configured_source_that_fails_does_not_fall_through(tmp_path, data_dir):
    f = tmp_path / "subnet.env"
    f.write_text(FLANNEL_ENV)
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "missing.kubeconfig"), "flannelSubnetEnv": str(f)}
    err = code_of(resolve, "usePodCidr", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE and "missing.kubeconfig" in err.msg


# ---------------------------------------------------------------------------------- cache
def write_cache(data_dir, node, cidrs, refresh_in, fetched_ago=10.0):
    now = time.time()
    path = podcidr.cache_path(data_dir, node)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(
            {
                "node": node,
                "podCIDRs": cidrs,
                "origin": "test",
                "fetchedAt": now - fetched_ago,
                "refreshAfter": now + refresh_in,
            },
            fh,
        )
    return path


def test_fresh_cache_is_used_without_reading_the_kubeconfig(tmp_path, data_dir):
    write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24", "fd00:5::/64"], refresh_in=100)
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "does-not-exist")}
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.5.0/24")
    assert resolve("usePodCidrIPv6", pod, data_dir) == NET("fd00:5::/64")


def test_expired_cache_is_refreshed_and_kept_when_refresh_fails(tmp_path, data_dir, capfd):
    path = write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=-1)
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "does-not-exist"), "cacheTTL": 600}
    before = time.time()
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.5.0/24")
    assert "does-not-exist" in capfd.readouterr().err  # the warning says why
    data = json.load(open(path))
    assert "does-not-exist" in data["lastError"]
    # the next refresh attempt waits RETRY_AFTER_FAILURE (30 s), not the full TTL
    assert before + podcidr.RETRY_AFTER_FAILURE - 1 <= data["refreshAfter"] <= time.time() + podcidr.RETRY_AFTER_FAILURE
    assert data["podCIDRs"] == ["10.244.5.0/24"]


def test_cache_without_the_family_or_damaged_or_from_the_future_is_not_trusted(tmp_path, data_dir):
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "does-not-exist")}
    write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=100)
    assert code_of(resolve, "usePodCidrIPv6", pod, data_dir).code == PODCIDR_UNAVAILABLE
    path = write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=100, fetched_ago=-3600)  # clock went back
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.5.0/24")  # a refresh was tried (and failed) ...
    assert "does-not-exist" in json.load(open(path))["lastError"]  # ... instead of trusting refreshAfter
    with open(podcidr.cache_path(data_dir, "podcidr-n1"), "w") as fh:
        fh.write("{not json")
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE
    # a cache of another node is never used
    write_cache(data_dir, "podcidr-n2", ["10.244.6.0/24"], refresh_in=100)
    os.rename(podcidr.cache_path(data_dir, "podcidr-n2"), podcidr.cache_path(data_dir, "podcidr-n1"))
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE


def test_cache_hit_imports_no_yaml_tls_or_http(tmp_path, data_dir):
    """The ADD path with a fresh cache: config + podcidr only (checked in a fresh interpreter)."""
    write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=100)
    conf = {"podCidr": {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "kc")}, "dataDir": data_dir}
    code = (
        "import sys, json; from cni_ipam.podcidr import sources as podcidr;"
        f"print(podcidr.subnet_for('usePodCidr', json.loads({json.dumps(json.dumps(conf))}), {data_dir!r}));"
        "print(sorted(m for m in ('yaml', 'ssl', 'http.client', 'cni_ipam.podcidr.kubeapi', 'socket')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, env=uncovered_env()
    ).stdout.split("\n")
    assert out[0] == "10.244.5.0/24"
    assert out[1] == "[]"


def test_legacy_top_level_subnet_and_range_keys(data_dir):
    conf = {
        "name": "podcidr-net",
        "cniVersion": "1.0.0",
        "ipam": {
            "type": "cni-ipam",
            "dataDir": data_dir,
            "subnet": "usePodCidr",
            "rangeStart": "10.244.7.100",
            "rangeEnd": "10.244.7.200",
            "gateway": "10.244.7.254",
            "exclude": ["10.244.7.100/30"],
            "podCidr": {"sources": ["static"], "static": ["10.244.7.0/24"], "nodeName": "podcidr-n1"},
        },
    }
    cfg = config.load(conf, {})
    (rng,) = cfg.range_sets[0].ranges
    assert rng.subnet == NET("10.244.7.0/24")
    assert str(rng.range_start) == "10.244.7.100" and str(rng.range_end) == "10.244.7.200"
    assert str(rng.gateway) == "10.244.7.254"
    assert rng.is_excluded(ipaddress.ip_address("10.244.7.103")) and not rng.is_excluded(
        ipaddress.ip_address("10.244.7.104")
    )
    conf["ipam"]["rangeStart"] = "10.9.9.9"  # does not fit the resolved pod CIDR
    with pytest.raises(CniError) as info:
        config.load(conf, {})
    assert info.value.code == INVALID_CONFIG and "rangeStart" in info.value.msg and "10.244.7.0/24" in info.value.msg


# ---------------------------------------------------------------------------------- node objects
def test_pod_cidrs_prefers_the_list():
    obj = {"spec": {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.2.0.0/24", "fd00:2::/64"]}}
    assert kubeapi.pod_cidrs(obj, "n") == [NET("10.2.0.0/24"), NET("fd00:2::/64")]
    assert kubeapi.pod_cidrs({"spec": {"podCIDR": "10.1.0.0/24"}}, "n") == [NET("10.1.0.0/24")]
    assert kubeapi.pod_cidrs({"spec": {}}, "n") == []
    assert kubeapi.pod_cidrs({}, "n") == []
    err = code_of(kubeapi.pod_cidrs, {"spec": {"podCIDRs": ["bogus"]}}, "podcidr-n9")
    assert err.code == PODCIDR_UNAVAILABLE and "podcidr-n9" in err.msg


# ---------------------------------------------------------------------------------- kubeconfig
def kubeconfig(tmp_path, cluster, user, name="kc", current=True):
    import yaml

    doc = {
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    }
    if current:
        doc["current-context"] = "ctx"
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return str(p)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tests.integration.podcidr_apiserver import Pki

    return Pki(str(tmp_path_factory.mktemp("podcidr-pki")))


def test_kubeconfig_relative_paths_prefix_and_token_file(tmp_path, pki):
    import shutil

    shutil.copy(pki.ca_file, tmp_path / "ca.crt")
    (tmp_path / "token").write_text("  relative-token\n")
    path = kubeconfig(
        tmp_path,
        {
            "server": "https://api.example:6443/k8s/clusters/c-1/",
            "certificate-authority": "ca.crt",
            "tls-server-name": "kubernetes",
        },
        {"tokenFile": "token"},
        current=False,
    )
    tgt = kubeapi.from_kubeconfig(path, str(tmp_path / "scratch"))
    assert (tgt.host, tgt.port, tgt.prefix, tgt.server_name) == ("api.example", 6443, "/k8s/clusters/c-1", "kubernetes")
    assert tgt.auth == "Bearer relative-token"
    assert path in tgt.origin and "user u" in tgt.origin
    assert len(tgt.context.get_ca_certs()) == 1  # only the kubeconfig's CA is trusted
    # a token beats tokenFile, as in kubectl
    path = kubeconfig(
        tmp_path,
        {
            "server": "https://10.0.0.1",
            "certificate-authority-data": __import__("base64").b64encode(pki.ca_pem).decode(),
        },
        {"token": "inline", "tokenFile": "token"},
    )
    tgt = kubeapi.from_kubeconfig(path, str(tmp_path / "scratch"))
    assert tgt.auth == "Bearer inline" and tgt.port == 443


@pytest.mark.parametrize(
    "cluster, user, words",
    [
        ({"server": "http://10.0.0.1:8080"}, {"token": "t"}, "https://"),
        ({"server": "https://10.0.0.1", "insecure-skip-tls-verify": True}, {"token": "t"}, "insecure-skip-tls-verify"),
        ({"server": "https://10.0.0.1"}, {"exec": {"command": "aws"}}, "exec is not supported"),
        ({"server": "https://10.0.0.1"}, {"auth-provider": {"name": "gcp"}}, "auth-provider"),
        ({"server": "https://10.0.0.1"}, {"username": "a", "password": "b"}, "username"),
        ({"server": "https://10.0.0.1"}, {"client-certificate": "/x.crt"}, "without a key"),
        (
            {"server": "https://10.0.0.1", "certificate-authority": "/nonexistent/ca.crt"},
            {"token": "t"},
            "certificate-authority /nonexistent/ca.crt",
        ),
        (
            {"server": "https://10.0.0.1", "certificate-authority-data": "bm90IGEgY2VydA=="},
            {"token": "t"},
            "certificate-authority-data",
        ),
        ({"server": "https://10.0.0.1"}, {"tokenFile": "/nonexistent/token"}, "/nonexistent/token"),
        ({}, {"token": "t"}, "no server"),
    ],
)
def test_kubeconfig_errors_name_the_file(tmp_path, cluster, user, words):
    path = kubeconfig(tmp_path, cluster, user)
    err = code_of(kubeapi.from_kubeconfig, path, str(tmp_path / "scratch"))
    assert err.code == PODCIDR_UNAVAILABLE
    assert words in err.msg and path in err.msg + err.details


def test_kubeconfig_not_yaml(tmp_path):
    p = tmp_path / "kc"
    p.write_text("clusters: [unclosed\n")
    err = code_of(kubeapi.from_kubeconfig, str(p), str(tmp_path))
    assert err.code == PODCIDR_UNAVAILABLE and "not valid YAML" in err.msg and str(p) in err.msg


def test_inline_client_key_never_touches_the_disk(tmp_path, pki):
    client = next(iter(pki.clients.values()))
    import base64

    path = kubeconfig(tmp_path, {"server": "https://127.0.0.1:1", "certificate-authority": pki.ca_file},
                      {"client-certificate-data": base64.b64encode(client["cert_pem"]).decode(),
                       "client-key-data": base64.b64encode(client["key_pem"]).decode()})
    scratch = tmp_path / "scratch"
    kubeapi.from_kubeconfig(path, str(scratch))
    assert not scratch.exists()  # loaded through memfd


def test_inline_client_key_fallback_stays_in_the_data_dir(tmp_path, pki, monkeypatch):
    """Without memfd the key goes to a 0600 file in <dataDir>/.cni-ipam-podcidr, removed at once."""
    client = next(iter(pki.clients.values()))
    import base64

    monkeypatch.delattr(os, "memfd_create", raising=False)
    path = kubeconfig(
        tmp_path,
        {"server": "https://127.0.0.1:1", "certificate-authority": pki.ca_file},
        {"client-certificate": client["cert_file"], "client-key-data": base64.b64encode(client["key_pem"]).decode()},
    )
    scratch = tmp_path / "data" / podcidr.CACHE_DIR
    kubeapi.from_kubeconfig(path, str(scratch))
    assert scratch.is_dir() and list(scratch.iterdir()) == []
    # a wrong key is reported, still without leftovers
    other = kubeconfig(
        tmp_path,
        {"server": "https://127.0.0.1:1"},
        {"client-certificate": client["cert_file"], "client-key-data": base64.b64encode(b"junk").decode()},
        name="kc2",
    )
    err = code_of(kubeapi.from_kubeconfig, other, str(scratch))
    assert err.code == PODCIDR_UNAVAILABLE and "client certificate" in err.msg
    assert list(scratch.iterdir()) == []


def test_in_cluster_target(tmp_path, pki, monkeypatch):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "ca.crt").write_bytes(pki.ca_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "8443")
    tgt = kubeapi.in_cluster(str(sa))
    assert tgt.server == "https://[fd00::1]:8443" and tgt.auth == "Bearer sa-token" and tgt.port == 8443
    assert podcidr._kube_target(podcidr.parse_settings({"podCidr": {"serviceAccountDir": str(sa)}})) == (
        ("kubeconfig", podcidr.DEFAULT_KUBECONFIG)
        if os.path.exists(podcidr.DEFAULT_KUBECONFIG)
        else ("in-cluster", str(sa))
    )
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "http")
    assert code_of(kubeapi.in_cluster, str(sa)).code == PODCIDR_UNAVAILABLE


# ---------------------------------------------------------------------------------- examples
EXAMPLES = os.path.join(ROOT, "conf-examples", "podcidr")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(EXAMPLES) if n.endswith((".conf", ".conflist"))))
def test_examples_are_valid(name, data_dir):
    """Every example's podCidr settings are valid, and the rest loads once a pod CIDR is known."""
    doc = json.load(open(os.path.join(EXAMPLES, name)))
    plugins = doc.get("plugins") or [doc]
    ipams = [p["ipam"] for p in plugins if "ipam" in p]
    assert ipams
    for ipam in ipams:
        podcidr.parse_settings(ipam)
        ipam = dict(ipam, dataDir=data_dir, podCidr={"sources": ["static"], "nodeName": "podcidr-n1",
                                                    "static": ["10.244.1.0/24", "fd00:10:244:1::/64"]})
        cfg = config.load({"cniVersion": doc["cniVersion"], "name": doc["name"], "ipam": ipam}, {})
        assert all(
            r.subnet in (NET("10.244.1.0/24"), NET("fd00:10:244:1::/64")) for s in cfg.range_sets for r in s.ranges
        )


def test_example_kubeconfig_and_rbac_are_yaml():
    import yaml

    kc = yaml.safe_load(open(os.path.join(EXAMPLES, "cni-ipam.kubeconfig.example")))
    assert kc["current-context"] == kc["contexts"][0]["name"]
    rules = [d for d in yaml.safe_load_all(open(os.path.join(EXAMPLES, "rbac.yaml"))) if d["kind"] == "ClusterRole"][0][
        "rules"
    ]
    assert rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]


# ---------------------------------------------------------------------------------- hostile files
def test_static_file_content_is_never_quoted(tmp_path, data_dir):
    """main quoted the first line of a root-only staticFile in the error."""
    f = tmp_path / "secret-file"
    f.write_text("SECRET-FIRST-LINE-do-not-print\n")
    for pod in ({"nodeName": "podcidr-n1", "staticFile": str(f), "sources": ["static"]},
                {"nodeName": "podcidr-n1", "flannelSubnetEnv": str(f), "sources": ["flannel"]}):
        err = code_of(resolve, "usePodCidr", pod, data_dir)
        assert err.code == PODCIDR_UNAVAILABLE and str(f) in err.msg and "SECRET" not in err.msg + err.details
    f.write_text("FLANNEL_SUBNET=SECRET-VALUE/24\n")
    err = code_of(
        resolve, "usePodCidr", {"nodeName": "podcidr-n1", "flannelSubnetEnv": str(f), "sources": ["flannel"]}, data_dir
    )
    assert err.code == PODCIDR_UNAVAILABLE and "SECRET" not in err.msg + err.details


@pytest.mark.parametrize(
    "cidrs", [["0.0.0.0/0"], ["::/0"], ["::ffff:10.1.0.0/120"], ["10.1.0.0/24", "10.2.0.0/24"], ["169.254.0.0/16"]]
)
def test_static_sources_refuse_what_no_node_can_hold(tmp_path, data_dir, cidrs):
    err = code_of(podcidr.parse_settings, {"podCidr": {"static": cidrs}})
    assert err.code == INVALID_CONFIG
    f = tmp_path / "pod-cidr"
    f.write_text("\n".join(cidrs) + "\n")
    err = code_of(
        resolve, "usePodCidr", {"nodeName": "podcidr-n1", "staticFile": str(f), "sources": ["static"]}, data_dir
    )
    assert err.code == PODCIDR_UNAVAILABLE and str(f) in err.msg


def run_resolve(data_dir, pod, placeholder="usePodCidr", timeout=10):
    code = (
        "import json, sys; from cni_ipam.podcidr import sources as podcidr; from cni_ipam.errors import CniError\n"
        "try: print(podcidr.subnet_for(sys.argv[1], {'podCidr': json.loads(sys.argv[2])}, sys.argv[3]))\n"
        "except CniError as e: print('error', e.code, e.msg)\n"
    )
    try:
        return subprocess.run([sys.executable, "-c", code, placeholder, json.dumps(pod), data_dir], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("hung")


@pytest.mark.parametrize("what", ["staticFile", "flannelSubnetEnv"])
def test_fifo_source_files_fail_at_once(tmp_path, data_dir, what):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pod = {"nodeName": "podcidr-n1", what: str(fifo), "sources": ["static" if what == "staticFile" else "flannel"]}
    proc = run_resolve(data_dir, pod)
    assert proc.stdout.startswith("error 104") and "not a regular file" in proc.stdout, proc.stdout + proc.stderr


def test_cache_fifo_is_not_a_hang(tmp_path, data_dir):
    """A FIFO planted as the cache file hung main (blocking open); now it is no cache."""
    path = podcidr.cache_path(data_dir, "podcidr-n1")
    os.makedirs(os.path.dirname(path))
    os.mkfifo(path)
    proc = run_resolve(data_dir, {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "absent")})
    assert proc.stdout.startswith("error 104") and "absent" in proc.stdout, proc.stdout + proc.stderr


def test_cache_symlinks_are_never_followed(tmp_path, data_dir):
    """A cache directory (or file) replaced by a symlink: main wrote the cache to the link's target
    (root writing outside the dataDir) and read whatever it pointed to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(data_dir, podcidr.CACHE_DIR))
    now = time.time()
    (outside / "podcidr-n1.json").write_text(
        json.dumps({"node": "podcidr-n1", "podCIDRs": ["10.66.0.0/24"], "fetchedAt": now, "refreshAfter": now + 100})
    )
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "absent")}
    err = code_of(resolve, "usePodCidr", pod, data_dir)
    assert err.code == PODCIDR_UNAVAILABLE  # the planted answer was not read
    podcidr.write_cache(
        podcidr.cache_path(data_dir, "podcidr-n2"),
        {"node": "podcidr-n2", "podCIDRs": ["10.1.0.0/24"], "fetchedAt": now, "refreshAfter": now},
    )
    assert sorted(os.listdir(outside)) == ["podcidr-n1.json"]  # nothing written through the link
    # a symlinked cache file: not read, and replaced (not written through) by the next write
    os.unlink(os.path.join(data_dir, podcidr.CACHE_DIR))
    target = outside / "podcidr-n1.json"
    path = podcidr.cache_path(data_dir, "podcidr-n1")
    os.makedirs(os.path.dirname(path))
    os.symlink(target, path)
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE
    before = target.read_text()
    podcidr.write_cache(
        path, {"node": "podcidr-n1", "podCIDRs": ["10.1.0.0/24"], "fetchedAt": now, "refreshAfter": now}
    )
    assert target.read_text() == before and not os.path.islink(path)


def test_oversized_or_special_cache_is_not_read(tmp_path, data_dir):
    path = write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=100)
    record = json.load(open(path))
    with open(path, "w") as fh:  # valid JSON, padded beyond the 64 KiB a cache file can be
        fh.write(" " * (podcidr.MAX_CACHE_FILE + 1) + json.dumps(record))
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "absent")}
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE
    os.unlink(path)
    os.mkdir(path)  # a directory in the way
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE
    os.rmdir(path)
    write_cache(data_dir, "podcidr-n1", ["0.0.0.0/0"], refresh_in=100)  # tampered: refused, refreshed
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE


def test_cache_directory_of_another_user_is_ignored(tmp_path, data_dir, capfd):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown to another uid")
    write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=100)
    cache_dir = os.path.join(data_dir, podcidr.CACHE_DIR)
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "absent")}
    assert resolve("usePodCidr", pod, data_dir) == NET("10.244.5.0/24")
    os.chown(cache_dir, 12345, 12345)  # a less-privileged user made it first
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE
    assert "owned by another user" in capfd.readouterr().err
    os.chown(cache_dir, 0, 0)
    os.chmod(cache_dir, 0o777)
    assert code_of(resolve, "usePodCidr", pod, data_dir).code == PODCIDR_UNAVAILABLE


def test_cache_dirs_and_file_modes_whatever_the_umask(tmp_path):
    """umask 000: main made the dataDir, its parents and the cache dir 0777 (host-local: 0755)."""
    data_dir = str(tmp_path / "p1" / "p2" / "data")
    path = podcidr.cache_path(data_dir, "podcidr-n1")
    old = os.umask(0)
    try:
        podcidr.write_cache(
            path, {"node": "podcidr-n1", "podCIDRs": ["10.1.0.0/24"], "fetchedAt": 1.0, "refreshAfter": 2.0}
        )
    finally:
        os.umask(old)
    for d in (tmp_path / "p1", tmp_path / "p1" / "p2", data_dir, os.path.dirname(path)):
        assert os.stat(d).st_mode & 0o777 == 0o755, d
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(os.listdir(os.path.dirname(path))) == ["podcidr-n1.json"]  # no temporary file left


# ------------------------------------------------------------------ the offline resolver (admin commands)
def offline(placeholder, pod, data_dir):
    return podcidr.offline_subnet_for(placeholder, {"podCidr": pod}, data_dir)


def listing(data_dir):
    out = {}
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            out[os.path.join(root, name)] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


def test_offline_resolver_answers_from_the_cache_even_stale_and_writes_nothing(tmp_path, data_dir):
    pod = {"nodeName": "podcidr-n1", "kubeconfig": str(tmp_path / "kc-never-read")}
    err = code_of(offline, "usePodCidr", pod, data_dir)  # no cache: not known offline, nothing created
    assert (
        isinstance(err, podcidr.NotKnownOffline) and err.code == PODCIDR_UNAVAILABLE and "not known offline" in err.msg
    )
    assert os.listdir(data_dir) == []
    write_cache(data_dir, "podcidr-n1", ["10.244.5.0/24"], refresh_in=-100)  # stale: an ADD would refresh
    before = listing(data_dir)
    assert offline("usePodCidr", pod, data_dir) == NET("10.244.5.0/24")
    err = code_of(offline, "usePodCidrIPv6", pod, data_dir)  # the cache has no IPv6: an ADD would ask
    assert isinstance(err, podcidr.NotKnownOffline) and "IPv6" in err.msg
    assert listing(data_dir) == before
    with open(podcidr.cache_path(data_dir, "podcidr-n1"), "w") as fh:
        fh.write("{damaged")
    assert isinstance(code_of(offline, "usePodCidr", pod, data_dir), podcidr.NotKnownOffline)
    assert podcidr._memo == {}  # nothing memoised: a later ADD in the same process decides afresh


def test_offline_resolver_static_flannel_and_bad_keys_as_the_plugin(tmp_path, data_dir):
    assert offline("usePodCidr", {"static": ["10.88.5.0/28"], "nodeName": "podcidr-n1"}, data_dir) == NET(
        "10.88.5.0/28"
    )
    env = tmp_path / "subnet.env"
    env.write_text("FLANNEL_SUBNET=10.244.77.1/24\n")
    pod = {"sources": ["flannel"], "flannelSubnetEnv": str(env), "nodeName": "podcidr-n1"}
    assert offline("usePodCidr", pod, data_dir) == NET("10.244.77.0/24")
    err = code_of(offline, "usePodCidrIPv6", pod, data_dir)  # a real answer without IPv6: the plugin's own 104
    assert err.code == PODCIDR_UNAVAILABLE and not isinstance(err, podcidr.NotKnownOffline)
    assert code_of(offline, "usePodCidr", {"sources": ["nope"]}, data_dir).code == INVALID_CONFIG
    assert os.listdir(data_dir) == []


def test_netconf_load_takes_the_resolver(data_dir):
    calls = []

    def resolver(placeholder, ipam, ddir):
        calls.append((placeholder, ipam["podCidr"], ddir))
        return NET("10.99.0.0/24") if placeholder == "usePodCidr" else NET("fd00:99::/64")

    conf = {
        "cniVersion": "1.0.0",
        "name": "n",
        "ipam": {
            "dataDir": data_dir,
            "podCidr": {"nodeName": "x"},
            "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]],
        },
    }
    cfg = config.load(conf, {}, podcidr_resolver=resolver)
    assert [s.ranges[0].subnet for s in cfg.range_sets] == [NET("10.99.0.0/24"), NET("fd00:99::/64")]
    assert calls == [("usePodCidr", {"nodeName": "x"}, data_dir), ("usePodCidrIPv6", {"nodeName": "x"}, data_dir)]
    with pytest.raises(TypeError):  # keyword-only
        config.load(conf, {}, resolver)
    # None: the plugin's resolver (no source configured here: its own 104)
    assert code_of(config.load, conf, {}).code == PODCIDR_UNAVAILABLE


@pytest.mark.parametrize("status, body, gone", [
    (404, {"kind": "Status", "reason": "NotFound", "details": {"name": "n1", "kind": "nodes"}}, True),
    (404, {"kind": "Status", "reason": "NotFound"}, True),
    (404, {"kind": "Status", "reason": "NotFound", "details": {"kind": "services"}}, False),
    (404, {"kind": "Status", "reason": "ServiceUnavailable"}, False),
    (404, b"404 page not found", False),  # a proxy or a wrong path prefix: no clear answer
    (404, {"reason": "NotFound"}, False),  # not a Status object
    (403, {"kind": "Status", "reason": "NotFound"}, False),
])
def test_api_answer_carries_the_status_not_only_a_message(status, body, gone):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    err = kubeapi.ApiAnswer(
        PODCIDR_UNAVAILABLE, f"usePodCidr: node n1 not found at x ({status})", "node n1", status, raw
    )
    assert err.status == status and err.node_not_found() is gone
