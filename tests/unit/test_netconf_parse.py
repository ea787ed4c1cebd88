"""netconf.parse: the netconf parsed once, into what each verb needs (the verb table's "need")."""

import pytest

from cni_ipam.__main__ import VERBS
from cni_ipam.errors import INVALID_CONFIG, NOT_AVAILABLE, PODCIDR_UNAVAILABLE, CniError
from cni_ipam.plugin import netconf


def conf(tmp_path, **top):
    c = {
        "cniVersion": "1.1.0",
        "name": "parse-net",
        "ipam": {
            "type": "cni-ipam",
            "dataDir": str(tmp_path),
            "lockTimeout": 7,
            "ranges": [[{"subnet": "10.0.0.0/24"}]],
        },
    }
    c.update(top)
    return c


def test_the_verb_table_names_a_need_for_every_verb():
    assert {cmd: need for cmd, (need, _) in VERBS.items()} == {
        "ADD": "full", "CHECK": "full", "STATUS": "status", "DEL": "ref", "GC": "gc"}


def test_full_is_load_with_the_negotiated_version(tmp_path):
    cfg = netconf.parse(conf(tmp_path), "full", {}, "1.1.0")
    assert isinstance(cfg, netconf.IpamConfig) and cfg.cni_version == "1.1.0" and cfg.lock_timeout == 7.0
    assert [r.cidr for s in cfg.range_sets for r in s.ranges] == ["10.0.0.0/24"]
    assert netconf.load(conf(tmp_path), {}).cni_version == "1.1.0"  # the admin callers' signature


def test_ref_reads_only_name_data_dir_and_lock_timeout(tmp_path):
    c = conf(tmp_path)
    c["ipam"]["ranges"] = [[{"subnet": "not a subnet"}]]  # DEL must still work: nothing leaks
    ref = netconf.parse(c, "ref", {}, "1.0.0")
    assert (ref.name, ref.cni_version, ref.data_dir, ref.lock_timeout, ref.pooled, ref.valid) == (
        "parse-net", "1.0.0", str(tmp_path), 7.0, False, None)
    with pytest.raises(CniError) as info:
        netconf.parse(c, "full", {}, "1.0.0")
    assert info.value.code == INVALID_CONFIG


def test_gc_reads_the_list_first_and_needs_nothing_without_one(tmp_path):
    c = conf(tmp_path)
    c["ipam"]["dataDir"] = "relative/dir"  # invalid, but a GC without a list releases nothing
    assert netconf.parse(c, "gc", {}, "1.1.0") is None
    c["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    with pytest.raises(CniError) as info:
        netconf.parse(c, "gc", {}, "1.1.0")
    assert "ipam.dataDir" in info.value.msg
    c["ipam"]["dataDir"] = str(tmp_path)
    ref = netconf.parse(c, "gc", {}, "1.1.0")
    assert ref.valid.keeps("c1", "eth0") and not ref.valid.keeps("c1", "eth1") and ref.data_dir == str(tmp_path)
    c["cni.dev/valid-attachments"] = "nope"
    with pytest.raises(CniError) as info:
        netconf.parse(c, "gc", {}, "1.1.0")
    assert info.value.code == INVALID_CONFIG


def test_status_answers_an_unknown_pod_cidr_as_not_available(tmp_path, monkeypatch):
    for var in ("KUBERNETES_NODE_NAME", "NODE_NAME", "KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    c = conf(tmp_path)
    c["ipam"]["ranges"] = [[{"subnet": "usePodCidr"}]]  # no cache, no API server here: unknown
    with pytest.raises(CniError) as full:
        netconf.parse(c, "full", {}, "1.1.0")
    assert full.value.code == PODCIDR_UNAVAILABLE
    with pytest.raises(CniError) as status:
        netconf.parse(c, "status", {}, "1.1.0")
    assert status.value.code == NOT_AVAILABLE and status.value.msg == f"pod CIDR unknown: {full.value.msg}"


def test_an_unknown_need_is_a_bug_not_a_config_error(tmp_path):
    with pytest.raises(ValueError):
        netconf.parse(conf(tmp_path), "everything", {}, "1.1.0")
