"""config.py: every key host-local accepts, our additions, and errors that name the key and value."""

import ipaddress

import pytest

from cni_ipam.plugin import netconf as config
from cni_ipam.errors import INVALID_CONFIG, INVALID_ENV, CniError

IP = ipaddress.ip_address


def netconf(ipam=None, **top):
    conf = {"cniVersion": "1.0.0", "name": "net1", "type": "bridge"}
    conf["ipam"] = {"type": "cni-ipam", "dataDir": "/tmp/core-x"} if ipam is None else ipam
    conf.update(top)
    return conf


def ipam(**kw):
    out = {"type": "cni-ipam", "dataDir": "/tmp/core-x"}
    out.update(kw)
    return out


def load(ipam_conf, cni_args=None, **top):
    return config.load(netconf(ipam_conf, **top), cni_args or {})


def error_of(ipam_conf, cni_args=None, **top):
    with pytest.raises(CniError) as info:
        load(ipam_conf, cni_args, **top)
    return info.value


def ranges_of(cfg):
    return [
        [(str(r.subnet), str(r.range_start), str(r.range_end), str(r.gateway)) for r in s.ranges]
        for s in cfg.range_sets
    ]


# ------------------------------------------------------------------ ranges, legacy keys, ipRanges
def test_ranges_with_defaults_and_explicit_fields():
    cfg = load(
        ipam(
            ranges=[
                [
                    {"subnet": "10.1.0.0/24"},
                    {
                        "subnet": "10.2.0.0/24",
                        "rangeStart": "10.2.0.10",
                        "rangeEnd": "10.2.0.20",
                        "gateway": "10.2.0.254",
                    },
                ],
                [{"subnet": "fd00:1::/64"}],
            ]
        )
    )
    assert ranges_of(cfg) == [
        [
            ("10.1.0.0/24", "10.1.0.1", "10.1.0.254", "10.1.0.1"),
            ("10.2.0.0/24", "10.2.0.10", "10.2.0.20", "10.2.0.254"),
        ],
        [("fd00:1::/64", "fd00:1::1", "fd00:1::ffff:ffff:ffff:fffe", "fd00:1::1")],
    ]
    assert cfg.data_dir == "/tmp/core-x"
    assert cfg.name == "net1" and cfg.cni_version == "1.0.0"
    assert cfg.routes == () and cfg.resolv_conf is None and cfg.requested == ()


def test_legacy_top_level_subnet_is_prepended_to_ranges():
    cfg = load(ipam(subnet="10.9.0.0/16", rangeStart="10.9.1.0", rangeEnd="10.9.1.50", gateway="10.9.0.1",
                    ranges=[[{"subnet": "fd00:9::/64"}]]))
    assert ranges_of(cfg) == [
        [("10.9.0.0/16", "10.9.1.0", "10.9.1.50", "10.9.0.1")],
        [("fd00:9::/64", "fd00:9::1", "fd00:9::ffff:ffff:ffff:fffe", "fd00:9::1")],
    ]


def test_runtime_ip_ranges_come_first():
    cfg = load(ipam(subnet="10.9.0.0/24", ranges=[[{"subnet": "fd00:9::/64"}]]),
               runtimeConfig={"ipRanges": [[{"subnet": "10.7.0.0/24", "rangeStart": "10.7.0.5"}]]})
    assert [str(s.ranges[0].subnet) for s in cfg.range_sets] == ["10.7.0.0/24", "10.9.0.0/24", "fd00:9::/64"]
    assert str(cfg.range_sets[0].ranges[0].range_start) == "10.7.0.5"


def test_runtime_ip_ranges_alone_are_enough():
    cfg = config.load({"cniVersion": "0.4.0", "name": "n", "ipam": {"type": "x"},
                       "runtimeConfig": {"ipRanges": [[{"subnet": "192.168.5.0/24"}]]}}, {})
    assert ranges_of(cfg) == [[("192.168.5.0/24", "192.168.5.1", "192.168.5.254", "192.168.5.1")]]
    assert cfg.data_dir == config.DEFAULT_DATA_DIR == "/var/lib/cni/networks"


