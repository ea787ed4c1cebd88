"""`cni-ipam lint`: every conf example passes; each bad conf is caught with its file and key."""

import json
import os

import pytest

from cni_ipam.plugin import netconf as config
from cni_ipam.admin import conffiles, lint
from tests.helpers import ROOT, run_admin

EXAMPLES = os.path.join(ROOT, "conf-examples")
EXAMPLE_FILES = sorted(f for f in os.listdir(EXAMPLES) if f.endswith((".conf", ".conflist", ".json")))
# every conf example of the tree, the feature subdirectories (conf-examples/podcidr/...) included
ALL_EXAMPLES = sorted(os.path.relpath(os.path.join(d, f), EXAMPLES) for d, _, files in os.walk(EXAMPLES)
                      for f in files if f.endswith((".conf", ".conflist")))


def run_lint(*args):
    return run_admin("lint", *args)


def lint_json(*args):
    rc, out, err = run_lint("--json", *args)
    assert out, err
    return rc, json.loads(out)


def conflist(tmp_path, name, ipam, fname=None, plugin_type="bridge", extra=None, version="1.0.0"):
    ipam = dict(ipam)
    ipam.setdefault("type", "cni-ipam")
    plugin = {"type": plugin_type, "ipam": ipam}
    plugin.update(extra or {})
    doc = {"cniVersion": version, "name": name, "plugins": [plugin]}
    path = tmp_path / (fname or f"{name}.conflist")
    path.write_text(json.dumps(doc))
    return str(path)


def findings(doc, level=None, check=None):
    return [
        f for f in doc["findings"] if (level is None or f["level"] == level) and (check is None or f["check"] == check)
    ]


def only(doc, level, check):
    got = findings(doc, level, check)
    assert len(got) == 1, doc["findings"]
    return got[0]


# ---------------------------------------------------------------------- the examples
def test_examples_exist():
    assert set(EXAMPLE_FILES) >= {"bridge.conflist", "macvlan.conflist", "dualstack.conflist", "exclude.conflist",
                                  "usePodCidr.conflist", "static-podcidr.conflist"}


POD_CIDRS = ("--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:10:244:1::/64")


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_each_example_is_clean(name):
    # --pod-cidr: off the node (no pod CIDR cache, no static file, no flannel) a usePodCidr range is
    # otherwise "not known offline", a warning (test_use_pod_cidr_examples_off_the_node)
    rc, doc = lint_json("--no-host", "--strict", *POD_CIDRS, os.path.join(EXAMPLES, name))
    assert rc == 0, doc["findings"]
    assert doc["errors"] == 0 and doc["warnings"] == 0


@pytest.mark.parametrize("name", [n for n in ALL_EXAMPLES if "usePodCidr" in open(os.path.join(EXAMPLES, n)).read()])
def test_use_pod_cidr_examples_off_the_node(name):
    """Without --pod-cidr, on a machine that is not the node: each usePodCidr range that the file
    itself does not pin (podCidr.static) is one "pod CIDR not known offline" warning, nothing else."""
    rc, doc = lint_json("--no-host", os.path.join(EXAMPLES, name))
    assert rc == 0 and doc["errors"] == 0, doc["findings"]
    warned = findings(doc, "warning")
    assert all(f["check"] == "pod-cidr" and "pod CIDR not known offline" in f["message"] for f in warned), warned
    with open(os.path.join(EXAMPLES, name)) as fh:
        text = fh.read()
    assert len(warned) == (0 if '"static":' in text else text.count('"usePodCidr'))
    rc, doc = lint_json("--no-host", "--strict", os.path.join(EXAMPLES, name))
    assert rc == (1 if warned else 0)


def test_examples_together_with_cluster_settings():
    """All examples side by side (no overlaps between them), with a kubeadm-style cluster."""
    rc, doc = lint_json(
        "--no-host",
        "--strict",
        "--pod-cidr",
        "10.244.1.0/24",
        "--pod-cidr",
        "fd00:10:244:1::/64",
        "--cluster-cidr",
        "10.0.0.0/8",
        "--service-cidr",
        "10.96.0.0/12",
        "--node-cidr",
        "172.30.0.0/16",
        EXAMPLES,
    )
    assert rc == 0, doc["findings"]
    assert len(doc["files"]) == len(EXAMPLE_FILES)
    infos = findings(doc, "info", "pod-cidr")
    assert {(os.path.basename(f["file"]), f["key"]) for f in infos} == {
        ("static-podcidr.conflist", "plugins[0].ipam.subnet"),
        ("usePodCidr.conflist", "plugins[0].ipam.ranges[0][0].subnet"),
        ("usePodCidr.conflist", "plugins[0].ipam.ranges[1][0].subnet"),
    }


