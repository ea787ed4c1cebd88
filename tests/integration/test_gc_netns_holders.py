"""`cni-ipam gc` never frees the address of a namespace that something still holds.

The kernel is the authority (``cni_ipam.plugin.nsfs``): these run in the host's PID namespace
(``hostworld``), where it answers for other namespaces.  ``test_unsure_scan_keeps_the_address``
and the ``--netns-root`` test run in a PID namespace of their own (``nsworld``), where it does not:
there only evidence of life counts, and nothing is ever proven gone.
"""

from __future__ import annotations

import pytest

from tests.integration.hostworld import world
from tests.integration.nsworld import run_world

pytestmark = pytest.mark.usefixtures("need_root")


@pytest.fixture
def kernel_answers():
    from cni_ipam.plugin import nsfs

    why = nsfs.Kernel().why_not()
    if why is not None:
        pytest.skip(f"the kernel cannot answer for namespaces here: {why}")


@pytest.mark.usefixtures("kernel_answers")
def test_pid_path_exits_while_another_process_stays(tmp_path):
    """CNI_NETNS=/proc/<A>/ns/net; A exits, B stays in the namespace: kept; B exits: released."""
    (out,) = world(f'''
data = {str(tmp_path / "data")!r}
a = spawn("unshare", "--net", "sleep", "600")
netns_of(a.pid)
ip = add(data, "podA", "/proc/%d/ns/net" % a.pid)
meta = recorded(data, "podA")
b = spawn("nsenter", "--net=/proc/%d/ns/net" % a.pid, "sleep", "600")
wait_for(lambda: ident("/proc/%d/ns/net" % b.pid) == ident("/proc/%d/ns/net" % a.pid))
kill(a)
rc1, r1, _ = gc(data, "--grace", "0", "--apply")
kill(b)
wait_gone(meta)
rc2, r2, _ = gc(data, "--grace", "0", "--apply")
emit({{"ip": ip, "first": verdicts(r1), "rc1": rc1, "second": verdicts(r2), "rc2": rc2,
      "files": sorted(n for n in os.listdir(data + "/holders") if n[0].isdigit())}})
''')
    state, reason, detail, released = out["first"][out["ip"]]
    assert (state, reason, released) == ("live", "netns-alive", False) and out["rc1"] == 0
    assert "the kernel still has network namespace id" in detail
    state, reason, detail, released = out["second"][out["ip"]]
    assert (state, reason, released) == ("stranded", "netns-gone", True) and out["rc2"] == 0
    assert "ESTALE" in detail
    assert out["files"] == []


@pytest.mark.usefixtures("kernel_answers")
def test_fd_and_bind_mount_holders(tmp_path):
    (out,) = world(f'''
data = {str(tmp_path / "data")!r}
a = spawn("unshare", "--net", "sleep", "600")
netns_of(a.pid)
c = spawn("unshare", "--net", "sleep", "600")
netns_of(c.pid)
ip_fd = add(data, "podFd", "/proc/%d/ns/net" % a.pid, subnet="10.79.0.0/24")
ip_mnt = add(data, "podMnt", "/proc/%d/ns/net" % c.pid, subnet="10.79.0.0/24")
metas = [recorded(data, "podFd"), recorded(data, "podMnt")]
holder = spawn(sys.executable, "-c",
               "import os,sys,time; os.open(sys.argv[1], os.O_RDONLY); print(1, flush=True); time.sleep(600)",
               "/proc/%d/ns/net" % a.pid, stdout=subprocess.PIPE)
holder.stdout.readline()
sh("ip netns attach gch %d" % c.pid)
kill(a); kill(c)
rc1, r1, _ = gc(data, "--grace", "0", "--apply")
kill(holder)
sh("ip netns del gch")
for meta in metas:
    wait_gone(meta)
rc2, r2, _ = gc(data, "--grace", "0", "--apply")
emit({{"fd": ip_fd, "mnt": ip_mnt, "first": verdicts(r1), "second": verdicts(r2)}})
''')
    for ip in (out["fd"], out["mnt"]):
        assert out["first"][ip][:2] == ["live", "netns-alive"] and "the kernel still has" in out["first"][ip][2]
        state, reason, _, released = out["second"][ip]
        assert (state, reason, released) == ("stranded", "netns-gone", True)


def test_unsure_scan_keeps_the_address_and_warns(tmp_path):
    """Not in the host's PID namespace: the kernel does not answer, the walk proves nothing."""
    (out,) = run_world(f'''
        data = {str(tmp_path / "data")!r}
        a = spawn("unshare", "--net", "sleep", "600")
        netns_of(a.pid)
        ip = cni_add(data, "podU", "/proc/%d/ns/net" % a.pid)
        kill(a)
        rc, r, err = gc(data, "--grace", "0", "--apply", "--pidns-is-node")
        emit({{"ip": ip, "v": verdicts(r), "rc": rc, "warnings": r["warnings"], "stderr": err}})
    ''')
    state, reason, detail, released = out["v"][out["ip"]]
    assert (state, reason, released) == ("unknown", "netns-unsure", False)
    assert "proves nothing" in detail and "initial PID namespace" in detail


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
