"""Each liveness rule on its own, with the boot id, boot time, clock and namespace root injected."""

import ipaddress
import json
import os

import pytest

from cni_ipam.admin import liveness as L
from cni_ipam.store import gcstats, snapshot
from cni_ipam.store.layout import Reservation
from cni_ipam.store.network import NetworkStore

NOW = 1_800_000_000.0
BOOT = "11111111-2222-3333-4444-555555555555"
BOOT_TIME = NOW - 86400  # booted a day ago


def scan_network(data_dir, network, checker, lock_timeout=30.0):
    """What ``cni-ipam gc`` does for one network: classify its reservations under its lock."""
    with NetworkStore(data_dir, network, lock_timeout, create=False) as store:
        return L.scan_store(store, checker) if store.exists else []


class FakeKernel:
    """The kernel's answers (nsfs.Kernel) from a table, for the rules in isolation (the real
    kernel: tests/integration/test_netns_truth.py).  Unlisted identities: unknown."""

    def __init__(self, answers=None, why_not=None):
        self.answers = dict(answers or {})
        self.why = why_not
        self.calls = []

    def why_not(self):
        return self.why

    def state(self, ns_id, ns_ino):
        self.calls.append((ns_id, ns_ino))
        if self.why:
            return "unknown", self.why
        return self.answers.get((ns_id, ns_ino), ("unknown", "no answer for %d" % ns_id))


def checker(tmp_path, **kw):
    opts = dict(now=NOW, grace=300, boot_id=BOOT, boot_time=BOOT_TIME, netns_root=str(tmp_path / "root"),
                kernel=FakeKernel(why_not="test: no kernel"))
    opts.update(kw)
    return L.Checker(**opts)


def make_netns(tmp_path, name):
    """A stand-in for /var/run/netns/<name> under the injected root; returns (path, dev, ino)."""
    path = tmp_path / "root" / "var" / "run" / "netns" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    st = os.stat(path)
    return f"/var/run/netns/{name}", st.st_dev, st.st_ino


def entry(cid="c1", ifname="eth0", **meta):
    base = {"created": NOW - 3600, "bootId": BOOT}
    base.update(meta)
    return {"containerID": cid, "ifname": ifname, "ips": ["10.0.0.2"], "meta": base}


def test_no_metadata_is_unknown_and_left_alone(tmp_path):
    v = checker(tmp_path).classify({"containerID": "c1", "ifname": "eth0", "meta": {}})
    assert (v.state, v.reason) == (L.UNKNOWN, L.NO_METADATA)
    assert not v.stranded


def test_grace_period_wins_over_every_stranded_reason(tmp_path):
    e = entry(created=NOW - 10, bootId="an-old-boot", netns="/var/run/netns/gone")
    v = checker(tmp_path, valid_ids=[]).classify(e)
    assert (v.state, v.reason) == (L.LIVE, L.GRACE_PERIOD)
    assert "10s" in v.detail
    # once older than the grace period, the same entry is stranded
    v = checker(tmp_path, grace=5).classify(e)
    assert (v.state, v.reason) == (L.STRANDED, L.PREVIOUS_BOOT)


def test_grace_boundary_and_clock_going_backwards(tmp_path):
    assert checker(tmp_path).classify(entry(created=NOW - 300, bootId="old")).reason == L.PREVIOUS_BOOT
    assert checker(tmp_path).classify(entry(created=NOW - 299.5, bootId="old")).reason == L.GRACE_PERIOD
    # created "in the future" (clock stepped back): treated as young, never stranded
    assert checker(tmp_path).classify(entry(created=NOW + 1000, bootId="old")).reason == L.GRACE_PERIOD


