"""cni-ipam against Debian's real host-local (/usr/lib/cni/host-local, plugins v1.1.1).

1. Differential: the same scenario runs through host-local and through cni-ipam, each in its own
   data dir; every step must give the same success/failure and the same result JSON (parsed), and
   the two directories must hold the same reservation files and cursors after every step.
2. Known-wrong: where host-local is wrong (listed in docs/core.md, "Differences from host-local"),
   assert what host-local does *and* what cni-ipam does instead.
3. Interop: both plugins on ONE directory, interleaved and concurrently, never a duplicate.

host-local 1.1.1 speaks cniVersion up to 1.0.0, so 1.1.0 is not compared here.
"""

import ipaddress
import json
import os
import random
import subprocess

import pytest

from tests.helpers import HOST_LOCAL, plugin_argv, run_host_local, run_plugin

pytestmark = pytest.mark.usefixtures("need_host_local")

NET = "core-diff"
SIDES = (("host-local", run_host_local), ("cni-ipam", run_plugin))


def state(data_dir):
    """Reservation files and cursors of the network: {name: content}."""
    d = os.path.join(str(data_dir), NET)
    if not os.path.isdir(d):
        return {}
    out = {}
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if not os.path.isfile(path) or name == "lock":
            continue
        with open(path, "rb") as fh:
            out[name] = fh.read().decode()
    return out


def reservations(data_dir):
    return {k: v for k, v in state(data_dir).items() if not k.startswith("last_reserved_ip.")}


def make_conf(ipam, data_dir, version="1.0.0", top=None):
    conf = {"cniVersion": version, "name": NET, "type": "bridge",
            "ipam": dict(ipam, type="ipam-under-test", dataDir=str(data_dir))}
    if version is None:
        del conf["cniVersion"]
    conf.update(top or {})
    return conf


class Pair:
    """One network run through both plugins in separate data dirs, compared step by step."""

    def __init__(self, tmp_path):
        self.dirs = {"host-local": tmp_path / "core-hl", "cni-ipam": tmp_path / "core-us"}
        self.cursors_diverged = False  # host-local moved its cursor in a failed ADD (see docs/core.md)
        # Addresses host-local released in a failed ADD although that ADD had not taken them: it
        # releases every address of (container, ifname) when a range set fails after another one
        # succeeded; cni-ipam releases only what the failed ADD took (README, "Where cni-ipam differs").
        self.released_by_host_local = set()

    def step(self, command, ipam, expect_ok, cid="c1", ifname="eth0", version="1.0.0", cni_args=None, top=None):
        before = state(self.dirs["cni-ipam"])
        owner = f"{cid}\r\n{ifname}"
        held = {ip for ip, who in reservations(self.dirs["host-local"]).items() if who == owner}
        got = {}
        for side, run in SIDES:
            conf = make_conf(ipam, self.dirs[side], version, top)
            status, out, raw, err = run(command, conf, container_id=cid, ifname=ifname, cni_args=cni_args)
            assert "Traceback" not in raw + err and "panic" not in err, (side, raw, err)
            if status != 0:
                assert out is not None and "code" in out, (side, raw)
            got[side] = (status, out)
        hl, us = got["host-local"], got["cni-ipam"]
        where = f"{command} {cid}/{ifname} v{version}: host-local={hl} cni-ipam={us}"
        assert hl[0] == us[0], "success differs: " + where
        if expect_ok is not None:  # None: either, as long as both agree
            assert (us[0] == 0) == expect_ok, where
        self.last_ok = us[0] == 0
        if us[0] == 0:
            assert hl[1] == us[1], "result differs: " + where
        if us[0] != 0:
            # a failed call changes nothing at all in cni-ipam (files and cursors)
            assert state(self.dirs["cni-ipam"]) == before, "a failed call changed the disk: " + where
            gone = held - set(reservations(self.dirs["host-local"]))
            if command == "ADD" and gone:  # the documented difference, exactly: all of the container's
                assert gone == held, "host-local released only some addresses of the container: " + where
                self.released_by_host_local |= gone
            if state(self.dirs["host-local"]) != state(self.dirs["cni-ipam"]):
                self.cursors_diverged = True
        if self.cursors_diverged:
            ours = {
                ip: who
                for ip, who in reservations(self.dirs["cni-ipam"]).items()
                if ip not in self.released_by_host_local
            }
            assert reservations(self.dirs["host-local"]) == ours, "reservations differ after " + where
        else:
            assert state(self.dirs["host-local"]) == state(self.dirs["cni-ipam"]), "disk state differs after " + where
        return us[1]


