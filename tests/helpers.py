"""Helpers to run the plugin (and host-local) as a runtime would: CNI_* env + config on stdin.

``CNI_IPAM_EXE`` selects the executable under test (default: ``python -m cni_ipam`` from this
source tree), so the same integration tests run against an installed or PyInstaller-built binary.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNI_BIN_DIR = os.environ.get("CNI_TEST_PLUGIN_DIR", "/usr/lib/cni")
HOST_LOCAL = os.path.join(CNI_BIN_DIR, "host-local")


def bytecode_env() -> dict:
    """What a process started with an environment of its own needs so that it writes no
    ``__pycache__/`` into the checkout (tests/conftest.py sets PYTHONPYCACHEPREFIX for the run)."""
    prefix = os.environ.get("PYTHONPYCACHEPREFIX")
    return {"PYTHONPYCACHEPREFIX": prefix} if prefix else {}


def uncovered_env() -> dict:
    """os.environ without coverage's start-up hook: for a child whose loaded modules a test counts
    (coverage, started in every child under CNI_IPAM_COVERAGE=1, imports modules of its own)."""
    return {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_START"}


def plugin_argv() -> list:
    exe = os.environ.get("CNI_IPAM_EXE")
    if exe:
        return shlex.split(exe)
    return [sys.executable, "-m", "cni_ipam"]


def cni_env(command, container_id="c1", ifname="eth0", netns="/var/run/netns/none", cni_args=None) -> dict:
    """The CNI_* variables of one call (a variable given as None is left out)."""
    env = {"CNI_COMMAND": command, "CNI_PATH": CNI_BIN_DIR}
    for key, value in (("CNI_CONTAINERID", container_id), ("CNI_IFNAME", ifname), ("CNI_NETNS", netns),
                       ("CNI_ARGS", cni_args)):
        if value is not None:
            env[key] = value
    return env


def run_cni(argv, command, conf, container_id="c1", ifname="eth0", netns="/var/run/netns/none",
            cni_args=None, extra_env=None, stdin=None, timeout=60):
    """Run one CNI call; returns (exit status, parsed stdout or None, raw stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cni_env(command, container_id, ifname, netns, cni_args))
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra_env:
        env.update(extra_env)
    data = stdin if stdin is not None else json.dumps(conf).encode()
    proc = subprocess.run(argv, input=data, env=env, capture_output=True, timeout=timeout)
    out = proc.stdout.decode("utf-8", "replace")
    try:
        parsed = json.loads(out) if out.strip() else None
    except ValueError:
        parsed = None
    return proc.returncode, parsed, out, proc.stderr.decode("utf-8", "replace")


def run_admin(command, *args, timeout=60):
    """``cni-ipam COMMAND ARGS`` (an admin command) from this source tree; returns (rc, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "cni_ipam", command, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def run_plugin(command, conf, **kw):
    return run_cni(plugin_argv(), command, conf, **kw)


def run_host_local(command, conf, **kw):
    return run_cni([HOST_LOCAL], command, conf, **kw)


def have_host_local() -> bool:
    return os.access(HOST_LOCAL, os.X_OK)


def is_root() -> bool:
    return os.geteuid() == 0


def have_ip_tool() -> bool:
    return shutil.which("ip") is not None


def real_runtime(skip_reason, make, release):
    """A fixture body for a real runtime or world: skip (saying why, on stdout, so CI logs show it)
    when ``skip_reason()`` names one, else yield ``make()`` and ``release`` it afterwards."""
    import pytest

    reason = skip_reason()
    if reason:
        print(f"SKIP real-runtime test: {reason}")
        pytest.skip(reason)
    made = make()
    try:
        yield made
    finally:
        release(made)
