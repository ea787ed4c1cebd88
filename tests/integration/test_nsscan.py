"""nsscan with real processes and real network namespaces (each test in its own PID namespace)."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from cni_ipam.plugin import nsscan
from tests.integration.nsworld import run_world

pytestmark = pytest.mark.usefixtures("need_root")


def test_pid_path_exits_but_another_process_stays():
    """The CNI_NETNS path /proc/<pid>/ns/net vanishes with its pid; the namespace lives on in B."""
    (out,) = run_world('''
        a = spawn("unshare", "--net", "sleep", "600")
        ns = netns_of(a.pid)
        b = spawn("nsenter", "--net=/proc/%d/ns/net" % a.pid, "sleep", "600")
        wait_for(lambda: ident("/proc/%d/ns/net" % b.pid) == ns)
        kill(a)
        first = scan([ns])
        kill(b)
        second = scan([ns])
        emit({"ns": ns, "b": b.pid, "first": first, "second": second})
    ''')
    k = "%d:%d" % tuple(out["ns"])
    assert out["first"]["sure"] and k in out["first"]["held"] and f"pid {out['b']} (sleep)" in out["first"]["held"][k]
    assert out["first"]["gone"] == []
    assert out["second"]["sure"] and out["second"]["held"] == {} and out["second"]["gone"] == [k]


def test_fd_holder():
    (out,) = run_world("""
        a = spawn("unshare", "--net", "sleep", "600")
        ns = netns_of(a.pid)
        holder = spawn(sys.executable, "-c",
                       "import os,time; fd=os.open('/proc/%d/ns/net', os.O_RDONLY); "
                       "print(fd, flush=True); time.sleep(600)" % a.pid,
                       stdout=subprocess.PIPE)
        fd = holder.stdout.readline().strip().decode()
        kill(a)
        held = scan([ns])
        kill(holder)
        emit({"ns": ns, "fd": fd, "pid": holder.pid, "held": held, "after": scan([ns])})
    """)
    k = "%d:%d" % tuple(out["ns"])
    assert out["held"]["held"][k].startswith(f"pid {out['pid']} (") and out["held"]["held"][k].endswith(
        f"holds it open (fd {out['fd']})"
    )
    assert out["after"]["gone"] == [k]


def test_bind_mount_holder_ip_netns_add():
    name = "nsscan-" + uuid.uuid4().hex[:10]
    try:
        (out,) = run_world(f'''
            subprocess.run(["ip", "netns", "add", {name!r}], check=True)
            ns = ident("/run/netns/{name}")
            held = scan([ns])
            subprocess.run(["ip", "netns", "del", {name!r}], check=True)
            emit({{"ns": ns, "held": held, "after": scan([ns])}})
        ''')
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if os.path.lexists(f"/run/netns/{name}"):
            os.unlink(f"/run/netns/{name}")
    k = "%d:%d" % tuple(out["ns"])
    assert out["held"]["held"][k].startswith(f"mounted at /run/netns/{name}")
    assert out["after"]["sure"] and out["after"]["gone"] == [k]


def test_many_idents_stop_early_and_report_each():
    (out,) = run_world('''
        procs = [spawn("unshare", "--net", "sleep", "600") for _ in range(3)]
        idents = [netns_of(p.pid) for p in procs]
        kill(procs[1])
        emit({"idents": idents, "r": scan(idents)})
    ''')
    keys = ["%d:%d" % tuple(i) for i in out["idents"]]
    assert set(out["r"]["held"]) == {keys[0], keys[2]} and out["r"]["gone"] == [keys[1]]


def test_not_host_pid_namespace_is_unsure():
    """Without node_pidns a PID namespace that is not the host's proves nothing."""
    (out,) = run_world('''
        a = spawn("unshare", "--net", "sleep", "600")
        ns = netns_of(a.pid)
        kill(a)
        r = scan([ns], node_pidns=False)
        try:
            nsscan.find_held([tuple(ns)])
            raised = None
        except nsscan.Unsure as exc:
            raised = exc.problems
        emit({"r": r, "raised": raised})
    ''')
    assert not out["r"]["sure"] and out["r"]["gone"] == []
    assert "host's PID namespace" in out["r"]["problems"][0]
    assert out["raised"] and "host's PID namespace" in out["raised"][0]


def test_unreadable_process_makes_the_scan_unsure():
    """A scanner that cannot read another process's fds must not call anything gone."""
    (out,) = run_world("""
        a = spawn("unshare", "--net", "sleep", "600")
        ns = netns_of(a.pid)
        kill(a)
        other = spawn("sleep", "600")  # root's: unreadable to nobody
        code = ("import sys,json; sys.path.insert(0,%r); from cni_ipam.plugin import nsscan; "
                "r=nsscan.scan([(%d,%d)], node_pidns=True); print(json.dumps([r.sure, r.problems]))"
                % (sys.path[0], ns[0], ns[1]))
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                           capture_output=True, text=True)
        emit({"out": p.stdout, "err": p.stderr, "pid": other.pid})
    """)
    import json

    sure, problems = json.loads(out["out"])
    assert not sure and any(f"pid {out['pid']} (sleep): cannot list fds" in p for p in problems), problems


def test_identity_not_on_nsfs_is_unsure(tmp_path):
    f = tmp_path / "plain"
    f.write_text("")
    st = os.stat(f)
    r = nsscan.scan([(st.st_dev, st.st_ino)], node_pidns=True)
    assert not r.gone((st.st_dev, st.st_ino)) and r.foreign == {(st.st_dev, st.st_ino)}
    with pytest.raises(nsscan.Unsure, match="not on the nsfs device"):
        nsscan.find_held([(st.st_dev, st.st_ino)], node_pidns=True)


def test_own_namespace_is_held_on_the_real_proc():
    """On the machine's real /proc: our own network namespace is found (scan stops early)."""
    st = os.stat("/proc/self/ns/net")
    assert nsscan.find_held([(st.st_dev, st.st_ino)]) == {(st.st_dev, st.st_ino)}


def test_empty_input():
    assert nsscan.find_held([]) == set()


THREAD_HOLDER = r'''
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
ready = threading.Event()
tid = []
def run():
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET, this thread only
        os._exit(3)
    tid.append(threading.get_native_id())
    ready.set()
    time.sleep(600)
threading.Thread(target=run, daemon=True).start()
ready.wait()
os.close(fd)  # only the thread holds the namespace now
print(tid[0], flush=True)
time.sleep(600)
'''


def test_thread_holder():
    """One thread of a process setns'd into the namespace; the process itself (and its fds) did not."""
    (out,) = run_world(f'''
        a = spawn("unshare", "--net", "sleep", "600")
        ns = netns_of(a.pid)
        holder = spawn(sys.executable, "-c", {THREAD_HOLDER!r}, "/proc/%d/ns/net" % a.pid, stdout=subprocess.PIPE)
        tid = holder.stdout.readline().strip().decode()
        kill(a)
        mine = ident("/proc/%d/ns/net" % holder.pid) != ns
        held = scan([ns])
        kill(holder)
        emit({{"ns": ns, "pid": holder.pid, "tid": tid, "leader_elsewhere": mine, "held": held, "after": scan([ns])}})
    ''')
    k = "%d:%d" % tuple(out["ns"])
    assert out["leader_elsewhere"]
    who = out["held"]["held"][k]
    assert who.startswith(f"pid {out['pid']} (") and who.endswith(f"thread {out['tid']} lives in it"), who
    assert out["after"]["gone"] == [k]
