"""The executable run as a runtime runs it: CNI_* environment, config on stdin, JSON on stdout."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import run_plugin

NET = "core-exec"


def netconf(data_dir, version="1.0.0", **ipam):
    conf = {"cniVersion": version, "name": NET, "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd30::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}
    conf["ipam"].update(ipam)
    return conf


def reservations(data_dir):
    d = os.path.join(str(data_dir), NET)
    if not os.path.isdir(d):
        return {}
    out = {}
    for name in sorted(os.listdir(d)):
        if name[0].isdigit() or ":" in name:
            with open(os.path.join(d, name), "rb") as fh:
                out[name] = fh.read().decode()
    return out


def ok(status, out, raw, err):
    assert status == 0, raw + err
    assert "Traceback" not in err
    return out


def failed(status, out, raw, err, code):
    assert status == 1, raw + err
    assert "Traceback" not in raw + err
    assert out is not None, f"stdout is not JSON: {raw!r}"
    assert out["code"] == code, out
    assert set(out) <= {"cniVersion", "code", "msg", "details"}
    return out


def test_add_check_del_del(tmp_path):
    conf = netconf(tmp_path)
    result = ok(*run_plugin("ADD", conf, container_id="ctr-1", cni_args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"))
    assert result == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.30.0.2/24", "gateway": "10.30.0.1"}, {"address": "fd30::2/64", "gateway": "fd30::1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }
    assert reservations(tmp_path) == {"10.30.0.2": "ctr-1\r\neth0", "fd30::2": "ctr-1\r\neth0"}
    check = dict(conf, prevResult=result)
    status, out, raw, _ = run_plugin("CHECK", check, container_id="ctr-1")
    assert (status, raw) == (0, "")
    assert run_plugin("DEL", conf, container_id="ctr-1")[:3] == (0, None, "")
    assert reservations(tmp_path) == {}
    assert run_plugin("DEL", conf, container_id="ctr-1")[:3] == (0, None, "")  # a second DEL is fine
    failed(*run_plugin("CHECK", check, container_id="ctr-1"), 105)


def test_check_catches_prev_result_without_our_address(tmp_path):
    conf = netconf(tmp_path)
    ok(*run_plugin("ADD", conf))
    bad = dict(
        conf, prevResult={"cniVersion": "1.0.0", "ips": [{"address": "10.30.0.99/24"}, {"address": "fd30::2/64"}]}
    )
    out = failed(*run_plugin("CHECK", bad), 105)
    assert "10.30.0.2" in out["msg"]


def test_duplicate_add_and_requested_ip(tmp_path):
    conf = netconf(tmp_path)
    ok(*run_plugin("ADD", conf, container_id="a"))
    failed(*run_plugin("ADD", conf, container_id="a"), 103)
    out = ok(*run_plugin("ADD", conf, container_id="b", cni_args="IgnoreUnknown=1;IP=10.30.0.50,fd30::50;X=y"))
    assert [i["address"] for i in out["ips"]] == ["10.30.0.50/24", "fd30::50/64"]
    failed(*run_plugin("ADD", conf, container_id="c", cni_args="IP=10.30.0.50"), 101)
    failed(*run_plugin("ADD", conf, container_id="c", cni_args="IP=10.30.0.1"), 102)
    assert set(reservations(tmp_path)) == {"10.30.0.2", "fd30::2", "10.30.0.50", "fd30::50"}


def test_del_releases_when_the_ranges_no_longer_validate(tmp_path):
    conf = netconf(tmp_path)
    ok(*run_plugin("ADD", conf, container_id="keep"))
    ok(*run_plugin("ADD", conf, container_id="gone"))
    broken = netconf(
        tmp_path,
        ranges=[[{"subnet": "10.30.0.0/24", "rangeStart": "10.30.0.200", "rangeEnd": "10.30.0.100"}]],
        routes="not a list",
        resolvConf=7,
    )
    failed(*run_plugin("ADD", broken, container_id="x"), 7)
    assert run_plugin("DEL", broken, container_id="gone")[:3] == (0, None, "")
    assert set(reservations(tmp_path)) == {"10.30.0.2", "fd30::2"}
    no_ranges = {"cniVersion": "1.0.0", "name": NET, "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path)}}
    assert run_plugin("DEL", no_ranges, container_id="keep")[0] == 0
    assert reservations(tmp_path) == {}


def test_del_on_a_network_never_used(tmp_path):
    assert run_plugin("DEL", netconf(tmp_path))[:3] == (0, None, "")
    assert list(tmp_path.iterdir()) == []


def test_del_with_a_bad_data_dir_is_a_config_error(tmp_path):
    failed(*run_plugin("DEL", netconf(tmp_path, dataDir="relative")), 7)


@pytest.mark.parametrize("stdin, code", [
    (b"\x00\x01\x02", 6),
    (b"{\"cniVersion\": \"1.0.0\", ", 6),
    (b"[]", 6),
    (b"{\"cniVersion\": \"9.9.9\", \"name\": \"n\"}", 1),
    (b"{\"cniVersion\": \"1.0.0\", \"name\": \"../../etc\", \"ipam\": {}}", 7),
    (b"{\"cniVersion\": \"1.0.0\", \"name\": \"n\"}", 7),
    (b"{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"ipam\": {\"subnet\": \"10.0.0.0/24\", \"dataDir\": 5}}", 7),
    (b"{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"ipam\": {\"ranges\": [[{\"subnet\": {}}]]}}", 7),
    (b"{" * 200000, 6),
], ids=["binary", "truncated", "array", "version", "name", "no-ipam", "datadir", "subnet-object", "deep"])
def test_errors_are_json_and_exit_1(tmp_path, stdin, code):
    failed(*run_plugin("ADD", None, stdin=stdin), code)


def test_env_errors_name_the_variable(tmp_path):
    out = failed(*run_plugin("ADD", netconf(tmp_path), container_id=None), 4)
    assert "CNI_CONTAINERID" in out["msg"]
    out = failed(*run_plugin("ADD", netconf(tmp_path), ifname="../../x"), 4)
    assert "CNI_IFNAME" in out["msg"]
    out = failed(*run_plugin("ADD", netconf(tmp_path), netns=None), 4)
    assert "CNI_NETNS" in out["msg"]
    assert list(tmp_path.iterdir()) == []


def test_io_failure_is_code_5(tmp_path):
    (tmp_path / "core-file").write_text("x")
    out = failed(*run_plugin("ADD", netconf(tmp_path / "core-file" / "sub")), 5)
    assert "core-file" in out["msg"]


def test_lock_timeout_from_the_executable(tmp_path):
    conf = netconf(tmp_path, lockTimeout=0.5)
    ok(*run_plugin("ADD", conf, container_id="a"))
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(tmp_path / NET / 'lock')!r}, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("locked", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        out = failed(*run_plugin("ADD", conf, container_id="b"), 11)
        assert "lock" in out["msg"]
        failed(*run_plugin("DEL", conf, container_id="a"), 11)
    finally:
        holder.kill()
        holder.wait()
    ok(*run_plugin("ADD", conf, container_id="b"))


def test_stale_index_foreign_file_added(tmp_path):
    conf = netconf(tmp_path)
    ok(*run_plugin("ADD", conf, container_id="a"))
    # host-local (or an admin) writes a reservation without touching our index
    (tmp_path / NET / "10.30.0.3").write_bytes(b"foreign\r\neth0")
    out = ok(*run_plugin("ADD", conf, container_id="b"))
    assert out["ips"][0]["address"] == "10.30.0.4/24"
    failed(*run_plugin("ADD", conf, container_id="foreign"), 103)
    # a foreign v4-only reservation fails CHECK for the v6 set
    failed(*run_plugin("CHECK", conf, container_id="foreign"), 105)
    assert run_plugin("DEL", conf, container_id="foreign")[0] == 0
    assert "10.30.0.3" not in reservations(tmp_path)


def test_stale_index_foreign_file_removed_and_reused(tmp_path):
    conf = netconf(tmp_path)
    ok(*run_plugin("ADD", conf, container_id="a"))
    os.unlink(tmp_path / NET / "10.30.0.2")  # released by someone else ...
    (tmp_path / NET / "10.30.0.2").write_bytes(b"z\r\neth0")  # ... and reused
    assert run_plugin("DEL", conf, container_id="a")[0] == 0
    assert reservations(tmp_path) == {"10.30.0.2": "z\r\neth0"}
    # z can now add its v6 half only if it has no v4 address in set 0: it has, so it is a duplicate
    failed(*run_plugin("ADD", conf, container_id="z"), 103)


def test_stale_index_after_an_empty_file(tmp_path):
    conf = netconf(tmp_path)
    ok(*run_plugin("ADD", conf, container_id="a"))
    (tmp_path / NET / "10.30.0.3").write_bytes(b"")  # host-local #498 leaves these behind
    out = ok(*run_plugin("ADD", conf, container_id="b"))
    assert out["ips"][0]["address"] == "10.30.0.4/24"
    assert run_plugin("DEL", conf, container_id="a")[0] == 0
    assert set(reservations(tmp_path)) == {"10.30.0.3", "10.30.0.4", "fd30::3"}


def test_legacy_id_only_file_released_by_del(tmp_path):
    conf = netconf(tmp_path)
    os.makedirs(tmp_path / NET)
    (tmp_path / NET / "10.30.0.7").write_bytes(b"old")
    (tmp_path / NET / "fd30::7").write_bytes(b"old")
    ok(*run_plugin("CHECK", conf, container_id="old"))
    assert run_plugin("DEL", conf, container_id="old")[0] == 0
    assert reservations(tmp_path) == {}


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_each_version_from_the_executable(tmp_path, version):
    conf = netconf(tmp_path, version)
    out = ok(*run_plugin("ADD", conf))
    assert out["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert out["ip4"]["ip"] == "10.30.0.2/24" and out["ip6"]["ip"] == "fd30::2/64"
    else:
        assert [i["address"] for i in out["ips"]] == ["10.30.0.2/24", "fd30::2/64"]
        assert all(("version" in i) == (version < "1") for i in out["ips"])
    assert run_plugin("DEL", conf)[0] == 0


def test_version_verb():
    status, out, _, _ = run_plugin("VERSION", None, stdin=b"")
    assert status == 0 and out["cniVersion"] == "1.1.0" and "0.1.0" in out["supportedVersions"]


def test_an_ipv6_zone_cannot_take_an_address_twice(tmp_path):
    """Found here: "IP=fd30::5%eth0" reserved a file named "fd30::5%eth0", and fd30::5 went out twice."""
    conf = netconf(tmp_path)
    out = failed(*run_plugin("ADD", conf, container_id="a", cni_args="IP=fd30::5%eth0"), 4)
    assert "fd30::5%eth0" in out["msg"]
    failed(*run_plugin("ADD", dict(conf, runtimeConfig={"ips": ["fd30::5%eth0/64"]}), container_id="a"), 7)
    ok(*run_plugin("ADD", conf, container_id="b", cni_args="IP=fd30::5"))
    assert set(reservations(tmp_path)) == {"10.30.0.2", "fd30::5"}