def test_no_ranges_at_all():
    err = error_of(ipam())
    assert err.code == INVALID_CONFIG and "no IP ranges" in err.msg


def test_missing_ipam_key():
    with pytest.raises(CniError) as info:
        config.load({"cniVersion": "1.0.0", "name": "n"}, {})
    assert info.value.code == INVALID_CONFIG and "ipam" in info.value.msg


@pytest.mark.parametrize(
    "ranges, key, value",
    [
        ([[{"subnet": "10.0.0.0/33"}]], "ipam.ranges[0][0].subnet", "10.0.0.0/33"),
        ([[{"subnet": "10.0.0.5/24"}]], "ipam.ranges[0][0].subnet", "10.0.0.5/24"),
        ([[{"subnet": "10.0.0.0/31"}]], "ipam.ranges[0][0].subnet", "10.0.0.0/31"),
        ([[{"rangeStart": "10.0.0.1"}]], "ipam.ranges[0][0].subnet", "None"),
        ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]], "ipam.ranges[0][0].rangeStart", "10.0.1.5"),
        ([[{"subnet": "10.0.0.0/24", "rangeEnd": "bogus"}]], "ipam.ranges[0][0].rangeEnd", "bogus"),
        ([[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]], "ipam.ranges[0][0].gateway", "10.0.1.1"),
        ([[{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}]], "ipam.ranges[0][0].gateway", "fd00::1"),
        (
            [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.40"}]],
            "ipam.ranges[0][0].rangeStart",
            "10.0.0.50",
        ),
        ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.255"}]], "ipam.ranges[0][0].rangeStart", "10.0.0.255"),
        ([[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]], "ipam.ranges[0][1].subnet", "fd00::/64"),
        ([[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]], "ipam.ranges[0][1]", "10.0.0.128/25"),
        ([[]], "ipam.ranges[0]", "[]"),
        ("10.0.0.0/24", "ipam.ranges", "10.0.0.0/24"),
    ],
)
def test_range_errors_name_key_and_value(ranges, key, value):
    err = error_of(ipam(ranges=ranges))
    assert err.code == INVALID_CONFIG
    assert key in err.msg + " " + err.details
    assert value in err.msg


def test_overlapping_range_sets_are_rejected():
    err = error_of(ipam(ranges=[[{"subnet": "10.0.0.0/16"}], [{"subnet": "10.0.5.0/24"}]]))
    assert err.code == INVALID_CONFIG and "ipam.ranges[0]" in err.msg and "ipam.ranges[1]" in err.msg


