"""usePodCidr against a stand-in API server speaking real HTTPS on 127.0.0.1 (see podcidr_apiserver.py:
no real kube-apiserver can be installed here), in-process and end to end through the executable."""

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from cni_ipam.podcidr import sources as podcidr
from cni_ipam.errors import INVALID_CONFIG, PODCIDR_UNAVAILABLE, TRY_AGAIN_LATER, CniError
from tests.helpers import ROOT, run_cni, run_plugin
from tests.integration.podcidr_apiserver import ApiServer, Pki, write_kubeconfig

NODE = "podcidr-node-a"
NODE_V4 = "10.244.3.0/24"
NODE_V6 = "fd00:10:244:3::/64"
NODES = {
    NODE: [NODE_V4, NODE_V6],
    "podcidr-node-v4": ["10.244.4.0/24"],
    "podcidr-node-legacy": {"podCIDR": "10.244.5.0/24"},  # only the old single field
    "podcidr-node-empty": [],  # not yet given a CIDR by the controller manager
}
TOKEN = "podcidr-token"
CN = "system:node:podcidr-node-a"
NET = ipaddress.ip_network


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("podcidr-pki")), client_cns=(CN, "system:node:podcidr-stranger"))


@pytest.fixture
def api(pki):
    with ApiServer(pki, nodes=NODES, token=TOKEN) as server:
        yield server


@pytest.fixture
def cert_api(pki):
    with ApiServer(pki, nodes=NODES, mode="cert", client_cns=(CN,)) as server:
        yield server


@pytest.fixture
def work(tmp_path):
    podcidr.forget()
    (tmp_path / "podcidr-data").mkdir()
    yield tmp_path
    podcidr.forget()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("KUBERNETES_NODE_NAME", "NODE_NAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)


def data_dir(work):
    return str(work / "podcidr-data")


def resolve(placeholder, pod, work):
    podcidr.forget()  # each call as a separate plugin process would make it
    return podcidr.subnet_for(placeholder, {"podCidr": pod}, data_dir(work))


def error_of(placeholder, pod, work):
    with pytest.raises(CniError) as info:
        resolve(placeholder, pod, work)
    return info.value


def expire_cache(work, node=NODE):
    path = podcidr.cache_path(data_dir(work), node)
    data = json.load(open(path))
    data["refreshAfter"] = time.time() - 1
    with open(path, "w") as fh:
        json.dump(data, fh)
    return path


# ---------------------------------------------------------------------------------- credential variants
def token_variants(pki, work):
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    return {
        "ca-file+token": dict(ca_file=pki.ca_file, token=TOKEN),
        "ca-data+token": dict(ca_data=pki.ca_pem, token=TOKEN),
        "ca-file+tokenFile": dict(ca_file=pki.ca_file, token_file=str(token_file)),
        "ca-data+relative-tokenFile": dict(ca_data=pki.ca_pem, token_file="token"),
    }


@pytest.mark.parametrize(
    "variant", ["ca-file+token", "ca-data+token", "ca-file+tokenFile", "ca-data+relative-tokenFile"]
)
def test_token_kubeconfigs(api, pki, work, variant):
    kc = write_kubeconfig(str(work / "kc"), api.url, **token_variants(pki, work)[variant])
    pod = {"kubeconfig": kc, "nodeName": NODE}
    assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
    assert resolve("usePodCidrIPv6", pod, work) == NET(NODE_V6)
    assert api.requests == [{"path": f"/api/v1/nodes/{NODE}", "auth": f"Bearer {TOKEN}", "cn": ""}]  # 2nd from cache


@pytest.mark.parametrize("variant", ["files", "data", "cert-file+key-data", "kubelet-combined-pem"])
def test_client_certificate_kubeconfigs(cert_api, pki, work, variant):
    client = pki.clients[CN]
    combined = work / "kubelet-client-current.pem"  # as /var/lib/kubelet/pki: cert and key in one file
    combined.write_bytes(client["cert_pem"] + client["key_pem"])
    kw = {
        "files": dict(cert_file=client["cert_file"], key_file=client["key_file"]),
        "kubelet-combined-pem": dict(cert_file=str(combined), key_file=str(combined)),
        "data": dict(cert_data=client["cert_pem"], key_data=client["key_pem"]),
        "cert-file+key-data": dict(cert_file=client["cert_file"], key_data=client["key_pem"]),
    }[variant]
    kc = write_kubeconfig(str(work / "kc"), cert_api.url, ca_data=pki.ca_pem, **kw)
    assert resolve("usePodCidrIPv6", {"kubeconfig": kc, "nodeName": NODE}, work) == NET(NODE_V6)
    assert [(r["cn"], r["auth"]) for r in cert_api.requests] == [(CN, "")]
    assert sorted(os.listdir(os.path.join(data_dir(work), podcidr.CACHE_DIR))) == [f"{NODE}.json"]  # no key left behind


def test_client_certificate_missing_or_unknown(cert_api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), cert_api.url, ca_file=pki.ca_file, token=TOKEN)
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and kc in err.msg and "TLS handshake" in err.msg
    # Refused at the TLS layer (CERT_REQUIRED).  With TLS 1.3 the client can see the alert before the
    # server thread has recorded its side of the failure: give that thread a moment.
    deadline = time.monotonic() + 5
    while not cert_api.handshake_failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cert_api.handshake_failures
    stranger = pki.clients["system:node:podcidr-stranger"]
    kc = write_kubeconfig(
        str(work / "kc2"),
        cert_api.url,
        ca_file=pki.ca_file,
        cert_file=stranger["cert_file"],
        key_file=stranger["key_file"],
    )
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "401" in err.msg and kc in err.msg


