"""The Kubernetes path: containerd 1.6's CRI plugin driven over its socket as kubelet drives it.

One isolated containerd world for the module (tests/runtime/cri/world.py): pods are made with
RunPodSandbox, ended with StopPodSandbox + RemovePodSandbox, and listed with ListPodSandbox; the
CRI calls cni-ipam (through bridge) with the pod's Kubernetes identity in CNI_ARGS.  ``cni-ipam gc
--runtime cri:SOCK`` asks the same socket with its own stdlib client (cni_ipam/admin/cri.py).
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.helpers import real_runtime
from tests.runtime import kit

READY, NOTREADY = 0, 1


@pytest.fixture(scope="module")
def cri_world():
    from tests.runtime.cri.world import CriWorld, skip_reason

    yield from real_runtime(skip_reason, CriWorld, CriWorld.close)


def _end(w, *sandbox_ids: str) -> None:
    """What kubelet does when a pod is deleted: stop, then remove."""
    for sid in sandbox_ids:
        w.stop_pod(sid)
        w.remove_pod(sid)


def _show(w, *args: str) -> "tuple[int, str]":
    proc = kit.run(w.mounts.argv([w.rt.plugin_exe, "show", "--data-dir", w.rt.data_dir, "--conf-dir", w.rt.netconfpath,
                                  "--network", w.network, *args], netns=w.host), env=kit.clean_env(), timeout=60)
    return proc.returncode, proc.stdout


def _owner_meta(w, sandbox_id: str) -> dict:
    from cni_ipam.store.snapshot import read_owner_index

    for entry in read_owner_index(w.rt.network_dir(w.network)).values():
        if entry.get("containerID") == sandbox_id:
            return entry.get("meta") or {}
    raise AssertionError(f"no owner entry for {sandbox_id}")


def _ns_inode(w, path: str) -> "int | None":
    """The inode of the namespace file at ``path`` as the world's mount namespace shows it."""
    proc = kit.run(w.mounts.argv(["stat", "-L", "-c", "%i", path], netns=w.host), env=kit.clean_env())
    return int(proc.stdout) if proc.returncode == 0 and proc.stdout.strip().isdigit() else None


def test_concurrent_pods_get_distinct_addresses(cri_world):
    w = cri_world
    names = [f"conc-{i}" for i in range(6)]
    ids: "dict[str, str]" = {}
    errors: "list[BaseException]" = []

    def run(name: str) -> None:
        try:
            ids[name] = w.run_pod(name)
        except BaseException as exc:  # reported below: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    try:
        assert not errors, errors
        ips = {name: w.pod_ip(sid) for name, sid in ids.items()}
        assert len(set(ips.values())) == len(names), ips
        assert all(w.in_subnet(ip) for ip in ips.values()), ips
        for name, sid in ids.items():
            assert w.held_by(sid) == [ips[name]]  # the CRI reports the address cni-ipam reserved for it
        listed = w.listed()
        assert all(listed.get(sid) == READY for sid in ids.values())
    finally:
        _end(w, *ids.values())
    assert not set(w.reservations().values()) & {f"{sid}\r\neth0" for sid in ids.values()}


def test_pod_identity_recorded_and_shown(cri_world):
    w = cri_world
    uid = "3f0c5e2a-5b1d-4c7e-9a8e-cri000000001"
    sid = w.run_pod("web-1", namespace="shop", uid=uid)
    try:
        ip = w.pod_ip(sid)
        assert w.held_by(sid) == [ip]
        # the CRI passed K8S_POD_NAMESPACE/NAME/UID; ADD recorded them beside the reservation
        assert _owner_meta(w, sid).get("k8s") == {"namespace": "shop", "name": "web-1", "uid": uid}
        rc, out = _show(w, "--ips", "--json")
        rows = [r for net in json.loads(out)["networks"] for r in net.get("reservations", [])
                if r.get("containerID") == sid]
        assert len(rows) == 1 and rows[0]["ip"] == ip, out
        assert rows[0]["pod"] == {"namespace": "shop", "name": "web-1", "uid": uid}, rows[0]
        rc, text = _show(w, "--ips")
        line = next(ln for ln in text.splitlines() if ln.startswith(ip + " "))
        assert "shop/web-1" in line and sid[:12] in line, text
    finally:
        _end(w, sid)
    assert w.held_by(sid) == []


def test_stop_twice_then_remove_releases(cri_world):
    w = cri_world
    sid = w.run_pod("stop-twice")
    ip = w.pod_ip(sid)
    assert w.held_by(sid) == [ip]
    w.stop_pod(sid)
    assert w.held_by(sid) == []           # StopPodSandbox tears the network down: DEL released it
    assert w.listed()[sid] == NOTREADY    # stopped, not removed: still listed
    w.stop_pod(sid)                       # kubelet retries: a second stop is no error and no second DEL
    assert w.held_by(sid) == []
    w.remove_pod(sid)
    assert sid not in w.listed()
    other = w.run_pod("stop-twice-after")
    try:
        assert w.held_by(other) == [w.pod_ip(other)]
    finally:
        _end(w, other)