def test_examples_load_in_the_plugin_config():
    """The examples without usePodCidr are accepted by config.load exactly as the plugin runs it."""
    for name in EXAMPLE_FILES:
        for att in conffiles.read_conf_file(os.path.join(EXAMPLES, name)):
            if att.ipam_type == "cni-ipam" and "usePodCidr" not in json.dumps(att.netconf):
                cfg = config.load(att.netconf, {})
                assert cfg.range_sets, name


def test_example_max_pods():
    rc, doc = lint_json("--no-host", "--max-pods", "110", os.path.join(EXAMPLES, "macvlan.conflist"))
    f = only(doc, "error", "max-pods")
    assert f["key"] == "plugins[0].ipam.ranges[0]" and "100 usable" in f["message"] and rc == 1
    rc, doc = lint_json("--no-host", "--max-pods", "100", os.path.join(EXAMPLES, "macvlan.conflist"))
    assert rc == 0 and not findings(doc, "error")


# ---------------------------------------------------------------------- what the plugin rejects
@pytest.mark.parametrize(
    "ipam,key,text",
    [
        ({"ranges": [[{"subnet": "10.80.0.0/33"}]]}, "plugins[0].ipam.ranges[0][0].subnet", "not a CIDR"),
        ({"ranges": [[{"subnet": "10.80.0.1/24"}]]}, "plugins[0].ipam.ranges[0][0].subnet", "host bits"),
        (
            {"ranges": [[{"subnet": "10.80.0.0/24", "gateway": "10.81.0.1"}]]},
            "plugins[0].ipam.ranges[0][0].gateway",
            "not in network",
        ),
        (
            {"ranges": [[{"subnet": "10.80.0.0/24", "rangeStart": "10.80.0.50", "rangeEnd": "10.80.0.10"}]]},
            "plugins[0].ipam.ranges[0][0].rangeStart",
            "after rangeEnd",
        ),
        (
            {"ranges": [[{"subnet": "10.80.0.0/24"}], [{"subnet": "10.80.0.128/25"}]]},
            "plugins[0].ipam.ranges[1]",
            "overlaps",
        ),
        (
            {"ranges": [[{"subnet": "10.80.0.0/24"}]], "exclude": ["10.80.0.300"]},
            "plugins[0].ipam.exclude[0]",
            "not an address",
        ),
        ({"ranges": [[{"subnet": "10.80.0.0/24"}]], "dataDir": "relative/dir"}, "plugins[0].ipam.dataDir", "absolute"),
        ({}, "plugins[0].ipam.ranges", "no IP ranges"),
        (
            {"ranges": [[{"subnet": "10.80.0.0/24"}]], "routes": [{"dst": "10.0.0.0"}]},
            "plugins[0].ipam.routes[0].dst",
            "CIDR",
        ),
    ],
)
def test_plugin_rejections_carry_the_key(tmp_path, ipam, key, text):
    path = conflist(tmp_path, "ops-bad", ipam)
    rc, doc = lint_json("--no-host", path)
    f = only(doc, "error", "config")
    assert (f["file"], f["key"]) == (path, key) and text in f["message"]
    assert rc == 1


