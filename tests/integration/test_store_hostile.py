"""The store against hostile directories, through the executable.

Real host-local where it matters; every call has a timeout so a hang is a failure, not a stuck run.
"""

import json
import os
import subprocess
import time

import pytest

from tests.helpers import ROOT, plugin_argv, run_host_local, run_plugin

NET = "hostile-net"
NS = "/var/run/netns/hostile-none"


def conf(data_dir, subnet="10.83.0.0/29", version="1.1.0"):
    return {"cniVersion": version, "name": NET, "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "subnet": subnet}}


def call(command, c, cid="c1", timeout=20, **kw):
    netns = kw.pop("netns", NS if command != "DEL" else "")
    rc, parsed, out, err = run_plugin(command, c, container_id=cid, netns=netns, timeout=timeout, **kw)
    assert "Traceback" not in err, err
    return rc, parsed


def admin(*argv, timeout=20):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env = {k: v for k, v in env.items() if not k.startswith("CNI_")}
    proc = subprocess.run(plugin_argv() + list(argv), capture_output=True, text=True, timeout=timeout, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def tree(root, skip):
    out = {}
    for d, ds, fs in os.walk(root):
        if os.path.abspath(d).startswith(os.path.abspath(skip)):
            continue
        for n in ds + fs:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def owner_entry(data, cid, ifname="eth0"):
    from cni_ipam.store.layout import owner_key
    from cni_ipam.store.snapshot import read_owner_index

    return read_owner_index(os.path.join(data, NET))[owner_key(cid, ifname)]


def test_metadata_never_follows_a_reservation_host_local_recreated(tmp_path, need_host_local):
    """Item 3: cni-ipam ADD (C, eth0) -> host-local DEL -> host-local ADD (C, eth0): the index adopts
    the new file without the old attachment's metadata, and gc --apply keeps the live pod."""
    data = tmp_path / "data"
    c = conf(data)
    assert call("ADD", c, "pod-c")[0] == 0
    assert owner_entry(data, "pod-c")["meta"].get("netns") == NS
    hl = dict(c, cniVersion="1.0.0", ipam=dict(c["ipam"], type="host-local"))  # Debian host-local: up to 1.0.0
    assert run_host_local("DEL", hl, container_id="pod-c", netns="")[0] == 0
    rc, res, out, err = run_host_local("ADD", hl, container_id="pod-c", netns="/var/run/netns/hostile-new")
    assert rc == 0, out + err
    new_ip = res["ips"][0]["address"].split("/")[0]
    rc, report = admin("gc", "--data-dir", str(data), "--json", "--apply")
    entry = owner_entry(data, "pod-c")
    assert entry["meta"] == {} and entry["ips"] == [new_ip]
    st = os.stat(data / NET / new_ip)
    assert entry["files"] == {new_ip: [st.st_ino, st.st_ctime_ns]}
    assert (data / NET / new_ip).read_bytes() == b"pod-c\r\neth0"  # the live pod kept its address
    assert call("DEL", c, "pod-c")[0] == 0
    assert not (data / NET / new_ip).exists()


HOSTILE = [
    b"../../victim\r\neth0",
    b"/tmp/victim",
    b"..",
    b"pod\r\n../../victim",
    b"pod\x00x\r\neth0",
    b"\xff\xfe\r\neth0",
]


@pytest.mark.parametrize("content", HOSTILE)
def test_file_contents_are_never_paths(tmp_path, content):
    """Item 4: ADD, DEL, GC verb and gc with hostile contents touch nothing outside the data dir."""
    data = tmp_path / "data"
    c = conf(data)
    assert call("ADD", c, "pod-a")[0] == 0
    (data / NET / "10.83.0.4").write_bytes(content)
    (data / NET / ".cni-ipam" / "state").unlink()  # and a rebuild reads it too
    (tmp_path / "victim").write_text("keep me")
    before = tree(tmp_path, data)
    assert call("ADD", c, "pod-b")[0] == 0
    assert call("DEL", c, "pod-a")[0] == 0
    assert call("GC", dict(c, **{"cni.dev/valid-attachments": []}), cid=None, ifname=None, netns=None)[0] == 0
    rc, _ = admin("gc", "--data-dir", str(data), "--json", "--apply", "--grace", "0", "--include-unknown")
    rc, out = admin("show", "--data-dir", str(data), "--conf-dir", str(tmp_path / "none"), "--ips", "--json")
    assert "10.83.0.4" in out
    assert tree(tmp_path, data) == before
    assert (data / NET / "10.83.0.4").read_bytes() == content  # kept: an opaque foreign reservation
    assert sorted(os.listdir(data)) == [NET]


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_a_fifo_or_directory_named_like_an_address_hangs_nothing(tmp_path, kind):
    """Item 6: ADD, DEL, GC verb, gc and show answer at once; the entry stays reserved."""
    data = tmp_path / "data"
    c = conf(data)
    assert call("ADD", c, "pod-a")[0] == 0  # 10.83.0.2
    junk = data / NET / "10.83.0.3"
    os.mkfifo(junk) if kind == "fifo" else os.mkdir(junk)
    os.utime(junk, (1, 1))
    (data / NET / ".cni-ipam" / "state").unlink()  # make the next call rebuild through it
    began = time.monotonic()
    rc, res = call("ADD", c, "pod-b")
    assert rc == 0 and res["ips"][0]["address"] == "10.83.0.4/29"
    assert call("DEL", c, "pod-a")[0] == 0
    assert call("GC", dict(c, **{"cni.dev/valid-attachments": []}), cid=None, ifname=None, netns=None)[0] == 0
    admin("gc", "--data-dir", str(data), "--json", "--apply", "--grace", "0", "--include-unknown")
    rc, out = admin("show", "--data-dir", str(data), "--conf-dir", str(tmp_path / "none"), "--ips", "--json")
    assert "10.83.0.3" in out
    assert time.monotonic() - began < 30
    assert os.path.lexists(junk)


def test_empty_files_are_shown_and_reclaimed_by_gc_after_the_grace_period(tmp_path):
    """Item 10: an empty reservation (host-local killed mid-write) is listed by show and gc, and
    `cni-ipam gc --apply` releases it once it is older than the grace period."""
    data = tmp_path / "data"
    c = conf(data)
    assert call("ADD", c, "pod-a")[0] == 0
    empty = data / NET / "10.83.0.5"
    empty.write_bytes(b"")
    rc, out = admin("show", "--data-dir", str(data), "--conf-dir", str(tmp_path / "none"), "--ips", "--json")
    assert "10.83.0.5" in out
    rc, out = admin("gc", "--data-dir", str(data), "--json", "--apply")  # young: kept
    assert empty.exists() and "10.83.0.5" in out
    old = time.time() - 3600
    os.utime(empty, (old, old))
    rc, out = admin("gc", "--data-dir", str(data), "--json", "--apply")
    rows = {r["ip"]: r for r in json.loads(out)["networks"][NET]["reservations"]}
    assert rows["10.83.0.5"]["reason"] == "empty-file"
    assert not empty.exists()
    assert (data / NET / "10.83.0.2").exists()  # pod-a untouched


def test_check_with_a_fifo_as_netns_answers_at_once(tmp_path):
    """Item 12 (part): CHECK never opens a FIFO given as CNI_NETNS."""
    data = tmp_path / "data"
    c = conf(data)
    fifo = tmp_path / "netns-fifo"
    os.mkfifo(fifo)
    assert call("ADD", c, "pod-a", netns=str(fifo))[0] == 0
    began = time.monotonic()
    rc, out = call("CHECK", c, "pod-a", netns=str(fifo), timeout=15)
    assert rc == 0, out
    assert time.monotonic() - began < 10


def test_a_host_local_del_and_add_behind_a_clock_step_are_seen(tmp_path, need_host_local):
    """Item 7 with real host-local: its DEL + ADD of our container, with ctimes older than our marker
    (the clock was behind, then stepped forward), are still caught: our DEL releases host-local's
    file and a repeated ADD never gives the container a second address."""
    data = tmp_path / "data"
    c = conf(data, subnet="10.83.1.0/28", version="1.0.0")
    assert call("ADD", c, "pod-k")[0] == 0
    hl = dict(c, ipam=dict(c["ipam"], type="host-local"))
    assert run_host_local("DEL", hl, container_id="pod-k", netns="")[0] == 0
    rc, res, out, err = run_host_local("ADD", hl, container_id="pod-k", netns=NS)
    assert rc == 0, out + err
    hl_ip = res["ips"][0]["address"].split("/")[0]
    time.sleep(2.2)
    state_path = data / NET / ".cni-ipam" / "state"
    state = json.loads(state_path.read_text())
    state["mtime"] = time.time_ns() - 50_000_000  # our marker now postdates host-local's ctimes
    state_path.write_text(json.dumps(state))
    rc, out = call("ADD", c, "pod-k")
    assert rc == 1 and out["code"] == 103, out  # already holds hl_ip: no second address
    assert call("DEL", c, "pod-k")[0] == 0
    assert not (data / NET / hl_ip).exists()
    assert sorted(n for n in os.listdir(data / NET) if n[0].isdigit()) == []