def addresses(result):
    if result is None:
        return []
    if "ips" in result:
        return [ip["address"] for ip in result["ips"]]
    return [result[k]["ip"] for k in ("ip4", "ip6") if k in result]


# ------------------------------------------------------------------ 1. differential scenarios
V4 = {"ranges": [[{"subnet": "10.40.0.0/29"}]], "routes": [{"dst": "0.0.0.0/0"}]}


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", None])
def test_single_v4_round_robin_exhaustion(tmp_path, version):
    p = Pair(tmp_path)
    got = [addresses(p.step("ADD", V4, True, cid=f"c{i}", version=version)) for i in range(3)]
    assert got == [["10.40.0.2/29"], ["10.40.0.3/29"], ["10.40.0.4/29"]]
    p.step("ADD", V4, False, cid="c1", version=version)  # duplicate
    p.step("DEL", V4, True, cid="c1", version=version)
    p.step("DEL", V4, True, cid="c1", version=version)  # second DEL
    # round robin: .5, .6, then around to the freed .3
    got = [addresses(p.step("ADD", V4, True, cid=f"d{i}", version=version)) for i in range(3)]
    assert got == [["10.40.0.5/29"], ["10.40.0.6/29"], ["10.40.0.3/29"]]
    p.step("ADD", V4, False, cid="full", version=version)  # exhausted
    check_ok = version not in ("0.1.0", "0.2.0", "0.3.0", "0.3.1", None)
    p.step("CHECK", V4, check_ok, cid="d0", version=version)
    for cid in ("c0", "c2", "d0", "d1", "d2"):
        p.step("DEL", V4, True, cid=cid, version=version)
    assert reservations(p.dirs["cni-ipam"]) == {}
    p.step("CHECK", V4, False, cid="d0", version=version)