def test_previous_boot_by_boot_id(tmp_path):
    v = checker(tmp_path).classify(entry(bootId="99999999-0000-0000-0000-000000000000"))
    assert (v.state, v.reason) == (L.STRANDED, L.PREVIOUS_BOOT)
    assert BOOT in v.detail
    # simulate the reboot the other way round: the same entry is current under its own boot id
    path, dev, ino = make_netns(tmp_path, "a")
    e = entry(bootId="99999999-0000-0000-0000-000000000000", netns=path, netnsDev=dev, netnsIno=ino)
    assert checker(tmp_path, boot_id="99999999-0000-0000-0000-000000000000").classify(e).state == L.LIVE


def test_no_clock_judges_previous_boot(tmp_path):
    """Created (or written) long before btime proves nothing: the clock may have been wrong."""
    assert checker(tmp_path).classify(entry(bootId="", created=BOOT_TIME - 60)).reason == L.NO_EVIDENCE
    assert checker(tmp_path).classify(entry(bootId="", created=BOOT_TIME + 60)).reason == L.NO_EVIDENCE
    bare = {"containerID": "h1", "ifname": "eth0", "meta": {}}
    v = checker(tmp_path, include_unknown=True).classify(bare, mtime=BOOT_TIME - 86400 * 365)
    assert (v.state, v.reason) == (L.UNKNOWN, L.NO_METADATA)


def test_seen_boot_is_the_evidence_for_files_without_our_metadata(tmp_path):
    old = {"containerID": "h1", "ifname": "eth0", "meta": {}, "seenBoot": "another-boot"}
    now = {"containerID": "h1", "ifname": "eth0", "meta": {}, "seenBoot": BOOT}
    for c in (checker(tmp_path), checker(tmp_path, include_unknown=True)):
        v = c.classify(old, mtime=NOW - 10)  # a young mtime (clock ahead) does not hide it
        assert (v.state, v.reason) == (L.STRANDED, L.PREVIOUS_BOOT) and "another-boot" in v.detail
    assert checker(tmp_path).classify(now, mtime=BOOT_TIME - 3600).reason == L.NO_METADATA
    assert checker(tmp_path, include_unknown=True).classify(now, mtime=BOOT_TIME - 3600).reason == L.NO_METADATA
    # our own bootId wins over seenBoot (a re-ADD in this boot refreshed it, the file stayed)
    ours = {"containerID": "c1", "ifname": "eth0", "meta": {"created": NOW - 3600, "bootId": BOOT},
            "seenBoot": "another-boot"}
    assert checker(tmp_path).classify(ours).state == L.LIVE
    ours["meta"]["bootId"] = "another-boot"
    ours["seenBoot"] = BOOT
    assert checker(tmp_path).classify(ours).reason == L.PREVIOUS_BOOT


class FakeScan:
    """What nsscan.scan returns, for the rules in isolation (real scans: tests/integration)."""

    def __init__(self, held=None, problems=(), ids=None):
        self.held = dict(held or {})
        self.ids = dict(ids or {})  # ident -> NS_GET_ID of the namespace found with that inode
        self.problems = list(problems)
        self.calls = []

    def __call__(self, idents):
        self.calls.append(set(idents))
        return self

    def gone(self, ident):
        return not self.problems and ident not in self.held


NSFS = os.stat("/proc/self/ns/net").st_dev


def nsfs_link(tmp_path, name):
    """/var/run/netns/<name> under the injected root, an nsfs file (our own namespace)."""
    path = tmp_path / "root" / "var" / "run" / "netns" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/proc/self/ns/net", path)
    return f"/var/run/netns/{name}"


