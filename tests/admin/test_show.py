"""`cni-ipam show`: exact numbers on prepared data directories, levels, exit codes, --ips, --json.

Data directories are written by the real store (as ADD writes them), by the plugin executable, and
by Debian's host-local; nothing is mocked.
"""

import ipaddress
import json
import os
import time

import pytest

from cni_ipam.admin import liveness
from cni_ipam.admin import options, output
from cni_ipam.admin import show as report
from cni_ipam.store.network import NetworkStore
from tests.helpers import have_host_local, run_admin, run_host_local, run_plugin


def write_conf(conf_dir, name, ipam, fname=None, data_dir=None):
    ipam = dict(ipam)
    ipam.setdefault("type", "cni-ipam")
    if data_dir is not None:
        ipam["dataDir"] = str(data_dir)
    doc = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "bridge", "bridge": "ops-br0", "ipam": ipam}]}
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / (fname or f"10-{name}.conflist")
    path.write_text(json.dumps(doc))
    return doc


def plugin_conf(doc):
    p = dict(doc["plugins"][0])
    p["name"] = doc["name"]
    p["cniVersion"] = doc["cniVersion"]
    return p


def reserve(data_dir, network, items, meta=None):
    """items: [(ip, containerID)]; metadata as ADD records it (or ``meta``)."""
    with NetworkStore(str(data_dir), network) as st:
        for ip, cid in items:
            addr = ipaddress.ip_address(ip)
            assert st.reserve(addr, cid, "eth0")
            st.save_owner(
                cid,
                "eth0",
                [addr],
                dict(meta if meta is not None else {"created": time.time() - 3600, "bootId": st.boot_id}),
            )


def show(*args):
    return run_admin("show", *args)


def show_json(tmp_path, *args):
    rc, out, err = show("--data-dir", str(tmp_path / "data"), "--conf-dir", str(tmp_path / "conf"), "--json", *args)
    assert out, err
    return rc, json.loads(out)


# a range of exactly 20 addresses: .2-.21 (the gateway .1 lies outside it)
TWENTY = {"ranges": [[{"subnet": "10.61.0.0/27", "rangeStart": "10.61.0.2", "rangeEnd": "10.61.0.21"}]]}