DUAL = {"ranges": [[{"subnet": "10.41.0.0/24"}], [{"subnet": "fd41::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd41::fffe"}]}


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0"])
def test_dual_stack(tmp_path, version):
    p = Pair(tmp_path)
    out = p.step("ADD", DUAL, True, cid="a", version=version)
    assert addresses(out) == ["10.41.0.2/24", "fd41::2/64"]
    assert addresses(p.step("ADD", DUAL, True, cid="a", ifname="net1", version=version)) == [
        "10.41.0.3/24",
        "fd41::3/64",
    ]
    p.step("DEL", DUAL, True, cid="a", version=version)
    assert sorted(reservations(p.dirs["cni-ipam"])) == ["10.41.0.3", "fd41::3"]
    assert addresses(p.step("ADD", DUAL, True, cid="b", version=version)) == ["10.41.0.4/24", "fd41::4/64"]


MULTI = {
    "ranges": [
        [
            {"subnet": "10.42.0.0/24", "rangeStart": "10.42.0.10", "rangeEnd": "10.42.0.11"},
            {"subnet": "10.42.1.0/30"},
            {"subnet": "10.42.2.0/24", "rangeStart": "10.42.2.50", "rangeEnd": "10.42.2.50", "gateway": "10.42.2.254"},
        ]
    ]
}


def test_multi_range_set_wraps_across_ranges(tmp_path):
    p = Pair(tmp_path)
    got = [addresses(p.step("ADD", MULTI, True, cid=f"c{i}"))[0] for i in range(4)]
    assert got == ["10.42.0.10/24", "10.42.0.11/24", "10.42.1.2/30", "10.42.2.50/24"]
    p.step("ADD", MULTI, False, cid="c9")
    p.step("DEL", MULTI, True, cid="c2")
    p.step("DEL", MULTI, True, cid="c0")
    # the cursor is at 10.42.2.50 (end of the last range): wrap to the first range
    assert addresses(p.step("ADD", MULTI, True, cid="c5")) == ["10.42.0.10/24"]
    assert addresses(p.step("ADD", MULTI, True, cid="c6")) == ["10.42.1.2/30"]


START_END = {
    "ranges": [
        [{"subnet": "10.43.0.0/16", "rangeStart": "10.43.5.254", "rangeEnd": "10.43.6.1", "gateway": "10.43.0.1"}]
    ]
}


def test_range_start_end_across_an_octet(tmp_path):
    p = Pair(tmp_path)
    got = [addresses(p.step("ADD", START_END, True, cid=f"c{i}"))[0] for i in range(4)]
    assert got == ["10.43.5.254/16", "10.43.5.255/16", "10.43.6.0/16", "10.43.6.1/16"]
    p.step("ADD", START_END, False, cid="c4")


REQ = {"ranges": [[{"subnet": "10.44.0.0/24"}], [{"subnet": "fd44::/64"}]]}


def test_requested_ips(tmp_path):
    p = Pair(tmp_path)
    out = p.step("ADD", REQ, True, cid="a", cni_args="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.44.0.50")
    assert addresses(out) == ["10.44.0.50/24", "fd44::2/64"]
    out = p.step("ADD", REQ, True, cid="b", top={"runtimeConfig": {"ips": ["10.44.0.60/24", "fd44::60/64"]}})
    assert addresses(out) == ["10.44.0.60/24", "fd44::60/64"]
    out = p.step("ADD", REQ, True, cid="c", top={"args": {"cni": {"ips": ["fd44::70"]}}})
    assert addresses(out) == ["10.44.0.61/24", "fd44::70/64"]
    # (host-local 1.1.1 takes one address in CNI_ARGS IP=; newer ones and cni-ipam take a comma list)
    out = p.step("ADD", REQ, True, cid="d", cni_args="IP=fd44::80")
    assert addresses(out) == ["10.44.0.62/24", "fd44::80/64"]
    p.step("ADD", REQ, False, cid="e", cni_args="IP=10.44.0.50")  # taken
    p.step("ADD", REQ, False, cid="e", cni_args="IP=10.44.0.1")  # gateway
    assert not p.cursors_diverged
    p.step("ADD", REQ, False, cid="e", cni_args="IP=10.99.0.1")  # in no range set
    assert p.cursors_diverged  # host-local reserved both sets, released them, but kept the moved cursors
    p.step("ADD", REQ, False, cid="e", cni_args="IP=bogus")
    p.step("ADD", REQ, False, cid="e", cni_args="FOO=bar;IP=10.44.0.90")  # unknown arg, no IgnoreUnknown
    for cid in "abcd":
        p.step("DEL", REQ, True, cid=cid)
    assert reservations(p.dirs["cni-ipam"]) == {}


LEGACY = {"subnet": "10.45.0.0/24", "rangeStart": "10.45.0.100", "rangeEnd": "10.45.0.101", "gateway": "10.45.0.254",
          "ranges": [[{"subnet": "fd45::/64"}]]}


@pytest.mark.parametrize("version", ["0.2.0", "1.0.0"])
def test_legacy_top_level_subnet(tmp_path, version):
    p = Pair(tmp_path)
    assert addresses(p.step("ADD", LEGACY, True, cid="a", version=version)) == ["10.45.0.100/24", "fd45::2/64"]
    assert addresses(p.step("ADD", LEGACY, True, cid="b", version=version)) == ["10.45.0.101/24", "fd45::3/64"]
    p.step("ADD", LEGACY, False, cid="c", version=version)
    p.step("DEL", LEGACY, True, cid="a", version=version)
    assert addresses(p.step("ADD", LEGACY, True, cid="c", version=version)) == ["10.45.0.100/24", "fd45::4/64"]


def test_runtime_ip_ranges(tmp_path):
    p = Pair(tmp_path)
    top = {"runtimeConfig": {"ipRanges": [[{"subnet": "10.46.0.0/24", "rangeStart": "10.46.0.20"}]]}}
    ipam = {"ranges": [[{"subnet": "fd46::/64"}]]}
    assert addresses(p.step("ADD", ipam, True, cid="a", top=top)) == ["10.46.0.20/24", "fd46::2/64"]
    p.step("DEL", ipam, True, cid="a")  # DEL without the runtime ranges still releases both


def test_routes_and_resolv_conf(tmp_path):
    resolv = tmp_path / "core-resolv.conf"
    resolv.write_text("# generated\nnameserver 10.47.0.53\nnameserver fd47::53\ndomain example.test\n"
                      "search a.example.test b.example.test\noptions ndots:3 rotate\n")
    ipam = {"ranges": [[{"subnet": "10.47.0.0/24"}]], "resolvConf": str(resolv),
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.47.0.254", "mtu": 1400, "table": 10}]}
    p = Pair(tmp_path)
    for version in ("0.2.0", "0.4.0", "1.0.0"):
        out = p.step("ADD", ipam, True, cid=f"c{version}", version=version)
        assert out["dns"]["nameservers"] == ["10.47.0.53", "fd47::53"]
    p.step("ADD", dict(ipam, resolvConf=str(tmp_path / "core-missing")), False, cid="x")


@pytest.mark.parametrize("ipam", [
    {"ranges": [[{"subnet": "10.48.0.0/24", "rangeStart": "10.48.0.200", "rangeEnd": "10.48.0.100"}]]},
    {"ranges": [[{"subnet": "10.48.0.5/24"}]]},
    {"ranges": [[{"subnet": "10.48.0.0/31"}]]},
    {"ranges": [[{"subnet": "10.48.0.0/24", "rangeStart": "10.49.0.1"}]]},
    {"ranges": [[{"subnet": "10.48.0.0/24"}], [{"subnet": "10.48.0.128/25"}]]},
    {"ranges": [[{"subnet": "10.48.0.0/24"}, {"subnet": "fd48::/64"}]]},
    {"ranges": []},
    {},
], ids=["start-after-end", "host-bits", "too-small", "start-outside", "overlap", "mixed-family", "empty", "none"])
def test_invalid_configs_fail_in_both(tmp_path, ipam):
    Pair(tmp_path).step("ADD", ipam, False)


@pytest.mark.parametrize("version", ["0.2.0", "0.1.0"])
def test_two_v4_sets_need_030(tmp_path, version):
    ipam = {"ranges": [[{"subnet": "10.49.0.0/24"}], [{"subnet": "10.50.0.0/24"}]]}
    Pair(tmp_path).step("ADD", ipam, False, version=version)
    assert addresses(Pair(tmp_path / "b").step("ADD", ipam, True, version="0.3.1")) == ["10.49.0.2/24", "10.50.0.2/24"]


def test_env_errors_fail_in_both(tmp_path):
    for side, run in SIDES:
        conf = make_conf(V4, tmp_path / side)
        for kw in ({"container_id": None}, {"ifname": None}, {"netns": None}, {"ifname": "x" * 16}):
            status, out, raw, _ = run("ADD", conf, **kw)
            assert status == 1 and out is not None and out["code"] in (4, 7), (side, kw, raw)


# ------------------------------------------------------------------ 2. where host-local is wrong
def both_add(tmp_path, ipam, n, version="1.0.0"):
    out = {}
    for side, run in SIDES:
        conf = make_conf(ipam, tmp_path / side, version)
        out[side] = [run("ADD", conf, container_id=f"c{i}")[:2] for i in range(n)]
    return out


def test_known_wrong_start_at_broadcast(tmp_path):
    got = both_add(tmp_path, {"ranges": [[{"subnet": "10.60.0.0/24", "rangeStart": "10.60.0.255"}]]}, 2)
    # host-local hands out the broadcast address and then an address outside the subnet (#1292)
    assert [addresses(o) for _, o in got["host-local"]] == [["10.60.0.255/24"], ["10.60.1.0/24"]]
    assert [(s, o["code"]) for s, o in got["cni-ipam"]] == [(1, 7), (1, 7)]
    assert "rangeStart" in got["cni-ipam"][0][1]["msg"] and "broadcast" in got["cni-ipam"][0][1]["msg"]


def test_known_wrong_gateway_outside_subnet(tmp_path):
    got = both_add(tmp_path, {"ranges": [[{"subnet": "10.61.0.0/24", "gateway": "10.62.0.1"}]]}, 1)
    assert [addresses(o) for _, o in got["host-local"]] == [["10.61.0.1/24"]]
    assert got["host-local"][0][1]["ips"][0]["gateway"] == "10.62.0.1"
    status, out = got["cni-ipam"][0]
    assert (status, out["code"]) == (1, 7) and "gateway" in out["msg"] and "10.62.0.1" in out["msg"]


def test_known_wrong_ipv6_last_address(tmp_path):
    got = both_add(tmp_path, {"ranges": [[{"subnet": "fd63::/126"}]]}, 2)
    assert [addresses(o) for _, o in got["host-local"]] == [["fd63::2/126"], ["fd63::3/126"]]
    assert addresses(got["cni-ipam"][0][1]) == ["fd63::2/126"]
    assert got["cni-ipam"][1][0] == 1 and got["cni-ipam"][1][1]["code"] == 100
    # asked for explicitly, the last address is handed out
    got = both_add(tmp_path / "asked", {"ranges": [[{"subnet": "fd63::/126", "rangeEnd": "fd63::3"}]]}, 2)
    assert [addresses(o) for _, o in got["cni-ipam"]] == [["fd63::2/126"], ["fd63::3/126"]]


def test_known_wrong_network_address_in_range(tmp_path):
    got = both_add(
        tmp_path, {"ranges": [[{"subnet": "10.64.0.0/29", "rangeStart": "10.64.0.0", "rangeEnd": "10.64.0.7"}]]}, 6
    )
    hl = [addresses(o)[0] if s == 0 else None for s, o in got["host-local"]]
    us = [addresses(o)[0] if s == 0 else None for s, o in got["cni-ipam"]]
    assert hl == ["10.64.0.0/29", "10.64.0.2/29", "10.64.0.3/29", "10.64.0.4/29", "10.64.0.5/29", "10.64.0.6/29"]
    assert us == ["10.64.0.2/29", "10.64.0.3/29", "10.64.0.4/29", "10.64.0.5/29", "10.64.0.6/29", None]
    assert got["cni-ipam"][5][1]["code"] == 100


def test_known_wrong_dual_stack_failure_moves_the_cursor(tmp_path):
    """host-local reserves set 0, fails set 1, releases, but its set-0 cursor has moved on."""
    full_v6 = {"ranges": [[{"subnet": "10.65.0.0/24"}], [{"subnet": "fd65::/126", "rangeEnd": "fd65::2"}]]}
    v4_only = {"ranges": [[{"subnet": "10.65.0.0/24"}]]}
    result = {}
    for side, run in SIDES:
        conf = make_conf(full_v6, tmp_path / side)
        assert addresses(run("ADD", conf, container_id="a")[1]) == ["10.65.0.2/24", "fd65::2/126"]
        status, out = run("ADD", conf, container_id="b")[:2]
        assert status == 1
        assert sorted(reservations(tmp_path / side)) == ["10.65.0.2", "fd65::2"]  # both clean up files
        result[side] = addresses(run("ADD", make_conf(v4_only, tmp_path / side), container_id="c")[1])
    assert result["host-local"] == ["10.65.0.4/24"]  # .3 was skipped: the failed ADD moved the cursor
    assert result["cni-ipam"] == ["10.65.0.3/24"]


def test_known_wrong_failed_add_releases_a_pre_existing_address(tmp_path):
    """A failed ADD must release only what it reserved; host-local releases all of (id, ifname)."""
    v6_only = {"ranges": [[{"subnet": "fd66::/64"}]]}
    dual = {"ranges": [[{"subnet": "10.66.0.0/24"}], [{"subnet": "fd66::/64"}]]}
    left = {}
    for side, run in SIDES:
        assert run("ADD", make_conf(v6_only, tmp_path / side), container_id="a")[0] == 0
        status, out = run("ADD", make_conf(dual, tmp_path / side), container_id="a")[:2]
        assert status == 1 and "fd66::2" in out["msg"]  # duplicate allocation in set 1
        left[side] = reservations(tmp_path / side)
    assert left["host-local"] == {}
    assert left["cni-ipam"] == {"fd66::2": "a\r\neth0"}


# ------------------------------------------------------------------ 3. both plugins on one directory
def test_interop_interleaved_on_one_directory(tmp_path):
    """A random interleaving of ADD/DEL by either plugin on one dir hands out exactly what host-local
    alone hands out for the same sequence, and never one address twice."""
    rng = random.Random(2)
    ipam = {"ranges": [[{"subnet": "10.70.0.0/28"}], [{"subnet": "fd70::/64"}]]}
    shared, alone = tmp_path / "core-shared", tmp_path / "core-alone"
    live = {}
    for step in range(40):
        if live and (len(live) >= 10 or rng.random() < 0.4):
            cid, command = rng.choice(sorted(live)), "DEL"
        else:
            cid, command = f"c{step}", "ADD"
        runner_name, runner = rng.choice(SIDES)
        status, out, raw, err = runner(command, make_conf(ipam, shared), container_id=cid)
        ref_status, ref_out = run_host_local(command, make_conf(ipam, alone), container_id=cid)[:2]
        assert (status, out) == (ref_status, ref_out), (step, runner_name, command, cid, raw, err)
        assert status == 0, (runner_name, raw)
        if command == "ADD":
            live[cid] = addresses(out)
        else:
            del live[cid]
        held = [a for addrs in live.values() for a in addrs]
        assert len(held) == len(set(held)), f"duplicate address after step {step}: {live}"
        files = reservations(shared)
        assert sorted(files) == sorted(a.split("/")[0] for a in held)
        for cid_, addrs in live.items():
            for a in addrs:
                assert files[a.split("/")[0]] == f"{cid_}\r\neth0"
    # each plugin sees the other's reservations
    for cid, addrs in live.items():
        conf = make_conf(
            ipam, shared, "1.0.0", {"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": a} for a in addrs]}}
        )
        for name, run in SIDES:
            assert run("CHECK", conf, container_id=cid)[0] == 0, (name, cid)