def test_header_and_structure_errors(tmp_path):
    bad_name = conflist(tmp_path, "bad name!", {"ranges": [[{"subnet": "10.81.0.0/24"}]]}, fname="a.conflist")
    bad_version = conflist(
        tmp_path, "ops-v", {"ranges": [[{"subnet": "10.81.1.0/24"}]]}, fname="b.conflist", version="9.9.9"
    )
    not_json = tmp_path / "c.conflist"
    not_json.write_text("{ nope")
    no_plugins = tmp_path / "d.conflist"
    no_plugins.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "ops-d",
                "type": "bridge",
                "ipam": {"type": "cni-ipam", "subnet": "10.81.2.0/24"},
            }
        )
    )
    no_type = tmp_path / "e.conflist"
    no_type.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "ops-e",
                "plugins": [{"ipam": {"type": "cni-ipam", "subnet": "10.81.3.0/24"}}],
            }
        )
    )
    rc, doc = lint_json("--no-host", bad_name, bad_version, str(not_json), str(no_plugins), str(no_type))
    errs = {(os.path.basename(f["file"]), f["key"], f["check"]) for f in findings(doc, "error")}
    assert errs == {
        ("a.conflist", "name", "config"),
        ("b.conflist", "cniVersion", "config"),
        ("c.conflist", "", "structure"),
        ("d.conflist", "plugins", "structure"),
        ("e.conflist", "plugins[0].type", "structure"),
    }
    assert rc == 1


def test_single_conf_file_and_legacy_keys(tmp_path):
    path = tmp_path / "10-legacy.conf"
    path.write_text(
        json.dumps(
            {
                "cniVersion": "0.3.1",
                "name": "ops-legacy",
                "type": "bridge",
                "ipam": {
                    "type": "cni-ipam",
                    "subnet": "10.82.0.0/24",
                    "rangeStart": "10.82.0.10",
                    "rangeEnd": "10.82.0.19",
                    "gateway": "10.82.0.0",
                },
            }
        )
    )
    rc, doc = lint_json("--no-host", "--max-pods", "11", str(path))
    assert only(doc, "warning", "gateway")["key"] == "ipam.gateway"
    assert only(doc, "error", "max-pods")["key"] == "ipam" and "10 usable" in only(doc, "error", "max-pods")["message"]
    assert rc == 1


# ---------------------------------------------------------------------- lint's own checks
def test_exclude_outside_range_and_unknown_keys(tmp_path):
    path = conflist(tmp_path, "ops-ex", {
        "ranges": [[{"subnet": "10.83.0.0/24", "rangeStart": "10.83.0.10", "rangeEnd": "10.83.0.99",
                     "exclude": ["10.83.0.20", "10.83.0.200/30", "fd00::1"], "gatway": "10.83.0.1"}]],
        "exclude": ["10.83.0.50", "192.168.0.0/16"],
        "exlude": ["10.83.0.1"],
    })
    rc, doc = lint_json("--no-host", path)
    outside = {f["key"] for f in findings(doc, "warning", "exclude-outside-range")}
    assert outside == {
        "plugins[0].ipam.ranges[0][0].exclude[1]",
        "plugins[0].ipam.ranges[0][0].exclude[2]",
        "plugins[0].ipam.exclude[1]",
    }
    unknown = {f["key"] for f in findings(doc, "warning", "unknown-key")}
    assert unknown == {"plugins[0].ipam.exlude", "plugins[0].ipam.ranges[0][0].gatway"}
    assert rc == 0  # warnings only
    assert run_lint("--no-host", "--strict", path)[0] == 1


def test_fully_excluded_range_is_an_error(tmp_path):
    path = conflist(tmp_path, "ops-empty", {"ranges": [[{"subnet": "10.84.0.0/29", "exclude": ["10.84.0.0/29"]}]]})
    rc, doc = lint_json("--no-host", path)
    assert only(doc, "error", "empty-range")["key"] == "plugins[0].ipam.ranges[0][0]" and rc == 1


def test_overlap_between_networks(tmp_path):
    a = conflist(tmp_path, "ops-a", {"ranges": [[{"subnet": "10.85.0.0/16"}]]})
    b = conflist(tmp_path, "ops-b", {"ranges": [[{"subnet": "10.86.0.0/24"}], [{"subnet": "fd00:85::/64"}]]})
    c = conflist(tmp_path, "ops-c", {"ranges": [[{"subnet": "10.85.7.0/24"}]]})
    # same subnet, disjoint ranges: the per-node split of one LAN is fine
    d = conflist(
        tmp_path,
        "ops-d",
        {"ranges": [[{"subnet": "192.168.9.0/24", "rangeStart": "192.168.9.10", "rangeEnd": "192.168.9.19"}]]},
        plugin_type="macvlan",
        extra={"master": "eth0"},
    )
    e = conflist(
        tmp_path,
        "ops-e",
        {"ranges": [[{"subnet": "192.168.9.0/24", "rangeStart": "192.168.9.20", "rangeEnd": "192.168.9.29"}]]},
        plugin_type="macvlan",
        extra={"master": "eth0"},
    )
    rc, doc = lint_json("--no-host", a, b, c, d, e)
    f = only(doc, "error", "overlap-network")
    assert (
        (f["file"], f["key"]) == (c, "plugins[0].ipam.ranges[0][0]") and "ops-a" in f["message"] and a in f["message"]
    )
    assert rc == 1


