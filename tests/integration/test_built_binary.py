"""The shipped binary: the one static file scripts/build.sh makes, installed with scripts/install.sh,
behaves like the source.

* The build, found or made once per test run (the session fixture ``built_binary``, tests/conftest.py,
  shared with tests/portable/ and tests/runtime/test_image.py): ``CNI_IPAM_BUILT_EXE`` when set;
  else ``dist/cni-ipam`` when it is newer than every source and packaging file; else
  ``scripts/build.sh`` into a temporary directory (about 10-20 s; the static runtime and the build
  venv come from scripts/setup.d/10-bundle-build.sh).
* Differential: the same CNI calls (good and bad) through ``python -m cni_ipam`` and through the
  binary give the same exit status, the same JSON and the same reservation files.
* The frozen plugin path imports none of the modules kept off it (re, enum, typing, ...).
* ``cni_ipam_fastjson`` (the frozen plugin path's json) gives json's results, errors included.
* No plugin verb reads a module from the archive (packaging/frozen_modules.txt is complete), and the
  frozen packages still import their other submodules from it.
* install.sh is idempotent, works through its symlink, and --uninstall removes only what it made;
  with root, the bridge plugin gets an address through the installed ``cni-ipam``.
* A selection of the integration tests runs again with ``CNI_IPAM_EXE`` pointing at the binary
  (``CNI_IPAM_BUILT_TESTS`` overrides the list; bounded by a timeout).

Data directories and namespaces carry the ``bench-`` prefix.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from tests.helpers import CNI_BIN_DIR, HOST_LOCAL, ROOT, is_root, run_cni

PREFIX = "bench-"
DEFAULT_SELECTION = [
    "tests/integration/test_plugin_exec.py",
    "tests/integration/test_gc_verb_exec.py",
    "tests/integration/test_runtime_bridge.py",
    "tests/integration/test_runtime_parallel.py",
]
SELECTION_TIMEOUT = 900
SOURCE_ARGV = [sys.executable, "-m", "cni_ipam"]
# Modules the plugin path must not load at start-up (ARCHITECTURE.md), plus the ones the build trims.
FORBIDDEN_ON_PLUGIN_PATH = ("re", "enum", "typing", "dataclasses", "logging", "subprocess", "urllib", "http", "ssl",
                            "asyncio", "pyroute2", "yaml", "inspect", "zipfile", "ast", "pathlib", "ctypes", "signal",
                            "argparse", "cni_ipam.admin.cli")  # and any other cni_ipam.admin module (below)


# ------------------------------------------------------------------------------------- the build
def _newest_source_mtime() -> float:
    paths = (glob.glob(os.path.join(ROOT, "cni_ipam", "**", "*.py"), recursive=True)
             + glob.glob(os.path.join(ROOT, "packaging", "*")))
    return max(os.path.getmtime(p) for p in paths)


def _build(tmp_root: str) -> str:
    """scripts/build.sh into tmp_root; nothing is written into the checkout: when the build venv
    (build/embed-venv, made by scripts/setup.d/10-bundle-build.sh) is missing, a throw-away one is
    made under tmp_root (the static runtime is kept in its cache outside the checkout)."""
    args = ["--dist", os.path.join(tmp_root, "dist")]
    if not os.path.exists(os.path.join(ROOT, "build", "embed-venv", ".cni-ipam-bundle")):
        args += ["--venv", os.path.join(tmp_root, "venv")]
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build.sh"), *args],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0 and not is_root() and " missing (" in proc.stderr:
        pytest.skip(f"cannot build the bundle without root: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, f"scripts/build.sh failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    exe = proc.stdout.strip().splitlines()[-1]
    assert os.access(exe, os.X_OK), f"build.sh printed {exe!r}, which is not an executable"
    return exe


def provide_built_binary():
    """The binary under test, once per test run (tests/conftest.py's session fixture ``built_binary``):
    CNI_IPAM_BUILT_EXE; else dist/cni-ipam when newer than every source; else a build into a
    temporary directory, removed at the end of the run."""
    given = os.environ.get("CNI_IPAM_BUILT_EXE")
    if given:
        if not os.access(given, os.X_OK):
            pytest.fail(f"CNI_IPAM_BUILT_EXE={given} is not executable")
        yield os.path.abspath(given)
        return
    default = os.path.join(ROOT, "dist", "cni-ipam")
    if os.path.isfile(default) and os.access(default, os.X_OK) and os.path.getmtime(default) >= _newest_source_mtime():
        yield default
        return
    tmp_root = tempfile.mkdtemp(prefix=f"{PREFIX}build-")
    try:
        yield _build(tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


@pytest.fixture(scope="module")
def built_exe(built_binary):
    return built_binary


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix=f"{PREFIX}test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _conf(data_dir, version="1.0.0", name="bench-net", **ipam):
    body = {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": "10.77.0.0/24"}]]}
    body.update(ipam)
    return {"cniVersion": version, "name": name, "type": "bridge", "ipam": body}


def _files(net_dir):
    out = {}
    if os.path.isdir(net_dir):
        for name in sorted(os.listdir(net_dir)):
            path = os.path.join(net_dir, name)
            if os.path.isfile(path) and name != "lock":
                with open(path, "rb") as fh:
                    out[name] = fh.read()
    return out


# ------------------------------------------------------------------------------------- behaviour
def test_version_and_admin_version(built_exe):
    rc, out, raw, err = run_cni([built_exe], "VERSION", {}, stdin=b"")
    rc_src, out_src, _, _ = run_cni(SOURCE_ARGV, "VERSION", {}, stdin=b"")
    assert rc == 0 and out == out_src, (raw, err)
    assert "1.1.0" in out["supportedVersions"]
    from cni_ipam import __version__

    proc = subprocess.run([built_exe, "version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cni-ipam {__version__}", proc


def test_admin_commands_are_in_the_bundle(built_exe, work):
    from cni_ipam.admin.cli import COMMANDS

    for cmd, (module, _) in COMMANDS.items():
        if not os.path.exists(os.path.join(ROOT, *module.split(".")) + ".py"):
            continue  # not written yet
        proc = subprocess.run([built_exe, cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (cmd, proc.stdout[-500:], proc.stderr[-500:])
    proc = subprocess.run([built_exe, "gc", "--data-dir", work, "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc
    json.loads(proc.stdout)


def _calls(data_dir):
    """A sequence of CNI calls, good and bad: (command, conf or raw stdin, container ID, ifname)."""
    seq = []
    for i, version in enumerate(("0.3.1", "0.4.0", "1.0.0", "1.1.0")):
        conf = _conf(data_dir, version, routes=[{"dst": "0.0.0.0/0"}], dns={"nameservers": ["10.77.0.53"]})
        seq.append(("ADD", conf, f"bench-c{i}", "eth0"))
    seq.append(("ADD", _conf(data_dir), "bench-c0", "eth0"))  # the same attachment again
    seq.append(("CHECK", _conf(data_dir, "1.0.0"), "bench-c2", "eth0"))
    seq.append(("CHECK", _conf(data_dir, "1.0.0"), "bench-nobody", "eth0"))  # nothing reserved
    seq.append(("CHECK", _conf(data_dir, "0.3.1"), "bench-c2", "eth0"))  # version too old for CHECK
    requested = {**_conf(data_dir), "args": {"cni": {"ips": ["10.77.0.200"]}}}
    seq.append(("ADD", requested, "bench-req", "eth0"))
    seq.append(("ADD", requested, "bench-req2", "eth0"))  # taken
    seq.append(("ADD", _conf(data_dir, ranges=[[{"subnet": "10.77.0.0/33"}]]), "bench-bad", "eth0"))
    seq.append(("ADD", _conf(data_dir, "9.9.9"), "bench-bad", "eth0"))
    seq.append(("ADD", b"{not json", "bench-bad", "eth0"))
    seq.append(("ADD", b"\xef\xbb\xbf{}", "bench-bad", "eth0"))
    seq.append(("ADD", b"[1, 2]", "bench-bad", "eth0"))
    seq.append(("ADD", _conf(data_dir), "bad/id", "eth0"))
    seq.append(("ADD", _conf(data_dir), "bench-bad", "eth0:1"))
    seq.append(("ADD", {**_conf(data_dir), "name": "bad name"}, "bench-bad", "eth0"))
    seq.append(("DEL", _conf(data_dir), "bench-c1", "eth0"))
    seq.append(("DEL", _conf(data_dir), "bench-c1", "eth0"))  # twice
    seq.append(("DEL", _conf(data_dir), "bench-never", "eth0"))
    seq.append(("DEL", {"cniVersion": "1.0.0", "name": "bench-net", "ipam": {"dataDir": data_dir}}, "bench-c3", "eth0"))
    return seq


def _normalise(out):
    return json.loads(json.dumps(out).replace("bench-src", "DATA").replace("bench-bin", "DATA")) if out else out


def test_same_answers_and_files_as_the_source(built_exe, work):
    """Every call, good or bad, answers the same from the binary as from the source tree."""
    results = {}
    for tag, argv in (("bench-src", SOURCE_ARGV), ("bench-bin", [built_exe])):
        data_dir = os.path.join(work, tag)
        answers = []
        for command, conf, cid, ifname in _calls(data_dir):
            stdin = conf if isinstance(conf, bytes) else None
            rc, out, raw, err = run_cni(argv, command, conf if stdin is None else {}, container_id=cid, ifname=ifname,
                                        stdin=stdin)
            assert "Traceback" not in err and "Traceback" not in raw, (tag, command, raw, err)
            if rc != 0:
                assert isinstance(out, dict) and isinstance(out.get("code"), int), (tag, command, raw)
            answers.append((command, cid, rc, _normalise(out)))
        results[tag] = (answers, _files(os.path.join(data_dir, "bench-net")))
    src_answers, src_files = results["bench-src"]
    bin_answers, bin_files = results["bench-bin"]
    for a, b in zip(src_answers, bin_answers):
        assert a == b, f"source and binary differ:\n{a}\n{b}"
    assert any(rc == 0 for _, _, rc, _ in bin_answers) and any(rc != 0 for _, _, rc, _ in bin_answers)
    assert src_files == bin_files
    assert bin_files.get("10.77.0.200") == b"bench-req\r\neth0"


def test_host_local_can_release_what_the_binary_reserved(built_exe, work):
    if not os.access(HOST_LOCAL, os.X_OK):
        pytest.skip(f"{HOST_LOCAL} missing (apt-get install containernetworking-plugins)")
    conf = _conf(work)
    rc, out, raw, _ = run_cni([built_exe], "ADD", conf, container_id="bench-x1")
    assert rc == 0, raw
    ip = out["ips"][0]["address"].split("/")[0]
    assert _files(os.path.join(work, "bench-net"))[ip] == b"bench-x1\r\neth0"
    rc, _, raw, _ = run_cni([HOST_LOCAL], "DEL", conf, container_id="bench-x1")
    assert rc == 0, raw
    assert ip not in _files(os.path.join(work, "bench-net"))
    rc, out, raw, _ = run_cni([built_exe], "ADD", conf, container_id="bench-x2")  # index notices the change
    assert rc == 0, raw
    rc, _, raw, _ = run_cni([built_exe], "DEL", conf, container_id="bench-x2")
    assert rc == 0 and not [n for n in _files(os.path.join(work, "bench-net")) if n[0].isdigit() and "." in n
                            and not n.startswith("last")], raw


def test_plugin_path_imports_stay_lean(built_exe, work):
    """With CNI_IPAM_LIST_MODULES=1 the frozen entry lists sys.modules on stderr at exit."""
    conf = _conf(work)
    for command in ("ADD", "CHECK", "DEL", "VERSION"):
        rc, out, raw, err = run_cni([built_exe], command, conf, container_id="bench-m1",
                                    extra_env={"CNI_IPAM_LIST_MODULES": "1"},
                                    stdin=b"" if command == "VERSION" else None)
        assert rc == 0, (command, raw)
        lines = [line for line in err.splitlines() if line.startswith("cni-ipam modules:")]
        assert lines, f"no module list on stderr: {err[-500:]}"
        loaded = set(lines[-1].split(":", 1)[1].split())
        assert "cni_ipam.plugin.skel" in loaded
        bad = sorted(m for m in loaded if m in FORBIDDEN_ON_PLUGIN_PATH or m.split(".")[0] in FORBIDDEN_ON_PLUGIN_PATH
                     and m.split(".")[0] != "cni_ipam" or m == "cni_ipam.admin" or m.startswith("cni_ipam.admin."))
        assert not bad, f"{command} imported {bad}"
        if command == "ADD":
            assert "cni_ipam.store.network" in loaded and "cni_ipam.addr" in loaded
        if command != "CHECK":  # addresses are cni_ipam.addr's; only CHECK's pyroute2 may bring ipaddress
            assert "ipaddress" not in loaded, f"{command} imported ipaddress"


# ------------------------------------------------------------------------------------- VERSION in C
def _raw_run(argv, env, stdin, stdout_mode):
    """(exit status, stdout bytes) of one run; stdout a pipe, closed, a pipe nobody reads, or read-only."""
    if stdout_mode == "closed":
        argv = ["/bin/sh", "-c", 'exec "$@" >&-', "sh", *argv]
    if stdout_mode in ("pipe", "closed"):
        proc = subprocess.run(argv, env=env, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
        return proc.returncode, proc.stdout
    if stdout_mode == "broken":
        r, w = os.pipe()
        os.close(r)
        try:
            proc = subprocess.run(argv, env=env, input=stdin, stdout=w, stderr=subprocess.DEVNULL, timeout=60)
        finally:
            os.close(w)
        return proc.returncode, b""
    with open(os.devnull, "rb") as ro:
        proc = subprocess.run(argv, env=env, input=stdin, stdout=ro, stderr=subprocess.DEVNULL, timeout=60)
    return proc.returncode, b""


def test_version_answer_is_the_python_answer_for_any_input(built_exe):
    """The launcher answers CNI_COMMAND=VERSION itself (packaging/launcher.c, VERSION_ANSWER): the same
    bytes and exit status as the Python path of the same binary (CNI_IPAM_LIST_MODULES=1 forces that
    path) for any environment, stdin, arguments and state of stdout, junk included; and the same bytes
    as the source tree's ``python -m cni_ipam``."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    plain = {**base, "CNI_COMMAND": "VERSION"}
    answer = _raw_run([built_exe], plain, b"", "pipe")
    assert answer == _raw_run(SOURCE_ARGV, plain, b"", "pipe") and answer[0] == 0, answer
    env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
    commands = st.sampled_from(["VERSION", "VERSION", "version", "VERSION ", " VERSION", "VERSION\n", "VERSIONS",
                                "VERSIO", "", "ADD", "DEL", None]) | env_text
    others = st.dictionaries(st.sampled_from(["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH",
                                              "CNI_IPAM_LIST_MODULES", "CNI_IPAM_REAL_JSON", "LANG", "PYTHONPATH"]),
                             env_text)
    stdins = st.binary(max_size=300) | st.sampled_from([b"", b"{}", b'{"cniVersion": "9.9.9"}', b"\xff" * 70000,
                                                        json.dumps(_conf("/nonexistent")).encode()])

    @hypothesis.settings(max_examples=int(os.environ.get("CNI_IPAM_VERSION_EXAMPLES", "60")), deadline=None)
    @hypothesis.given(commands, others, stdins, st.sampled_from([[], ["gc"], ["version"], ["--bogus"]]),
                      st.sampled_from(["pipe", "pipe", "closed", "broken", "readonly"]))
    def check(command, other, stdin, args, stdout_mode):
        env = {**base, **other}
        if command is not None:
            env["CNI_COMMAND"] = command
        fast = _raw_run([built_exe, *args], env, stdin, stdout_mode)
        python = _raw_run([built_exe, *args], {**env, "CNI_IPAM_LIST_MODULES": "1"}, stdin, stdout_mode)
        assert fast == python, (command, other, stdin[:80], args, stdout_mode)

    # Every state of stdout for the plain cases, then generated inputs.
    for stdout_mode in ("pipe", "closed", "broken", "readonly"):
        for command in ("VERSION", "version", ""):
            env = {**base, "CNI_COMMAND": command}
            fast = _raw_run([built_exe], env, b"junk", stdout_mode)
            slow = _raw_run([built_exe], {**env, "CNI_IPAM_LIST_MODULES": "1"}, b"junk", stdout_mode)
            assert fast == slow, (command, stdout_mode)
            if command == "VERSION":
                assert fast[0] == (0 if stdout_mode == "pipe" else 1), (stdout_mode, fast)
    check()


# ------------------------------------------------------------------------------------- fastjson
def _fastjson():
    sys.path.insert(0, os.path.join(ROOT, "packaging"))
    try:
        import cni_ipam_fastjson
    finally:
        sys.path.remove(os.path.join(ROOT, "packaging"))
    return cni_ipam_fastjson


def _outcome(fn, *a, **kw):
    try:
        return ("ok", repr(fn(*a, **kw)))  # repr: nan == nan
    except Exception as exc:  # noqa: BLE001 - comparing exactly what json raises
        return (type(exc).__name__, str(exc))


def test_fastjson_matches_json():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    fj = _fastjson()
    leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    tree = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
                        max_leaves=25)
    fast_dumps = []

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(tree, st.sampled_from([None, 2, 4]), st.booleans())
    def check(obj, indent, sort_keys):
        fj._REAL = None
        got = fj.dumps(obj, indent=indent, sort_keys=sort_keys)
        fast_dumps.append(fj._REAL is None)
        assert got == json.dumps(obj, indent=indent, sort_keys=sort_keys)
        text = json.dumps(obj, indent=indent)
        for data in (text, text.encode()):
            fj._REAL = None
            assert json.dumps(fj.loads(data)) == json.dumps(json.loads(data))

    check()
    assert sum(fast_dumps) > len(fast_dumps) // 2, "the fast path was hardly used"
    for bad in ("", " ", "{", "[1,]", "{} x", "\ufeff{}", b"\xef\xbb\xbf{}", '"\\x"', "[" * 50000,
                b"\xff\xfe{\x00}\x00", b"\x80", 5, "NaN", '{"a":1,"a":2}', ' {"a": [1, 2.5e3, null]} \r\n'):
        fj._REAL = None
        assert _outcome(fj.loads, bad) == _outcome(json.loads, bad), bad
    for obj in ({1: 2}, {"a": float("nan")}, object(), {"b": 1, "a": [1, (2, 3)]}, "str\u00e9", [set()],
                {"k": float("inf")}):
        for indent in (None, 4):
            fj._REAL = None
            assert (_outcome(fj.dumps, obj, indent=indent, sort_keys=True)
                    == _outcome(json.dumps, obj, indent=indent, sort_keys=True))


