"""What the plugin path imports, checked once: each verb run from the source tree the way a runtime
runs it, under ``python -S -X importtime`` (no site: the machine's ``.pth`` hooks and installed
packages do not count) and the import log read from stderr.

Forbidden on every verb: ``typing``, ``dataclasses``, ``argparse``, ``subprocess``, ``logging``,
the heavy optional packages and every admin module (the admin CLI, gc_cli, show, metrics, lint, plan,
their shared options); ``ipaddress`` on every verb but CHECK,
whose pyroute2 may bring it (``cni_ipam.addr`` does the plugin's address work).  ``re`` is not in
this list: the stdlib ``json`` imports it; the built binary replaces json and its test
(test_built_binary.py) forbids ``re`` too.

Per verb, what it must not load at all: VERSION nothing of the package beyond ``plugin.skel`` and
``errors`` (no store, no netconf, not even ``__future__``); DEL and GC no range, allocator or result
code (their netconf is a ``NetworkRef``); STATUS not the locked store, the allocator or the result.
"""

import json
import os
import subprocess
import sys

from tests.helpers import ROOT, bytecode_env

FORBIDDEN = ("typing", "dataclasses", "argparse", "subprocess", "logging", "pyroute2", "yaml", "prometheus_client",
             "ssl", "http", "urllib", "asyncio")
# No verb loads the admin package (cli, gc, show, metrics, lint, plan, options, liveness, runtimes):
# the GC verb and the ADD heal record their passes through cni_ipam.store.gcstats.
ADMIN_PACKAGE = "cni_ipam.admin"
NOT_WITHOUT_CHECK = ("ipaddress",)  # (functools/collections: the stdlib json's re loads them here)
NOT_LOADED = {
    "DEL": ("cni_ipam.plugin.ranges", "cni_ipam.plugin.allocator", "cni_ipam.plugin.result"),
    "GC": ("cni_ipam.plugin.ranges", "cni_ipam.plugin.allocator", "cni_ipam.plugin.result"),
    "STATUS": ("cni_ipam.store.network", "cni_ipam.plugin.allocator", "cni_ipam.plugin.result"),
}
VERSION_ONLY = {"cni_ipam", "cni_ipam.__main__", "cni_ipam.plugin", "cni_ipam.plugin.skel", "cni_ipam.errors"}
# The modules still loaded at exit are listed too: importtime also logs an import that failed
# (CHECK tries pyroute2, which -S hides), and a failed import loaded nothing.
ENTRY = ("import sys; sys.path.insert(0, sys.argv[1]); from cni_ipam.__main__ import main; rc = main(); "
         "print('modules at exit:', *sorted(sys.modules), file=sys.stderr); sys.exit(rc)")


def run_verb(command, conf, extra_env=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": "imp-c1",
           "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", **bytecode_env(),
           **(extra_env or {})}
    proc = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", ENTRY, ROOT],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode("utf-8", "replace")
    logged = {
        line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:") and "|" in line
    }
    at_exit = next((line.split()[3:] for line in err.splitlines() if line.startswith("modules at exit:")), None)
    assert at_exit, f"{command}: no module list on stderr: {err[-1000:]}"
    return proc.returncode, proc.stdout.decode(), logged & set(at_exit), err


def test_every_verb_imports_only_what_it_needs(tmp_path):
    conf = {"cniVersion": "1.1.0", "name": "imp-net",
            "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.97.0.0/24"}]]}}
    seen = {}
    rc, out, loaded, err = run_verb("ADD", conf)
    assert rc == 0, out + err[-2000:]
    seen["ADD"] = loaded
    result = json.loads(out)
    rc, out, seen["CHECK"], err = run_verb("CHECK", dict(conf, prevResult=result))
    assert rc == 0, out + err[-2000:]
    gc_conf = dict(conf, **{"cni.dev/valid-attachments": []})  # releases imp-c1's address: GC does work
    for command, c in (("STATUS", conf), ("GC", gc_conf), ("DEL", conf), ("VERSION", {})):
        rc, out, seen[command], err = run_verb(command, c)
        assert rc == 0, (command, out, err[-2000:])
    assert not os.listdir(os.path.join(tmp_path, "imp-net")) or all(
        not n[0].isdigit() for n in os.listdir(os.path.join(tmp_path, "imp-net"))), "GC/DEL left a reservation"
    for command, loaded in seen.items():
        assert "cni_ipam.plugin.skel" in loaded, (command, sorted(loaded))  # the log was read at all
        bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN or m == ADMIN_PACKAGE
                     or m.startswith(ADMIN_PACKAGE + "."))
        assert not bad, f"{command} imported {bad}"
        if command != "CHECK":
            assert not loaded & set(NOT_WITHOUT_CHECK), f"{command} imported {sorted(loaded & set(NOT_WITHOUT_CHECK))}"
        extra = loaded & set(NOT_LOADED.get(command, ()))
        assert not extra, f"{command} imported {sorted(extra)}"
    version_loaded = {m for m in seen["VERSION"] if m.startswith("cni_ipam") or m == "__future__"}
    assert version_loaded == VERSION_ONLY, sorted(version_loaded ^ VERSION_ONLY)
    assert (
        "cni_ipam.store.network" in seen["ADD"]
        and "cni_ipam.plugin.verbs" in seen["GC"]
        and "cni_ipam.plugin.verbs" not in seen["VERSION"]
    )
