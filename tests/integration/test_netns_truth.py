"""The kernel, not a walk of /proc, says whether a pod's network namespace is gone.

Every test runs the plugin as the runtime does (ADD with CNI_NETNS), as root in the host's PID
namespace (the kernel answers for other namespaces only there) and a private mount namespace (the
test's /run/netns mounts vanish with it), where a walk of /proc can look at every process: the old
proof "a sure scan found no holder" would have been believed.  The range has one address: the
second pod's ADD finds it full and runs the exhaustion heal.  A pod whose namespace is still held,
in any of the ways below, must keep its address; once the holder is gone, the heal must free it.

Each holder class is confirmed against the kernel's own answer (``nsfs.Kernel``: open_by_handle_at
on the recorded namespace id) and against ``cni-ipam gc``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from cni_ipam.plugin import nsfs
from tests.integration.hostworld import world

HERE = os.path.dirname(os.path.abspath(__file__))

@pytest.fixture(scope="module")
def holder_bin(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to build the holder program")
    out = tmp_path_factory.mktemp("nsholder") / "nsholder"
    subprocess.run(["gcc", "-O1", "-pthread", "-o", str(out), os.path.join(HERE, "nsholder.c")], check=True)
    return str(out)


@pytest.fixture(scope="module")
def kernel_answers():
    why = nsfs.Kernel().why_not()
    if why is not None:
        pytest.skip(f"the kernel cannot answer for namespaces here: {why}")


HOLDERS = ["fd", "main-exit", "thread-mount", "thread-files", "scm-rights", "io-uring", "proc-net-dev", "socket", "tap"]


@pytest.mark.usefixtures("need_root", "kernel_answers")
@pytest.mark.parametrize("mode", HOLDERS)
def test_hidden_holder_keeps_the_address(tmp_path, holder_bin, mode):
    data = str(tmp_path / "data")
    extra = str(tmp_path / "mnt")
    (out,) = world(f'''
data, mode = {data!r}, {mode!r}
sh("ip netns add hold1; ip netns add other1")
first = add(data, "pod1", "/run/netns/hold1")
meta = nsfs.identity("/run/netns/hold1")
rec = recorded(data, "pod1")
h = spawn({holder_bin!r}, mode, "/run/netns/hold1", {extra!r}, stdout=subprocess.PIPE)
line = h.stdout.readline().decode().strip()
if line != "ready":
    emit({{"unsupported": line}})
    raise SystemExit(0)
sh("ip netns del hold1")  # the mount goes (lazily detached): only the holder keeps the namespace
held_state = kernel_state(meta)
code, report, _ = gc(data, "--grace", "0")
while_held = add(data, "pod2", "/run/netns/other1")
kill(h)
wait_gone(meta)
after = add(data, "pod2", "/run/netns/other1")
emit({{"first": first, "meta": meta, "recorded": rec, "held": held_state,
      "while_held": while_held, "after": after, "gc": verdicts(report)}})
''')
    if "unsupported" in out:
        pytest.skip(f"the kernel refuses holder mode {mode}: {out['unsupported']!r}")
    assert out["first"] == "10.79.0.2"
    assert out["held"] == "alive", f"{mode}: the kernel says the held namespace is {out['held']}"
    assert out["while_held"] == 100, f"{mode}: the heal released a live pod's address: {out['while_held']}"
    assert out["gc"]["10.79.0.2"][:2] == ["live", "netns-alive"], out["gc"]
    assert out["after"] == "10.79.0.2", f"{mode}: the heal did not free the address of a gone namespace"
    assert out["recorded"]["netnsId"] == out["meta"]["netnsId"]


@pytest.mark.usefixtures("need_root")
@pytest.mark.parametrize("mode", HOLDERS)
def test_hidden_holder_in_a_node_pid_namespace(tmp_path, holder_bin, mode):
    """The same holders where a walk of /proc is sure (a PID namespace that holds every process,
    ``pidnsIsNode``, as in a kind node): the walk sees none of them, and must not count.  The
    kernel does not answer for other namespaces from a non-initial PID namespace (6.18 answers
    ESTALE there, which the positive control catches): everything stays, nothing is freed."""
    data = str(tmp_path / "data")
    extra = str(tmp_path / "mnt")
    (out,) = world(f'''
data, mode = {data!r}, {mode!r}
sh("ip netns add hold1; ip netns add other1")
first = add(data, "pod1", "/run/netns/hold1")
h = spawn({holder_bin!r}, mode, "/run/netns/hold1", {extra!r}, stdout=subprocess.PIPE)
line = h.stdout.readline().decode().strip()
if line != "ready":
    emit({{"unsupported": line}})
    raise SystemExit(0)
sh("ip netns del hold1")
code, report, _ = gc(data, "--grace", "0", "--pidns-is-node")
while_held = add(data, "pod2", "/run/netns/other1")
emit({{"first": first, "while_held": while_held, "gc": verdicts(report), "kernel": nsfs.Kernel().why_not()}})
''', pidns=True)
    if "unsupported" in out:
        pytest.skip(f"the kernel refuses holder mode {mode}: {out['unsupported']!r}")
    assert out["first"] == "10.79.0.2"
    assert out["while_held"] == 100, f"{mode}: the heal released a live pod's address: {out['while_held']}"
    assert out["gc"]["10.79.0.2"][0] != "stranded", out["gc"]


@pytest.mark.usefixtures("need_root", "kernel_answers")
def test_reused_inode_does_not_keep_a_gone_pod(tmp_path):
    """The kernel gives the freed namespace's inode number to the next one (the kubelet flow: the
    CRI makes the next pod's namespace right before its ADD)."""
    data = str(tmp_path / "data")
    (out,) = world(f'''
data = {data!r}
sh("ip netns add gone1")
first = add(data, "pod1", "/run/netns/gone1")
meta = nsfs.identity("/run/netns/gone1")
sh("ip netns del gone1")
wait_gone(meta)
reused = None
for i in range(40):
    sh("ip netns add next%d" % i)
    if os.stat("/run/netns/next%d" % i).st_ino == meta["netnsIno"]:
        reused = "/run/netns/next%d" % i
        break
    sh("ip netns del next%d" % i)
if reused is None:
    emit({{"noreuse": True}})
    raise SystemExit(0)
code, report, _ = gc(data, "--grace", "0")
second = add(data, "pod2", reused)
emit({{"first": first, "second": second, "gc": verdicts(report)}})
''')
    if out.get("noreuse"):
        pytest.skip("the kernel did not reuse the inode number in 40 tries")
    assert out["first"] == "10.79.0.2"
    assert out["gc"]["10.79.0.2"][:2] == ["stranded", "netns-gone"], out["gc"]
    assert out["second"] == "10.79.0.2", f"a gone pod kept because a new namespace has its inode: {out['second']}"