def test_in_cluster_service_account(api, pki, work, monkeypatch):
    sa = work / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(TOKEN)
    shutil.copy(pki.ca_file, sa / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    pod = {"serviceAccountDir": str(sa), "nodeName": NODE, "sources": ["kubernetes"]}
    if os.path.exists(podcidr.DEFAULT_KUBECONFIG):
        pytest.skip(f"{podcidr.DEFAULT_KUBECONFIG} exists here and takes precedence over in-cluster credentials")
    assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
    assert api.node_requests() == 1


def test_server_path_prefix_and_tls_server_name(pki, work):
    with ApiServer(pki, nodes=NODES, token=TOKEN, prefix="/k8s/clusters/c-podcidr") as api:
        kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
        assert resolve("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work) == NET(NODE_V4)
        assert api.requests[0]["path"] == f"/k8s/clusters/c-podcidr/api/v1/nodes/{NODE}"
        # tls-server-name: the certificate is checked against that name instead of the URL's host
        kc = write_kubeconfig(
            str(work / "kc2"),
            api.url,
            ca_file=pki.ca_file,
            token=TOKEN,
            extra_cluster={"tls-server-name": "kubernetes.default.svc"},
        )
        assert resolve("usePodCidr", {"kubeconfig": kc, "nodeName": "podcidr-node-v4", "cacheTTL": 0}, work) == NET(
            "10.244.4.0/24"
        )
        kc = write_kubeconfig(
            str(work / "kc3"),
            api.url,
            ca_file=pki.ca_file,
            token=TOKEN,
            extra_cluster={"tls-server-name": "wrong.example"},
        )
        err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": "podcidr-node-legacy"}, work)
        assert err.code == PODCIDR_UNAVAILABLE and "TLS verification" in err.msg and kc in err.msg


# ---------------------------------------------------------------------------------- failures
def test_wrong_token_and_forbidden_name_the_kubeconfig(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token="not-the-token")
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "401" in err.msg and kc in err.msg
    api.forbidden_tokens.add("no-rbac")
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token="no-rbac")
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert (
        err.code == PODCIDR_UNAVAILABLE
        and "403" in err.msg
        and "get" in err.msg
        and "nodes" in err.msg
        and kc in err.msg
    )
    assert not os.path.exists(podcidr.cache_path(data_dir(work), NODE))


def test_untrusted_server_certificate(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.other_ca_file, token=TOKEN)
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "TLS verification" in err.msg and kc in err.msg
    assert api.node_requests() == 0  # the token was never sent


def test_nodes_without_the_asked_cidr(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": "podcidr-node-empty"}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "podcidr-node-empty" in err.msg and "no IPv4 pod CIDR" in err.msg
    assert not os.path.exists(podcidr.cache_path(data_dir(work), "podcidr-node-empty"))  # asks again next time
    err = error_of("usePodCidrIPv6", {"kubeconfig": kc, "nodeName": "podcidr-node-v4"}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "podcidr-node-v4" in err.msg and "10.244.4.0/24" in err.msg
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": "podcidr-node-unknown"}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "podcidr-node-unknown" in err.msg and "404" in err.msg
    # spec.podCIDR alone (clusters from before dual stack)
    assert resolve("usePodCidr", {"kubeconfig": kc, "nodeName": "podcidr-node-legacy"}, work) == NET("10.244.5.0/24")


def test_api_unreachable_without_cache_is_11(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    api.fail_status = 503
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == TRY_AGAIN_LATER and "503" in err.msg
    api.stop()
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == TRY_AGAIN_LATER and kc in err.msg


def test_api_that_never_answers_times_out_as_11(pki, work):
    """A server that accepts TCP but never speaks TLS: bounded by podCidr.timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        kc = write_kubeconfig(str(work / "kc"), url, ca_file=pki.ca_file, token=TOKEN)
        start = time.monotonic()
        err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE, "timeout": 0.5}, work)
        took = time.monotonic() - start
    assert err.code == TRY_AGAIN_LATER and "timed out" in err.msg
    assert 0.4 <= took < 3, took


def test_cache_ttl_refresh_and_api_down(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    pod = {"kubeconfig": kc, "nodeName": NODE, "cacheTTL": 600}
    for _ in range(3):
        assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
    assert api.node_requests() == 1  # fresh cache: no API call
    cache = json.load(open(podcidr.cache_path(data_dir(work), NODE)))
    assert cache["podCIDRs"] == [NODE_V4, NODE_V6] and 599 <= cache["refreshAfter"] - cache["fetchedAt"] <= 600
    expire_cache(work)
    api.nodes[NODE] = [NODE_V4, "fd00:10:244:33::/64"]  # the refresh sees the new answer
    assert resolve("usePodCidrIPv6", pod, work) == NET("fd00:10:244:33::/64")
    assert api.node_requests() == 2
    api.stop()  # the API server goes away
    assert resolve("usePodCidrIPv6", pod, work) == NET("fd00:10:244:33::/64")  # fresh cache, nothing tried
    path = expire_cache(work)
    assert resolve("usePodCidr", pod, work) == NET(NODE_V4)  # refresh fails: cached answer
    data = json.load(open(path))
    assert (
        "Connection refused" in data["lastError"] and data["refreshAfter"] - time.time() <= podcidr.RETRY_AFTER_FAILURE
    )


def test_blackholed_api_costs_one_timeout_per_retry_period(pki, work):
    """With a cached answer and an API that hangs, only the first ADD after expiry waits."""
    with ApiServer(pki, nodes=NODES, token=TOKEN) as api:
        kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
        pod = {"kubeconfig": kc, "nodeName": NODE, "timeout": 0.5}
        assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        write_kubeconfig(kc, f"https://127.0.0.1:{listener.getsockname()[1]}", ca_file=pki.ca_file, token=TOKEN)
        expire_cache(work)
        times = []
        for _ in range(3):
            start = time.monotonic()
            assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
            times.append(time.monotonic() - start)
    assert times[0] >= 0.4 and max(times[1:]) < 0.3, times


# ---------------------------------------------------------------------------------- the executable
def netconf(work, ipam_extra, version="1.0.0"):
    ipam = {"type": "cni-ipam", "dataDir": data_dir(work)}
    ipam.update(ipam_extra)
    return {"cniVersion": version, "name": "podcidr-net", "type": "bridge", "ipam": ipam}


def ips_of(result):
    return [ipaddress.ip_interface(i["address"]) for i in result["ips"]]


def test_end_to_end_dual_stack_add_check_del_with_api_down(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_data=pki.ca_pem, token=TOKEN)
    conf = netconf(
        work,
        {
            "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]],
            "podCidr": {"kubeconfig": kc},
        },
    )
    env = {"KUBERNETES_NODE_NAME": NODE}
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-c1", extra_env=env)
    assert rc == 0, raw + err
    v4, v6 = ips_of(out)
    assert v4.ip in NET(NODE_V4) and v6.ip in NET(NODE_V6)
    assert v4.network == NET(NODE_V4) and v6.network == NET(NODE_V6)
    assert out["ips"][0]["gateway"] == "10.244.3.1"
    assert api.node_requests() == 1  # both families from one GET
    api.stop()
    rc, out2, raw, err = run_plugin("ADD", conf, container_id="podcidr-c2", extra_env=env)
    assert rc == 0, raw + err  # API down, cache fresh
    assert ips_of(out2)[0].ip in NET(NODE_V4) and ips_of(out2)[0] != v4
    expire_cache(work)
    rc, out3, raw, err = run_plugin("ADD", conf, container_id="podcidr-c3", extra_env=env)
    assert rc == 0, raw + err  # API down, cache stale: still works
    assert ips_of(out3)[1].ip in NET(NODE_V6)
    assert "using the cached pod CIDRs" in err
    conf_check = dict(conf, prevResult=out)
    rc, _, raw, err = run_plugin("CHECK", conf_check, container_id="podcidr-c1", extra_env=env)
    assert rc == 0, raw + err
    shutil.rmtree(os.path.join(data_dir(work), podcidr.CACHE_DIR))
    for cid in ("podcidr-c1", "podcidr-c2", "podcidr-c3"):  # DEL never needs the API
        rc, _, raw, err = run_plugin("DEL", conf, container_id=cid, extra_env=env)
        assert rc == 0, raw + err
    assert not [n for n in os.listdir(os.path.join(data_dir(work), "podcidr-net")) if n[0].isdigit() or ":" in n]
    rc, out, raw, _ = run_plugin("ADD", conf, container_id="podcidr-c4", extra_env=env)  # no cache, API down
    assert rc == 1 and out["code"] == TRY_AGAIN_LATER and kc in out["msg"], raw


def test_end_to_end_legacy_subnet_with_range_keys(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    conf = netconf(
        work,
        {
            "subnet": "usePodCidr",
            "rangeStart": "10.244.3.10",
            "rangeEnd": "10.244.3.12",
            "exclude": ["10.244.3.11"],
            "podCidr": {"kubeconfig": kc, "nodeName": NODE},
        },
    )
    got = []
    for i in range(2):
        rc, out, raw, err = run_plugin("ADD", conf, container_id=f"podcidr-l{i}")
        assert rc == 0, raw + err
        got.append(str(ips_of(out)[0]))
    assert sorted(got) == ["10.244.3.10/24", "10.244.3.12/24"]
    rc, out, raw, _ = run_plugin("ADD", conf, container_id="podcidr-l9")
    assert rc == 1 and out["code"] == 100, raw  # the three-address range (minus the excluded) is full
    conf["ipam"]["rangeStart"] = "10.99.0.10"  # does not fit this node's CIDR
    rc, out, raw, _ = run_plugin("ADD", conf, container_id="podcidr-l8")
    assert rc == 1 and out["code"] == INVALID_CONFIG and "rangeStart" in out["msg"] and NODE_V4 in out["msg"], raw


def test_end_to_end_errors_are_cni_json(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token="wrong")
    conf = netconf(work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"kubeconfig": kc, "nodeName": NODE}})
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-e1")
    assert rc == 1 and out["code"] == PODCIDR_UNAVAILABLE and kc in out["msg"] and "Traceback" not in raw + err
    conf = netconf(
        work,
        {
            "ranges": [[{"subnet": "usePodCidrIPv6"}]],
            "podCidr": {"kubeconfig": kc.replace("kc", "kc-v4"), "nodeName": "podcidr-node-v4"},
        },
    )
    write_kubeconfig(conf["ipam"]["podCidr"]["kubeconfig"], api.url, ca_file=pki.ca_file, token=TOKEN)
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-e2")
    assert rc == 1 and out["code"] == PODCIDR_UNAVAILABLE and "podcidr-node-v4" in out["msg"], raw


def test_end_to_end_in_cluster(api, pki, work):
    if os.path.exists(podcidr.DEFAULT_KUBECONFIG):
        pytest.skip(f"{podcidr.DEFAULT_KUBECONFIG} exists here and takes precedence over in-cluster credentials")
    sa = work / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(TOKEN)
    shutil.copy(pki.ca_file, sa / "ca.crt")
    conf = netconf(work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"serviceAccountDir": str(sa)}})
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "NODE_NAME": "podcidr-node-v4",
    }
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-i1", extra_env=env)
    assert rc == 0, raw + err
    assert ips_of(out)[0].ip in NET("10.244.4.0/24")


def test_end_to_end_flannel_and_static(work):
    env_file = work / "subnet.env"
    env_file.write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.77.1/24\nFLANNEL_IPV6_SUBNET=fd00:77::1/64\nFLANNEL_MTU=1450\n"
    )
    conf = netconf(
        work,
        {
            "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]],
            "podCidr": {"sources": ["flannel"], "flannelSubnetEnv": str(env_file), "nodeName": "podcidr-flannel"},
        },
    )
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-f1")
    assert rc == 0, raw + err
    v4, v6 = ips_of(out)
    assert v4.network == NET("10.244.77.0/24") and v6.network == NET("fd00:77::/64")
    assert v4.ip != ipaddress.ip_address("10.244.77.1")  # the gateway (flannel's cni0 address) is skipped
    conf = netconf(
        work, {"subnet": "usePodCidr", "podCidr": {"static": ["10.88.5.0/28"], "nodeName": "podcidr-static"}}
    )
    conf["name"] = "podcidr-static"
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-s1")
    assert rc == 0, raw + err
    assert ips_of(out)[0].ip in NET("10.88.5.0/28")


def test_end_to_end_fresh_cache_imports_no_yaml_or_tls(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    conf = netconf(work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"kubeconfig": kc, "nodeName": NODE}})
    argv = [sys.executable, "-X", "importtime", "-m", "cni_ipam"]
    rc, _, raw, err = run_cni(argv, "ADD", conf, container_id="podcidr-t1")
    assert rc == 0, raw
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert {"yaml", "ssl", "cni_ipam.httpio", "cni_ipam.podcidr.kubeapi"} <= imported  # the first ADD asked the API
    rc, _, raw, err = run_cni(argv, "ADD", conf, container_id="podcidr-t2")
    assert rc == 0, raw
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert "cni_ipam.podcidr.sources" in imported
    assert not imported & {"yaml", "ssl", "http.client", "cni_ipam.httpio", "cni_ipam.podcidr.kubeapi", "_ssl"}, (
        imported
    )
    assert api.node_requests() == 1


def test_timing_cache_hit_vs_api(api, pki, work, capsys):
    """Measured, printed for the report: one API resolution vs a cache hit (in process)."""
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    pod = {"kubeconfig": kc, "nodeName": NODE, "cacheTTL": 0}
    t0 = time.perf_counter()
    for _ in range(5):
        resolve("usePodCidr", pod, work)
    api_ms = (time.perf_counter() - t0) / 5 * 1000
    pod["cacheTTL"] = 600
    resolve("usePodCidr", pod, work)
    t0 = time.perf_counter()
    for _ in range(50):
        resolve("usePodCidr", pod, work)
    cache_ms = (time.perf_counter() - t0) / 50 * 1000
    assert api.node_requests() == 6
    with capsys.disabled():
        print(f"\npodcidr: API resolution {api_ms:.2f} ms, cache hit {cache_ms:.3f} ms")
    assert cache_ms < api_ms


# ---------------------------------------------------------------------------------- real runtime
class PodcidrRuntime:
    """The real-runtime kit (tests/integration/netns.py) with this issue's ``podcidr-`` prefix."""

    def __new__(cls):
        import tempfile
        import uuid

        from tests.integration import netns

        class _Runtime(netns.Runtime):
            def __init__(self) -> None:  # as netns.Runtime, with our prefix on every name
                self.token = uuid.uuid4().hex[:6]
                self.dir = tempfile.mkdtemp(prefix=f"podcidr-{self.token}-")
                for sub in ("net", "bin", "cache", "data"):
                    os.makedirs(os.path.join(self.dir, sub))
                self.netconfpath = os.path.join(self.dir, "net")
                self.bin_dir = os.path.join(self.dir, "bin")
                self.cache_dir = os.path.join(self.dir, "cache")
                self.data_dir = os.path.join(self.dir, "podcidr-data")
                os.makedirs(self.data_dir)
                self.plugin_exe = netns.write_plugin_exe(self.bin_dir)
                self.namespaces = []

            def ns_name(self, tag: str) -> str:
                return f"podcidr-{self.token}-{tag}"

        return _Runtime()


def test_real_runtime_bridge_gets_the_node_pod_cidr(pki):
    """libcni + bridge + cni-ipam in network namespaces; the stand-in API runs in the host namespace
    (where the plugin's 127.0.0.1 is), the container gets an address of the node's pod CIDR, reaches
    the gateway, and a second container still gets one after the API server is gone."""
    from tests.integration import netns

    reason = netns.skip_reason()
    if reason:
        print(f"SKIP real-runtime usePodCidr test: {reason}")
        pytest.skip(reason)
    rt = PodcidrRuntime()
    server = None
    try:
        host, c1, c2 = rt.netns("host"), rt.netns("c1"), rt.netns("c2")
        spec = {"pki_dir": pki.dir, "nodes": {NODE: ["10.252.7.0/24", "fd00:252:7::/64"]}, "token": TOKEN}
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host,
                sys.executable,
                "-m",
                "tests.integration.podcidr_apiserver",
                json.dumps(spec),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(server.stdout.readline())
        kc = write_kubeconfig(
            os.path.join(rt.dir, "cni-ipam.kubeconfig"), f"https://127.0.0.1:{port}", ca_file=pki.ca_file, token=TOKEN
        )
        rt.conflist(
            "podcidr-k8s",
            [
                {
                    "type": "bridge",
                    "bridge": "podcidr-br0",
                    "isGateway": True,
                    "ipam": {
                        "type": "cni-ipam",
                        "dataDir": rt.data_dir,
                        "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "podCidr": {"kubeconfig": kc, "nodeName": NODE},
                    },
                }
            ],
        )
        res = rt.driver("add", "podcidr-k8s", c1, host=host, container_id="podcidr-rt-1")
        assert res.rc == 0, res
        got = netns.link_addresses(c1, "eth0")
        assert sorted(str(i.network) for i in got) == ["10.252.7.0/24", "fd00:252:7::/64"], got
        assert netns.ping_until(c1, "10.252.7.1"), "container cannot reach the gateway of its pod CIDR"
        server.stdin.close()  # the API server goes away
        server.wait(10)
        res = rt.driver("add", "podcidr-k8s", c2, host=host, container_id="podcidr-rt-2")
        assert res.rc == 0, res
        got2 = [i for i in netns.link_addresses(c2, "eth0") if i.version == 4]
        assert got2[0].network == NET("10.252.7.0/24") and got2[0] not in got
        assert netns.ping_until(c2, str([i for i in got if i.version == 4][0].ip)), "containers cannot reach each other"
        for cid, ctr in (("podcidr-rt-1", c1), ("podcidr-rt-2", c2)):
            res = rt.driver("del", "podcidr-k8s", ctr, host=host, container_id=cid)
            assert res.rc == 0, res
        assert rt.reservations("podcidr-k8s") == {}
    finally:
        if server is not None and server.poll() is None:
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        rt.cleanup()


# ---------------------------------------------------------------------------------- hostile servers
def cached_then(api, pki, work, **pod_extra):
    """A good cached answer, then an expired cache: the next resolution must ask the API again."""
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    pod = dict({"kubeconfig": kc, "nodeName": NODE}, **pod_extra)
    assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
    expire_cache(work)
    return kc, pod


@pytest.mark.parametrize("how", ["drip", "drip-body"])
def test_dripping_server_is_cut_at_the_whole_request_deadline(api, pki, work, how):
    """main bounded each recv by podCidr.timeout, so one byte per 0.1 s kept the call going for the
    whole body (~30 s here, hours for a real node object); now the whole request is bounded."""
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    api.misbehave, api.drip_interval = how, 0.1
    start = time.monotonic()
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE, "timeout": 1.0}, work)
    took = time.monotonic() - start
    assert err.code == TRY_AGAIN_LATER and "timed out" in err.msg and kc in err.msg, err
    assert took < 3, took
    # with a cached answer, the cache is used within the same deadline
    api.misbehave = ""
    kc, pod = cached_then(api, pki, work, timeout=1.0)
    api.misbehave = how
    start = time.monotonic()
    assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
    assert time.monotonic() - start < 3


def test_dripping_tls_handshake_is_cut_at_the_deadline(api, pki, work):
    """Every byte of the server (the TLS handshake too) 50 ms apart: still one deadline."""
    from tests.integration.podcidr_apiserver import DripProxy

    with DripProxy(api.port, 0.05) as proxy:
        kc = write_kubeconfig(str(work / "kc"), proxy.url, ca_file=pki.ca_file, token=TOKEN)
        start = time.monotonic()
        err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE, "timeout": 1.0}, work)
        took = time.monotonic() - start
    assert err.code == TRY_AGAIN_LATER and "timed out" in err.msg, err
    assert took < 3, took


