"""The plugin-path modules of this package (cluster/pool.py for ``ipam.pool``, podcidr/ for
``usePodCidr``) import no ``typing``, ``dataclasses``, ``argparse`` and no admin module: their
annotations are postponed (``from __future__ import annotations``) with builtin generics and
``X | None``, and no TYPE_CHECKING block is left.  Checked under ``python -S -X importtime`` (no
site: the machine's ``.pth`` hooks do not count), as tests/integration/test_plugin_imports.py does
for the plain verbs."""

import json
import os
import subprocess
import sys

from tests.helpers import ROOT, bytecode_env

FORBIDDEN = ("typing", "dataclasses", "argparse", "subprocess", "logging", "yaml", "ssl", "http", "urllib")
MODULES = ("cni_ipam.cluster.pool", "cni_ipam.podcidr.sources", "cni_ipam.podcidr.cidrs")


def loaded_by(code, stdin=b"", env=None):
    proc = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c",
                           "import sys; sys.path.insert(0, sys.argv[1]); " + code +
                           "; print('modules at exit:', *sorted(sys.modules), file=sys.stderr)", ROOT],
                          input=stdin, capture_output=True, timeout=60, env=env)
    err = proc.stderr.decode("utf-8", "replace")
    at_exit = next((line.split()[3:] for line in err.splitlines() if line.startswith("modules at exit:")), None)
    assert at_exit, err[-2000:]
    return proc, set(at_exit)


def bad(modules):
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN or m.startswith("cni_ipam.admin"))


def test_pool_and_podcidr_modules_import_no_typing():
    proc, modules = loaded_by("import " + ", ".join(MODULES))
    assert proc.returncode == 0 and set(MODULES) <= modules
    assert not bad(modules), bad(modules)


def test_no_type_checking_blocks_left():
    for sub in ("admin", "cluster", "podcidr"):
        for name in os.listdir(os.path.join(ROOT, "cni_ipam", sub)):
            if name.endswith(".py"):
                with open(os.path.join(ROOT, "cni_ipam", sub, name), encoding="utf-8") as fh:
                    assert "TYPE_CHECKING" not in fh.read(), f"cni_ipam/{sub}/{name}"


def test_use_pod_cidr_add_imports_no_typing(tmp_path):
    """An ADD that resolves usePodCidr (static source) through the plugin's entry point."""
    conf = {"cniVersion": "1.0.0", "name": "imp-pc",
            "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path), "subnet": "usePodCidr",
                     "podCidr": {"static": ["10.98.0.0/24"], "nodeName": "imp-node"}}}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "imp-c1",
           "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", **bytecode_env()}
    proc, modules = loaded_by("from cni_ipam.__main__ import main; rc = main()", json.dumps(conf).encode(), env)
    assert json.loads(proc.stdout)["ips"][0]["address"].startswith("10.98.0."), proc.stdout
    assert "cni_ipam.podcidr.sources" in modules and not bad(modules), bad(modules)


def test_pool_add_and_del_over_http_load_no_tls_http_client_or_idna(etcd_single, etcd_prefix, tmp_path):
    """A pool ADD (a claim, then one in the held block) and a DEL against an http:// endpoint given
    as an IP literal: the etcd client loads ``socket`` and nothing of ``ssl``, ``http.client``,
    ``email``, ``threading`` or the idna codec (a str host given to getaddrinfo loads it, with
    ``stringprep`` and ``unicodedata``, on every call)."""
    from tests.cluster.poolkit import pool_conf

    conf = pool_conf(etcd_single, etcd_prefix, "imp-node", str(tmp_path / "d"), block=28)
    assert all(e.startswith("http://127.0.0.1:") for e in conf["ipam"]["pool"]["etcd"]["endpoints"])
    extra = ("threading", "email", "encodings.idna", "stringprep", "unicodedata")
    for command, cid in (("ADD", "imp-c1"), ("ADD", "imp-c2"), ("DEL", "imp-c2")):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
               "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", **bytecode_env()}
        proc, modules = loaded_by("from cni_ipam.__main__ import main; rc = main()", json.dumps(conf).encode(), env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "cni_ipam.cluster.etcd" in modules and "socket" in modules, (command, cid)
        assert not bad(modules) and not [m for m in extra if m in modules], (command, bad(modules),
                                                                            [m for m in extra if m in modules])