@pytest.mark.usefixtures("need_root")
def test_reused_inode_with_another_id_is_no_evidence_of_life(tmp_path):
    """Outside the initial PID namespace the kernel's handle check answers unknown, and the /proc
    walk finds namespaces by inode number: the next namespace made gets a gone pod's number.  A
    namespace found with the recorded inode but another kernel id (NS_GET_ID) is not the pod's:
    the verdict stays unknown (the detail says so; a runtime that does not know the pod may then
    strand it), and the pod really in that namespace stays live."""
    data, data2 = str(tmp_path / "data"), str(tmp_path / "data2")
    (out,) = world(f'''
data, data2 = {data!r}, {data2!r}
sh("ip netns add gone1")
first = add(data, "pod1", "/run/netns/gone1")
meta = nsfs.identity("/run/netns/gone1")
sh("ip netns del gone1")
reused = None
for i in range(200):
    sh("ip netns add next%d" % i)
    if os.stat("/run/netns/next%d" % i).st_ino == meta["netnsIno"]:
        reused = "/run/netns/next%d" % i
        break
    sh("ip netns del next%d" % i)
    time.sleep(0.05)  # the kernel frees a dead namespace's number asynchronously
if reused is None:
    emit({{"noreuse": True}})
    raise SystemExit(0)
again = nsfs.identity(reused)
second = add(data2, "pod2", reused)
code, report, _ = gc(data, "--grace", "0", "--pidns-is-node")
code2, report2, _ = gc(data2, "--grace", "0", "--pidns-is-node")
emit({{"first": first, "second": second, "meta": meta, "again": again, "gc": verdicts(report),
       "gc2": verdicts(report2, "holders"), "kernel": nsfs.Kernel().why_not()}})
''', pidns=True)
    if out.get("noreuse"):
        pytest.skip("the kernel did not reuse the inode number in 200 tries")
    if "netnsId" not in out["meta"]:
        pytest.skip("this kernel has no NS_GET_ID (Linux 6.18)")
    assert out["kernel"] is not None, "the kernel answered in a non-initial PID namespace: nothing tested here"
    assert out["again"]["netnsIno"] == out["meta"]["netnsIno"] and out["again"]["netnsId"] != out["meta"]["netnsId"]
    assert out["first"] == "10.79.0.2" and out["second"] == "10.79.0.2"
    state, reason, detail, _ = out["gc"]["10.79.0.2"]
    # the old rule: live/netns-alive "mounted at /run/netns/nextN" (the other pod's namespace)
    assert (state, reason) == ("unknown", "netns-unsure"), out["gc"]
    assert "another one" in detail and "not this pod's" in detail, detail
    assert out["gc2"]["10.79.0.2"][:2] == ["live", "netns-alive"], out["gc2"]