def test_same_network_twice_with_other_ranges(tmp_path):
    a = conflist(tmp_path, "ops-twice", {"ranges": [[{"subnet": "10.87.0.0/24"}]]}, fname="a.conflist")
    b = conflist(tmp_path, "ops-twice", {"ranges": [[{"subnet": "10.87.1.0/24"}]]}, fname="b.conflist")
    rc, doc = lint_json("--no-host", a, b)
    assert only(doc, "warning", "duplicate-network")["file"] == b and rc == 0


def test_cluster_service_node_and_other_cidrs(tmp_path):
    pods = conflist(tmp_path, "ops-pods", {"ranges": [[{"subnet": "10.244.3.0/24"}]]})
    across = conflist(tmp_path, "ops-across", {"ranges": [[{"subnet": "10.244.0.0/14"}]]})
    svc = conflist(tmp_path, "ops-svc", {"ranges": [[{"subnet": "10.96.5.0/24"}]]})
    near = conflist(
        tmp_path,
        "ops-near",
        {"ranges": [[{"subnet": "172.16.0.0/24", "rangeStart": "172.16.0.128", "rangeEnd": "172.16.0.254"}]]},
    )
    lan = conflist(
        tmp_path,
        "ops-lan",
        {"ranges": [[{"subnet": "192.168.5.0/24", "rangeStart": "192.168.5.200", "rangeEnd": "192.168.5.250"}]]},
        plugin_type="macvlan",
        extra={"master": "eth0"},
    )
    rc, doc = lint_json("--no-host", "--cluster-cidr", "10.244.0.0/15", "--service-cidr", "10.96.0.0/12",
                        "--node-cidr", "192.168.5.0/24", "--cidr", "172.16.0.0/25", pods, across, svc, near, lan)
    assert only(doc, "error", "cluster-cidr")["file"] == across
    assert only(doc, "error", "overlap-service")["file"] == svc
    w = only(doc, "warning", "overlap-cidr")
    assert w["file"] == near and "the range itself does not" in w["message"]
    w = only(doc, "warning", "overlap-node")
    assert w["file"] == lan and "192.168.5.200" in w["message"]
    assert not [f for f in doc["findings"] if f["file"] == pods and f["level"] != "info"]
    assert rc == 1
    bridge_on_lan = conflist(tmp_path, "ops-brlan", {"ranges": [[{"subnet": "192.168.5.0/24"}]]})
    rc, doc = lint_json("--no-host", "--node-cidr", "192.168.5.0/24", bridge_on_lan)
    assert only(doc, "error", "overlap-node")["file"] == bridge_on_lan and rc == 1