@pytest.mark.parametrize(
    "count,level,rc",
    [
        (0, "ok", 0),
        (13, "ok", 0),
        (14, "warning", 1),
        (16, "warning", 1),
        (17, "critical", 2),
        (18, "critical", 2),
        (19, "emergency", 3),
        (20, "emergency", 3),
    ],
)
def test_levels_and_exit_codes(tmp_path, count, level, rc):
    write_conf(tmp_path / "conf", "ops-twenty", TWENTY, data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    reserve(tmp_path / "data", "ops-twenty", [(f"10.61.0.{2 + i}", f"c{i}") for i in range(count)])
    got_rc, doc = show_json(tmp_path)
    assert got_rc == rc
    net = doc["networks"][0]
    assert net["name"] == "ops-twenty"
    (s,) = net["rangeSets"]
    assert (s["size"], s["reserved"], s["free"]) == (20, count, 20 - count)
    assert s["percent"] == pytest.approx(count * 5.0)
    assert s["level"] == level == net["level"] == doc["level"]


def test_thresholds_are_configurable(tmp_path):
    write_conf(tmp_path / "conf", "ops-twenty", TWENTY, data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    reserve(tmp_path / "data", "ops-twenty", [(f"10.61.0.{2 + i}", f"c{i}") for i in range(12)])  # 60 %
    assert show_json(tmp_path)[0] == 0
    rc, doc = show_json(tmp_path, "--warning", "50", "--critical", "60", "--emergency", "90")
    assert rc == 2 and doc["level"] == "critical"
    assert doc["thresholds"] == {"warning": 50.0, "critical": 60.0, "emergency": 90.0}
    rc, _, err = show("--data-dir", str(tmp_path / "data"), "--warning", "90", "--critical", "80")
    assert rc == options.EXIT_USAGE and "thresholds" in err


def test_level_for_boundaries():
    assert output.level_for(69.99) == "ok"
    assert output.level_for(70) == "warning"
    assert output.level_for(84.9) == "warning"
    assert output.level_for(85) == "critical"
    assert output.level_for(95) == "emergency"
    assert output.level_for(100) == "emergency"
    assert output.level_for(50, (40, 45, 50)) == "emergency"


def test_dual_stack_exclude_and_outside(tmp_path):
    ipam = {
        "ranges": [
            [{"subnet": "10.62.0.0/28", "exclude": ["10.62.0.8/30"]}],  # .2-.14 minus .8-.11 = 9
            [{"subnet": "fd00:62::/120", "rangeStart": "fd00:62::10", "rangeEnd": "fd00:62::1f"}],  # 16
        ],
    }
    write_conf(tmp_path / "conf", "ops-ds", ipam, data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    reserve(
        tmp_path / "data",
        "ops-ds",
        [
            ("10.62.0.2", "a"),
            ("10.62.0.3", "b"),
            ("10.62.0.4", "c"),
            ("10.62.0.5", "d"),
            ("10.62.0.6", "e"),
            ("10.62.0.7", "f"),
            ("10.62.0.12", "g"),
            ("10.62.0.13", "h"),
            ("fd00:62::10", "a"),
            ("fd00:62::11", "b"),
            ("10.62.0.9", "x"),  # excluded since: not allocatable any more
            ("10.62.1.5", "y"),
        ],
    )       # outside every range (conf changed)
    rc, doc = show_json(tmp_path)
    net = doc["networks"][0]
    v4, v6 = net["rangeSets"]
    assert (v4["family"], v4["size"], v4["reserved"], v4["free"]) == ("ipv4", 9, 8, 1)
    assert v4["level"] == "critical" and v4["percent"] == pytest.approx(88.89)
    assert (v6["family"], v6["size"], v6["reserved"], v6["free"], v6["level"]) == ("ipv6", 16, 2, 14, "ok")
    assert net["reserved"] == 12 and net["outsideRanges"] == 2
    assert net["level"] == "critical" and rc == 2


def test_ips_owner_pod_age_and_liveness(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_conf(tmp_path / "conf", "ops-ips", {"ranges": [[{"subnet": "10.63.0.0/24"}]]}, data_dir=data)
    alive = tmp_path / "netns-alive"
    alive.write_text("")
    st = os.stat(alive)
    now = time.time()
    boot = liveness.read_boot_id()
    base = {"bootId": boot, "created": now - 7200}
    reserve(
        data,
        "ops-ips",
        [("10.63.0.2", "alive1")],
        {
            **base,
            "netns": str(alive),
            "netnsDev": st.st_dev,
            "netnsIno": st.st_ino,
            "k8s": {"namespace": "web", "name": "front-1", "uid": "u1"},
        },
    )
    reserve(data, "ops-ips", [("10.63.0.3", "gone1")], {**base, "netns": str(tmp_path / "no-such-netns")})
    reserve(data, "ops-ips", [("10.63.0.4", "oldboot")], {**base, "bootId": "another-boot"})
    reserve(
        data,
        "ops-ips",
        [("10.63.0.5", "young")],
        {"bootId": boot, "created": now - 10, "netns": str(tmp_path / "nope")},
    )
    rc, doc = show_json(tmp_path, "--ips")
    net = doc["networks"][0]
    res = {r["ip"]: r for r in net["reservations"]}
    assert list(res) == ["10.63.0.2", "10.63.0.3", "10.63.0.4", "10.63.0.5"]
    a = res["10.63.0.2"]
    assert (a["containerID"], a["ifname"], a["rangeSet"]) == ("alive1", "eth0", 0)
    assert a["pod"] == {"namespace": "web", "name": "front-1", "uid": "u1"}
    assert a["createdFrom"] == "meta" and 7190 < a["ageSeconds"] < 7300
    assert (a["liveness"]["state"], a["liveness"]["reason"]) == ("live", "netns-alive")
    # a vanished path with no recorded identity proves nothing: unknown, kept
    assert res["10.63.0.3"]["liveness"]["reason"] == "netns-no-identity" and res["10.63.0.3"]["pod"] is None
    assert res["10.63.0.4"]["liveness"]["reason"] == "previous-boot"
    assert (res["10.63.0.5"]["liveness"]["state"], res["10.63.0.5"]["liveness"]["reason"]) == ("live", "grace-period")
    assert net["stranded"] == {"previous-boot": 1}
    assert net["liveness"] == {"live": 2, "stranded": 1, "unknown": 1}
    # a shorter grace period judges the young one too
    _, doc = show_json(tmp_path, "--ips", "--grace", "1")
    assert doc["networks"][0]["stranded"] == {"previous-boot": 1}
    # the table shows the same
    rc, out, _ = show("--data-dir", str(data), "--conf-dir", str(tmp_path / "conf"), "--ips")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("10.63.0.2 "))
    assert "web/front-1" in line and "2h" in line and "live/netns-alive" in line
    assert "unknown/netns-no-identity" in next(ln for ln in out.splitlines() if ln.startswith("10.63.0.3 "))
    summary = next(ln for ln in out.splitlines() if ln.startswith("ops-ips "))
    assert summary.split() == ["ops-ips", "0", "10.63.0.0/24", "253", "4", "249", "1.6%", "ok", "1"]


def test_plugin_written_directory(tmp_path):
    """Reservations made by the plugin executable: CNI_ARGS pod name lands in the report."""
    data = tmp_path / "data"
    doc = write_conf(tmp_path / "conf", "ops-exe", {"ranges": [[{"subnet": "10.64.0.0/29"}]]}, data_dir=data)
    for i in range(3):
        rc, _, out, err = run_plugin(
            "ADD", plugin_conf(doc), container_id=f"exe{i}", cni_args=f"K8S_POD_NAMESPACE=ns{i};K8S_POD_NAME=pod{i}"
        )
        assert rc == 0, out + err
    rc, doc = show_json(tmp_path, "--ips")
    net = doc["networks"][0]
    assert net["rangeSets"][0]["size"] == 5 and net["rangeSets"][0]["reserved"] == 3
    assert [r["ip"] for r in net["reservations"]] == ["10.64.0.2", "10.64.0.3", "10.64.0.4"]
    assert [r["pod"]["name"] for r in net["reservations"]] == ["pod0", "pod1", "pod2"]
    assert all(r["createdFrom"] == "meta" and r["ageSeconds"] < 120 for r in net["reservations"])
    assert rc == 0  # 3 of 5 = 60 %: ok


def snapshot(path):
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.skipif(not have_host_local(), reason="Debian's host-local is not installed")
def test_host_local_written_directory_is_read_not_touched(tmp_path):
    data = tmp_path / "data"
    doc = write_conf(
        tmp_path / "conf", "ops-hl", {"type": "host-local", "ranges": [[{"subnet": "10.65.0.0/28"}]]}, data_dir=data
    )
    for i in range(4):
        rc, _, out, err = run_host_local("ADD", plugin_conf(doc), container_id=f"hl{i}")
        assert rc == 0, out + err
    before = snapshot(data)
    assert not any(".cni-ipam" in k for k in before)
    rc, doc_out = show_json(tmp_path, "--ips")
    net = doc_out["networks"][0]
    (s,) = net["rangeSets"]
    assert (s["size"], s["reserved"], s["free"]) == (13, 4, 9)  # /28: .1-.14 without the gateway
    assert [r["ip"] for r in net["reservations"]] == ["10.65.0.2", "10.65.0.3", "10.65.0.4", "10.65.0.5"]
    assert [r["containerID"] for r in net["reservations"]] == ["hl0", "hl1", "hl2", "hl3"]
    r0 = net["reservations"][0]
    assert r0["ifname"] == "eth0" and r0["pod"] is None and r0["createdFrom"] == "mtime" and r0["ageSeconds"] < 120
    assert (r0["liveness"]["state"], r0["liveness"]["reason"]) == ("unknown", "no-metadata")
    assert rc == 0
    assert snapshot(data) == before  # lock-free, read-only: nothing created, nothing rewritten


def test_directory_without_conf_and_id_only_files(tmp_path):
    data = tmp_path / "data"
    net = data / "ops-noconf"
    net.mkdir(parents=True)
    (net / "10.66.0.7").write_text("idonly")           # a very old host-local file: ID only
    (net / "10.66.0.8").write_text("c8\r\neth1")
    (net / "last_reserved_ip.0").write_text("10.66.0.8")
    (net / "lock").write_text("")
    (net / "not-an-ip").write_text("x")
    rc, doc = show_json(tmp_path, "--ips")
    (n,) = doc["networks"]
    assert n["level"] == "unknown" and n["rangeSets"] == [] and n["confFile"] is None
    assert n["reserved"] == 2
    assert [(r["ip"], r["containerID"], r["ifname"], r["rangeSet"]) for r in n["reservations"]] == [
        ("10.66.0.7", "idonly", None, None), ("10.66.0.8", "c8", "eth1", None)]
    assert rc == 4 and doc["level"] == "unknown"  # a network nobody can judge is not "ok"
    rc, out, _ = show("--data-dir", str(data), "--conf-dir", "")
    assert "(no conf file)" in out and rc == 4


def test_selection_network_and_from_conf(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    write_conf(tmp_path / "conf", "ops-one", {"ranges": [[{"subnet": "10.67.1.0/29"}]]}, data_dir=data)
    write_conf(tmp_path / "conf", "ops-two", {"ranges": [[{"subnet": "10.67.2.0/29"}]]}, data_dir=data)
    write_conf(tmp_path / "conf", "ops-far", {"ranges": [[{"subnet": "10.67.3.0/29"}]]}, data_dir=other)
    reserve(data, "ops-one", [("10.67.1.2", "a")])
    reserve(
        other,
        "ops-far",
        [("10.67.3.2", "a"), ("10.67.3.3", "b"), ("10.67.3.4", "c"), ("10.67.3.5", "d"), ("10.67.3.6", "e")],
    )
    _, doc = show_json(tmp_path)
    assert [(n["name"], n["exists"], n["rangeSets"][0]["reserved"]) for n in doc["networks"]] == [
        ("ops-one", True, 1),
        ("ops-two", False, 0),
    ]
    rc, doc = show_json(tmp_path, "--network", "ops-two")
    assert [n["name"] for n in doc["networks"]] == ["ops-two"] and rc == 0
    rc, doc = show_json(tmp_path, "--from-conf")
    assert [(n["name"], n["dataDir"]) for n in doc["networks"]] == [
        ("ops-far", str(other)),
        ("ops-one", str(data)),
        ("ops-two", str(data)),
    ]
    assert doc["networks"][0]["rangeSets"][0]["level"] == "emergency" and rc == 3


def test_invalid_conf_is_reported_not_fatal(tmp_path):
    data = tmp_path / "data"
    write_conf(
        tmp_path / "conf", "ops-bad", {"ranges": [[{"subnet": "10.68.0.0/24", "gateway": "10.99.0.1"}]]}, data_dir=data
    )
    reserve(data, "ops-bad", [("10.68.0.2", "a")])
    rc, doc = show_json(tmp_path)
    (n,) = doc["networks"]
    assert n["level"] == "unknown" and "gateway" in n["confError"] and n["reserved"] == 1 and rc == 4
    assert doc["level"] == "unknown"


def test_usage_error_exit_code(tmp_path):
    rc, _, err = show("--no-such-option")
    assert rc == options.EXIT_USAGE == 64 and "unrecognized" in err


def test_unknown_ranks_above_ok_and_below_a_real_alarm(tmp_path):
    """One network without a conf file and one at a warning: the warning decides; alone, unknown does."""
    data = tmp_path / "data"
    write_conf(tmp_path / "conf", "ops-twenty", TWENTY, data_dir=data)
    reserve(data, "ops-twenty", [(f"10.61.0.{2 + i}", f"c{i}") for i in range(14)])  # 70 %: warning
    (data / "ops-orphan").mkdir()
    rc, doc = show_json(tmp_path)
    assert [n["level"] for n in doc["networks"]] == ["unknown", "warning"] and doc["level"] == "warning" and rc == 1
    rc, doc = show_json(tmp_path, "--network", "ops-orphan")
    assert doc["level"] == "unknown" and rc == 4
    rc, doc = show_json(tmp_path, "--network", "ops-typo")  # a mistyped --network is not "ok" either
    assert doc["networks"][0]["exists"] is False and rc == 4
    assert output.worse("unknown", "ok") == "unknown" and output.worse("unknown", "critical") == "critical"


def test_mistyped_data_dir_is_an_error(tmp_path):
    rc, out, err = show("--data-dir", str(tmp_path / "no-such-dir"), "--conf-dir", "")
    assert rc == options.EXIT_NO_DATA_DIR == 66 and "does not exist" in err and out == ""
    (tmp_path / "a-file").write_text("")
    rc, _, err = show("--data-dir", str(tmp_path / "a-file"), "--conf-dir", "")
    assert rc == 66 and "not a directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, _ = show("--data-dir", str(empty), "--conf-dir", "")
    assert rc == 0 and "no networks found" in out


def test_stranded_counts_attachments_per_range_set(tmp_path):
    """Two dual-stack pods gone (4 files): 2 stranded attachments in each set, not 4 on set 0 only."""
    data = tmp_path / "data"
    ipam = {"ranges": [[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd00:70::/120"}]]}
    write_conf(tmp_path / "conf", "ops-st", ipam, data_dir=data)
    old = {"bootId": "another-boot", "created": time.time() - 7200}
    with NetworkStore(str(data), "ops-st") as st:
        for i, cid in enumerate(("gone-a", "gone-b", "alive-c")):
            addrs = [ipaddress.ip_address(f"10.70.0.{2 + i}"), ipaddress.ip_address(f"fd00:70::{2 + i}")]
            for a in addrs:
                assert st.reserve(a, cid, "eth0")
            meta = old if cid.startswith("gone") else {"bootId": st.boot_id, "created": time.time()}
            st.save_owner(cid, "eth0", addrs, dict(meta))
        assert st.reserve(ipaddress.ip_address("10.70.0.9"), "gone-a", "net1")  # a second attachment, v4 only
        st.save_owner("gone-a", "net1", [ipaddress.ip_address("10.70.0.9")], dict(old))
    rc, doc = show_json(tmp_path)
    (net,) = doc["networks"]
    assert net["stranded"] == {"previous-boot": 5}  # addresses, by reason (what metrics exports)
    assert net["strandedAttachments"] == 3
    assert [s["strandedAttachments"] for s in net["rangeSets"]] == [3, 2]
    rc, out, _ = show("--data-dir", str(data), "--conf-dir", str(tmp_path / "conf"))
    lines = out.splitlines()
    assert lines[0].split()[-2:] == ["STRANDED", "ATTACHMENTS"]
    assert [ln.split()[-1] for ln in lines[1:3]] == ["3", "2"]


@pytest.mark.parametrize("k8s,label", [
    ({"namespace": "web", "name": "front-1", "uid": "u1"}, "web/front-1"),
    ({"name": "podman-ctr"}, "podman-ctr"),  # podman: K8S_POD_NAME without a namespace
    ({"uid": "u9"}, "uid=u9"),
    ({"namespace": "web"}, "web/-"),
    ({}, "-"),
    (None, "-"),
])
def test_pod_label_shows_what_is_known(k8s, label):
    assert options.pod_label(k8s) == label


def test_podman_pod_in_the_table(tmp_path):
    data = tmp_path / "data"
    doc = write_conf(tmp_path / "conf", "ops-pm", {"ranges": [[{"subnet": "10.71.0.0/29"}]]}, data_dir=data)
    # as podman's CNI backend calls it: K8S_POD_NAME set, the namespace empty
    rc, _, out, err = run_plugin("ADD", plugin_conf(doc), container_id="pm1",
                                 cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=;K8S_POD_NAME=quirky_turing")
    assert rc == 0, out + err
    rc, out, _ = show("--data-dir", str(data), "--conf-dir", str(tmp_path / "conf"), "--ips")
    line = next(ln for ln in out.splitlines() if ln.startswith("10.71.0.2 "))
    assert " quirky_turing " in line and "?/" not in line and "/quirky_turing" not in line


def test_scan_speed_10000(tmp_path):
    """A lock-free scan of 10,000 reservations stays an admin-command cost (measured, bounded)."""
    data = tmp_path / "data"
    write_conf(tmp_path / "conf", "ops-big", {"ranges": [[{"subnet": "10.69.0.0/16"}]]}, data_dir=data)
    items = [(str(ipaddress.ip_address("10.69.0.2") + i), f"big{i}") for i in range(10000)]
    reserve(data, "ops-big", items)
    t0 = time.monotonic()
    reports = report.collect(str(data), str(tmp_path / "conf"), checker=liveness.Checker())
    elapsed = time.monotonic() - t0
    (rep,) = reports
    assert rep.sets[0].reserved == 10000 and rep.sets[0].size == 65533
    print(f"show over 10,000 reservations: {elapsed:.2f}s")
    assert elapsed < 30