@pytest.mark.usefixtures("need_root")
def test_fake_boot_id_proves_nothing(tmp_path):
    """LXC and systemd-nspawn bind-mount a random boot_id into each system container: the plugin
    (the container's mount namespace) and a reclaim pass (its own procfs) read different ids."""
    data = str(tmp_path / "data")
    fake = tmp_path / "boot_id"
    fake.write_text("00000000-1111-2222-3333-444444444444\n")
    (out,) = world(f'''
data = {data!r}
sh("ip netns add boot1; ip netns add boot2")
conf = {{"cniVersion": "1.0.0", "name": "holders", "type": "bridge",
        "ipam": {{"type": "cni-ipam", "dataDir": data, "subnet": "10.79.0.0/30", "pidnsIsNode": True}}}}
# the plugin runs under a bind-mounted fake boot_id, as in an LXC or nspawn system container
inner = "mount --bind {fake} /proc/sys/kernel/random/boot_id && exec " + " ".join(PLUGIN)
p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                   input=json.dumps(conf).encode(), capture_output=True,
                   env=_env(CNI_COMMAND="ADD", CNI_CONTAINERID="pod1", CNI_IFNAME="eth0", CNI_NETNS="/run/netns/boot1",
                            CNI_PATH="/usr/lib/cni"))
assert p.returncode == 0, p.stdout + p.stderr
code, report, _ = gc(data, "--grace", "0")
second = add(data, "pod2", "/run/netns/boot2")
emit({{"gc": verdicts(report), "second": second, "meta": recorded(data, "pod1")}})
''')
    assert out["gc"]["10.79.0.2"][0] != "stranded", out["gc"]
    assert out["second"] == 100, f"a fake boot id freed a live pod's address: {out['second']}"


def test_kernel_without_answers_is_unknown(monkeypatch):
    """Before 6.18 open_by_handle_at answers ESTALE for every nsfs handle: the positive control on
    our own namespace must catch that, so no answer is ever GONE."""
    k = nsfs.Kernel()

    def estale(handle, ns_type=nsfs.CLONE_NEWNET):
        import errno

        return -1, errno.ESTALE

    k.why_not = lambda: None  # type: ignore[method-assign]
    monkeypatch.setattr(k, "_open_handle", estale)
    k._checked = False
    k.why_not = nsfs.Kernel.why_not.__get__(k)  # type: ignore[method-assign]
    state, detail = k.state(12345, 4026532000)
    if "no namespace ids" in detail:
        pytest.skip("this kernel has no NS_GET_ID: the control fails earlier")
    assert state == nsfs.UNKNOWN and "ESTALE" in detail


