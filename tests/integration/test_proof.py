"""proof.provably_stranded: the exhaustion heal's decision, with real namespaces and processes."""

from __future__ import annotations

import pytest

from cni_ipam.plugin import proof
from tests.integration.hostworld import world

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


def test_an_untrusted_boot_id_proves_nothing():
    """"" is what read_boot_id gives for a boot id that is not provably the kernel's."""
    entries = {"fake-at-add": entry({"bootId": ""}, seen=""), "ours": entry({"bootId": "old"})}
    assert set(proof.provably_stranded(entries, BOOT)) == {"ours"}
    assert proof.provably_stranded(entries, "") == {}


@pytest.mark.usefixtures("need_root")
def test_namespace_proofs_with_real_holders(tmp_path):
    from cni_ipam.plugin import nsfs

    if nsfs.Kernel().why_not() is not None:
        pytest.skip("the kernel cannot answer for namespaces here: " + nsfs.Kernel().why_not())
    (out,) = world('''
from cni_ipam.plugin import proof
live = spawn("unshare", "--net", "sleep", "600")
dead = spawn("unshare", "--net", "sleep", "600")
moved = spawn("unshare", "--net", "sleep", "600")
for p in (live, dead, moved):
    netns_of(p.pid)
ids = {k: nsfs.identity("/proc/%d/ns/net" % p.pid) for k, p in (("live", live), ("dead", dead), ("moved", moved))}
stay = spawn("nsenter", "--net=/proc/%d/ns/net" % moved.pid, "sleep", "600")
wait_for(lambda: nsfs.identity("/proc/%d/ns/net" % stay.pid) == ids["moved"])
kill(dead); kill(moved)
wait_gone(ids["dead"])
noid = dict(ids["dead"]); del noid["netnsId"]
entries = {k: {"containerID": k, "ifname": "eth0", "meta": dict(v, bootId="B", netns="/proc/x/ns/net")}
           for k, v in dict(ids, noid=noid).items()}
emit({"found": proof.provably_stranded(entries, "B")})
''')
    assert set(out["found"]) == {"dead"} and out["found"]["dead"][0] == "netns-gone"
    assert "ESTALE" in out["found"]["dead"][1]


def test_no_scan_on_the_heal_path():
    """The heal's decision walks nothing: its cost does not grow with the processes or fds of the node."""
    import subprocess
    import sys

    code = ("import sys; from cni_ipam.plugin import proof; "
            "proof.provably_stranded({'a': {'meta': {'netnsId': 5, 'netnsIno': 4026531000, 'bootId': 'B'}}}, 'B'); "
            "print('cni_ipam.plugin.nsscan' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
