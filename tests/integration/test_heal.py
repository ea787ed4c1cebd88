"""The exhaustion heal with real network namespaces and real processes.

Each scenario runs in the host's PID namespace (``hostworld``: the kernel answers for namespaces
only there): a full range with one attachment whose namespace the kernel no longer has lets the
next ADD succeed; a full range whose namespaces are all alive fails the ADD (100) and releases
nothing.
"""

import json
import os

import pytest

from tests.helpers import is_root, plugin_argv
from tests.integration.hostworld import world

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network and PID namespaces")

SNIPPET = r'''
data = %(data)r
conf = {"cniVersion": "1.0.0", "name": "heal", "type": "bridge",
        "ipam": {"type": "cni-ipam", "dataDir": data, "subnet": "10.81.0.0/29", "pidnsIsNode": True}}

def add_pod(cid, netns):
    p = subprocess.run(PLUGIN, input=json.dumps(conf).encode(), capture_output=True,
                       env=_env(CNI_COMMAND="ADD", CNI_CONTAINERID=cid, CNI_IFNAME="eth0", CNI_NETNS=netns,
                                CNI_PATH="/usr/lib/cni"))
    return p.returncode, json.loads(p.stdout)

holders, idents = [], []
for i in range(5):  # .2 .. .6: the whole range
    p = spawn("unshare", "--net", "sleep", "60")
    netns_of(p.pid)
    holders.append(p)
    idents.append(nsfs.identity("/proc/%%d/ns/net" %% p.pid))
    rc, out = add_pod("pod-%%d" %% i, "/proc/%%d/ns/net" %% p.pid)
    assert rc == 0, out
files = sorted(n for n in os.listdir(data + "/heal") if n[0].isdigit())
extra = spawn("unshare", "--net", "sleep", "60")
netns_of(extra.pid)
rc_live, out_live = add_pod("pod-new", "/proc/%%d/ns/net" %% extra.pid)
after_live = sorted(n for n in os.listdir(data + "/heal") if n[0].isdigit())
kill(holders[%(victim)d])  # its namespace is now held by nothing
wait_gone(idents[%(victim)d])
rc, out = add_pod("pod-new", "/proc/%%d/ns/net" %% extra.pid)
emit({"files": files, "rc_live": rc_live, "out_live": out_live, "after_live": after_live, "rc": rc, "out": out,
      "after": sorted(n for n in os.listdir(data + "/heal") if n[0].isdigit())})
'''


def test_a_full_range_heals_by_releasing_only_the_stranded_reservation(tmp_path):
    data = str(tmp_path / "data")
    [r] = world(SNIPPET % {"data": data, "argv": plugin_argv(), "victim": 2})
    assert len(r["files"]) == 5
    # all five namespaces alive: the ADD fails with "no address" and nothing is released
    assert r["rc_live"] == 1 and r["out_live"]["code"] == 100, r["out_live"]
    assert r["after_live"] == r["files"]
    # pod-2's namespace is gone: its address (and only it) is released and handed out again
    assert r["rc"] == 0, r["out"]
    got = r["out"]["ips"][0]["address"].split("/")[0]
    assert got == "10.81.0.4" and sorted(r["after"]) == sorted(r["files"])
    assert open(os.path.join(data, "heal", got), "rb").read() == b"pod-new\r\neth0"
    stats = json.load(open(os.path.join(data, "heal", ".cni-ipam", "gc-stats.json")))
    assert stats["lastRunSource"] == "add-heal" and stats["lastReleased"] == 1 and stats["releasedTotal"] == 1
    [entry] = stats["releases"]
    assert (entry["ip"], entry["containerID"], entry["reason"]) == ("10.81.0.4", "pod-2", "netns-gone")
    assert os.stat(os.path.join(data, "heal", ".cni-ipam", "gc-stats.json")).st_mode & 0o777 == 0o600


def test_the_heal_can_be_switched_off(tmp_path):
    data = str(tmp_path / "data")
    snippet = SNIPPET.replace('"pidnsIsNode": True', '"pidnsIsNode": True, "reclaimOnExhaustion": False')
    [r] = world(snippet % {"data": data, "argv": plugin_argv(), "victim": 0})
    assert r["rc_live"] == 1 and r["rc"] == 1 and r["out"]["code"] == 100
    assert r["after"] == r["files"]