# ------------------------------------------------------------------------------------- install
def _install(*args, check=True):
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh"), *args], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, proc
    return proc


def test_install_is_idempotent_and_uninstall_removes_it(built_exe, work):
    bin_dir = os.path.join(work, "cni", "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "other-plugin"), "w") as fh:
        fh.write("not ours")
    for _ in range(2):
        _install("--from", built_exe, "--bin-dir", bin_dir)
        link = os.path.join(bin_dir, "cni-ipam")
        assert os.path.isfile(link) and not os.path.islink(link)
        assert sorted(os.listdir(bin_dir)) == ["cni-ipam", "other-plugin"]  # nothing else, no old copy
        assert os.listdir(os.path.join(work, "cni")) == ["bin"]
    rc, out, raw, _ = run_cni([link], "ADD", _conf(work), container_id="bench-i1")
    assert rc == 0 and out["ips"][0]["address"].startswith("10.77.0."), raw
    # Someone else's file under our name is never replaced.
    other_bin = os.path.join(work, "other", "bin")
    os.makedirs(other_bin)
    with open(os.path.join(other_bin, "cni-ipam"), "w") as fh:
        fh.write("#!/bin/sh\n")
    proc = _install("--from", built_exe, "--bin-dir", other_bin, check=False)
    assert proc.returncode != 0 and "not a cni-ipam install" in proc.stderr
    _install("--uninstall", "--bin-dir", bin_dir)
    assert sorted(os.listdir(bin_dir)) == ["other-plugin"]
    _install("--uninstall", "--bin-dir", bin_dir)  # again: nothing to do, still fine


def _ip(*args, check=True):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check:
        assert proc.returncode == 0, proc
    return proc


def test_bridge_gets_an_address_through_the_installed_binary(built_exe, work):
    if not is_root():
        pytest.skip("needs root for network namespaces")
    bridge = os.path.join(CNI_BIN_DIR, "bridge")
    if not os.access(bridge, os.X_OK) or shutil.which("ip") is None:
        pytest.skip("needs Debian's bridge plugin and iproute2")
    bin_dir = os.path.join(work, "cni", "bin")
    _install("--from", built_exe, "--bin-dir", bin_dir)
    token = uuid.uuid4().hex[:6]
    host, ctr = f"{PREFIX}h-{token}", f"{PREFIX}c-{token}"
    made = []
    try:
        for ns in (host, ctr):
            _ip("netns", "add", ns)
            made.append(ns)
        conf = {"cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge", "bridge": f"{PREFIX}b{token}",
                "isGateway": True,
                "ipam": {"type": "cni-ipam", "dataDir": os.path.join(work, "data"),
                         "ranges": [[{"subnet": "10.78.0.0/24", "gateway": "10.78.0.1"}]]}}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bench-br-1", "CNI_IFNAME": "eth0",
                    "CNI_NETNS": f"/var/run/netns/{ctr}", "CNI_PATH": f"{bin_dir}:{CNI_BIN_DIR}"})
        argv = ["ip", "netns", "exec", host, bridge]
        proc = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc
        result = json.loads(proc.stdout)
        cidr = result["ips"][0]["address"]
        assert cidr.startswith("10.78.0.") and result["ips"][0]["gateway"] == "10.78.0.1", result
        shown = json.loads(_ip("-n", ctr, "-j", "addr", "show", "eth0").stdout)
        assert cidr in [f"{a['local']}/{a['prefixlen']}" for a in shown[0]["addr_info"]], shown
        env["CNI_COMMAND"] = "DEL"
        proc = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc
        assert not [n for n in os.listdir(os.path.join(work, "data", "bench-bridge")) if n.startswith("10.78.")]
    finally:
        for ns in reversed(made):
            _ip("netns", "del", ns, check=False)