def test_use_pod_cidr_without_the_api(tmp_path):
    ipam = {"ranges": [[{"subnet": "usePodCidr", "rangeStart": "10.244.7.10"}], [{"subnet": "usePodCidrIPv6"}]],
            "podCidr": {"kubeconfig": "/etc/cni/net.d/cni-ipam.d/cni-ipam.kubeconfig", "nodeName": "node-1"}}
    path = conflist(tmp_path, "ops-pc", ipam)
    rc, doc = lint_json("--no-host", "--max-pods", "110", path)  # no cache of node-1: not known offline
    assert rc == 0 and not findings(doc, "error") and len(findings(doc, "warning", "pod-cidr")) == 2
    rc, doc = lint_json("--no-host", "--max-pods", "300", "--pod-cidr", "10.244.7.0/24", "--pod-cidr", "fd00:7::/64",
                        "--service-cidr", "fd00:7::/112", path)
    assert only(doc, "error", "max-pods")["key"] == "plugins[0].ipam.ranges[0]"  # 10.244.7.10-.254: 245 < 300
    assert only(doc, "error", "overlap-service")["key"] == "plugins[0].ipam.ranges[1][0]"
    assert rc == 1
    # rangeStart must fit the pod CIDR, as the plugin requires
    rc, doc = lint_json("--no-host", "--pod-cidr", "10.245.7.0/24", path)
    assert only(doc, "error", "config")["key"] == "plugins[0].ipam.ranges[0][0].rangeStart" and rc == 1
    # a pod CIDR must come out of the cluster CIDR
    plain = conflist(tmp_path, "ops-pc2", {"subnet": "usePodCidr"})
    rc, doc = lint_json("--no-host", "--pod-cidr", "10.245.7.0/24", "--cluster-cidr", "10.244.0.0/16", plain)
    w = only(doc, "warning", "cluster-cidr")
    assert w["key"] == "plugins[0].ipam" and "10.245.7.0/24" in w["message"] and rc == 0
    rc, doc = lint_json("--no-host", "--pod-cidr", "10.244.7.0/24", "--cluster-cidr", "10.244.0.0/16", plain)
    assert not findings(doc, "warning") and rc == 0


@pytest.mark.parametrize("pod_cidr,key,text", [
    ({"sources": ["kubernetes", "nope"]}, "plugins[0].ipam.podCidr.sources", "sources"),
    ({"kubeconfig": "relative.kubeconfig"}, "plugins[0].ipam.podCidr.kubeconfig", "absolute"),
    ({"nodeName": "Not_A_Node"}, "plugins[0].ipam.podCidr.nodeName", "node name"),
    ({"static": ["10.9.0.0/24", "10.10.0.0/24"]}, "plugins[0].ipam.podCidr.static", "more than one"),
    ({"bogus": 1}, "plugins[0].ipam.podCidr", "unknown keys"),
])
def test_pod_cidr_keys(tmp_path, pod_cidr, key, text):
    path = conflist(tmp_path, "ops-pck", {"subnet": "usePodCidr", "podCidr": pod_cidr})
    rc, doc = lint_json("--no-host", path)
    f = only(doc, "error", "pod-cidr")
    assert f["key"] == key and text in f["message"] and rc == 1


def test_static_pod_cidr_is_used_and_family_checked(tmp_path):
    path = conflist(tmp_path, "ops-st", {"ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]],
                                         "podCidr": {"sources": ["static"], "static": ["10.88.4.0/24"]}})
    rc, doc = lint_json("--no-host", "--service-cidr", "10.88.0.0/16", path)
    assert only(doc, "error", "pod-cidr")["key"] == "plugins[0].ipam.ranges[1][0].subnet"  # no IPv6 CIDR
    assert only(doc, "error", "overlap-service")["key"] == "plugins[0].ipam.ranges[0][0]"
    assert rc == 1


def test_host_local_type(tmp_path):
    ok = conflist(tmp_path, "ops-hl", {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]})
    bad = conflist(tmp_path, "ops-hl2", {"type": "host-local", "subnet": "usePodCidr", "exclude": ["10.89.1.5"]})
    rc, doc = lint_json("--no-host", ok, bad)
    assert not [f for f in doc["findings"] if f["file"] == ok and f["level"] != "info"]
    assert {f["key"] for f in findings(doc, "error", "pod-cidr") if f["file"] == bad} == {"plugins[0].ipam.subnet"}
    assert {f["key"] for f in findings(doc, "warning", "ipam-type")} == {"plugins[0].ipam.exclude"}
    assert rc == 1


def test_other_ipam_is_skipped(tmp_path):
    path = conflist(tmp_path, "ops-dhcp", {"type": "dhcp"})
    rc, doc = lint_json("--no-host", path)
    assert rc == 0 and only(doc, "info", "ipam-type")["file"] == path