def test_dripping_server_through_the_executable(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    conf = netconf(
        work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"kubeconfig": kc, "nodeName": NODE, "timeout": 1}}
    )
    api.misbehave, api.drip_interval = "drip", 0.1
    start = time.monotonic()
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-drip", timeout=60)
    assert rc == 1 and out["code"] == TRY_AGAIN_LATER and "Traceback" not in err, raw + err
    assert time.monotonic() - start < 5


def test_stalled_body_and_redirect(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    pod = {"kubeconfig": kc, "nodeName": NODE, "timeout": 0.5}
    api.misbehave = "stall"
    err = error_of("usePodCidr", pod, work)
    assert err.code == TRY_AGAIN_LATER and "timed out" in err.msg
    api.misbehave = "redirect"
    err = error_of("usePodCidr", pod, work)
    assert err.code == PODCIDR_UNAVAILABLE and "302" in err.msg
    assert [r["path"] for r in api.requests][-1] == f"/api/v1/nodes/{NODE}"  # never followed
    assert not any(r["path"].endswith("/redirected") for r in api.requests)


@pytest.mark.parametrize(
    "how, words", [("bomb", "nested too deeply"), ("huge", "larger than"), ("garbage", "not JSON")]
)
def test_bad_bodies_are_104_and_never_beat_the_cache(api, pki, work, how, words):
    """A JSON nesting bomb gave 999 on main (and skipped the valid cache)."""
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    api.misbehave = how
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and words in err.msg, err
    api.misbehave = ""
    kc, pod = cached_then(api, pki, work)
    api.misbehave = how
    assert resolve("usePodCidr", pod, work) == NET(NODE_V4)


HOSTILE_NODES = {
    "podcidr-evil-all4": ["0.0.0.0/0"],
    "podcidr-evil-all6": ["::/0"],
    "podcidr-evil-mapped": ["::ffff:10.0.0.0/120"],
    "podcidr-evil-two4": ["10.244.9.0/24", "10.244.10.0/24"],
    "podcidr-evil-hostbits": ["10.244.9.1/24"],
    "podcidr-evil-three": ["10.244.9.0/24", "fd00:9::/64", "fd00:10::/64"],
    "podcidr-evil-loopback": ["127.0.0.0/24"],
    "podcidr-evil-wide": ["10.0.0.0/6"],
    "podcidr-evil-type": {"podCIDRs": [24]},
}


@pytest.mark.parametrize("node", sorted(HOSTILE_NODES))
def test_hostile_node_objects_are_refused_naming_the_node(pki, work, node):
    with ApiServer(pki, nodes=dict(NODES, **HOSTILE_NODES), token=TOKEN) as api:
        kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
        for placeholder in ("usePodCidr", "usePodCidrIPv6"):
            err = error_of(placeholder, {"kubeconfig": kc, "nodeName": node}, work)
            assert err.code == PODCIDR_UNAVAILABLE and node in err.msg and node in err.details, err
        assert not os.path.exists(podcidr.cache_path(data_dir(work), node))


def test_a_refused_answer_never_replaces_a_good_cache(pki, work):
    with ApiServer(pki, nodes=NODES, token=TOKEN) as api:
        kc, pod = cached_then(api, pki, work)
        path = podcidr.cache_path(data_dir(work), NODE)
        api.nodes[NODE] = ["0.0.0.0/0", "::/0"]
        assert resolve("usePodCidr", pod, work) == NET(NODE_V4)
        assert resolve("usePodCidrIPv6", pod, work) == NET(NODE_V6)
        data = json.load(open(path))
        assert data["podCIDRs"] == [NODE_V4, NODE_V6] and NODE in data["lastError"]


def test_two_line_token_file_is_refused_without_quoting_it(api, pki, work):
    """main: http.client raised 'Invalid header value b'Bearer <token>...'' as 999, token in msg."""
    secret_old, secret_new = "old-secret-token-0123456789", TOKEN
    token_file = work / "token"
    token_file.write_text(f"{secret_old}\n{secret_new}\n")
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token_file=str(token_file))
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and str(token_file) in err.msg and "2 lines" in err.msg
    assert secret_old not in err.msg + err.details and secret_new not in err.msg + err.details
    assert api.node_requests() == 0
    # with a good cache, the cache is used (main skipped it with the 999)
    good = work / "good-token"
    good.write_text(TOKEN)
    write_kubeconfig(kc, api.url, ca_file=pki.ca_file, token_file=str(good))
    assert resolve("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work) == NET(NODE_V4)
    expire_cache(work)
    write_kubeconfig(kc, api.url, ca_file=pki.ca_file, token_file=str(token_file))
    assert resolve("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work) == NET(NODE_V4)
    # the same through the executable: a CNI error without the token anywhere in its output
    shutil.rmtree(os.path.join(data_dir(work), podcidr.CACHE_DIR))
    rc, out, raw, errtext = run_plugin(
        "ADD",
        netconf(work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"kubeconfig": kc, "nodeName": NODE}}),
        container_id="podcidr-tok",
    )
    assert rc == 1 and out["code"] == PODCIDR_UNAVAILABLE, raw
    assert secret_old not in raw + errtext and secret_new not in raw + errtext