# ------------------------------------------------------------------------------------- selection
def test_integration_selection_against_the_binary(built_exe):
    """Re-run integration tests with CNI_IPAM_EXE=<binary> (every plugin call goes through it)."""
    if os.environ.get("CNI_IPAM_EXE"):
        pytest.skip("already running against CNI_IPAM_EXE")
    names = os.environ.get("CNI_IPAM_BUILT_TESTS")
    selection = names.split() if names else DEFAULT_SELECTION
    missing = [p for p in selection if not os.path.exists(os.path.join(ROOT, p.split("::")[0]))]
    assert selection and not missing, f"the selection names test files that do not exist: {missing or selection}"
    env = {**os.environ, "CNI_IPAM_EXE": built_exe}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *selection],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=SELECTION_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the selection did not finish within {SELECTION_TIMEOUT}s: {selection}")
    tail = (proc.stdout[-3000:] + proc.stderr[-2000:])
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    # Exit 0 only, and some tests passed: "no tests collected" (5) or all skipped is no evidence.
    assert proc.returncode == 0, f"integration tests against {built_exe} failed (exit {proc.returncode}):\n{tail}"
    words = summary.split()
    passed = [int(word) for word, nxt in zip(words, words[1:]) if word.isdigit() and nxt.startswith("passed")]
    assert passed and passed[0] > 0, f"the selection against {built_exe} ran no test: {summary!r}\n{tail}"
    print(f"\nselection against the binary: {summary}")