def test_legacy_overlapping_ranges_is_rejected():
    err = error_of(ipam(subnet="10.0.0.0/24", ranges=[[{"subnet": "10.0.0.0/24"}]]))
    assert err.code == INVALID_CONFIG and "overlaps" in err.msg


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_old_versions_allow_one_address_per_family(version):
    conf = netconf(ipam(ranges=[[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]), cniVersion=version)
    with pytest.raises(CniError) as info:
        config.load(conf, {})
    assert info.value.code == INVALID_CONFIG and version in info.value.msg
    conf["ipam"]["ranges"][1] = [{"subnet": "fd00::/64"}]
    assert len(config.load(conf, {}).range_sets) == 2


def test_missing_cni_version_means_010():
    conf = netconf(ipam(subnet="10.0.0.0/24"))
    del conf["cniVersion"]
    assert config.load(conf, {}).cni_version == "0.1.0"
    assert config.network_version({"cniVersion": ""}) == "0.1.0"


@pytest.mark.parametrize("value, why", [("relative/dir", "absolute"), (5, "path string")])
def test_data_dir_must_be_absolute_path(value, why):
    err = error_of(ipam(subnet="10.0.0.0/24", dataDir=value))
    assert err.code == INVALID_CONFIG and "ipam.dataDir" in err.msg and str(value) in err.msg and why in err.msg


def test_data_dir_is_normalised():
    assert load(ipam(subnet="10.0.0.0/24", dataDir="/tmp/core-a/../core-b/")).data_dir == "/tmp/core-b"


@pytest.mark.parametrize("value", [0, -1, "5", True, 7200])
def test_lock_timeout_validation(value):
    err = error_of(ipam(subnet="10.0.0.0/24", lockTimeout=value))
    assert err.code == INVALID_CONFIG and "ipam.lockTimeout" in err.msg


def test_lock_timeout_default_and_value():
    assert load(ipam(subnet="10.0.0.0/24")).lock_timeout == config.DEFAULT_LOCK_TIMEOUT
    assert load(ipam(subnet="10.0.0.0/24", lockTimeout=2)).lock_timeout == 2.0


# ------------------------------------------------------------------ exclude
def test_exclude_top_level_and_per_range():
    cfg = load(
        ipam(
            exclude=["10.0.0.5", "10.0.0.16/30", "fd00::7"],
            ranges=[
                [{"subnet": "10.0.0.0/24", "exclude": ["10.0.0.100/31"]}],
                [{"subnet": "fd00::/120", "exclude": ["fd00::9"]}],
            ],
        )
    )
    v4 = cfg.range_sets[0].ranges[0]
    v6 = cfg.range_sets[1].ranges[0]
    for text in ("10.0.0.5", "10.0.0.16", "10.0.0.19", "10.0.0.100", "10.0.0.101"):
        assert v4.is_excluded(IP(text)), text
    for text in ("10.0.0.4", "10.0.0.6", "10.0.0.20", "10.0.0.102"):
        assert not v4.is_excluded(IP(text)), text
    assert v6.is_excluded(IP("fd00::7")) and v6.is_excluded(IP("fd00::9")) and not v6.is_excluded(IP("fd00::8"))
    first = [str(a) for a, _ in cfg.range_sets[0].candidates(None)][:6]
    assert first == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6", "10.0.0.7", "10.0.0.8"]


@pytest.mark.parametrize("where", ["top", "range"])
@pytest.mark.parametrize("value, bad", [("10.0.0.1", "10.0.0.1"), (["10.0.0.x"], "10.0.0.x"), ([7], "7")])
def test_exclude_errors(where, value, bad):
    if where == "top":
        err = error_of(ipam(subnet="10.0.0.0/24", exclude=value))
        key = "ipam.exclude"
    else:
        err = error_of(ipam(ranges=[[{"subnet": "10.0.0.0/24", "exclude": value}]]))
        key = "ipam.ranges[0][0].exclude"
    assert err.code == INVALID_CONFIG and key in err.msg and bad in err.msg


# ------------------------------------------------------------------ routes
def test_routes_with_11_fields():
    cfg = load(
        ipam(
            subnet="10.0.0.0/24",
            routes=[
                {"dst": "0.0.0.0/0"},
                {
                    "dst": "192.168.0.0/16",
                    "gw": "10.0.0.254",
                    "mtu": 1400,
                    "advmss": 1360,
                    "priority": 10,
                    "table": 100,
                    "scope": 0,
                },
                {"dst": "::/0", "gw": "fd00::1"},
            ],
        )
    )
    assert [r.to_json(True) for r in cfg.routes] == [
        {"dst": "0.0.0.0/0"},
        {
            "dst": "192.168.0.0/16",
            "gw": "10.0.0.254",
            "mtu": 1400,
            "advmss": 1360,
            "priority": 10,
            "table": 100,
            "scope": 0,
        },
        {"dst": "::/0", "gw": "fd00::1"},
    ]
    assert cfg.routes[1].to_json(False) == {"dst": "192.168.0.0/16", "gw": "10.0.0.254"}
    assert [r.version for r in cfg.routes] == [4, 4, 6]


@pytest.mark.parametrize("route, key, value", [
    ({"dst": "10.0.0.0"}, "ipam.routes[0].dst", "10.0.0.0"),
    ({"dst": "nope/8"}, "ipam.routes[0].dst", "nope"),
    ({"gw": "10.0.0.1"}, "ipam.routes[0].dst", "None"),
    ({"dst": "0.0.0.0/0", "gw": "fd00::1"}, "ipam.routes[0].gw", "fd00::1"),
    ({"dst": "0.0.0.0/0", "gw": "x"}, "ipam.routes[0].gw", "x"),
    ({"dst": "0.0.0.0/0", "mtu": -1}, "ipam.routes[0].mtu", "-1"),
    ({"dst": "0.0.0.0/0", "table": "main"}, "ipam.routes[0].table", "main"),
    ({"dst": "0.0.0.0/0", "priority": True}, "ipam.routes[0].priority", "True"),
    ("0.0.0.0/0", "ipam.routes[0]", "0.0.0.0/0"),
])
def test_route_errors(route, key, value):
    err = error_of(ipam(subnet="10.0.0.0/24", routes=[route]))
    assert err.code == INVALID_CONFIG and key in err.msg and value in err.msg


# ------------------------------------------------------------------ resolvConf
def test_resolv_conf_parsing(tmp_path):
    path = tmp_path / "core-resolv.conf"
    path.write_text(
        "# a comment\n; another\nnameserver 10.0.0.53\nnameserver fd00::53\n"
        "domain example.org\nsearch a.example b.example\nsearch c.example\n"
        "options ndots:5 timeout:2\nsortlist 10.0.0.0\nnameserver\n"
    )
    cfg = load(ipam(subnet="10.0.0.0/24", resolvConf=str(path)))
    assert cfg.resolv_conf == str(path)
    assert config.read_resolv_conf(cfg.resolv_conf) == {
        "nameservers": ["10.0.0.53", "fd00::53"],
        "domain": "example.org",
        "search": ["a.example", "b.example", "c.example"],
        "options": ["ndots:5", "timeout:2"],
    }


def test_resolv_conf_empty_file_gives_empty_dns(tmp_path):
    path = tmp_path / "core-empty"
    path.write_text("")
    assert config.read_resolv_conf(str(path)) == {}


def test_resolv_conf_missing_file(tmp_path):
    with pytest.raises(CniError) as info:
        config.read_resolv_conf(str(tmp_path / "core-none"))
    assert info.value.code == INVALID_CONFIG and "ipam.resolvConf" in info.value.msg and "core-none" in info.value.msg


def test_resolv_conf_must_be_string():
    err = error_of(ipam(subnet="10.0.0.0/24", resolvConf=["x"]))
    assert err.code == INVALID_CONFIG and "ipam.resolvConf" in err.msg


# ------------------------------------------------------------------ requested addresses
def test_requested_ips_from_all_three_sources_in_host_local_order():
    cfg = load(ipam(ranges=[[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}], [{"subnet": "10.1.0.0/24"}]]),
               {"IP": "10.0.0.7, fd00::7", "IgnoreUnknown": "1"},
               args={"cni": {"ips": ["10.1.0.9"]}},
               runtimeConfig={"ips": ["10.0.0.8/24"]})
    assert list(cfg.requested) == [IP("10.0.0.7"), IP("fd00::7"), IP("10.1.0.9"), IP("10.0.0.8")]