def test_migration_from_host_local_and_back(tmp_path):
    ipam = {"ranges": [[{"subnet": "10.71.0.0/24"}]]}
    conf = make_conf(ipam, tmp_path)
    for i in range(5):
        assert run_host_local("ADD", conf, container_id=f"h{i}")[0] == 0
    # old ID-only file from an ancient host-local
    (tmp_path / NET / "10.71.0.200").write_bytes(b"ancient")
    # switch to cni-ipam: the cursor continues and every reservation is kept
    out = run_plugin("ADD", conf, container_id="u0")[1]
    assert addresses(out) == ["10.71.0.7/24"]
    assert run_plugin("DEL", conf, container_id="h2")[0] == 0
    assert run_plugin("DEL", conf, container_id="ancient")[0] == 0
    assert sorted(reservations(tmp_path)) == ["10.71.0.2", "10.71.0.3", "10.71.0.5", "10.71.0.6", "10.71.0.7"]
    # switch back: host-local works on a directory cni-ipam wrote (it walks .cni-ipam/ too)
    assert addresses(run_host_local("ADD", conf, container_id="h9")[1]) == ["10.71.0.8/24"]
    assert run_host_local("DEL", conf, container_id="u0")[0] == 0
    assert run_host_local("CHECK", conf, container_id="h0")[0] == 0
    assert run_host_local("ADD", conf, container_id="h0")[0] == 1  # duplicate seen by host-local
    assert sorted(reservations(tmp_path)) == ["10.71.0.2", "10.71.0.3", "10.71.0.5", "10.71.0.6", "10.71.0.8"]
    # and cni-ipam again, after host-local changed the directory behind its index
    assert run_plugin("ADD", conf, container_id="h9")[1]["code"] == 103
    assert addresses(run_plugin("ADD", conf, container_id="u1")[1]) == ["10.71.0.9/24"]
    for cid in ("h0", "h1", "h3", "h4", "h9", "u1"):
        assert run_plugin("DEL", conf, container_id=cid)[0] == 0
    assert reservations(tmp_path) == {}