@pytest.mark.usefixtures("need_root")
@pytest.mark.parametrize("pidns", [False, True], ids=["host-pidns", "node-pidns"])
def test_two_adds_of_one_attachment_keep_both_namespaces(tmp_path, pidns):
    """ADD pod1/eth0 in namespace A, then again in namespace B with a requested IP: one owner
    entry.  B going away must not free A's address (nor B's: the entry is one attachment)."""
    if not pidns and nsfs.Kernel().why_not() is not None:
        pytest.skip("the kernel cannot answer for namespaces here")
    data = str(tmp_path / "data")
    (out,) = world(f'''
data = {data!r}
sh("ip netns add twoA; ip netns add twoB")
a = add(data, "pod1", "/run/netns/twoA", subnet="10.79.0.0/29")
ident_b = nsfs.identity("/run/netns/twoB")
b = add(data, "pod1", "/run/netns/twoB", subnet="10.79.0.0/29", args="IP=10.79.0.5")
sh("ip netns del twoB")
if {not pidns!r}:
    wait_gone(ident_b)
extra = ["--pidns-is-node"] if {pidns!r} else []
code, one_gone, _ = gc(data, "--grace", "0", *extra)
ident_a = nsfs.identity("/run/netns/twoA")
sh("ip netns del twoA")
if {not pidns!r}:
    wait_gone(ident_a)
code, both_gone, _ = gc(data, "--grace", "0", *extra)
emit({{"a": a, "b": b, "one": verdicts(one_gone), "both": verdicts(both_gone), "meta": recorded(data, "pod1")}})
''', pidns=pidns)
    assert (out["a"], out["b"]) == ("10.79.0.2", "10.79.0.5")
    for ip in ("10.79.0.2", "10.79.0.5"):
        assert out["one"][ip][0] != "stranded", f"{ip} freed while namespace A is up: {out['one'][ip]}"
        if not pidns:
            assert out["both"][ip][:2] == ["stranded", "netns-gone"], out["both"][ip]
    assert [n["netns"] for n in out["meta"].get("netnsAlso", [])] == ["/run/netns/twoA"]


@pytest.mark.usefixtures("need_root")
def test_the_heal_does_no_work_that_a_tenant_can_inflate(tmp_path):
    """A process holding ~20,000 fds: the heal (an ADD on a full range, under the network lock) must
    not read them.  Counted in syscalls (strace), not time: readlink/open of /proc per fd."""
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    data = str(tmp_path / "data")
    trace = str(tmp_path / "trace")
    (out,) = world(f'''
import resource
data = {data!r}
sh("ip netns add fill1; ip netns add hog1")
first = add(data, "pod1", "/run/netns/fill1")
hog = spawn(sys.executable, "-c", "import os, resource, time\\n"
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(30000, hard),) * 2)\\n"
            "fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(min(20000, hard - 100))]\\n"
            "print('ready', flush=True); time.sleep(600)", stdout=subprocess.PIPE)
assert hog.stdout.readline().strip() == b"ready"
sh("ip netns del fill1")  # pod1's namespace is gone: the heal has a candidate to judge
conf = {{"cniVersion": "1.0.0", "name": "holders", "type": "bridge",
        "ipam": {{"type": "cni-ipam", "dataDir": data, "subnet": "10.79.0.0/30", "pidnsIsNode": True}}}}
p = subprocess.run(["strace", "-f", "-qq", "-o", {trace!r}, "-e", "trace=readlink,readlinkat,openat"] + PLUGIN,
                   input=json.dumps(conf).encode(), capture_output=True,
                   env=_env(CNI_COMMAND="ADD", CNI_CONTAINERID="pod2", CNI_IFNAME="eth0", CNI_NETNS="/run/netns/hog1",
                            CNI_PATH="/usr/lib/cni"))
proc_reads = sum(1 for line in open({trace!r}) if '"/proc/' in line or "/fd/" in line)
emit({{"first": first, "rc": p.returncode, "out": p.stdout.decode()[-300:], "proc_reads": proc_reads}})
''')
    assert out["first"] == "10.79.0.2"
    assert out["rc"] == 0 or '"code": 100' in out["out"], out["out"]  # the heal ran (freed, or not yet gone)
    assert out["proc_reads"] < 200, f"the heal read /proc {out['proc_reads']} times (a walk of every fd on the node)"
