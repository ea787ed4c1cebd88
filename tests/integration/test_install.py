"""scripts/install.sh as root, from bundles owned by another user (issue 16 items 1, 8 and 9).

The bundles are small stand-ins for the onedir build (tests/integration/test_built_binary.py
installs the real one): a ``cni-ipam`` launcher that runs this checkout's plugin code *from a copy
inside the bundle*, importing lazily from there as the real bundle does, so a bundle deleted under a
running call makes that call fail.  Every install goes to a temporary --bin-dir/--lib-dir, never
/opt/cni.  The bundles belong to uid 12345 (no such user is needed) with group/world-writable modes,
as a careless build user's would.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers import ROOT

INSTALL = os.path.join(ROOT, "scripts", "install.sh")
OTHER_UID = 12345


@pytest.fixture(autouse=True)
def _root(need_root):
    yield


@pytest.fixture
def where(tmp_path):
    base = tmp_path / "inst16"
    (base / "cni" / "bin").mkdir(parents=True)
    return {"base": base, "bin": base / "cni" / "bin", "lib": base / "cni" / "cni-ipam.d", "src": tmp_path / "src"}


def make_bundle(src_root, tag, extra=None):
    """A bundle directory owned by OTHER_UID, some of it group/world-writable."""
    bundle = src_root / f"bundle-{tag}"
    lib = bundle / "lib"
    shutil.copytree(os.path.join(ROOT, "cni_ipam"), lib / "cni_ipam", ignore=shutil.ignore_patterns("__pycache__"))
    (lib / "TAG").write_text(tag)
    exe = bundle / "cni-ipam"
    exe.write_text(
        "#!/bin/sh\n# cni_ipam_entry (stand-in for the built bundle)\n"
        'here=$(dirname "$(readlink -f "$0")")\n'
        f'PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$here/lib" exec {sys.executable} -S -m cni_ipam "$@"\n'
    )
    os.chmod(exe, 0o777)
    os.chmod(lib / "TAG", 0o666)
    os.chmod(lib, 0o777)
    for name, data in (extra or {}).items():
        (bundle / name).write_bytes(data)
    subprocess.run(["chown", "-R", f"{OTHER_UID}:{OTHER_UID}", str(bundle)], check=True)
    return bundle


def install(where, *args, env=None, check=True, umask=None):
    argv = ["bash", INSTALL, "--bin-dir", str(where["bin"]), "--lib-dir", str(where["lib"]), *args]
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=full_env,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    if check:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc


def plugin(link, command="VERSION", conf=None, cid="inst-c1"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/none",
                "CNI_PATH": os.path.dirname(link)})
    proc = subprocess.run([str(link)], input=json.dumps(conf or {}).encode(), capture_output=True, env=env, timeout=60)
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def netconf(data_dir):
    return {"cniVersion": "1.0.0", "name": "inst-net", "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "ranges": [[{"subnet": "10.161.0.0/16"}]]}}


def current_tag(where):
    return (where["lib"] / "current" / "lib" / "TAG").read_text()


def walk(path):
    yield path
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


# ------------------------------------------------------------------ item 1: root:root, 0755/0644
def test_installed_files_are_root_owned_and_never_writable_by_others(where):
    """main's cp -a kept the build user as owner of what root executes for every pod."""
    bundle = make_bundle(where["src"], "v1")
    install(where, "--from", str(bundle), umask=0)
    link = where["bin"] / "cni-ipam"
    assert plugin(link)[0] == 0
    checked = 0
    for path in walk(str(where["lib"])):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (0, 0), path
        if stat.S_ISLNK(st.st_mode):
            continue
        assert not st.st_mode & 0o022, (path, oct(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o755, path
        elif path.endswith("/cni-ipam"):
            assert stat.S_IMODE(st.st_mode) == 0o755, path
        else:
            assert stat.S_IMODE(st.st_mode) == 0o644, (path, oct(st.st_mode))
        checked += 1
    assert checked > 20
    assert os.lstat(link).st_uid == 0
    rc, out = plugin(link, "ADD", netconf(where["base"] / "data"))
    assert rc == 0 and "10.161.0.2" in out, out


def test_onefile_install_is_root_owned_0755(where):
    one = where["src"] / "one"
    one.mkdir(parents=True)
    exe = make_bundle(where["src"], "one") / "cni-ipam"
    target = one / "cni-ipam"
    # a onefile build is self-contained: point this stand-in at the checkout instead of a lib/
    target.write_text(exe.read_text().replace('PYTHONPATH="$here/lib"', f'PYTHONPATH="{ROOT}"'))
    os.chmod(target, 0o777)
    os.chown(target, OTHER_UID, OTHER_UID)
    install(where, "--from", str(target), umask=0)
    st = os.lstat(where["bin"] / "cni-ipam")
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    install(where, "--uninstall")
    assert not os.path.lexists(where["bin"] / "cni-ipam")


def test_bundle_with_special_files_or_escaping_links_is_refused(where):
    bundle = make_bundle(where["src"], "bad")
    os.symlink("/etc/shadow", bundle / "lib" / "escape")
    proc = install(where, "--from", str(bundle), check=False)
    assert proc.returncode == 1 and "symlink leading outside" in proc.stderr
    os.unlink(bundle / "lib" / "escape")
    os.mkfifo(bundle / "lib" / "fifo")
    proc = install(where, "--from", str(bundle), check=False)
    assert proc.returncode == 1 and "special file" in proc.stderr
    os.unlink(bundle / "lib" / "fifo")
    os.link(bundle / "lib" / "TAG", bundle / "lib" / "TAG2")
    proc = install(where, "--from", str(bundle), check=False)
    assert proc.returncode == 1 and "hard-linked" in proc.stderr
    assert not os.path.lexists(where["bin"] / "cni-ipam")
    assert not [n for n in os.listdir(where["lib"] / "versions")], "a refused copy was left behind"


# ------------------------------------------------------------------ item 8: only what it installed
def plant_plugins(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("host-local", "bridge", "loopback"):
        (directory / name).write_text(f"#!/bin/sh\n# {name}\n")
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("case", ["lib-is-bin", "lib-inside-bin", "bin-inside-lib", "foreign-lib", "symlinked-lib"])
def test_dangerous_targets_are_refused_and_left_intact(where, case):
    """main: --lib-dir == --bin-dir deleted host-local, bridge and loopback; an existing --lib-dir lost
    its contents; a symlinked lib dir had its target overwritten and deleted."""
    bundle = make_bundle(where["src"], "v1")
    before = plant_plugins(where["bin"])
    victim = where["base"] / "victim"
    plant_plugins(victim)
    lib = {
        "lib-is-bin": where["bin"],
        "lib-inside-bin": where["bin"] / "sub",
        "bin-inside-lib": where["bin"].parent,
        "foreign-lib": victim,
        "symlinked-lib": where["base"] / "link-to-victim",
    }[case]
    if case == "symlinked-lib":
        os.symlink(victim, lib)
    proc = subprocess.run(["bash", INSTALL, "--from", str(bundle), "--bin-dir", str(where["bin"]), "--lib-dir", str(lib)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "install.sh:" in proc.stderr, (proc.stdout, proc.stderr)
    assert sorted(os.listdir(where["bin"])) == before
    assert sorted(os.listdir(victim)) == before
    proc = subprocess.run(["bash", INSTALL, "--uninstall", "--bin-dir", str(where["bin"]), "--lib-dir", str(lib)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 or case in ("bin-inside-lib",), (proc.stdout, proc.stderr)
    assert sorted(os.listdir(where["bin"])) == before and sorted(os.listdir(victim)) == before


@pytest.mark.parametrize("system_dir", ["/usr", "/opt", "/var/lib", "/"])
def test_system_directories_are_refused_as_lib_dir(where, system_dir):
    """Checked before anything else.  (--from names no bundle and no --uninstall is tried, so that
    even a regressed script stops before it could touch the real directory.)"""
    proc = subprocess.run(["bash", INSTALL, "--from", str(where["base"] / "no-such-bundle"), "--bin-dir", str(where["bin"]),
                           "--lib-dir", system_dir], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and ("system directory" in proc.stderr or "separate directories" in proc.stderr), proc.stderr


def test_uninstall_leaves_what_is_not_ours(where):
    bundle = make_bundle(where["src"], "v1")
    install(where, "--from", str(bundle))
    (where["lib"] / "admin-notes.txt").write_text("not ours\n")
    proc = install(where, "--uninstall", check=False)
    assert proc.returncode == 1 and "not ours" in proc.stderr
    assert os.listdir(where["lib"]) == ["admin-notes.txt"]
    assert not os.path.lexists(where["bin"] / "cni-ipam")
    # a foreign cni-ipam in the bin dir: neither it nor the lib dir are touched
    install(where, "--from", str(bundle), check=False)  # refused: the lib dir holds a foreign file now
    os.unlink(where["lib"] / "admin-notes.txt")
    install(where, "--from", str(bundle))
    os.unlink(where["bin"] / "cni-ipam")
    (where["bin"] / "cni-ipam").write_text("#!/bin/sh\n# someone else's\n")
    proc = install(where, "--uninstall", check=False)
    assert proc.returncode == 1 and "left alone" in proc.stderr
    assert (where["bin"] / "cni-ipam").read_text().endswith("someone else's\n")
    assert (where["lib"] / ".cni-ipam-install").exists() and (where["lib"] / "current").exists()


def test_uninstall_removes_everything_it_made(where):
    bundle = make_bundle(where["src"], "v1")
    for _ in range(2):
        install(where, "--from", str(bundle))
    other_bin = where["base"] / "other-bin"
    install(where, "--from", str(bundle), "--bin-dir", str(other_bin))  # the same lib dir from a second bin dir
    assert plugin(other_bin / "cni-ipam")[0] == 0
    plant_plugins(where["bin"])
    install(where, "--uninstall")
    assert not where["lib"].exists() and not os.path.lexists(other_bin / "cni-ipam")
    assert sorted(os.listdir(where["bin"])) == ["bridge", "host-local", "loopback"]
    install(where, "--uninstall")  # again: nothing to do


def test_upgrade_from_a_pre_manifest_install(where):
    """main's layout: LIB_DIR was the bundle itself and BIN/cni-ipam linked to LIB_DIR/cni-ipam."""
    old = make_bundle(where["src"], "legacy")
    shutil.copytree(old, where["lib"], symlinks=True)
    os.rename(where["lib"] / "lib", where["lib"] / "_internal")
    exe = where["lib"] / "cni-ipam"
    exe.write_text(exe.read_text().replace("$here/lib", "$here/_internal"))
    os.symlink(where["lib"] / "cni-ipam", where["bin"] / "cni-ipam")
    assert plugin(where["bin"] / "cni-ipam")[0] == 0
    install(where, "--from", str(make_bundle(where["src"], "v2")))
    assert current_tag(where) == "v2" and not (where["lib"] / "_internal").exists()
    assert plugin(where["bin"] / "cni-ipam")[0] == 0


# ------------------------------------------------------------------ item 9: atomic upgrades
def test_plugin_calls_during_ten_upgrades_never_fail(where):
    """main: 13 of 290 calls failed during 10 upgrades (two renames with a dangling link between)."""
    bundles = [make_bundle(where["src"], f"v{i}") for i in range(3)]
    install(where, "--from", str(bundles[0]))
    link = where["bin"] / "cni-ipam"
    data_dir = where["base"] / "data"
    stop = threading.Event()
    results = []

    def worker(n):
        i = 0
        while not stop.is_set():
            cid = f"inst-w{n}-{i}"
            rc, out = plugin(link, "ADD", netconf(data_dir), cid=cid)
            results.append((rc, out[-300:]))
            rc, out = plugin(link, "DEL", netconf(data_dir), cid=cid)
            results.append((rc, out[-300:]))
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(10):
            install(where, "--from", str(bundles[(k + 1) % 3]))
            assert current_tag(where) == f"v{(k + 1) % 3}"
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    failures = [r for r in results if r[0] != 0]
    print(f"\ninstall: {len(results)} plugin calls during 10 upgrades, {len(failures)} failed")
    assert len(results) >= 30 and not failures, failures[:3]


@pytest.mark.parametrize("step", ["copied", "checked", "switched", "linked", "cleaned"])
def test_killed_between_steps_leaves_a_working_plugin(where, step):
    v1, v2 = make_bundle(where["src"], "v1"), make_bundle(where["src"], "v2")
    install(where, "--from", str(v1))
    proc = install(where, "--from", str(v2), env={"CNI_IPAM_INSTALL_KILL_AT": step}, check=False)
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (proc.returncode, proc.stderr)
    link = where["bin"] / "cni-ipam"
    assert plugin(link)[0] == 0, f"killed at {step}: the plugin no longer answers"
    assert current_tag(where) == ("v1" if step in ("copied", "checked") else "v2")
    install(where, "--from", str(v2))  # the next install finishes the job and clears the leftovers
    assert current_tag(where) == "v2" and plugin(link)[0] == 0
    assert not [n for n in os.listdir(where["lib"] / "versions") if n.startswith(".tmp-")]
    assert not [n for n in os.listdir(where["lib"]) if ".tmp-" in n]


def test_first_install_killed_part_way_then_completed(where):
    v1 = make_bundle(where["src"], "v1")
    for step in ("copied", "switched"):
        proc = install(where, "--from", str(v1), env={"CNI_IPAM_INSTALL_KILL_AT": step}, check=False)
        assert proc.returncode != 0
    install(where, "--from", str(v1))
    assert plugin(where["bin"] / "cni-ipam")[0] == 0


def test_concurrent_installs_are_serialized(where):
    """main: two installs at once broke the plugin 3 times in 10."""
    bundles = [make_bundle(where["src"], f"v{i}") for i in range(2)]
    link = where["bin"] / "cni-ipam"
    argv = lambda b: ["bash", INSTALL, "--from", str(b), "--bin-dir", str(where["bin"]), "--lib-dir", str(where["lib"])]
    for _ in range(10):
        procs = [subprocess.Popen(argv(b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for b in bundles]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert plugin(link)[0] == 0 and current_tag(where) in ("v0", "v1")
    manifest = (where["lib"] / ".cni-ipam-install").read_text().splitlines()
    assert manifest.count(f"link {link}") == 1


def test_replaced_bundles_are_kept_while_in_use_and_removed_after(where):
    sleeper = open(shutil.which("sleep"), "rb").read()
    v1 = make_bundle(where["src"], "v1", extra={"sleeper": sleeper})
    os.chmod(v1 / "sleeper", 0o755)
    v2 = make_bundle(where["src"], "v2")
    install(where, "--from", str(v1))
    old = os.path.realpath(where["lib"] / "current")
    running = subprocess.Popen([os.path.join(old, "sleeper"), "60"])
    try:
        install(where, "--from", str(v2), "--keep", "0")
        assert os.path.isdir(old), "a bundle a process runs from was removed"
    finally:
        running.kill()
        running.wait()
    install(where, "--from", str(v2), "--keep", "0")
    versions = [n for n in os.listdir(where["lib"] / "versions") if not n.startswith(".")]
    assert versions == [os.path.basename(os.path.realpath(where["lib"] / "current"))], versions
    # with the default --keep, the bundle just replaced stays (a call may still be loading from it)
    install(where, "--from", str(v1))
    assert len([n for n in os.listdir(where["lib"] / "versions") if not n.startswith(".")]) == 2


def test_a_bundle_that_does_not_answer_version_is_not_switched_in(where):
    install(where, "--from", str(make_bundle(where["src"], "v1")))
    broken = make_bundle(where["src"], "broken")
    os.chmod(broken / "cni-ipam", 0o755)
    (broken / "cni-ipam").write_text("#!/bin/sh\necho nope\nexit 1\n")
    proc = install(where, "--from", str(broken), check=False)
    assert proc.returncode == 1 and "does not answer" in proc.stderr
    assert current_tag(where) == "v1" and plugin(where["bin"] / "cni-ipam")[0] == 0
    assert len([n for n in os.listdir(where["lib"] / "versions") if not n.startswith(".")]) == 1


def test_a_bundle_whose_python_side_is_broken_is_not_switched_in(where):
    """The launcher answers VERSION without Python: install.sh also asks `cni-ipam version`."""
    install(where, "--from", str(make_bundle(where["src"], "v1")))
    broken = make_bundle(where["src"], "halfbroken")
    answer = plugin(where["bin"] / "cni-ipam")[1]
    os.chmod(broken / "cni-ipam", 0o755)
    (broken / "cni-ipam").write_text(
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = VERSION ]; then printf '%s' '" + answer.replace("'", "") + "'; exit 0; fi\n"
        "echo 'cannot start' >&2\nexit 1\n")
    assert plugin(broken / "cni-ipam")[0] == 0
    proc = install(where, "--from", str(broken), check=False)
    assert proc.returncode == 1 and "does not answer" in proc.stderr, proc
    assert current_tag(where) == "v1" and plugin(where["bin"] / "cni-ipam")[0] == 0


def test_usage_errors_are_exit_2(where):
    proc = subprocess.run(["bash", INSTALL, "--bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    proc = subprocess.run(["bash", INSTALL, "--keep", "soon"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    time.sleep(0)  # (nothing was created)
    assert not where["lib"].exists()


def test_relative_link_for_an_installer_container(where):
    """--relative: the bin dir's link survives the host directory being mounted elsewhere (as an
    installer container sees it at /host/...)."""
    bundle = make_bundle(where["src"], "v1")
    install(where, "--from", str(bundle), "--relative")
    link = where["bin"] / "cni-ipam"
    assert os.readlink(link) == "../cni-ipam.d/cni-ipam"
    moved = where["base"].parent / "moved-host"
    os.rename(where["base"], moved)  # the same tree seen at another path
    try:
        assert plugin(moved / "cni" / "bin" / "cni-ipam")[0] == 0
    finally:
        os.rename(moved, where["base"])
    install(where, "--from", str(bundle))  # an absolute-link install over it is still "ours"
    assert os.readlink(link) == str(where["lib"] / "cni-ipam")
    install(where, "--from", str(bundle), "--relative")
    install(where, "--uninstall")
    assert not where["lib"].exists() and os.listdir(where["bin"]) == []