# ------------------------------------------------------------------------------------- frozen modules
def _from_files(err: str) -> list:
    lines = [line for line in err.splitlines() if line.startswith("cni-ipam from files:")]
    assert lines, f"no 'from files' list on stderr: {err[-500:]}"
    return lines[-1].split(":", 1)[1].split()


def test_plugin_path_reads_no_module_file(built_exe, work):
    """The launcher carries the plugin path's modules frozen (packaging/frozen_modules.txt): no verb
    reads a module from a .pyc file of the archive.  Fails when the list goes stale (a module added to
    the plugin path and not to the list) or the table is not installed (scripts/build.sh --no-freeze)."""
    conf = _conf(work, version="1.1.0")
    keep = {**conf, "cni.dev/valid-attachments": [{"containerID": "frz-1", "ifname": "eth0"}]}
    steps = [("STATUS", conf, "frz-1"), ("ADD", conf, "frz-1"), ("ADD", conf, "frz-2"), ("CHECK", conf, "frz-1"),
             ("STATUS", conf, "frz-1"), ("GC", keep, "frz-1"), ("GC", keep, "frz-1"), ("DEL", conf, "frz-1"),
             ("DEL", conf, "frz-1")]
    for command, body, container in steps:
        rc, out, raw, err = run_cni([built_exe], command, body, container_id=container,
                                    extra_env={"CNI_IPAM_LIST_MODULES": "1"})
        assert rc == 0, (command, raw, err[-500:])
        assert _from_files(err) == [], f"{command} read modules from files: {_from_files(err)}"
    assert os.path.exists(os.path.join(work, "bench-net", ".cni-ipam", "gc-stats.json")), "no GC released anything"
    assert not [n for n in _files(os.path.join(work, "bench-net")) if n[0].isdigit()], "GC/DEL left a reservation"