def test_inline_token_with_a_newline_is_refused(api, pki, work):
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=f"{TOKEN}\nX-Injected: 1")
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and TOKEN not in err.msg and "Injected" not in err.msg
    assert api.node_requests() == 0


def test_ca_data_that_does_not_decode_is_an_error_not_the_system_cas(api, pki, work, monkeypatch):
    """main decoded junk to b'' and trusted the system CAs: with the stand-in's CA as the system
    store (SSL_CERT_FILE), the token went out.  Now: 104 naming the kubeconfig, nothing sent."""
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)
    for junk in ("!!!not base64!!!", "====", "bm90IGEgY2VydA=="):
        kc = write_kubeconfig(
            str(work / "kc"), api.url, token=TOKEN, extra_cluster={"certificate-authority-data": junk}
        )
        err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
        assert err.code == PODCIDR_UNAVAILABLE and kc in err.msg and "certificate-authority-data" in err.msg, (
            junk,
            err,
        )
    assert api.node_requests() == 0
    kc = write_kubeconfig(str(work / "kc"), api.url, token=TOKEN)  # no CA at all: the system CAs, as kubectl
    assert resolve("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work) == NET(NODE_V4)


def test_kubeconfig_with_yaml_aliases_is_refused(api, pki, work):
    """A 558-byte alias bomb expanded to 1.5 GB on main; aliases are refused before any expansion."""
    kc = work / "kc"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters:\n- name: k\n  cluster: &cl {{server: '{api.url}', certificate-authority: '{pki.ca_file}'}}\n"
        f"users:\n- name: u\n  user: {{token: {TOKEN}}}\n"
        "contexts:\n- name: c\n  context: {cluster: k, user: u}\n"
        "x-copies: [*cl, *cl, *cl]\n"
    )
    err = error_of("usePodCidr", {"kubeconfig": str(kc), "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "aliases" in err.msg and str(kc) in err.msg
    assert api.node_requests() == 0
    bomb = work / "bomb"
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)
    ]
    bomb.write_text("\n".join(levels) + "\n")
    start = time.monotonic()
    err = error_of("usePodCidr", {"kubeconfig": str(bomb), "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "aliases" in err.msg and time.monotonic() - start < 2


def test_server_url_credentials_are_refused_unquoted(api, pki, work):
    url = api.url.replace("https://", "https://admin:hunter2-secret@")
    kc = write_kubeconfig(str(work / "kc"), url, ca_file=pki.ca_file, token=TOKEN)
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "hunter2" not in err.msg and kc in err.msg


@pytest.mark.parametrize("what", ["tokenFile", "certificate-authority", "kubeconfig"])
def test_fifo_credential_files_fail_at_once(pki, work, what):
    """A FIFO where a credential file should be hung main forever; now: 104 at once."""
    fifo = str(work / "fifo")
    os.mkfifo(fifo)
    kc = str(work / "kc")
    if what == "kubeconfig":
        kc = fifo
    else:
        extra = {"token_file": fifo} if what == "tokenFile" else {"token": TOKEN}
        write_kubeconfig(
            kc, "https://127.0.0.1:1", ca_file=fifo if what == "certificate-authority" else pki.ca_file, **extra
        )
    conf = netconf(work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"kubeconfig": kc, "nodeName": NODE}})
    try:
        rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-fifo", timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ADD hung on a FIFO {what}")
    assert (
        rc == 1 and out["code"] == PODCIDR_UNAVAILABLE and "not a regular file" in out["msg"] and fifo in out["msg"]
    ), raw


