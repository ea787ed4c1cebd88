"""scripts/install.sh as root: one executable file into a CNI bin directory, from builds owned by another user.

The executables are small stand-ins for the real build (tests/integration/test_built_binary.py and
tests/portable/ install the real one): a shell script carrying the build's marker (``cni_ipam_entry``)
and a tag, running this checkout's plugin code.  Every install goes to a temporary --bin-dir, never
/opt/cni.  The sources belong to uid 12345 (no such user is needed) with group/world-writable modes,
as a careless build user's would.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import threading

import pytest

from tests.helpers import ROOT

INSTALL = os.path.join(ROOT, "scripts", "install.sh")
OTHER_UID = 12345
MANIFEST_HEAD = "# cni-ipam install manifest 1: this directory and the entries below belong to scripts/install.sh"


@pytest.fixture(autouse=True)
def _root(need_root):
    yield


@pytest.fixture
def where(tmp_path):
    base = tmp_path / "inst"
    (base / "cni" / "bin").mkdir(parents=True)
    return {"base": base, "bin": base / "cni" / "bin", "lib": base / "cni" / "cni-ipam.d", "src": tmp_path / "src"}


def make_exe(src_root, tag, body=None):
    """An executable owned by OTHER_UID, mode 0777, that runs this checkout's plugin (tag in a comment)."""
    src_root.mkdir(parents=True, exist_ok=True)
    exe = src_root / f"cni-ipam-{tag}"
    exe.write_text(body or (
        f"#!/bin/sh\n# cni_ipam_entry (stand-in for the built executable) TAG={tag}\n"
        f'PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="{ROOT}" exec {sys.executable} -S -m cni_ipam "$@"\n'))
    os.chmod(exe, 0o777)
    os.chown(exe, OTHER_UID, OTHER_UID)
    return exe


def install(where, *args, env=None, check=True, umask=None, bin_dir=None):
    argv = ["bash", INSTALL, "--bin-dir", str(bin_dir or where["bin"]), "--lib-dir", str(where["lib"]), *args]
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=full_env,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    if check:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc


def plugin(path, command="VERSION", conf=None, cid="inst-c1"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
                "CNI_NETNS": "/var/run/netns/none", "CNI_PATH": os.path.dirname(path)})
    proc = subprocess.run([str(path)], input=json.dumps(conf or {}).encode(), capture_output=True, env=env, timeout=60)
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def netconf(data_dir):
    return {"cniVersion": "1.0.0", "name": "inst-net", "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "ranges": [[{"subnet": "10.161.0.0/16"}]]}}


def installed_tag(where):
    text = (where["bin"] / "cni-ipam").read_text()
    return text.split("TAG=", 1)[1].split()[0]


def old_layout(where, tag="old"):
    """The two-level layout of the earlier release: LIB_DIR/versions/<id>/cni-ipam, current, manifest."""
    lib = where["lib"]
    version = lib / "versions" / "20260101T000000.1.1"
    version.mkdir(parents=True)
    exe = make_exe(where["src"], tag)
    (version / "cni-ipam").write_bytes(exe.read_bytes())
    os.chmod(version / "cni-ipam", 0o755)
    (lib / ".cni-ipam-install").write_text(f"{MANIFEST_HEAD}\nversions/\ncurrent\ncni-ipam\n.cni-ipam-install\n"
                                           f"link {where['bin'] / 'cni-ipam'}\n")
    os.symlink("versions/20260101T000000.1.1", lib / "current")
    os.symlink("current/cni-ipam", lib / "cni-ipam")
    os.symlink(lib / "cni-ipam", where["bin"] / "cni-ipam")


# ------------------------------------------------------------------ ownership, modes, what it accepts
def test_installed_file_is_root_owned_0755_and_alone(where):
    install(where, "--from", str(make_exe(where["src"], "v1")), umask=0)
    target = where["bin"] / "cni-ipam"
    st = os.lstat(target)
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) == (0, 0) and stat.S_IMODE(st.st_mode) == 0o755
    assert os.listdir(where["bin"]) == ["cni-ipam"] and not where["lib"].exists()
    assert plugin(target)[0] == 0


