"""protocol.py: environment, stdin, version negotiation and the error JSON, in process."""

import io
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_ipam.__main__ import VERBS
from cni_ipam.plugin import skel as protocol
from cni_ipam.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
)

NET = "core-proto"


def base_env(command="ADD", **over):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/core-x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def netconf(data_dir, version="1.0.0", **ipam):
    conf = {"cniVersion": version, "name": NET,
            "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "subnet": "10.0.0.0/24"}}
    if version is None:
        del conf["cniVersion"]
    conf["ipam"].update(ipam)
    return conf


def call(environ, stdin):
    out = io.StringIO()
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin).encode()
    status = protocol.plugin_main(VERBS, environ, stdin, out)
    text = out.getvalue()
    return status, (json.loads(text) if text.strip() else None)


def error(environ, stdin, code):
    status, out = call(environ, stdin)
    assert status == 1, out
    assert out["code"] == code, out
    assert isinstance(out["msg"], str) and out["msg"]
    return out


# ------------------------------------------------------------------ environment
@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_missing_env_names_the_variable(tmp_path, missing):
    out = error(base_env(**{missing: None}), netconf(tmp_path), INVALID_ENV)
    assert missing in out["msg"]


def test_missing_command():
    out = error({"CNI_CONTAINERID": "c1"}, b"{}", INVALID_ENV)
    assert "CNI_COMMAND" in out["msg"]


def test_unknown_command(tmp_path):
    out = error(base_env("FROB"), netconf(tmp_path), INVALID_ENV)
    assert "FROB" in out["msg"]


def test_del_does_not_need_netns(tmp_path):
    assert call(base_env("DEL", CNI_NETNS=None), netconf(tmp_path)) == (0, None)


def test_several_missing_are_all_named(tmp_path):
    out = error(base_env(CNI_CONTAINERID=None, CNI_IFNAME=None), netconf(tmp_path), INVALID_ENV)
    assert "CNI_CONTAINERID" in out["msg"] and "CNI_IFNAME" in out["msg"]


@pytest.mark.parametrize("cid", ["../etc", "a/b", "-lead", ".hidden", "x y", "é", "a" * 1025, "a\nb"])
def test_bad_container_id(tmp_path, cid):
    out = error(base_env(CNI_CONTAINERID=cid), netconf(tmp_path), INVALID_ENV)
    assert "CNI_CONTAINERID" in out["msg"]
    assert not (tmp_path / NET).exists()


@pytest.mark.parametrize("ifname", ["a" * 16, ".", "..", "eth/0", "eth:0", "eth 0", "eth\t0"])
def test_bad_ifname(tmp_path, ifname):
    out = error(base_env(CNI_IFNAME=ifname), netconf(tmp_path), INVALID_ENV)
    assert "CNI_IFNAME" in out["msg"]
    assert not (tmp_path / NET).exists()


def test_good_names_at_the_limits(tmp_path):
    status, out = call(base_env(CNI_CONTAINERID="A" + "b_.-9" * 200, CNI_IFNAME="e" * 15), netconf(tmp_path))
    assert status == 0, out


@pytest.mark.parametrize("name", ["../x", "a/b", "", None, 5, ".x", "a b"])
def test_bad_network_name(tmp_path, name):
    conf = netconf(tmp_path)
    if name is None:
        del conf["name"]
    else:
        conf["name"] = name
    out = error(base_env(), conf, INVALID_CONFIG)
    assert "name" in out["msg"]
    assert list(tmp_path.iterdir()) == []


def test_cni_args_unknown_key(tmp_path):
    out = error(base_env(CNI_ARGS="FOO=1"), netconf(tmp_path), INVALID_ENV)
    assert "FOO" in out["msg"] and "CNI_ARGS" in out["msg"]
    status, out = call(base_env(CNI_ARGS="IgnoreUnknown=1;FOO=1;IP=10.0.0.44"), netconf(tmp_path))
    assert status == 0 and out["ips"][0]["address"] == "10.0.0.44/24"


# ------------------------------------------------------------------ stdin
@pytest.mark.parametrize("stdin", [b"\xff\xfe{", b"{not json", b"[1, 2]", b"", b"\"text\"", b"[" * 100000])
def test_undecodable_stdin(stdin):
    out = error(base_env(), stdin, DECODING_FAILURE)
    assert out["cniVersion"] == protocol.CURRENT_VERSION