def test_netns_gone_only_on_the_kernels_word(tmp_path):
    e = entry(netns="/var/run/netns/never-made", netnsDev=NSFS, netnsIno=4026599999, netnsId=77)
    gone = FakeKernel({(77, 4026599999): ("gone", "the kernel no longer has network namespace id 77")})
    v = checker(tmp_path, scanner=FakeScan(), kernel=gone).classify(e)
    assert (v.state, v.reason) == (L.STRANDED, L.NETNS_GONE)
    assert "/var/run/netns/never-made" in v.detail and "no longer has" in v.detail
    # a sure walk of /proc that found nothing proves nothing
    scan = FakeScan()
    v = checker(tmp_path, scanner=scan).classify(e)
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_UNSURE) and "proves nothing" in v.detail
    assert scan.calls == [{(NSFS, 4026599999)}]
    # the walk may still keep: evidence of life
    v = checker(tmp_path, scanner=FakeScan(held={(NSFS, 4026599999): "pid 7 (pause) lives in it"})).classify(e)
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE) and "pid 7 (pause) lives in it" in v.detail
    # the kernel says alive: live, and no walk at all
    scan = FakeScan()
    alive = FakeKernel({(77, 4026599999): ("alive", "the kernel still has network namespace id 77")})
    v = checker(tmp_path, scanner=scan, kernel=alive, valid_ids=[]).classify(e)
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE) and scan.calls == [] and "kept although" in v.detail
    # no id recorded (an older ADD, a kernel before 6.18): never stranded
    e2 = entry(netns="/var/run/netns/never-made", netnsDev=NSFS, netnsIno=4026599999)
    assert checker(tmp_path, scanner=FakeScan(), kernel=gone).classify(e2).state == L.UNKNOWN


def test_two_namespaces_of_one_attachment_must_both_be_gone(tmp_path):
    e = entry(netns="/var/run/netns/b", netnsDev=NSFS, netnsIno=2, netnsId=20,
              netnsAlso=[{"netns": "/var/run/netns/a", "netnsDev": NSFS, "netnsIno": 1, "netnsId": 10}])
    one = FakeKernel({(20, 2): ("gone", "id 20 gone"), (10, 1): ("alive", "id 10 alive")})
    assert checker(tmp_path, scanner=FakeScan(), kernel=one).classify(e).state == L.LIVE
    both = FakeKernel({(20, 2): ("gone", "id 20 gone"), (10, 1): ("gone", "id 10 gone")})
    v = checker(tmp_path, scanner=FakeScan(), kernel=both).classify(e)
    assert (v.state, v.reason) == (L.STRANDED, L.NETNS_GONE) and "id 10 gone" in v.detail
    # an earlier namespace without an id: nothing can be proven
    e["meta"]["netnsAlso"] = [{"netns": "/var/run/netns/a", "netnsDev": NSFS, "netnsIno": 1}]
    assert checker(tmp_path, scanner=FakeScan(), kernel=both).classify(e).state == L.UNKNOWN


def test_pid_path_gone_without_identity_is_unknown(tmp_path):
    # /proc/<pid>/ns/net of a process that exited: another process may still be in the namespace
    v = checker(tmp_path, scanner=FakeScan()).classify(entry(netns="/proc/999999/ns/net"))
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_NO_IDENTITY)


def test_netns_replaced_on_the_kernels_word(tmp_path):
    path = nsfs_link(tmp_path, "r")
    e = entry(netns=path, netnsDev=NSFS, netnsIno=4026599998, netnsId=88)
    v = checker(tmp_path, scanner=FakeScan()).classify(e)
    assert v.state == L.UNKNOWN
    gone = FakeKernel({(88, 4026599998): ("gone", "the kernel no longer has network namespace id 88")})
    v = checker(tmp_path, scanner=FakeScan(), kernel=gone).classify(e)
    assert (v.state, v.reason) == (L.STRANDED, L.NETNS_REPLACED) and "id 88" in v.detail


def test_path_that_is_not_nsfs_proves_nothing(tmp_path):
    """An empty file where the namespace was (a private mount of the host's /run/netns)."""
    path, dev, ino = make_netns(tmp_path, "plain")
    e = entry(netns=path, netnsDev=NSFS, netnsIno=4026599997)
    v = checker(tmp_path, scanner=FakeScan()).classify(e)
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_NOT_NSFS)
    # a recorded identity that was never on nsfs: nothing to look for
    scan = FakeScan()
    v = checker(tmp_path, scanner=scan).classify(entry(netns="/var/run/netns/gone", netnsDev=dev + 1, netnsIno=ino))
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_NOT_NSFS) and scan.calls == []
    # the same file still at its recorded identity is kept as it always was
    assert checker(tmp_path).classify(entry(netns=path, netnsDev=dev, netnsIno=ino)).reason == L.NETNS_ALIVE