@pytest.mark.parametrize("what", ["directory", "fifo", "missing"])
def test_anything_but_a_regular_file_is_refused(where, what):
    src = where["src"] / "thing"
    where["src"].mkdir()
    if what == "directory":
        src.mkdir()
        (src / "cni-ipam").write_text("#!/bin/sh\n")
    elif what == "fifo":
        os.mkfifo(src)
    proc = install(where, "--from", str(src), check=False)
    assert proc.returncode == 1 and str(src) in proc.stderr, proc
    assert os.listdir(where["bin"]) == []


@pytest.mark.parametrize("case", ["foreign-file", "foreign-link"])
def test_a_foreign_cni_ipam_is_refused_and_left_intact(where, case):
    target = where["bin"] / "cni-ipam"
    if case == "foreign-file":
        target.write_text("#!/bin/sh\n# someone else's\n")
    else:
        os.symlink("/usr/bin/true", target)
    proc = install(where, "--from", str(make_exe(where["src"], "v1")), check=False)
    assert proc.returncode == 1 and "not a cni-ipam install" in proc.stderr, proc
    assert (target.read_text().endswith("someone else's\n") if case == "foreign-file"
            else os.readlink(target) == "/usr/bin/true")
    proc = install(where, "--uninstall", check=False)
    assert proc.returncode == 1 and "not ours" in proc.stderr
    assert os.path.lexists(target)


def test_uninstall_removes_only_its_file(where):
    install(where, "--from", str(make_exe(where["src"], "v1")))
    for name in ("bridge", "host-local"):
        (where["bin"] / name).write_text("#!/bin/sh\n")
    install(where, "--uninstall")
    assert sorted(os.listdir(where["bin"])) == ["bridge", "host-local"]
    install(where, "--uninstall")  # again: nothing to do


def test_install_and_uninstall_into_a_new_bin_dir_leave_nothing_behind(where):
    new_bin = where["base"] / "new" / "deeper" / "bin"
    install(where, "--from", str(make_exe(where["src"], "v1")), bin_dir=new_bin)
    assert sorted(os.listdir(new_bin)) == [".cni-ipam-created-dirs", "cni-ipam"]
    assert plugin(new_bin / "cni-ipam")[0] == 0
    install(where, "--uninstall", bin_dir=new_bin)
    assert not (where["base"] / "new").exists()
    # a bin directory whose parent existed: no record needed, the directory goes when empty
    other = where["base"] / "other-bin"
    install(where, "--from", str(make_exe(where["src"], "v1")), bin_dir=other)
    assert os.listdir(other) == ["cni-ipam"]
    install(where, "--uninstall", bin_dir=other)
    assert not other.exists() and where["base"].exists()


def test_no_old_versions_are_kept(where):
    for i in range(3):
        install(where, "--from", str(make_exe(where["src"], f"v{i}")))
        assert installed_tag(where) == f"v{i}"
    assert os.listdir(where["bin"]) == ["cni-ipam"] and not where["lib"].exists()
    assert sorted(os.listdir(where["base"] / "cni")) == ["bin"]


# ------------------------------------------------------------------ the earlier layouts
def test_upgrade_from_the_two_level_layout(where):
    old_layout(where)
    assert plugin(where["bin"] / "cni-ipam")[0] == 0
    install(where, "--from", str(make_exe(where["src"], "v2")))
    assert not os.path.islink(where["bin"] / "cni-ipam") and installed_tag(where) == "v2"
    assert not where["lib"].exists()
    assert plugin(where["bin"] / "cni-ipam")[0] == 0


def test_upgrade_from_the_pre_manifest_layout(where):
    """LIB_DIR was the bundle itself (cni-ipam + _internal/) and BIN/cni-ipam linked to LIB_DIR/cni-ipam."""
    (where["lib"] / "_internal").mkdir(parents=True)
    (where["lib"] / "_internal" / "lib.so").write_bytes(b"\x7fELF")
    (where["lib"] / "cni-ipam").write_bytes(make_exe(where["src"], "legacy").read_bytes())
    os.symlink(where["lib"] / "cni-ipam", where["bin"] / "cni-ipam")
    install(where, "--from", str(make_exe(where["src"], "v2")))
    assert installed_tag(where) == "v2" and not where["lib"].exists()


def test_uninstall_of_the_two_level_layout(where):
    old_layout(where)
    (where["lib"] / "admin-notes.txt").write_text("not ours\n")
    install(where, "--uninstall")
    assert not os.path.lexists(where["bin"] / "cni-ipam")
    assert os.listdir(where["lib"]) == ["admin-notes.txt"]  # what is not ours stays