# ------------------------------------------------------------------ versions
@pytest.mark.parametrize("version", ["0.5.0", "2.0.0", "1.0", "x"])
def test_unsupported_version(tmp_path, version):
    out = error(base_env(), netconf(tmp_path, version), INCOMPATIBLE_VERSION)
    assert version in out.get("details", "") + out["msg"]
    assert out["cniVersion"] == protocol.CURRENT_VERSION  # we cannot answer in an unknown version


def test_non_string_version_is_a_config_error(tmp_path):
    error(base_env(), netconf(tmp_path, 1), INVALID_CONFIG)


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1"])
def test_check_below_040(tmp_path, version):
    out = error(base_env("CHECK"), netconf(tmp_path, version), INCOMPATIBLE_VERSION)
    assert "CHECK" in out["msg"] and out["cniVersion"] == version


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_status_below_110(tmp_path, command):
    out = error(base_env(command), netconf(tmp_path, "1.0.0"), INCOMPATIBLE_VERSION)
    assert command in out["msg"]


def test_missing_version_means_010(tmp_path):
    status, out = call(base_env(), netconf(tmp_path, None))
    assert status == 0
    assert out == {"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}, "dns": {}}


def test_error_answers_in_the_config_version(tmp_path):
    out = error(base_env(), netconf(tmp_path, "0.3.1", subnet="bogus"), INVALID_CONFIG)
    assert out["cniVersion"] == "0.3.1" and "bogus" in out["msg"]


def test_version_output():
    status, out = call({"CNI_COMMAND": "VERSION"}, b"")
    assert status == 0
    assert out == {"cniVersion": "1.1.0",
                   "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


@pytest.mark.parametrize("version", protocol.SUPPORTED_VERSIONS)
def test_add_check_del_each_version(tmp_path, version):
    status, out = call(base_env(), netconf(tmp_path, version))
    assert status == 0 and out["cniVersion"] == version
    if protocol.version_tuple(version) >= (0, 4, 0):
        conf = netconf(tmp_path, version)
        conf["prevResult"] = out
        assert call(base_env("CHECK"), conf) == (0, None)
    assert call(base_env("DEL"), netconf(tmp_path, version)) == (0, None)
    assert [p.name for p in (tmp_path / NET).iterdir() if p.name[0].isdigit()] == []


# ------------------------------------------------------------------ never a traceback
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=12)
    | st.sampled_from(["10.0.0.0/24", "fd00::/64", "10.0.0.5", "1.0.0", "0.4.0", "usePodCidr", "/tmp/core-fuzz"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["subnet", "rangeStart", "rangeEnd", "gateway", "exclude", "ranges", "routes", "dst", "gw",
                         "dataDir", "resolvConf", "ips", "ipRanges", "mtu", "lockTimeout", "x"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ipam=json_values, runtime=json_values, args=json_values,
       command=st.sampled_from(["ADD", "DEL", "CHECK"]), version=st.sampled_from(["0.2.0", "0.4.0", "1.1.0"]))
def test_any_config_gives_result_or_cni_error_never_internal(tmp_path, ipam, runtime, args, command, version):
    if isinstance(ipam, dict):
        ipam["dataDir"] = str(tmp_path)
    conf = {"cniVersion": version, "name": NET, "ipam": ipam, "runtimeConfig": runtime, "args": args}
    status, out = call(base_env(command), conf)
    if status == 1:
        assert set(out) <= {"cniVersion", "code", "msg", "details"}
        assert out["code"] != INTERNAL, out
    else:
        assert status == 0


# ------------------------------------------------------------------ docs/core.md stays true
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "core.md")


def test_every_json_example_in_the_doc_loads():
    from cni_ipam.plugin import netconf as config

    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert len(blocks) >= 10
    for block in blocks:
        conf = json.loads(block)
        cfg = config.load(conf, {})
        assert cfg.range_sets and cfg.name == conf["name"]


def test_the_doc_error_table_matches_errors_py():
    from cni_ipam import errors

    with open(DOC, encoding="utf-8") as fh:
        rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", fh.read(), re.M)
    documented = {name: int(code) for code, name in rows}
    defined = {k: v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)}
    assert documented == defined


def test_name_rules_shared_with_the_store():
    """The predicates the store applies to contents read from disk."""
    from cni_ipam.store import ifname_problem, is_container_id

    assert is_container_id("abc-1.2_3") and not is_container_id("") and not is_container_id("a" * 1025)
    for bad in ("../x", "/etc/passwd", "..", "a/b", "a\0b", " a", "-a"):
        assert not is_container_id(bad), bad
    assert ifname_problem("eth0") == ""
    for bad in ("", ".", "..", "a/b", "a:b", "a b", "a\0b", "x" * 16, "\udcff"):
        assert ifname_problem(bad), repr(bad)