def test_netns_without_recorded_identity(tmp_path):
    path = nsfs_link(tmp_path, "noid")
    assert checker(tmp_path).classify(entry(netns=path)).reason == L.NETNS_ALIVE
    plain, _, _ = make_netns(tmp_path, "noid-plain")
    assert checker(tmp_path).classify(entry(netns=plain)).reason == L.NETNS_NOT_NSFS


def test_unsure_namespace_beats_cache_and_valid_list(tmp_path):
    cache = tmp_path / "results"
    cache.mkdir()
    e = entry("c9", netns="/var/run/netns/gone", netnsDev=NSFS, netnsIno=4026599996)
    c = checker(tmp_path, runtime_cache=str(cache), valid_ids={"other"}, scanner=FakeScan(problems=["x"]))
    v = c.classify(e, network="n")
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_UNSURE) and "valid IDs" in v.detail


def test_one_scan_per_network(tmp_path):
    with NetworkStore(str(tmp_path), "net1") as s:
        for i in range(5):
            ip = ipaddress.ip_address(f"10.1.0.{i + 2}")
            assert s.reserve(ip, f"c{i}", "eth0")
            s.save_owner(f"c{i}", "eth0", [ip], {"created": NOW - 7200, "bootId": BOOT, "netns": f"/gone/{i}",
                                               "netnsDev": NSFS, "netnsIno": 4026590000 + i})
    scan = FakeScan(held={(NSFS, 4026590001): "pid 9 (x) lives in it"})
    found = scan_network(str(tmp_path), "net1", checker(tmp_path, scanner=scan))
    assert len(scan.calls) == 1 and len(scan.calls[0]) == 5
    assert [f.verdict.reason for f in found] == [L.NETNS_UNSURE, L.NETNS_ALIVE] + [L.NETNS_UNSURE] * 3


def test_netns_unreadable_is_unknown(tmp_path):
    loop = tmp_path / "root" / "loop"
    loop.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("loop", loop)  # ELOOP: neither gone nor alive
    v = checker(tmp_path).classify(entry(netns="/loop"))
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_UNREADABLE)


def test_netns_root_default_is_the_real_root(tmp_path):
    c = L.Checker(now=NOW, boot_id=BOOT, boot_time=BOOT_TIME)
    assert c.netns_path("/var/run/netns/x") == "/var/run/netns/x"
    st = os.stat("/proc/self/ns/net")
    e = entry(netns="/proc/self/ns/net", netnsDev=st.st_dev, netnsIno=st.st_ino)
    assert c.classify(e).reason == L.NETNS_ALIVE


def test_runtime_cache(tmp_path):
    cache = tmp_path / "results"
    cache.mkdir()
    (cache / "net1-c1-eth0").write_text("{}")
    c = checker(tmp_path, runtime_cache=str(cache))
    assert c.classify(entry("c1", "eth0"), network="net1").reason == L.NO_EVIDENCE
    v = c.classify(entry("c2", "eth0"), network="net1")
    assert (v.state, v.reason) == (L.STRANDED, L.NOT_IN_RUNTIME_CACHE)
    assert "net1-c2-eth0" in v.detail
    # another network's cache entry does not count
    assert c.classify(entry("c1", "eth0"), network="net2").reason == L.NOT_IN_RUNTIME_CACHE
    # an ID-only reservation matches any interface of the container
    assert c.classify(entry("c1", None), network="net1").reason == L.NO_EVIDENCE


def test_runtime_cache_missing_raises(tmp_path):
    c = checker(tmp_path, runtime_cache=str(tmp_path / "nope"))
    with pytest.raises(OSError):
        c.classify(entry("c1"), network="n")


