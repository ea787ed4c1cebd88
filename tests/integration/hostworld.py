"""Run a Python snippet as root in the host's PID namespace and a private mount namespace.

The kernel answers "does this namespace still exist?" (nsfs file handles) only to a caller in the
initial PID namespace, so tests of the heal and of ``cni-ipam gc`` run there, not in ``nsworld``'s
fresh PID namespace.  The snippet gets nsworld's helpers plus ``sh``, ``add`` (an ADD through the
plugin, returning the address or the error code), ``recorded`` (the index metadata of a pod),
``kernel_state`` and ``wait_gone``; it mounts its own tmpfs on /run/netns (names never collide
with the host's) and every process it spawns is killed when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, plugin_argv
from tests.integration.nsworld import PRELUDE

WORLD = r'''
import atexit
from cni_ipam.plugin import nsfs
PLUGIN = %(argv)r
_spawned = []

def spawn(*argv, **kw):
    p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, **kw)
    _spawned.append(p)
    return p

@atexit.register
def _reap():
    for p in _spawned:
        if p.poll() is None:
            p.kill()
            p.wait()

def sh(cmd):
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit("%%s: %%s" %% (cmd, p.stderr))

# The test's own /run/netns (this mount namespace is private): no name can collide with the host's.
os.makedirs("/run/netns", exist_ok=True)
sh("mount -t tmpfs -o mode=755 nstest /run/netns")

def add(data, cid, netns, subnet="10.79.0.0/30", args=None, **ipam):
    conf = {"cniVersion": "1.0.0", "name": "holders", "type": "bridge",
            "ipam": dict({"type": "cni-ipam", "dataDir": data, "subnet": subnet, "pidnsIsNode": True}, **ipam)}
    p = subprocess.run(PLUGIN, input=json.dumps(conf).encode(), capture_output=True,
                       env=_env(CNI_COMMAND="ADD", CNI_CONTAINERID=cid, CNI_IFNAME="eth0", CNI_NETNS=netns,
                                CNI_PATH="/usr/lib/cni", **({"CNI_ARGS": args} if args else {})))
    out = json.loads(p.stdout or b"{}")
    return out["ips"][0]["address"].split("/")[0] if p.returncode == 0 else out.get("code", p.stderr.decode()[-300:])

def recorded(data, cid):
    import glob
    for path in glob.glob(data + "/holders/.cni-ipam/index/*"):
        for line in open(path):
            if line.startswith(cid + "\t"):
                return json.loads(line.rstrip("\n").split("\t")[3])["meta"]
    return None

def kernel_state(meta):
    return nsfs.Kernel().state(meta["netnsId"], meta["netnsIno"])[0]

def wait_gone(meta, timeout=20):
    end = time.monotonic() + timeout
    while kernel_state(meta) != "gone":
        if time.monotonic() > end:
            raise SystemExit("the namespace never went away")
        time.sleep(0.05)
'''



def world(snippet: str, timeout: float = 90, pidns: bool = False) -> list:
    """Run ``snippet`` (with nsworld's helpers and the ones above) as root in the host's PID
    namespace (``pidns``: a fresh one with its own /proc) and a private mount namespace; returns
    what it ``emit``-ted."""
    code = PRELUDE % {"root": ROOT, "argv": plugin_argv()} + WORLD % {"argv": plugin_argv()} + snippet
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code]
    if pidns:
        argv[1:1] = ["--pid", "--fork", "--mount-proc"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
    if proc.returncode != 0:
        raise AssertionError(f"world failed ({proc.returncode}): {proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