def test_text_output_and_usage(tmp_path):
    path = conflist(tmp_path, "ops-txt", {"ranges": [[{"subnet": "10.90.0.0/24", "gateway": "10.91.0.1"}]]})
    rc, out, _ = run_lint("--no-host", path)
    assert rc == 1
    assert f"{path}: plugins[0].ipam.ranges[0][0].gateway: error: invalid ipam.ranges[0][0].gateway" in out
    assert out.strip().endswith("1 file(s): 1 error(s), 0 warning(s)")
    assert run_lint()[0] == 64  # usage error: the same code in every command
    assert run_lint("--no-host", str(tmp_path / "empty-dir-that-is-missing"))[0] == 1
    (tmp_path / "empty").mkdir()
    assert run_lint("--no-host", str(tmp_path / "empty"))[0] == 66  # no conf file to look at
    assert run_lint("--no-host", "--service-cidr", "banana", path)[0] == 64
    assert run_lint("--no-host", "--max-pods", "0", path)[0] == 64


def test_every_finding_in_one_run(tmp_path):
    """Several config errors in one file are all reported, and the file's valid ranges still take
    part in the overlap checks (before: the first error only, and no overlap check for the file)."""
    bad = conflist(tmp_path, "ops-many", MANY_ERRORS, fname="a.conflist")
    other = conflist(tmp_path, "ops-other", {"ranges": [[{"subnet": "fd00:92::/64"}]]}, fname="b.conflist")
    rc, doc = lint_json("--no-host", bad, other)
    keys = sorted(f["key"] for f in findings(doc, "error", "config"))
    assert keys == sorted([
        "plugins[0].ipam.ranges[0][0].gateway", "plugins[0].ipam.ranges[0][0].rangeStart",
        "plugins[0].ipam.ranges[1][0].subnet", "plugins[0].ipam.ranges[3][1].subnet",
        "plugins[0].ipam.routes[0].dst", "plugins[0].ipam.dataDir", "plugins[0].ipam.lockTimeout",
    ]), doc["findings"]
    for f in findings(doc, "error", "config"):  # the message names the key as the file has it
        if "ranges[" in f["key"]:
            assert f["key"].split(".", 2)[2].rsplit(".", 1)[0] in f["message"], f
    overlap = only(doc, "error", "overlap-network")
    assert overlap["file"] == other and "ops-many" in overlap["message"] and "ipam.ranges[2][0]" in overlap["message"]
    assert rc == 1


MANY_ERRORS = {
    "ranges": [
        [{"subnet": "10.92.0.0/24", "gateway": "10.93.0.1", "rangeStart": "10.92.1.5"}],  # two bad keys
        [{"subnet": "10.94.0.0/33"}],                                                       # bad subnet
        [{"subnet": "fd00:92::/64"}],                                                       # valid
        [{"subnet": "10.95.0.0/24"}, {"subnet": "fd00:95::/64"}],                           # mixed families
    ],
    "routes": [{"dst": "10.0.0.0"}],
    "dataDir": "relative/dir",
    "lockTimeout": "soon",
}


def parses(monkeypatch):
    """Count the parses of the plugin's netconf.load (the real one runs: a spy, not a stand-in)."""
    calls = []
    real = config.load

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(config, "load", counting)
    return calls


def lint_in_process(*paths):
    return lint.Linter(lint.Options(host=False)).run(list(paths))


def test_one_parse_when_valid_one_more_per_error(tmp_path, monkeypatch):
    """A valid ipam section is parsed once; a broken one once per error plus the final parse, each
    time whole (not a sub-config made of parts of it), and every error is still reported."""
    calls = parses(monkeypatch)
    ok = conflist(tmp_path, "ops-once", {"ranges": [[{"subnet": "10.97.0.0/24"}], [{"subnet": "fd00:97::/64"}]],
                                         "routes": [{"dst": "0.0.0.0/0"}], "exclude": ["10.97.0.5"]})
    assert not [f for f in lint_in_process(ok) if f.level != "info"]
    assert len(calls) == 1
    del calls[:]
    bad = conflist(tmp_path, "ops-many", MANY_ERRORS)
    errors = [f for f in lint_in_process(bad) if f.level == "error"]
    assert len(errors) == 7 and len(calls) == 8, [str(f) for f in errors]
    assert all(c["name"] == "ops-many" and len(c["ipam"]["ranges"]) == 4 for c in calls)  # the whole section each time