def test_frozen_packages_still_import_submodules_from_disk(built_exe, work):
    """cni_ipam, cni_ipam.plugin and cni_ipam.store are frozen; their submodules that are not (the admin
    CLI, cni_ipam.plugin.* helpers) are found in the appended archive through the packages' __path__
    (``<executable>/cni_ipam/...``): an admin command works, and a plugin error path importing more
    still answers in JSON."""
    proc = subprocess.run([built_exe, "version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip(), (proc.returncode, proc.stdout, proc.stderr[-800:])
    proc = subprocess.run([built_exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (proc.stdout, proc.stderr[-800:])
    # every module named in the list is a module of the archive (a listed package as <name>/__init__.pyc)
    with open(os.path.join(ROOT, "packaging", "frozen_modules.txt"), encoding="utf-8") as fh:
        names = [line.split("#", 1)[0].strip() for line in fh if line.split("#", 1)[0].strip()]
    import zipfile

    with zipfile.ZipFile(built_exe) as zf:
        archived = set(zf.namelist())
    for name in names:
        base = "/".join(name.split("."))
        assert base + ".pyc" in archived or base + "/__init__.pyc" in archived, name


def test_fastjson_dump_matches_json_dump():
    """cni_ipam_fastjson.dump (gc-stats.json is written with it) writes exactly json.dump's text, without
    loading the real json module for finite values; an infinite float is handed to the real json (it
    spells it Infinity), with the same text."""
    hypothesis = pytest.importorskip("hypothesis")
    import io

    st = hypothesis.strategies
    fj = _fastjson()
    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    tree = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
                        max_leaves=25)

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(tree, st.sampled_from([None, 2]), st.booleans())
    def check(obj, indent, sort_keys):
        fj._REAL = None
        got, want = io.StringIO(), io.StringIO()
        fj.dump(obj, got, indent=indent, sort_keys=sort_keys)
        assert fj._REAL is None, "dump fell back to the real json"
        json.dump(obj, want, indent=indent, sort_keys=sort_keys)
        assert got.getvalue() == want.getvalue()

    check()
    for obj in ({"a": float("inf")}, [float("-inf"), 1]):  # the fallback: json's own text
        for indent in (None, 2):
            got, want = io.StringIO(), io.StringIO()
            fj.dump(obj, got, indent=indent)
            json.dump(obj, want, indent=indent)
            assert got.getvalue() == want.getvalue()