def test_valid_list(tmp_path):
    c = checker(tmp_path, valid_ids={"c1"})
    assert c.classify(entry("c1")).reason == L.NO_EVIDENCE
    v = c.classify(entry("c2"))
    assert (v.state, v.reason) == (L.STRANDED, L.NOT_IN_VALID_LIST)


def test_alive_namespace_beats_cache_and_valid_list(tmp_path):
    path, dev, ino = make_netns(tmp_path, "alive")  # still at its recorded identity
    cache = tmp_path / "results"
    cache.mkdir()
    c = checker(tmp_path, runtime_cache=str(cache), valid_ids={"other"})
    v = c.classify(entry("c9", netns=path, netnsDev=dev, netnsIno=ino), network="n")
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE)
    assert "not in the list of valid IDs" in v.detail and "result cache" in v.detail


def test_previous_boot_only_skips_other_rules(tmp_path):
    c = checker(tmp_path, previous_boot_only=True, valid_ids={"x"})
    v = c.classify(entry(netns="/var/run/netns/gone"))
    assert (v.state, v.reason) == (L.LIVE, L.CURRENT_BOOT)
    assert c.classify(entry(bootId="old")).reason == L.PREVIOUS_BOOT


def test_include_unknown_uses_lists_not_file_time(tmp_path):
    bare = {"containerID": "h1", "ifname": "eth0", "meta": {}}
    c = checker(tmp_path, include_unknown=True)
    v = c.classify(bare, mtime=BOOT_TIME - 5)  # before this boot by the clock: proves nothing
    assert (v.state, v.reason) == (L.UNKNOWN, L.NO_METADATA)
    assert c.classify(bare, mtime=NOW - 5).reason == L.GRACE_PERIOD
    # written this boot, no evidence: still unknown, never released
    v = c.classify(bare, mtime=NOW - 3600)
    assert (v.state, v.reason) == (L.UNKNOWN, L.NO_METADATA)
    c = checker(tmp_path, include_unknown=True, valid_ids={"h2"})
    assert c.classify(bare, mtime=NOW - 3600).reason == L.NOT_IN_VALID_LIST
    # without the flag the valid list is not applied to entries without metadata
    assert checker(tmp_path, valid_ids={"h2"}).classify(bare, mtime=NOW - 3600).reason == L.NO_METADATA


def test_classify_inputs(tmp_path):
    res = Reservation(ipaddress.ip_address("10.0.0.9"), "c1", "eth0", "/x")
    v = L.Checker(now=NOW, boot_id=BOOT, boot_time=BOOT_TIME).classify(
        res, meta={"created": NOW - 3600, "bootId": "old"})
    assert v.reason == L.PREVIOUS_BOOT
    f = L.Finding("n", res, {"created": NOW - 3600, "bootId": BOOT}, None, v)
    assert checker(tmp_path).classify(f).reason == L.NO_EVIDENCE
    with pytest.raises(TypeError):
        checker(tmp_path).classify("10.0.0.9")
    with pytest.raises(AttributeError):
        v.state = L.LIVE
    assert v == L.Verdict(L.STRANDED, L.PREVIOUS_BOOT, "other words")
    assert v.to_json()["reason"] == "previous-boot"


def test_checker_reads_the_machine_by_default():
    c = L.Checker()
    with open("/proc/sys/kernel/random/boot_id") as fh:
        assert c.boot_id == fh.read().strip()
    assert c.boot_time is not None and c.boot_time < c.now
    assert L.read_boot_time(os.devnull) is None


# ------------------------------------------------------------------ whole networks on a real store
def _prefill(data_dir):
    with NetworkStore(str(data_dir), "net1") as s:
        for ip, cid, meta in (
            ("10.1.0.2", "old", {"created": NOW - 7200, "bootId": "previous"}),
            ("10.1.0.3", "cur", {"created": NOW - 7200, "bootId": BOOT}),
            ("10.1.0.10", "new", {"created": NOW - 1, "bootId": "previous"}),
        ):
            assert s.reserve(ipaddress.ip_address(ip), cid, "eth0")
            s.save_owner(cid, "eth0", [ipaddress.ip_address(ip)], meta)
    # a host-local ID-only reservation written behind our back
    (data_dir / "net1" / "10.1.0.4").write_text("legacy")


