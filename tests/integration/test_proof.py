"""proof.provably_stranded: the exhaustion heal's decision, with real namespaces and processes."""

from __future__ import annotations

import pytest

from cni_ipam.plugin import proof
from tests.integration.nsworld import run_world

BOOT = "11111111-2222-3333-4444-555555555555"


def entry(meta=None, seen=None, cid="c", ifname="eth0"):
    e = {"containerID": cid, "ifname": ifname, "ips": ["10.0.0.2"], "meta": meta if meta is not None else {}}
    if seen is not None:
        e["seenBoot"] = seen
    return e


def test_boot_rules_need_no_clock():
    entries = {
        "ours-old": entry({"bootId": "old-boot", "created": 0}),
        "ours-now": entry({"bootId": BOOT, "created": 0}, seen="old-boot"),  # re-ADD this boot: ours wins
        "hl-old": entry(seen="old-boot"),
        "hl-now": entry(seen=BOOT),
        "hl-unseen": entry(),
        "junk": {"containerID": "x", "meta": "nope", "seenBoot": 5},
        "junk2": None,
    }
    got = proof.provably_stranded(entries, BOOT)
    assert {k: r for k, (r, _) in got.items()} == {"ours-old": "previous-boot", "hl-old": "previous-boot"}
    assert "old-boot" in got["hl-old"][1]
    assert proof.provably_stranded(entries, "") == {}  # no running boot id: no boot proof


@pytest.mark.usefixtures("need_root")
def test_namespace_proofs_with_real_holders(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")
    (out,) = run_world(f'''
        from cni_ipam.plugin import proof
        live = spawn("unshare", "--net", "sleep", "600")
        dead = spawn("unshare", "--net", "sleep", "600")
        moved = spawn("unshare", "--net", "sleep", "600")
        ids = {{"live": netns_of(live.pid), "dead": netns_of(dead.pid), "moved": netns_of(moved.pid)}}
        stay = spawn("nsenter", "--net=/proc/%d/ns/net" % moved.pid, "sleep", "600")
        wait_for(lambda: ident("/proc/%d/ns/net" % stay.pid) == ids["moved"])
        kill(dead); kill(moved)
        ids["plain"] = ident({str(plain)!r})
        entries = {{k: {{"containerID": k, "ifname": "eth0", "meta": {{"bootId": "B", "netns": "/proc/x/ns/net",
                       "netnsDev": v[0], "netnsIno": v[1]}}}} for k, v in ids.items()}}
        sure = proof.provably_stranded(entries, "B", node_pidns=True)
        unsure = proof.provably_stranded(entries, "B", node_pidns=False)
        emit({{"sure": sure, "unsure": unsure}})
    ''')
    assert set(out["sure"]) == {"dead"} and out["sure"]["dead"][0] == "netns-gone"
    assert "held by no process, fd or mount" in out["sure"]["dead"][1]
    assert out["unsure"] == {}  # not the host PID namespace: nothing is proven gone