# ------------------------------------------------------------------ atomic upgrades
def test_plugin_calls_during_ten_upgrades_never_fail(where):
    exes = [make_exe(where["src"], f"v{i}") for i in range(3)]
    install(where, "--from", str(exes[0]))
    target = where["bin"] / "cni-ipam"
    data_dir = where["base"] / "data"
    stop = threading.Event()
    results = []

    def worker(n):
        i = 0
        while not stop.is_set():
            cid = f"inst-w{n}-{i}"
            for command in ("ADD", "DEL"):
                rc, out = plugin(target, command, netconf(data_dir), cid=cid)
                results.append((rc, out[-300:]))
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(10):
            install(where, "--from", str(exes[(k + 1) % 3]))
            assert installed_tag(where) == f"v{(k + 1) % 3}"
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    failures = [r for r in results if r[0] != 0]
    print(f"\ninstall: {len(results)} plugin calls during 10 upgrades, {len(failures)} failed")
    assert len(results) >= 30 and not failures, failures[:3]


@pytest.mark.parametrize("step", ["copied", "checked", "switched", "cleaned"])
def test_killed_between_steps_leaves_a_working_plugin(where, step):
    v1, v2 = make_exe(where["src"], "v1"), make_exe(where["src"], "v2")
    install(where, "--from", str(v1))
    proc = install(where, "--from", str(v2), env={"CNI_IPAM_INSTALL_KILL_AT": step}, check=False)
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (proc.returncode, proc.stderr)
    assert plugin(where["bin"] / "cni-ipam")[0] == 0, f"killed at {step}: the plugin no longer answers"
    assert installed_tag(where) == ("v1" if step in ("copied", "checked") else "v2")
    install(where, "--from", str(v2))  # the next install finishes the job and clears the leftovers
    assert installed_tag(where) == "v2" and os.listdir(where["bin"]) == ["cni-ipam"]


def test_concurrent_installs_are_serialized(where):
    exes = [make_exe(where["src"], f"v{i}") for i in range(2)]
    argv = lambda e: ["bash", INSTALL, "--from", str(e), "--bin-dir", str(where["bin"])]  # noqa: E731
    for _ in range(10):
        procs = [subprocess.Popen(argv(e), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for e in exes]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert plugin(where["bin"] / "cni-ipam")[0] == 0 and installed_tag(where) in ("v0", "v1")
        assert os.listdir(where["bin"]) == ["cni-ipam"]


def test_an_executable_that_does_not_answer_is_not_installed(where):
    install(where, "--from", str(make_exe(where["src"], "v1")))
    broken = make_exe(where["src"], "broken", body="#!/bin/sh\n# cni_ipam_entry TAG=broken\necho nope\nexit 1\n")
    proc = install(where, "--from", str(broken), check=False)
    assert proc.returncode == 1 and "does not answer" in proc.stderr
    assert installed_tag(where) == "v1" and plugin(where["bin"] / "cni-ipam")[0] == 0
    assert os.listdir(where["bin"]) == ["cni-ipam"]
    # VERSION answered (as the launcher does without Python) but `version` fails: refused too
    answer = plugin(where["bin"] / "cni-ipam")[1].replace("'", "")
    half = make_exe(where["src"], "half", body=(
        "#!/bin/sh\n# cni_ipam_entry TAG=half\nif [ \"$CNI_COMMAND\" = VERSION ]; then printf '%s' '" + answer
        + "'; exit 0; fi\necho 'cannot start' >&2\nexit 1\n"))
    proc = install(where, "--from", str(half), check=False)
    assert proc.returncode == 1 and "does not answer" in proc.stderr, proc
    assert installed_tag(where) == "v1"


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("args", [["--bogus"], ["--bin-dir"], ["--from"], ["--lib-dir"], ["--bin-dir", ""]])
def test_usage_errors_are_exit_2_with_a_usage_line(where, args):
    proc = subprocess.run(["bash", INSTALL, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage: install.sh" in proc.stderr, proc
    assert "unbound variable" not in proc.stderr and "parameter null" not in proc.stderr
    assert os.listdir(where["bin"]) == [] and not where["lib"].exists()


def test_help_is_the_header_only():
    proc = subprocess.run(["bash", INSTALL, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("Install the built cni-ipam executable")
    assert "set -euo pipefail" not in proc.stdout and "#" not in proc.stdout.splitlines()[0]