def test_containerd_killed_and_restarted_with_pods_running(cri_world):
    w = cri_world
    ids = [w.run_pod(f"crash-{i}") for i in range(2)]
    try:
        before = {sid: (w.pod_ip(sid), w.pod_info(sid)["pid"]) for sid in ids}
        held = w.reservations()
        w.kill_containerd()
        # containerd is gone: its socket cannot be asked, which proves nothing
        rc, doc, err = w.gc("--grace", "0", "--runtime", f"cri:{w.sock}", "--network", w.network)
        assert doc["runtimes"][0]["available"] is False and "proves nothing" in err
        assert all(row[0] != "stranded" for row in kit.verdicts(doc, w.network).values())
        assert w.reservations() == held
        w.start_containerd()
        w.wait_cri()
        listed = w.listed()
        for sid in ids:
            assert listed.get(sid) == READY
            assert (w.pod_ip(sid), w.pod_info(sid)["pid"]) == before[sid]  # same pod, same pause process
        assert w.reservations() == held   # no DEL, no second ADD
        new = w.run_pod("crash-after")
        try:
            assert w.pod_ip(new) not in {ip for ip, _ in before.values()}
            assert w.held_by(new) == [w.pod_ip(new)]
        finally:
            _end(w, new)
    finally:
        _end(w, *ids)
    assert all(w.held_by(sid) == [] for sid in ids)


def test_gc_finds_a_lost_del_and_keeps_live_pinned_and_replacement_pods(cri_world):
    w = cri_world
    live = [w.run_pod(f"gc-live-{i}") for i in range(2)]
    pinned = w.run_pod("gc-pinned")
    made = live + [pinned]
    lost: "list[str]" = []
    replacements: "list[str]" = []
    try:
        # gc-pinned loses its pause process: the CRI marks it NOTREADY but keeps its netns mounted
        # (and its address) until kubelet stops it
        kit.run(w.mounts.argv(["kill", "-KILL", str(w.pod_info(pinned)["pid"])], netns=w.host), check=True)
        for _ in range(100):
            if w.listed().get(pinned) == NOTREADY:
                break
            time.sleep(0.1)
        assert w.listed().get(pinned) == NOTREADY

        # A pod is stopped and removed, but its DEL never reaches cni-ipam; right after, a new pod.
        # The CRI makes a pod's netns first, so it takes the lowest free inode number: the lost
        # pod's netns got one, and once the kernel has freed it the replacement usually gets the
        # same number (other namespaces made on the node meanwhile can take it: then again).
        reused = False
        lost_inos: "set[int | None]" = set()
        for attempt in range(4):
            sid = w.run_pod(f"gc-lost-{attempt}")
            made.append(sid)
            ip, ino = w.pod_ip(sid), _owner_meta(w, sid).get("netnsIno")
            open(w.lose_del, "w").close()
            try:
                _end(w, sid)
            finally:
                os.unlink(w.lose_del)
            made.remove(sid)
            lost.append(sid)
            assert sid not in w.listed() and w.held_by(sid) == [ip]
            time.sleep(1)  # the kernel frees a dead network namespace (and its number) asynchronously
            new = w.run_pod(f"gc-replacement-{attempt}")
            made.append(new)
            replacements.append(new)
            lost_inos.add(ino)
            if _ns_inode(w, _owner_meta(w, new)["netns"]) in lost_inos:
                reused = True
                break
        print(f"a replacement pod's netns got a lost pod's inode number: {reused} (after {len(lost)} lost pod(s))")

        keep = {sid: w.held_by(sid) for sid in live + [pinned] + replacements}
        assert all(len(v) == 1 for v in keep.values()), keep
        spec = f"cri:{w.sock}"
        rc, doc, err = w.gc("--grace", "0", "--runtime", spec, "--network", w.network)
        answer = doc["runtimes"][0]
        assert answer["available"] is True and answer["containers"] == len(keep), (answer, err)
        v = kit.verdicts(doc, w.network)
        for sid in lost:
            assert v[sid][0] == "stranded", v[sid]
        for sid in live + replacements:
            assert v[sid][0] == "live", (sid, v[sid])
        assert v[pinned][0] == "live", v[pinned]  # NOTREADY, but listed and its netns still pinned
        assert rc == 1  # dry run, something stranded
        # the same from the machine's PID namespace (a hostPID DaemonSet), where the kernel answers too
        rc, doc, err = w.gc_host_pid("--grace", "0", "--runtime", spec, "--network", w.network)
        assert doc["runtimes"][0]["available"] is True, err
        assert {sid: row[0] for sid, row in kit.verdicts(doc, w.network).items()} == \
            {sid: "stranded" if sid in lost else "live" for sid in v}, kit.verdicts(doc, w.network)

        rc, doc, err = w.gc("--grace", "0", "--runtime", spec, "--network", w.network, "--apply")
        assert rc == 0, err
        assert all(w.held_by(sid) == [] for sid in lost)
        assert {sid: w.held_by(sid) for sid in keep} == keep
        rc, doc, err = w.gc("--grace", "0", "--runtime", spec, "--network", w.network, "--apply")
        assert rc == 0 and doc["totals"]["released"] == 0

        # a runtime that cannot be asked proves nothing
        rc, doc, err = w.gc("--grace", "0", "--runtime", f"cri:{w.rt.dir}/nowhere.sock", "--network", w.network)
        assert doc["runtimes"][0]["available"] is False and "proves nothing" in err
    finally:
        _end(w, *made)
    assert all(w.held_by(sid) == [] for sid in made)
