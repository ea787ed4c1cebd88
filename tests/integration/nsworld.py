"""Run a Python snippet as the init of a fresh PID namespace (with its own /proc).

Inside, every process is one the snippet started, so a namespace scan there can be *sure*: the
machine's own pid 1 (which root may be unable to inspect, as on some CI sandboxes) is not visible.
The snippet gets helpers in its globals (``spawn``, ``ident``, ``netns_of``, ``scan``, ``wait_for``,
``cni_add`` and ``gc`` running the plugin under test, ``emit``)
and reports with ``emit(obj)``; ``run_world`` returns the emitted objects.  When the snippet ends,
the kernel kills every process left in the PID namespace, so nothing outlives the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.helpers import ROOT, plugin_argv

PRELUDE = r'''
import json, os, subprocess, sys, time
sys.path.insert(0, %(root)r)
from cni_ipam.plugin import nsscan

def spawn(*argv, **kw):
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, **kw)

def ident(path):
    st = os.stat(path)
    return [st.st_dev, st.st_ino]

def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    raise SystemExit("timed out waiting")

def netns_of(pid):
    """Wait until pid has left our network namespace (unshare/nsenter exec'd), return its ident."""
    mine = ident("/proc/self/ns/net")
    wait_for(lambda: os.path.exists("/proc/%%d/ns/net" %% pid) and ident("/proc/%%d/ns/net" %% pid) != mine)
    return ident("/proc/%%d/ns/net" %% pid)

def kill(p):
    p.kill()
    p.wait()

def scan(idents, **kw):
    kw.setdefault("node_pidns", True)
    r = nsscan.scan([tuple(i) for i in idents], **kw)
    return {"held": {"%%d:%%d" %% k: v for k, v in r.held.items()}, "problems": r.problems, "sure": r.sure,
            "gone": ["%%d:%%d" %% tuple(i) for i in idents if r.gone(tuple(i))]}

def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env["PYTHONPATH"] = %(root)r
    env.update(extra)
    return env

def cni_add(data, cid, netns, name="holders", subnet="10.79.0.0/24"):
    conf = {"cniVersion": "1.0.0", "name": name, "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": data, "subnet": subnet}}
    p = subprocess.run(%(argv)r, input=json.dumps(conf).encode(), capture_output=True,
                       env=_env(CNI_COMMAND="ADD", CNI_CONTAINERID=cid, CNI_IFNAME="eth0", CNI_NETNS=netns,
                                CNI_PATH="/usr/lib/cni"))
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)["ips"][0]["address"].split("/")[0]

def gc(data, *args):
    """cni-ipam gc --json; returns (exit code, report, stderr)."""
    p = subprocess.run(%(argv)r + ["gc", "--data-dir", data, "--json", *args], capture_output=True, text=True,
                       env=_env())
    return p.returncode, json.loads(p.stdout), p.stderr

def verdicts(report, name="holders"):
    return {r["ip"]: [r["state"], r["reason"], r["detail"], r.get("released")]
            for r in report["networks"][name]["reservations"]}

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
'''


def run_world(snippet: str, timeout: float = 60, user: "str | None" = None) -> list:
    code = PRELUDE % {"root": ROOT, "argv": plugin_argv()} + "\n" + textwrap.dedent(snippet)
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--propagation", "private", sys.executable, "-c", code]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
    if proc.returncode != 0:
        raise AssertionError(f"world failed ({proc.returncode}): {proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