def test_scan_network_joins_metadata_and_sorts(tmp_path, monkeypatch):
    # the store records seenBoot with the kernel's boot id: make it the checker's simulated one
    monkeypatch.setattr("cni_ipam.store.index.read_boot_id", lambda path=None: BOOT)
    _prefill(tmp_path)
    found = scan_network(str(tmp_path), "net1", checker(tmp_path))
    assert [str(f.address) for f in found] == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.10"]
    by_ip = {str(f.address): f for f in found}
    assert by_ip["10.1.0.2"].verdict.reason == L.PREVIOUS_BOOT
    assert by_ip["10.1.0.3"].verdict.reason == L.NO_EVIDENCE
    assert by_ip["10.1.0.10"].verdict.reason == L.GRACE_PERIOD
    legacy = by_ip["10.1.0.4"]
    assert (legacy.container_id, legacy.ifname, legacy.verdict.reason) == ("legacy", None, L.NO_METADATA)
    assert legacy.mtime is not None and legacy.created == legacy.mtime
    row = by_ip["10.1.0.2"].to_json(NOW)
    assert row["ageSeconds"] == 7200 and row["bootId"] == "previous" and row["state"] == "stranded"
    assert scan_network(str(tmp_path), "absent", checker(tmp_path)) == []
    assert not (tmp_path / "absent").exists()


def test_scan_every_network_and_list_networks(tmp_path):
    _prefill(tmp_path)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "-bad").mkdir()
    os.symlink(tmp_path / "net1", tmp_path / "link")
    assert snapshot.list_networks(str(tmp_path)) == ["net1"]
    assert snapshot.list_networks(str(tmp_path / "missing")) == []
    out = {name: scan_network(str(tmp_path), name, checker(tmp_path)) for name in snapshot.list_networks(str(tmp_path))}
    assert list(out) == ["net1"] and len(out["net1"]) == 4


def test_gc_stats_accumulate(tmp_path):
    _prefill(tmp_path)
    assert gcstats.read_gc_stats(str(tmp_path), "net1") == {}
    gcstats.record_gc_stats(str(tmp_path), "net1", "cli", False, {"live": 3, "stranded": 1, "unknown": 0}, 0, 0,
                            now=NOW)
    s = gcstats.read_gc_stats(str(tmp_path), "net1")
    assert s["lastRun"] == NOW and s["lastRunApplied"] is False and "releasedTotal" not in s
    gcstats.record_gc_stats(str(tmp_path), "net1", "cli", True, {"live": 3, "stranded": 1, "unknown": 0}, 1, 0,
                            now=NOW + 1)
    gcstats.record_gc_stats(str(tmp_path), "net1", "gc-verb", True, {"live": 3, "stranded": 2, "unknown": 0}, 2, 0,
                            now=NOW + 2)
    s = gcstats.read_gc_stats(str(tmp_path), "net1")
    assert (s["releasedTotal"], s["lastReleased"], s["lastApply"], s["lastRunSource"]) == (3, 2, NOW + 2, "gc-verb")
    with open(gcstats.gc_stats_path(str(tmp_path), "net1")) as fh:
        assert json.load(fh) == s