# ---------------------------------------------------------------------------------- what held, and must keep holding
@pytest.mark.parametrize(
    "setup",
    [
        "other-ca-file",
        "other-ca-data",
        "wrong-server-name",
        "system-cas-only",
        "server-cert-as-ca",
        "key-as-ca-file",
        "key-as-ca-data",
        "skip-verify",
        "plain-http",
    ],
)
def test_bad_tls_setups_never_send_the_token(api, pki, work, setup, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    key_pem = next(iter(pki.clients.values()))["key_pem"]
    key_file = work / "a.key"
    key_file.write_bytes(key_pem)
    kw = {
        "other-ca-file": dict(ca_file=pki.other_ca_file),
        "other-ca-data": dict(ca_data=pki.other_ca_pem),
        "wrong-server-name": dict(ca_file=pki.ca_file, extra_cluster={"tls-server-name": "evil.example"}),
        "system-cas-only": {},
        "server-cert-as-ca": dict(ca_file=pki.server_cert_file),
        "key-as-ca-file": dict(ca_file=str(key_file)),
        "key-as-ca-data": dict(ca_data=key_pem),
        "skip-verify": dict(ca_file=pki.ca_file, extra_cluster={"insecure-skip-tls-verify": True}),
        "plain-http": dict(ca_file=pki.ca_file),
    }[setup]
    url = api.url.replace("https://", "http://") if setup == "plain-http" else api.url
    kc = write_kubeconfig(str(work / "kc"), url, token=TOKEN, **kw)
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and kc in err.msg, err
    assert TOKEN not in err.msg and "PRIVATE KEY" not in err.msg
    assert api.node_requests() == 0  # nothing (and no token) reached the server


def test_exec_credentials_are_refused_without_running_anything(api, pki, work):
    marker = work / "exec-ran"
    kc = write_kubeconfig(
        str(work / "kc"),
        api.url,
        ca_file=pki.ca_file,
        extra_user={
            "exec": {
                "command": "/bin/sh",
                "args": ["-c", f"touch {marker}"],
                "apiVersion": "client.authentication.k8s.io/v1",
            }
        },
    )
    err = error_of("usePodCidr", {"kubeconfig": kc, "nodeName": NODE}, work)
    assert err.code == PODCIDR_UNAVAILABLE and "exec is not supported" in err.msg and not marker.exists()


@pytest.mark.parametrize("bad", ["/proc", "/sys", "/dev/null"])
def test_special_data_dirs_are_refused(work, bad):
    conf = {
        "cniVersion": "1.0.0",
        "name": "podcidr-held",
        "type": "bridge",
        "ipam": {"type": "cni-ipam", "dataDir": bad, "subnet": "10.98.0.0/24"},
    }
    rc, out, raw, _ = run_plugin("ADD", conf, container_id="podcidr-held")
    assert rc == 1 and out["code"] == 5 and bad in out["msg"], raw
    assert not os.path.exists(os.path.join(bad, "podcidr-held"))


@pytest.mark.parametrize("value", ["../etc", "Node_A", "a" * 254, "node/x", "node x"])
def test_hostile_node_names_are_refused(pki, work, value):
    conf = netconf(work, {"ranges": [[{"subnet": "usePodCidr"}]], "podCidr": {"static": ["10.97.0.0/24"]}})
    rc, out, raw, _ = run_plugin("ADD", conf, container_id="podcidr-nn", extra_env={"KUBERNETES_NODE_NAME": value})
    assert rc == 1 and out["code"] == INVALID_CONFIG and "KUBERNETES_NODE_NAME" in out["msg"], raw


# ---------------------------------------------------------------------------------- admin commands stay offline
def tree_state(path):
    """Every entry under ``path`` (the directory itself included): inode, mode, size, mtime, ctime
    and content.  atime is left out (reading is allowed); any write, rename or chmod changes this."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in [""] + sorted(dirs) + sorted(files):
            full = os.path.join(root, name) if name else root
            st = os.lstat(full)
            data = None
            if not os.path.isdir(full):
                with open(full, "rb") as fh:
                    data = fh.read()
            out[os.path.relpath(full, path)] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, data)
    return out


def admin_runs(conf_dir, ddir, pool_conf):
    """What the read-only admin commands are asked here: (name, rc, stdout, stderr) of each."""
    from tests.helpers import run_admin

    runs = []
    for args in (
        ("show", "--conf-dir", conf_dir, "--data-dir", ddir),
        ("show", "--json", "--ips", "--conf-dir", conf_dir, "--data-dir", ddir),
        ("metrics", "--conf-dir", conf_dir, "--data-dir", ddir),
        ("lint", "--json", "--no-host", conf_dir),
        ("plan", "--pool-conf", pool_conf),
    ):
        runs.append((" ".join(args[:2]),) + run_admin(*args))
    return runs


def test_show_lint_metrics_plan_never_call_the_api_nor_write_the_cache(api, pki, work):
    """For a usePodCidr conf the admin commands resolve the pod CIDR from the cache only: zero
    requests to the API server, the cache directory byte-for-byte (and inode, mtime) as it was,
    and without a cache "pod CIDR not known offline" (show: level unknown, exit 4; lint: a warning)."""
    kc = write_kubeconfig(str(work / "kc"), api.url, ca_file=pki.ca_file, token=TOKEN)
    conf = netconf(
        work,
        {
            "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]],
            "podCidr": {"kubeconfig": kc, "nodeName": NODE, "cacheTTL": 600},
        },
    )
    conf_dir = work / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-podcidr.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": conf["name"],
                "plugins": [{k: v for k, v in conf.items() if k not in ("cniVersion", "name")}],
            }
        )
    )
    pool_conf = work / "pool.conf"  # plan --pool-conf parses through the same offline loader
    pool_conf.write_text(
        json.dumps(
            dict(
                conf,
                ipam=dict(
                    conf["ipam"], pool={"name": "p", "blockSize": 28, "etcd": {"endpoints": ["http://127.0.0.1:9"]}}
                ),
            )
        )
    )
    ddir = data_dir(work)
    cache_dir = os.path.join(ddir, podcidr.CACHE_DIR)

    # 1. no cache yet: nothing known offline, nothing asked, nothing written
    before = tree_state(ddir)
    runs = {name: (rc, out, err) for name, rc, out, err in admin_runs(str(conf_dir), ddir, str(pool_conf))}
    assert api.requests == []
    assert tree_state(ddir) == before and not os.path.exists(cache_dir)
    rc, out, err = runs["show --conf-dir"]
    assert rc == 4 and "(pod CIDR not known offline)" in out and "warning: usePodCidr: the pod CIDR of node" in out, (
        out + err
    )
    rc, out, err = runs["show --json"]
    net = json.loads(out)["networks"][0]
    assert (
        rc == 4
        and net["level"] == "unknown"
        and "not known offline" in net["podCidrNotKnownOffline"]
        and net["confError"] is None
    )
    rc, out, err = runs["metrics --conf-dir"]
    assert (
        rc == 0 and 'cni_ipam_network_config_known{network="podcidr-net"} 0.0' in out and "not known offline" in err
    ), err
    rc, out, err = runs["lint --json"]
    doc = json.loads(out)
    assert rc == 0 and doc["errors"] == 0, doc
    warned = [f for f in doc["findings"] if f["level"] == "warning"]
    assert [f["key"] for f in warned] == ["plugins[0].ipam.ranges[0][0].subnet", "plugins[0].ipam.ranges[1][0].subnet"]
    assert all("pod CIDR not known offline" in f["message"] for f in warned)
    rc, out, err = runs["plan --pool-conf"]
    assert rc == 64 and "not known offline" in err and "Traceback" not in err, (
        out + err
    )  # a --pool-conf plan cannot plan

    # 2. an ADD asks the API and writes the cache; then the cache goes stale, so that an ADD (not
    #    an admin command) would refresh it: the admin commands still ask nothing and touch nothing
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-admin1")
    assert rc == 0, raw + err
    assert api.node_requests() == 1
    expire_cache(work)
    before, requests = tree_state(ddir), len(api.requests)
    runs = {name: (rc, out, err) for name, rc, out, err in admin_runs(str(conf_dir), ddir, str(pool_conf))}
    assert len(api.requests) == requests
    assert tree_state(ddir) == before
    rc, out, err = runs["show --json"]
    net = json.loads(out)["networks"][0]
    assert rc == 0 and net["level"] == "ok" and net["podCidrNotKnownOffline"] is None, out + err
    assert [s["ranges"][0]["subnet"] for s in net["rangeSets"]] == [NODE_V4, NODE_V6]
    assert [s["reserved"] for s in net["rangeSets"]] == [1, 1]
    rc, out, err = runs["lint --json"]
    doc = json.loads(out)
    assert rc == 0 and not [f for f in doc["findings"] if f["level"] != "info"], doc
    infos = [f["message"] for f in doc["findings"] if f["check"] == "pod-cidr"]
    assert len(infos) == 2 and all("from the cache" in m for m in infos) and NODE_V4 in infos[0] and NODE_V6 in infos[1]
    rc, out, err = runs["metrics --conf-dir"]
    assert rc == 0 and 'cni_ipam_network_config_known{network="podcidr-net"} 1.0' in out, err

    # 3. the same stale cache makes an ADD ask the API: the check above could have failed
    rc, out, raw, err = run_plugin("ADD", conf, container_id="podcidr-admin2")
    assert rc == 0 and api.node_requests() == 2, raw + err
    assert tree_state(ddir) != before