def test_interop_concurrent_on_one_directory(tmp_path):
    """12 host-local and 12 cni-ipam ADDs at once on one directory: 24 distinct addresses."""
    ipam = {"ranges": [[{"subnet": "10.72.0.0/24"}], [{"subnet": "fd72::/64"}]]}
    data = json.dumps(make_conf(ipam, tmp_path)).encode()
    procs = []
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    base["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for i in range(24):
        argv = [HOST_LOCAL] if i % 2 else plugin_argv()
        env = dict(
            base, CNI_COMMAND="ADD", CNI_CONTAINERID=f"p{i}", CNI_IFNAME="eth0", CNI_NETNS="/x", CNI_PATH="/usr/lib/cni"
        )
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdin.write(data)
        proc.stdin.close()
        procs.append(proc)
    got = []
    for proc in procs:
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, out
        got.append(addresses(json.loads(out)))
    v4 = [a[0] for a in got]
    v6 = [a[1] for a in got]
    assert len(set(v4)) == 24 and len(set(v6)) == 24
    assert all(ipaddress.ip_interface(a).ip in ipaddress.ip_network("10.72.0.0/24") for a in v4)
    files = reservations(tmp_path)
    assert len(files) == 48
    assert sorted(files.values()) == sorted(f"p{i}\r\neth0" for i in range(24) for _ in range(2))
    # everyone's DEL through the other plugin
    conf = make_conf(ipam, tmp_path)
    for i in range(24):
        run = run_plugin if i % 2 else run_host_local
        assert run("DEL", conf, container_id=f"p{i}")[0] == 0
    assert reservations(tmp_path) == {}


# ------------------------------------------------------------------ 4. generated scenarios
import pathlib  # noqa: E402
import tempfile  # noqa: E402

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def scenarios(draw):
    """Valid configs inside the common ground (no known-wrong case) and a few ADD/DEL/CHECK steps."""
    sets = []
    families = draw(st.sampled_from([(4,), (6,), (4, 6), (4, 4)]))
    block = 0
    for family in families:
        ranges = []
        for _ in range(draw(st.integers(1, 2))):
            size = 8 if family == 4 else 8  # /29 or /125: 8 addresses, easy to exhaust
            base = block * size
            block += 1
            first, last = base + 1, base + size - 2  # never the network, the broadcast or the v6 last address
            lo = draw(st.integers(first, last))
            hi = draw(st.integers(lo, last))
            if family == 4:
                addr = lambda n: f"10.90.{n // 256}.{n % 256}"  # noqa: E731
                rng = {"subnet": f"{addr(base)}/29"}
            else:
                addr = lambda n: f"fd90::{n:x}"  # noqa: E731
                rng = {"subnet": f"{addr(base)}/125"}
            if draw(st.booleans()):
                rng["rangeStart"] = addr(lo)
            if draw(st.booleans()) or family == 6:
                rng["rangeEnd"] = addr(hi if "rangeStart" in rng else max(hi, first))
            if draw(st.booleans()):
                rng["gateway"] = addr(draw(st.integers(base + 1, base + size - 2)))
            ranges.append(rng)
        sets.append(ranges)
    steps = []
    for _ in range(draw(st.integers(3, 9))):
        op = draw(st.sampled_from(["ADD", "ADD", "ADD", "DEL", "CHECK", "ADD-IP"]))
        cid = f"c{draw(st.integers(0, 4))}"
        ip = None
        if op == "ADD-IP":
            family = draw(st.sampled_from(families))
            n = draw(st.integers(0, block * 8 - 1))
            ip = f"10.90.{n // 256}.{n % 256}" if family == 4 else f"fd90::{n:x}"
        steps.append((op, cid, ip))
    return sets, steps


# A duplicate ADD that asks for a free address: both plugins fail it (the container already holds
# an address in set 1), host-local after reserving the requested one in set 0 and then releasing
# every address of the container, the old ones too; cni-ipam keeps the old ones.
DUPLICATE_ADD_WITH_IP = ([[{"subnet": "10.90.0.0/29"}], [{"subnet": "fd90::8/125", "rangeEnd": "fd90::e"}]],
                         [("ADD", "c0", None), ("ADD-IP", "c0", "10.90.0.5"), ("ADD", "c1", None)])


@settings(max_examples=int(os.environ.get("CORE_GEN_EXAMPLES", "25")), deadline=None)
@given(scenarios())
@example(DUPLICATE_ADD_WITH_IP)
def test_generated_scenarios_agree(case):
    sets, steps = case
    ipam = {"ranges": sets}
    with tempfile.TemporaryDirectory(prefix="core-gen-") as tmp:
        p = Pair(pathlib.Path(tmp))
        live = set()
        for op, cid, ip in steps:
            command = "ADD" if op == "ADD-IP" else op
            expect = {"ADD": None, "DEL": True, "CHECK": cid in live}[command]
            out = p.step(command, ipam, expect, cid=cid, cni_args=f"IP={ip}" if ip else None)
            if command == "ADD" and p.last_ok:
                live.add(cid)
                assert len(addresses(out)) == len(sets)
            elif command == "DEL":
                live.discard(cid)
            if p.released_by_host_local:  # the documented difference happened: assert it exactly, then stop
                assert command == "ADD" and not p.last_ok and cid in live, (op, cid, ip)
                assert reservations(p.dirs["host-local"]) == {
                    a: who for a, who in reservations(p.dirs["cni-ipam"]).items() if who != f"{cid}\r\neth0"}
                assert {a for a, who in reservations(p.dirs["cni-ipam"]).items() if who == f"{cid}\r\neth0"} \
                    == p.released_by_host_local  # we kept every address the container held
                break
            if p.cursors_diverged:
                break  # host-local moved a cursor in a failed ADD: later choices differ by design