def test_the_runtime_decides_where_the_kernel_cannot(tmp_path):
    e = entry(cid="gone1", netns="/var/run/netns/never-made", netnsDev=NSFS, netnsIno=4026599990, netnsId=90)
    v = checker(tmp_path, scanner=FakeScan(), runtime_ids=["other"]).classify(e)
    assert (v.state, v.reason) == (L.STRANDED, L.NOT_IN_RUNTIME)
    # a cache or a list is no authority: unknown stays unknown
    assert checker(tmp_path, scanner=FakeScan(), valid_ids=["other"]).classify(e).state == L.UNKNOWN
    # evidence of life (possibly a reused inode) still keeps it
    held = FakeScan(held={(NSFS, 4026599990): "pid 3 (pause) lives in it"})
    assert checker(tmp_path, scanner=held, runtime_ids=["other"]).classify(e).state == L.LIVE
    # and so does the kernel's word
    alive = FakeKernel({(90, 4026599990): ("alive", "the kernel still has network namespace id 90")})
    assert checker(tmp_path, scanner=FakeScan(), kernel=alive, runtime_ids=["other"]).classify(e).state == L.LIVE


def test_a_found_inode_counts_only_with_the_recorded_id(tmp_path):
    """The kernel gives a freed namespace's inode number to the next one: where the kernel cannot
    answer, a namespace the walk finds by inode is the pod's only when its id is the recorded one."""
    ident = (NSFS, 4026599980)
    e = entry(cid="lost1", netns="/var/run/netns/lost1", netnsDev=NSFS, netnsIno=4026599980, netnsId=80)
    who = {ident: "mounted at /run/netns/cni-new (mount namespace of pid 1)"}
    v = checker(tmp_path, scanner=FakeScan(held=who, ids={ident: 81})).classify(e)
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_UNSURE), v
    assert "another one (id 81, recorded id 80), not this pod's" in v.detail and "cni-new" in v.detail
    # and a runtime that does not know the pod then decides
    v = checker(tmp_path, scanner=FakeScan(held=who, ids={ident: 81}), runtime_ids=["other"]).classify(e)
    assert (v.state, v.reason) == (L.STRANDED, L.NOT_IN_RUNTIME), v
    # the recorded id found: live, whatever the runtime says
    v = checker(tmp_path, scanner=FakeScan(held=who, ids={ident: 80}), runtime_ids=["other"]).classify(e)
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE) and "the recorded namespace is alive" in v.detail
    # the found one's id unreadable: the inode alone keeps
    v = checker(tmp_path, scanner=FakeScan(held=who, ids={ident: None}), runtime_ids=["other"]).classify(e)
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE)
    # no id recorded at ADD: the old inode rule (keep)
    old = entry(cid="lost1", netns="/var/run/netns/lost1", netnsDev=NSFS, netnsIno=4026599980)
    v = checker(tmp_path, scanner=FakeScan(held=who, ids={ident: 81}), runtime_ids=["other"]).classify(old)
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE)


def test_the_path_is_the_same_namespace_only_with_the_recorded_id(tmp_path):
    from cni_ipam.plugin import nsfs

    own = nsfs.identity("/proc/self/ns/net")
    if "netnsId" not in own:
        pytest.skip("this kernel has no NS_GET_ID (Linux 6.18)")
    path = nsfs_link(tmp_path, "same-inode")
    same = entry(netns=path, netnsDev=own["netnsDev"], netnsIno=own["netnsIno"], netnsId=own["netnsId"])
    v = checker(tmp_path, scanner=FakeScan()).classify(same)
    assert (v.state, v.reason) == (L.LIVE, L.NETNS_ALIVE), v
    other = entry(netns=path, netnsDev=own["netnsDev"], netnsIno=own["netnsIno"], netnsId=own["netnsId"] + 1000)
    scan = FakeScan()
    v = checker(tmp_path, scanner=scan).classify(other)
    assert (v.state, v.reason) == (L.UNKNOWN, L.NETNS_UNSURE), v
    assert "another namespace with the recorded inode number" in v.detail and scan.calls


def test_the_walk_reads_the_id_of_what_it_finds():
    from cni_ipam.plugin import nsfs, nsscan

    own = nsfs.identity("/proc/self/ns/net")
    ident = (own["netnsDev"], own["netnsIno"])
    result = nsscan.scan([ident])
    assert ident in result.held
    assert result.ids[ident] == own.get("netnsId")  # None only before Linux 6.18
