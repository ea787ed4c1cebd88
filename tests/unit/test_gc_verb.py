"""The GC and STATUS verbs in process (protocol.plugin_main with a real data directory)."""

import io
import json
import os
import shutil
import subprocess

import pytest

from cni_ipam.store import gcstats
from cni_ipam.__main__ import VERBS
from cni_ipam.plugin.skel import plugin_main


def conf(data_dir, name="gcnet", version="1.1.0", subnet="10.20.0.0/24", **extra):
    c = {"cniVersion": version, "name": name, "type": "bridge",
         "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "subnet": subnet}}
    c.update(extra)
    return c


def call(command, netconf, cid=None, ifname=None, netns="/var/run/netns/gc-unit"):
    env = {"CNI_COMMAND": command, "CNI_PATH": "/usr/lib/cni"}
    if cid is not None:
        env.update({"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname or "eth0", "CNI_NETNS": netns})
    out = io.StringIO()
    rc = plugin_main(VERBS, env, json.dumps(netconf).encode(), out)
    text = out.getvalue()
    return rc, (json.loads(text) if text.strip() else None)


def add(netconf, cid, ifname="eth0"):
    rc, res = call("ADD", netconf, cid, ifname)
    assert rc == 0, res
    return res["ips"][0]["address"].split("/")[0]


def reserved(data_dir, name="gcnet"):
    """{ip: file content} of the network directory."""
    d = os.path.join(str(data_dir), name)
    return {n: open(os.path.join(d, n), newline="").read() for n in os.listdir(d) if n[0].isdigit()}


def owners(data_dir, name="gcnet"):
    from cni_ipam.store.snapshot import read_owner_index  # the index's format is the store's

    return sorted(read_owner_index(os.path.join(str(data_dir), name)))


def gc(netconf, attachments, key="cni.dev/valid-attachments"):
    c = dict(netconf)
    if attachments is not ...:
        c[key] = attachments
    return call("GC", c)


@pytest.fixture
def three(tmp_path):
    c = conf(tmp_path)
    ips = {
        ("c1", "eth0"): add(c, "c1", "eth0"),
        ("c1", "net1"): add(c, "c1", "net1"),
        ("c2", "eth0"): add(c, "c2", "eth0"),
    }
    return c, ips


def test_gc_releases_attachments_not_listed(tmp_path, three):
    c, ips = three
    rc, out = gc(c, [{"containerID": "c1", "ifname": "eth0"}])
    assert (rc, out) == (0, None)
    assert reserved(tmp_path) == {ips[("c1", "eth0")]: "c1\r\neth0"}
    assert owners(tmp_path) == ["c1:eth0"]
    stats = gcstats.read_gc_stats(str(tmp_path), "gcnet")
    assert (stats["lastRunSource"], stats["lastReleased"], stats["releasedTotal"]) == ("gc-verb", 2, 2)
    # idempotent: a second GC with the same list changes nothing
    assert gc(c, [{"containerID": "c1", "ifname": "eth0"}]) == (0, None)
    assert list(reserved(tmp_path)) == [ips[("c1", "eth0")]]
    # the released addresses can be handed out again, the kept one cannot
    assert add(c, "c3") != ips[("c1", "eth0")]


def test_gc_older_key_is_accepted(tmp_path, three):
    c, ips = three
    assert gc(c, [{"containerID": "c2", "ifname": "eth0"}], key="cni.dev/attachments") == (0, None)
    assert list(reserved(tmp_path)) == [ips[("c2", "eth0")]]


def test_gc_missing_or_null_list_releases_nothing(tmp_path, three):
    c, ips = three
    assert gc(c, ...) == (0, None)
    assert gc(c, None) == (0, None)
    assert len(reserved(tmp_path)) == 3


def test_gc_empty_list_releases_everything_of_this_network_only(tmp_path, three):
    c, _ = three
    other = conf(tmp_path, name="othernet", subnet="10.30.0.0/24")
    kept = add(other, "c9")
    assert gc(c, []) == (0, None)
    assert reserved(tmp_path) == {}
    assert owners(tmp_path) == []
    assert reserved(tmp_path, "othernet") == {kept: "c9\r\neth0"}


def test_gc_id_only_reservations_match_on_container_id(tmp_path):
    c = conf(tmp_path)
    add(c, "c1")
    net = tmp_path / "gcnet"
    (net / "10.20.0.50").write_text("legacy1")  # old host-local: container ID only
    (net / "10.20.0.51").write_text("legacy2")
    (net / "10.20.0.52").write_text("")  # no owner at all
    assert gc(c, [{"containerID": "legacy1", "ifname": "eth7"}, {"containerID": "c1", "ifname": "eth0"}]) == (0, None)
    left = reserved(tmp_path)
    assert "10.20.0.50" in left and "10.20.0.51" not in left and "10.20.0.52" not in left
    assert len(left) == 2


def test_gc_container_listed_without_ifname_keeps_all_its_interfaces(tmp_path, three):
    c, ips = three
    assert gc(c, [{"containerID": "c1"}]) == (0, None)
    assert sorted(reserved(tmp_path)) == sorted([ips[("c1", "eth0")], ips[("c1", "net1")]])


def test_gc_pairs_are_exact(tmp_path, three):
    c, ips = three
    # c2's interface name paired with c1's ID keeps neither c1/net1 nor c2/eth0
    assert gc(c, [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]) == (0, None)
    assert list(reserved(tmp_path)) == [ips[("c1", "eth0")]]


@pytest.mark.parametrize("bad", [{"a": 1}, "c1", [1], [{"ifname": "eth0"}], [{"containerID": 5, "ifname": "eth0"}],
                                 [{"containerID": "c1", "ifname": 3}]])
def test_gc_malformed_list_is_an_error_and_releases_nothing(tmp_path, three, bad):
    c, _ = three
    rc, out = gc(c, bad)
    assert rc == 1 and out["code"] == 7 and "valid-attachments" in out["msg"]
    assert len(reserved(tmp_path)) == 3


def test_gc_needs_cni_1_1(tmp_path, three):
    c, _ = three
    rc, out = gc(dict(c, cniVersion="1.0.0"), [])
    assert rc == 1 and out["code"] == 1
    assert len(reserved(tmp_path)) == 3


def test_gc_on_a_network_never_used_creates_nothing(tmp_path):
    assert gc(conf(tmp_path, name="fresh"), []) == (0, None)
    assert not (tmp_path / "fresh").exists()


def test_gc_keeps_going_past_errors(tmp_path, three):
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr to make a reservation file undeletable")
    c, ips = three
    stuck = tmp_path / "gcnet" / ips[("c1", "eth0")]
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("the file system does not support the immutable attribute")
    try:
        rc, out = gc(c, [])
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert rc == 1 and out["code"] == 106
    assert ips[("c1", "eth0")] in out["details"] and "1 failed" in out["msg"] and "released 2" in out["msg"]
    assert list(reserved(tmp_path)) == [ips[("c1", "eth0")]]
    assert gcstats.read_gc_stats(str(tmp_path), "gcnet")["lastRunErrors"] == 1
    # the next GC finishes the job
    assert gc(c, []) == (0, None)
    assert reserved(tmp_path) == {}


# ---------------------------------------------------------------------- STATUS
def test_status_ok_on_a_fresh_network(tmp_path):
    c = conf(tmp_path)
    assert call("STATUS", c) == (0, None)
    assert not (tmp_path / "gcnet").exists()  # STATUS changes nothing


def test_status_exhausted_then_recovers(tmp_path):
    c = conf(tmp_path, subnet="10.20.0.0/29")  # .2 .. .6 usable (gateway .1)
    c["ipam"]["statusOnExhaustion"] = "fail"  # a full range fails STATUS only when asked
    for i in range(5):
        add(c, f"c{i}")
    rc, out = call("STATUS", c)
    assert rc == 1 and out["code"] == 50
    assert "range set 0" in out["msg"] and "reserved" in out["msg"]
    assert call("DEL", c, "c3")[0] == 0
    assert call("STATUS", c) == (0, None)


def test_status_counts_only_allocatable_addresses(tmp_path):
    c = conf(tmp_path, subnet="10.20.0.0/29")
    c["ipam"]["statusOnExhaustion"] = "fail"  # a full range fails STATUS only when asked
    c["ipam"]["exclude"] = ["10.20.0.6"]
    for i in range(4):
        add(c, f"c{i}")
    # a stray file for an excluded address does not make room
    (tmp_path / "gcnet" / "10.20.0.6").write_text("stray\r\neth0")
    assert call("STATUS", c)[1]["code"] == 50


def test_status_one_full_range_set_of_two(tmp_path):
    c = conf(tmp_path)
    c["ipam"]["statusOnExhaustion"] = "fail"  # a full range fails STATUS only when asked
    del c["ipam"]["subnet"]
    c["ipam"]["ranges"] = [[{"subnet": "10.20.0.0/30"}], [{"subnet": "fd00:20::/64"}]]
    add(c, "c1")  # the /30 has one usable address
    rc, out = call("STATUS", c)
    assert out["code"] == 50 and "range set 0" in out["msg"] and "range set 1" not in out["msg"]


def test_status_data_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, out = call("STATUS", conf(blocker / "data"))
    assert rc == 1 and out["code"] == 50 and "not writable" in out["msg"]


def test_status_data_dir_immutable(tmp_path):
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr")
    c = conf(tmp_path)
    add(c, "c1")
    meta = tmp_path / "gcnet" / ".cni-ipam"
    targets = [meta / "tmp", meta, tmp_path / "gcnet"]
    if subprocess.run(["chattr", "+i", *map(str, targets)], capture_output=True).returncode != 0:
        pytest.skip("the file system does not support the immutable attribute")
    try:
        rc, out = call("STATUS", c)
        add_rc, add_out = call("ADD", c, "c2")
    finally:
        subprocess.run(["chattr", "-i", *map(str, targets)], check=True)
    assert rc == 1 and out["code"] == 50 and "not writable" in out["msg"]
    assert add_rc == 1  # STATUS was right: an ADD fails too
    assert call("STATUS", c) == (0, None)


def test_status_pod_cidr_unknown(tmp_path):
    c = conf(tmp_path, subnet="usePodCidr")
    rc, out = call("STATUS", c)
    assert rc == 1 and out["code"] == 50 and "pod CIDR" in out["msg"]


def test_status_invalid_config_is_a_config_error(tmp_path):
    c = conf(tmp_path, subnet="not-a-cidr")
    rc, out = call("STATUS", c)
    assert rc == 1 and out["code"] == 7


def test_status_needs_cni_1_1(tmp_path):
    rc, out = call("STATUS", conf(tmp_path, version="1.0.0"))
    assert rc == 1 and out["code"] == 1


def test_gc_both_keys_keep_the_union(tmp_path, three):
    """An empty valid-attachments next to a non-empty attachments list must not
    release everything; an attachment listed under either key is kept."""
    c, ips = three
    both = dict(c)
    both["cni.dev/valid-attachments"] = []
    both["cni.dev/attachments"] = [{"containerID": "c2", "ifname": "eth0"}]
    assert call("GC", both) == (0, None)
    assert list(reserved(tmp_path)) == [ips[("c2", "eth0")]]
    # and the other way round, with one listed under each key
    c = conf(tmp_path, name="net2", subnet="10.21.0.0/24")
    a, b, d = add(c, "a"), add(c, "b"), add(c, "d")
    both = dict(c)
    both["cni.dev/valid-attachments"] = [{"containerID": "a", "ifname": "eth0"}]
    both["cni.dev/attachments"] = [{"containerID": "b", "ifname": "eth0"}]
    assert call("GC", both) == (0, None)
    assert sorted(reserved(tmp_path, "net2")) == sorted([a, b]) and d not in reserved(tmp_path, "net2")
    # a null under one key and a list under the other: the list applies
    both = dict(c)
    both["cni.dev/valid-attachments"] = None
    both["cni.dev/attachments"] = [{"containerID": "a", "ifname": "eth0"}]
    assert call("GC", both) == (0, None)
    assert list(reserved(tmp_path, "net2")) == [a]
    # a malformed list under either key is an error and releases nothing
    both["cni.dev/valid-attachments"] = "all"
    rc, out = call("GC", both)
    assert rc == 1 and out["code"] == 7 and list(reserved(tmp_path, "net2")) == [a]