@pytest.mark.parametrize("where, value, key", [
    ("args", ["10.0.0.x"], "args.cni.ips[0]"),
    ("args", "10.0.0.1", "args.cni.ips"),
    ("runtime", [5], "runtimeConfig.ips[0]"),
    ("runtime", {"a": 1}, "runtimeConfig.ips"),
])
def test_requested_ip_errors(where, value, key):
    top = {"args": {"cni": {"ips": value}}} if where == "args" else {"runtimeConfig": {"ips": value}}
    err = error_of(ipam(subnet="10.0.0.0/24"), **top)
    assert err.code == INVALID_CONFIG and key in err.msg


def test_cni_args_ip_invalid_is_env_error():
    err = error_of(ipam(subnet="10.0.0.0/24"), {"IP": "10.0.0.1,nope"})
    assert err.code == INVALID_ENV and "nope" in err.msg and "CNI_ARGS" in err.msg


def test_runtime_config_must_be_object():
    err = error_of(ipam(subnet="10.0.0.0/24"), runtimeConfig=[1])
    assert err.code == INVALID_CONFIG and "runtimeConfig" in err.msg


# ------------------------------------------------------------------ CNI_ARGS
def test_parse_cni_args_known_keys():
    assert config.parse_cni_args("") == {}
    assert config.parse_cni_args("IP=10.0.0.5;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u") == {
        "IP": "10.0.0.5", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p", "K8S_POD_UID": "u"}


@pytest.mark.parametrize("flag", ["1", "true", "TRUE", "True"])
def test_parse_cni_args_ignore_unknown(flag):
    args = config.parse_cni_args(f"IgnoreUnknown={flag};FOO=bar;IP=10.0.0.5")
    assert args["FOO"] == "bar" and args["IP"] == "10.0.0.5"


@pytest.mark.parametrize("raw, fragment", [
    ("FOO=bar", "FOO"),
    ("IgnoreUnknown=0;FOO=bar", "FOO"),
    ("IgnoreUnknown=maybe", "IgnoreUnknown"),
    ("IP", "IP"),
])
def test_parse_cni_args_errors(raw, fragment):
    with pytest.raises(CniError) as info:
        config.parse_cni_args(raw)
    assert info.value.code == INVALID_ENV and fragment in info.value.msg and "CNI_ARGS" in info.value.msg


def test_config_is_immutable():
    cfg = load(ipam(subnet="10.0.0.0/24"))
    with pytest.raises(AttributeError):
        cfg.name = "other"


# ------------------------------------------------------------------ IPv6 zones (a bug found here)
@pytest.mark.parametrize("where, key", [
    ({"cni_args": {"IP": "fd00::5%eth0"}}, "CNI_ARGS"),
    ({"top": {"runtimeConfig": {"ips": ["fd00::5%eth0/64"]}}}, "runtimeConfig.ips[0]"),
    ({"top": {"args": {"cni": {"ips": ["fd00::5%eth0"]}}}}, "args.cni.ips[0]"),
    ({"ipam": {"subnet": "fd00::%eth0/64"}}, "ipam.subnet"),
    ({"ipam": {"subnet": "fd00::/64", "gateway": "fd00::1%eth0"}}, "ipam.gateway"),
    ({"ipam": {"subnet": "fd00::/64", "rangeStart": "fd00::10%1"}}, "ipam.rangeStart"),
    ({"ipam": {"subnet": "fd00::/64", "exclude": ["fd00::7%lo"]}}, "ipam.exclude[0]"),
    ({"ipam": {"subnet": "fd00::/64", "routes": [{"dst": "::/0", "gw": "fe80::1%eth0"}]}}, "ipam.routes[0].gw"),
    ({"ipam": {"subnet": "fd00::/64", "routes": [{"dst": "fd01::%x/64"}]}}, "ipam.routes[0].dst"),
])
def test_ipv6_zones_are_rejected(where, key):
    """ipaddress accepts "fd00::5%eth0" and str() keeps the zone: it became a second reservation file
    for fd00::5, so two containers got the same address.  host-local rejects zones too."""
    extra = where.get("ipam", {"subnet": "fd00::/64"})
    err = error_of(ipam(**extra), where.get("cni_args"), **where.get("top", {}))
    assert err.code in (INVALID_CONFIG, INVALID_ENV) and key in err.msg + err.details and "%" in err.msg
