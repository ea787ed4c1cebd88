"""Admin commands against real network namespaces (root).

* `lint --netns`: addresses and routes added in an `ops-` namespace (on a dummy interface) are
  read with pyroute2 and collide with the ranges of conf files.
* `show --ips` / `metrics`: a reservation made by the plugin for a real namespace is live while the
  namespace exists and stranded (netns-gone) once it is deleted, as the GC pass judges it.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, have_ip_tool, is_root, run_plugin

pytestmark = pytest.mark.skipif(
    not (is_root() and have_ip_tool()), reason="needs root and iproute2 for network namespaces"
)


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "cni_ipam", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def netns():
    pyroute2 = pytest.importorskip("pyroute2")
    del pyroute2
    name = f"ops-lint-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    ip("netns", "add", name)
    try:
        # a dummy interface where the kernel has the module, else a veth pair kept inside the namespace
        dummy = ["ip", "-n", name, "link", "add", "ops-dum0", "type", "dummy"]
        if subprocess.run(dummy, capture_output=True).returncode:
            ip("-n", name, "link", "add", "ops-dum0", "type", "veth", "peer", "name", "ops-dum1")
            ip("-n", name, "link", "set", "ops-dum1", "up")
        ip("-n", name, "link", "set", "ops-dum0", "up")
        ip("-n", name, "addr", "add", "10.77.0.5/24", "dev", "ops-dum0")
        ip("-n", name, "route", "add", "10.88.0.0/16", "dev", "ops-dum0")
        ip("-n", name, "route", "add", "10.55.0.7/32", "dev", "ops-dum0")
        ip("-n", name, "-6", "addr", "add", "fd00:77::5/64", "dev", "ops-dum0", "nodad")
        ip("-n", name, "-6", "route", "add", "fd00:88::/48", "dev", "ops-dum0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def conf(tmp_path, name, ranges, plugin_type="bridge", extra=None):
    plugin = {"type": plugin_type, "ipam": {"type": "cni-ipam", "ranges": ranges}}
    plugin.update(extra or {})
    path = tmp_path / f"{name}.conflist"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}))
    return str(path)


def lint(*args):
    rc, out, err = cli("lint", "--json", *args)
    assert out, err
    return rc, json.loads(out)


def of(doc, path, level=None):
    return [
        (f["level"], f["check"], f["message"])
        for f in doc["findings"]
        if f["file"] == path and (level is None or f["level"] == level)
    ]


def test_route_in_namespace_collides(tmp_path, netns):
    routed = conf(tmp_path, "ops-routed", [[{"subnet": "10.88.4.0/24"}]])
    clear = conf(tmp_path, "ops-clear", [[{"subnet": "10.66.0.0/24"}]])
    rc, doc = lint("--netns", netns, routed, clear)
    errs = of(doc, routed, "error")
    assert [(lvl, chk) for lvl, chk, _ in errs] == [("error", "overlap-host")]
    assert "10.88.0.0/16 dev ops-dum0" in errs[0][2]
    assert of(doc, clear) == []
    assert rc == 1
    # the same files against the host's own namespace: that route is not there
    rc, doc = lint(routed, clear)
    assert not [f for f in doc["findings"] if "ops-dum0" in f["message"]] and rc == 0
    rc, doc = lint("--netns", netns, "--no-host", routed)
    assert rc == 0 and doc["findings"] == []


def test_host_address_and_connected_network(tmp_path, netns):
    lan = conf(tmp_path, "ops-lan", [[{"subnet": "10.77.0.0/24"}]])
    excluded = conf(tmp_path, "ops-excl", [[{"subnet": "10.77.0.0/24", "exclude": ["10.77.0.5"]}]])
    rc, doc = lint("--netns", netns, lan)  # (one at a time: the two overlap each other)
    checks = sorted(chk for _, chk, _ in of(doc, lan, "error"))
    assert checks == ["host-address", "overlap-host"]
    assert any("10.77.0.5/24 on ops-dum0" in m for _, _, m in of(doc, lan, "error"))
    assert rc == 1
    rc, doc = lint("--netns", netns, excluded)
    assert sorted(chk for _, chk, _ in of(doc, excluded, "error")) == ["overlap-host"]  # excluded: never handed out
    assert rc == 1


def test_own_bridge_and_macvlan_master_are_expected(tmp_path, netns):
    own = conf(
        tmp_path, "ops-own", [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.5"}]], extra={"bridge": "ops-dum0"}
    )
    mac_range = {"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.100", "rangeEnd": "10.77.0.150"}
    mac = conf(tmp_path, "ops-mac", [[mac_range]],
               plugin_type="macvlan", extra={"master": "ops-dum0"})
    rc, doc = lint("--netns", netns, own)
    assert of(doc, own) == [] and rc == 0
    rc, doc = lint("--netns", netns, mac)
    assert [(lvl, chk) for lvl, chk, _ in of(doc, mac)] == [("info", "overlap-host")]
    assert rc == 0


def test_ipv6_and_host_routes(tmp_path, netns):
    v6 = conf(tmp_path, "ops-v6", [[{"subnet": "fd00:88:0:1::/64"}]])
    v6addr = conf(tmp_path, "ops-v6a", [[{"subnet": "fd00:77::/64"}]])
    host_route = conf(tmp_path, "ops-hr", [[{"subnet": "10.55.0.0/24"}]])
    rc, doc = lint("--netns", netns, v6, v6addr, host_route)
    assert [(lvl, chk) for lvl, chk, _ in of(doc, v6)] == [("error", "overlap-host")]
    assert sorted(chk for _, chk, _ in of(doc, v6addr, "error")) == ["host-address", "overlap-host"]
    assert [(lvl, chk) for lvl, chk, _ in of(doc, host_route)] == [("warning", "overlap-host")]
    assert rc == 1


def test_missing_namespace_is_an_error(tmp_path):
    pytest.importorskip("pyroute2")
    path = conf(tmp_path, "ops-nons", [[{"subnet": "10.66.1.0/24"}]])
    missing = f"ops-no-such-{os.getpid()}"
    rc, doc = lint("--netns", missing, path)
    assert [f["check"] for f in doc["findings"] if f["level"] == "error"] == ["host"] and rc == 1
    assert not os.path.exists(f"/var/run/netns/{missing}")  # lint never creates one


def test_show_and_metrics_follow_the_namespace(tmp_path):
    parser = pytest.importorskip("prometheus_client.parser")
    name = f"ops-live-{os.getpid()}"
    data, confdir = tmp_path / "data", tmp_path / "conf"
    confdir.mkdir()
    netconf = {"cniVersion": "1.0.0", "name": "ops-live", "type": "bridge",
               "ipam": {"type": "cni-ipam", "dataDir": str(data), "ranges": [[{"subnet": "10.78.0.0/29"}]]}}
    (confdir / "ops-live.conf").write_text(json.dumps(netconf))
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    ip("netns", "add", name)
    try:
        rc, _, out, err = run_plugin("ADD", netconf, container_id="live1", netns=f"/var/run/netns/{name}",
                                     cni_args="K8S_POD_NAMESPACE=ops;K8S_POD_NAME=pod-a")
        assert rc == 0, out + err
        rc, out, err = cli(
            "show", "--data-dir", str(data), "--conf-dir", str(confdir), "--ips", "--json", "--grace", "0"
        )
        (r,) = json.loads(out)["networks"][0]["reservations"]
        seen = (r["ip"], r["pod"]["name"], r["liveness"]["state"], r["liveness"]["reason"])
        assert seen == ("10.78.0.2", "pod-a", "live", "netns-alive")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    # gone only on the kernel's word (nsfs handles: Linux 6.18, the initial PID namespace, root); the
    # kernel tears a namespace down asynchronously, so "alive" may last a moment after the delete
    from cni_ipam.plugin import nsfs

    sure = nsfs.Kernel().why_not() is None
    expected = ("stranded", "netns-gone") if sure else ("unknown", "netns-unsure")
    for _ in range(50):
        rc, out, err = cli(
            "show", "--data-dir", str(data), "--conf-dir", str(confdir), "--ips", "--json", "--grace", "0"
        )
        net = json.loads(out)["networks"][0]
        if net["reservations"][0]["liveness"]["state"] != "live":
            break
        time.sleep(0.1)
    assert (net["reservations"][0]["liveness"]["state"], net["reservations"][0]["liveness"]["reason"]) == expected
    assert net["stranded"] == ({"netns-gone": 1} if sure else {}) and rc == 0  # 1 of 5: ok
    rc, out, err = cli("metrics", "--data-dir", str(data), "--conf-dir", str(confdir), "--grace", "0")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in parser.text_string_to_metric_families(out)
        for s in fam.samples
    }
    stranded = ("cni_ipam_stranded_reservations", (("network", "ops-live"), ("reason", "netns-gone")))
    assert values[stranded] == (1 if sure else 0)
    assert rc == 0