@pytest.mark.parametrize(
    "ipam,keys",
    [
        # the legacy top-level range: its own keys, then the rest of the section
        (
            {
                "subnet": "10.98.0.0/24",
                "gateway": "10.99.0.1",
                "rangeEnd": "10.98.1.1",
                "routes": [{"dst": "x"}],
                "lockTimeout": 0,
            },
            ["ipam.gateway", "ipam.rangeEnd", "ipam.routes[0].dst", "ipam.lockTimeout"],
        ),
        # no range at all: the rest is still checked
        (
            {"dataDir": "rel", "exclude": ["nope"], "statusOnExhaustion": "maybe"},
            ["ipam.ranges", "ipam.exclude[0]", "ipam.dataDir", "ipam.statusOnExhaustion"],
        ),
        # a range set that is not a list, a range that is not an object, a range set overlapping the legacy range
        (
            {"subnet": "10.98.0.0/24", "ranges": [{"subnet": "10.98.1.0/24"}, [7], [{"subnet": "10.98.0.128/25"}]]},
            ["ipam.ranges[0]", "ipam.ranges[1][0]", "ipam.ranges[2]"],
        ),
        # a pool is judged against valid range sets only ...
        (
            {
                "ranges": [[{"subnet": "10.98.0.0/33"}]],
                "pool": {"name": "p", "blockSize": 99, "etcd": {"endpoints": ["http://127.0.0.1:9"]}},
            },
            ["ipam.ranges[0][0].subnet"],
        ),
        # ... and then with the rest
        (
            {
                "ranges": [[{"subnet": "10.98.0.0/24"}]],
                "routes": [{"dst": "x"}],
                "pool": {"name": "p", "blockSize": 99, "etcd": {"endpoints": ["http://127.0.0.1:9"]}},
            },
            ["ipam.pool.blockSize", "ipam.routes[0].dst"],
        ),
    ],
)
def test_every_error_of_each_kind_of_part(tmp_path, ipam, keys):
    path = conflist(tmp_path, "ops-parts", ipam)
    got = [f.key for f in lint_in_process(path) if f.level == "error" and f.check == "config"]
    assert sorted(got) == sorted("plugins[0]." + k for k in keys), got


def test_range_sets_that_overlap_each_other_are_all_named(tmp_path):
    path = conflist(tmp_path, "ops-sets", {"ranges": [[{"subnet": "10.96.0.0/24"}], [{"subnet": "10.96.0.0/25"}],
                                                      [{"subnet": "10.96.0.128/25"}], [{"subnet": "fd00:96::/64"}]]},
                    version="0.3.1")
    rc, doc = lint_json("--no-host", path)
    msgs = [(f["key"], f["message"]) for f in findings(doc, "error", "config")]
    assert [k for k, _ in msgs] == ["plugins[0].ipam.ranges[1]", "plugins[0].ipam.ranges[2]"], msgs
    assert all("ipam.ranges[0]" in m for _, m in msgs) and rc == 1


def test_host_check_reads_this_namespace():
    """Without --no-host the host's addresses and routes are read (pyroute2) and compared; the
    example's 10.22.0.0/16 is not on this machine, so nothing is reported."""
    pytest.importorskip("pyroute2")
    lo = os.path.join(EXAMPLES, "bridge.conflist")
    rc, doc = lint_json(lo)
    assert not findings(doc, "error", "host") and rc == 0


def test_host_address_inside_a_range(tmp_path):
    pytest.importorskip("pyroute2")
    addrs, _ = lint.host_networks()
    v4 = [(ip, plen, dev) for ip, plen, dev in addrs if ip.version == 4 and dev != "lo" and plen <= 30]
    if not v4:
        pytest.skip("this host has no IPv4 address outside lo")
    ip, plen, dev = v4[0]
    import ipaddress

    net = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
    rng = {"subnet": str(net)}
    if ip == net.network_address + 1:  # keep the host address off the gateway (a bridge's own address)
        rng["gateway"] = str(ip + 1)
    path = conflist(tmp_path, "ops-host", {"ranges": [[rng]]})
    rc, doc = lint_json(path)
    f = only(doc, "error", "host-address")
    assert str(ip) in f["message"] and dev in f["message"] and rc == 1
