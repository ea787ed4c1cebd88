"""`cni-ipam gc` never frees the address of a namespace that something still holds.

Each test runs as the init of its own PID namespace (tests/integration/nsworld.py) and gives gc
``--pidns-is-node``, so the namespace scan sees every process of that little node and can be sure.
"""

from __future__ import annotations

import uuid

import pytest

from tests.integration.nsworld import run_world

pytestmark = pytest.mark.usefixtures("need_root")


def test_pid_path_exits_while_another_process_stays(tmp_path):
    """CNI_NETNS=/proc/<A>/ns/net; A exits, B stays in the namespace: kept, B named; B exits: released."""
    (out,) = run_world(f'''
        data = {str(tmp_path / "data")!r}
        a = spawn("unshare", "--net", "sleep", "600")
        netns_of(a.pid)
        ip = cni_add(data, "podA", "/proc/%d/ns/net" % a.pid)
        b = spawn("nsenter", "--net=/proc/%d/ns/net" % a.pid, "sleep", "600")
        wait_for(lambda: ident("/proc/%d/ns/net" % b.pid) == ident("/proc/%d/ns/net" % a.pid))
        kill(a)
        rc1, r1, _ = gc(data, "--grace", "0", "--apply", "--pidns-is-node")
        kill(b)
        rc2, r2, _ = gc(data, "--grace", "0", "--apply", "--pidns-is-node")
        emit({{"ip": ip, "b": b.pid, "first": verdicts(r1), "rc1": rc1, "second": verdicts(r2), "rc2": rc2,
               "files": sorted(n for n in os.listdir(data + "/holders") if n[0].isdigit())}})
    ''')
    state, reason, detail, released = out["first"][out["ip"]]
    assert (state, reason, released) == ("live", "netns-alive", False) and out["rc1"] == 0
    assert f"pid {out['b']} (sleep) lives in it" in detail and "no longer exists" in detail
    state, reason, detail, released = out["second"][out["ip"]]
    assert (state, reason, released) == ("stranded", "netns-gone", True) and out["rc2"] == 0
    assert out["files"] == []


def test_fd_and_bind_mount_holders(tmp_path):
    name = "gch-" + uuid.uuid4().hex[:10]
    try:
        (out,) = run_world(f"""
            data = {str(tmp_path / "data")!r}
            a = spawn("unshare", "--net", "sleep", "600")
            netns_of(a.pid)
            c = spawn("unshare", "--net", "sleep", "600")
            netns_of(c.pid)
            ip_fd = cni_add(data, "podFd", "/proc/%d/ns/net" % a.pid)
            ip_mnt = cni_add(data, "podMnt", "/proc/%d/ns/net" % c.pid)
            holder = spawn(sys.executable, "-c",
                           "import os,sys,time; os.open(sys.argv[1], os.O_RDONLY); "
                           "print(1, flush=True); time.sleep(600)",
                           "/proc/%d/ns/net" % a.pid, stdout=subprocess.PIPE)
            holder.stdout.readline()
            subprocess.run(["ip", "netns", "attach", {name!r}, str(c.pid)], check=True)
            kill(a); kill(c)
            rc1, r1, _ = gc(data, "--grace", "0", "--apply", "--pidns-is-node")
            kill(holder)
            subprocess.run(["ip", "netns", "del", {name!r}], check=True)
            rc2, r2, _ = gc(data, "--grace", "0", "--apply", "--pidns-is-node")
            emit({{"fd": ip_fd, "mnt": ip_mnt, "first": verdicts(r1), "second": verdicts(r2), "holder": holder.pid}})
        """)
    finally:
        import os
        import subprocess

        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if os.path.lexists(f"/run/netns/{name}"):
            os.unlink(f"/run/netns/{name}")
    fd, mnt = out["first"][out["fd"]], out["first"][out["mnt"]]
    assert fd[:2] == ["live", "netns-alive"] and f"pid {out['holder']} (" in fd[2] and "holds it open" in fd[2]
    assert mnt[:2] == ["live", "netns-alive"] and f"mounted at /run/netns/{name}" in mnt[2]
    for ip in (out["fd"], out["mnt"]):
        state, reason, _, released = out["second"][ip]
        assert (state, reason, released) == ("stranded", "netns-gone", True)


def test_unsure_scan_keeps_the_address_and_warns(tmp_path):
    """Run without --pidns-is-node in a PID namespace that is not the host's: nothing is proven gone."""
    (out,) = run_world(f'''
        data = {str(tmp_path / "data")!r}
        a = spawn("unshare", "--net", "sleep", "600")
        netns_of(a.pid)
        ip = cni_add(data, "podU", "/proc/%d/ns/net" % a.pid)
        kill(a)
        rc, r, err = gc(data, "--grace", "0", "--apply")
        emit({{"ip": ip, "v": verdicts(r), "rc": rc, "warnings": r["warnings"], "stderr": err}})
    ''')
    state, reason, detail, released = out["v"][out["ip"]]
    assert (state, reason, released) == ("unknown", "netns-unsure", False)
    assert "host's PID namespace" in detail
    assert any("not in the host's PID namespace" in w for w in out["warnings"])
    assert "warning: not in the host's PID namespace" in out["stderr"]


def test_netns_root_path_that_is_not_nsfs_proves_nothing(tmp_path):
    """--netns-root seen through a private mount: the pod's path is an empty file there.  Even once
    the namespace is gone the verdict is unknown, never stranded (and gc warns about the mount)."""
    root = tmp_path / "hostroot"
    (out,) = run_world(f'''
        data = {str(tmp_path / "data")!r}
        root = {str(root)!r}
        a = spawn("unshare", "--net", "sleep", "600")
        netns_of(a.pid)
        os.makedirs(root + "/run/netns")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "gcroot", root + "/run/netns"], check=True)
        subprocess.run(["mount", "--make-private", root + "/run/netns"], check=True)
        open(root + "/run/netns/pod1", "w").close()  # what a private mount shows for a later pod
        ip = cni_add(data, "podR", "/proc/%d/ns/net" % a.pid)
        # the runtime's path for this pod is /run/netns/pod1 (rewrite it as the ADD would have seen it)
        import glob
        for f in glob.glob(data + "/holders/.cni-ipam/index/*"):  # lines: cid, ifname, files, JSON tail
            lines = [l.split("\\t") for l in open(f).read().splitlines()]
            for l in lines:
                t = json.loads(l[3]); t["meta"]["netns"] = "/run/netns/pod1"; l[3] = json.dumps(t, sort_keys=True)
            open(f, "w").write("".join("\\t".join(l) + "\\n" for l in lines))
        alive = gc(data, "--grace", "0", "--apply", "--pidns-is-node", "--netns-root", root)
        kill(a)
        gone = gc(data, "--grace", "0", "--apply", "--pidns-is-node", "--netns-root", root)
        subprocess.run(["mount", "--make-shared", root + "/run/netns"], check=True)
        shared = gc(data, "--grace", "0", "--pidns-is-node", "--netns-root", root)
        subprocess.run(["umount", root + "/run/netns"], check=True)
        emit({{"ip": ip, "alive": verdicts(alive[1]), "gone": verdicts(gone[1]), "warn": gone[1]["warnings"],
               "warn_shared": shared[1]["warnings"]}})
    ''')
    ip = out["ip"]
    assert out["alive"][ip][:2] == ["live", "netns-alive"]
    state, reason, detail, released = out["gone"][ip]
    assert (state, reason, released) == ("unknown", "netns-not-nsfs", False), detail
    assert any("private propagation" in w for w in out["warn"])
    assert not any("private propagation" in w for w in out["warn_shared"])
