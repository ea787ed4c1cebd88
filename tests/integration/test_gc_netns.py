"""`cni-ipam gc` against real network namespaces (prefix gc-): ADD through the executable, make the
namespace go away, see the reservation classified stranded with its reason and reclaimed by --apply."""

import ipaddress
import json
import os
import subprocess
import time

import pytest

from cni_ipam.store.layout import bucket_of, format_line, index_field, owner_key, parse_line, read_boot_id
from cni_ipam.store.network import NetworkStore
from cni_ipam.store.snapshot import read_owner_index
from tests.helpers import ROOT, have_host_local, have_ip_tool, is_root, plugin_argv, run_host_local, run_plugin

pytestmark = pytest.mark.skipif(
    not (is_root() and have_ip_tool()), reason="needs root and iproute2 for network namespaces"
)

NET = "gcnet"


@pytest.fixture
def netns():
    """Factory of named namespaces gc-<pid>-<n>; removes whatever is left at the end."""
    made = []

    def make(tag):
        name = f"gc-{os.getpid()}-{tag}"
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def delete_netns(name):
    subprocess.run(["ip", "netns", "del", name], check=True)


def conf(data_dir, subnet="10.77.0.0/24", version="1.1.0"):
    return {
        "cniVersion": version,
        "name": NET,
        "type": "bridge",
        "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "subnet": subnet},
    }


def add(data_dir, cid, ns, ifname="eth0", **kw):
    rc, res, out, err = run_plugin(
        "ADD", conf(data_dir), container_id=cid, ifname=ifname, netns=f"/var/run/netns/{ns}", **kw
    )
    assert rc == 0, out + err
    return res["ips"][0]["address"].split("/")[0]


# gc runs in the host's PID namespace: the kernel answers for other namespaces only there (a walk
# of /proc, which a fresh PID namespace would make sure, proves nothing any more).
IN_PIDNS: list = []


def gc(data_dir, *args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        IN_PIDNS + plugin_argv() + ["gc", "--data-dir", str(data_dir), "--pidns-is-node", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = None
    if "--json" in args:
        report = json.loads(proc.stdout)
    return proc.returncode, report, proc.stdout, proc.stderr


def rows(report, net=NET):
    return {r["ip"]: r for r in report["networks"][net]["reservations"]}


def files(data_dir):
    d = os.path.join(str(data_dir), NET)
    return sorted(n for n in os.listdir(d) if n[0].isdigit())


def test_add_records_liveness_metadata(tmp_path, netns):
    ns = netns("meta")
    add(tmp_path, "cmeta", ns, cni_args="K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_UID=u-1")
    meta = read_owner_index(os.path.join(tmp_path, NET))[owner_key("cmeta", "eth0")]["meta"]
    st = os.stat(f"/var/run/netns/{ns}")
    assert meta["netns"] == f"/var/run/netns/{ns}"
    assert (meta["netnsDev"], meta["netnsIno"]) == (st.st_dev, st.st_ino)
    assert meta["bootId"] == read_boot_id() != ""
    assert abs(meta["created"] - time.time()) < 60
    assert meta["k8s"] == {"namespace": "prod", "name": "web-0", "uid": "u-1"}


def test_deleted_netns_is_stranded_and_reclaimed_live_one_untouched(tmp_path, netns):
    gone, alive = netns("gone"), netns("alive")
    ip_gone = add(tmp_path, "cgone", gone, cni_args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=batch-1")
    ip_alive = add(tmp_path, "calive", alive)
    delete_netns(gone)

    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--json")
    r = rows(report)
    assert rc == 1, (r, report["warnings"])
    assert (r[ip_gone]["state"], r[ip_gone]["reason"]) == ("stranded", "netns-gone")
    assert r[ip_gone]["k8s"]["name"] == "batch-1"
    assert (r[ip_alive]["state"], r[ip_alive]["reason"]) == ("live", "netns-alive")
    assert files(tmp_path) == sorted([ip_gone, ip_alive])  # dry run changed nothing

    rc, _, table, _ = gc(tmp_path, "--grace", "0")
    assert rc == 1 and ip_gone in table and "netns-gone" in table and "default/batch-1" in table
    assert ip_alive not in table  # live ones only with --all

    rc, _, table, _ = gc(tmp_path, "--grace", "0", "--apply")
    assert rc == 0, table
    assert "released" in table and "1 released" in table
    assert files(tmp_path) == [ip_alive]
    with open(os.path.join(tmp_path, NET, ".cni-ipam", "gc-stats.json")) as fh:
        stats = json.load(fh)
    assert stats["lastReleased"] == 1 and stats["releasedTotal"] == 1

    # idempotent; the runtime's late DEL still succeeds; the live pod keeps its address
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json")
    assert rc == 0 and report["totals"]["released"] == 0 and report["totals"]["stranded"] == 0
    assert run_plugin("DEL", conf(tmp_path), container_id="cgone", netns="")[0] == 0
    assert files(tmp_path) == [ip_alive]
    # the freed address can be handed out again
    again = netns("again")
    assert add(tmp_path, "cnew", again, cni_args=f"IP={ip_gone}") == ip_gone


def test_replaced_netns(tmp_path, netns):
    ns = netns("repl")
    ip = add(tmp_path, "crepl", ns)
    delete_netns(ns)
    subprocess.run(["ip", "netns", "add", ns], check=True)  # same path, another namespace
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--json")
    assert rc == 1
    assert rows(report)[ip]["reason"] == "netns-replaced"
    assert gc(tmp_path, "--grace", "0", "--apply")[0] == 0
    assert files(tmp_path) == []


def test_grace_period_is_respected(tmp_path, netns):
    ns = netns("young")
    ip = add(tmp_path, "cyoung", ns)
    delete_netns(ns)
    rc, report, _, _ = gc(tmp_path, "--apply", "--json")  # default grace: 300 s
    assert rc == 0
    assert (rows(report)[ip]["state"], rows(report)[ip]["reason"]) == ("live", "grace-period")
    assert files(tmp_path) == [ip]
    rc, report, _, _ = gc(tmp_path, "--apply", "--grace", "1", "--json")
    # the reservation is at most a few seconds old: one second of grace may or may not cover it
    if rows(report)[ip]["reason"] == "grace-period":
        time.sleep(1.1)
        rc, report, _, _ = gc(tmp_path, "--apply", "--grace", "1", "--json")
    assert rows(report)[ip]["reason"] == "netns-gone" and rows(report)[ip]["released"] is True
    assert files(tmp_path) == []


def _edit_owner(data_dir, cid, edit, ifname="eth0"):
    """Rewrite the owner index entry of (cid, ifname) with ``edit(entry)`` (its line in its bucket)."""
    b = bucket_of(index_field(cid, ifname))
    path = os.path.join(str(data_dir), NET, ".cni-ipam", "index", str(b))
    with open(path) as fh:
        lines = fh.read().splitlines()
    for i, line in enumerate(lines):
        entry = parse_line(line, b)
        if entry is not None and (entry["containerID"], entry["ifname"]) == (cid, ifname):
            edit(entry)
            lines[i] = format_line(cid, ifname, entry["ips"], entry["files"], entry["meta"], entry["seenBoot"])
    with open(path, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))


def _pretend_previous_boot(data_dir, cid, ifname="eth0"):
    """What a reboot leaves behind: the owner entry carries another boot id (the kernel's changes)."""
    _edit_owner(data_dir, cid, lambda e: e["meta"].update(bootId="00000000-0000-0000-0000-0000000000ff"), ifname)


def test_previous_boot_only_for_the_boot_unit(tmp_path, netns):
    a, b = netns("pbA"), netns("pbB")
    ip_old = add(tmp_path, "cold", a)
    ip_cur = add(tmp_path, "ccur", b)
    _pretend_previous_boot(tmp_path, "cold")
    delete_netns(a)
    delete_netns(b)
    rc, report, _, _ = gc(tmp_path, "--previous-boot-only", "--grace", "0", "--apply", "--json")
    assert rc == 0
    r = rows(report)
    assert (r[ip_old]["reason"], r[ip_old]["released"]) == ("previous-boot", True)
    assert (r[ip_cur]["state"], r[ip_cur]["reason"], r[ip_cur]["released"]) == ("live", "current-boot", False)
    assert files(tmp_path) == [ip_cur]
    # the full pass then finds the other one
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--json")
    assert rc == 1 and rows(report)[ip_cur]["reason"] == "netns-gone"


def test_valid_ids_and_runtime_cache(tmp_path, netns):
    ns, gone = netns("vl"), netns("vlgone")
    ip_live = add(tmp_path, "ckeep", ns)
    ip_gone = add(tmp_path, "cdrop", gone)
    cache = tmp_path / "results"
    cache.mkdir()
    (cache / f"{NET}-other-eth0").write_text("{}")
    ids = tmp_path / "ids"
    ids.write_text("# runtime's list\nsomething-else\n")
    rc, report, _, _ = gc(
        tmp_path, "--grace", "0", "--json", "--valid-ids-file", str(ids), "--runtime-cache", str(cache)
    )
    r = rows(report)
    assert rc == 0
    # alive namespace beats the lists; the dead one is stranded (namespace reason first)
    assert r[ip_live]["state"] == "live" and "valid IDs" in r[ip_live]["detail"]
    assert r[ip_gone]["state"] == "live"  # its namespace still exists
    delete_netns(gone)
    rc, report, _, _ = gc(
        tmp_path, "--grace", "0", "--json", "--valid-ids", "ckeep,cdrop", "--runtime-cache", str(cache)
    )
    assert rows(report)[ip_gone]["reason"] == "netns-gone"


def host_local_add(data_dir, netns, tag, cid):
    """One reservation written by Debian's host-local; returns (config, namespace name, address)."""
    if not have_host_local():
        pytest.skip("Debian's host-local is not installed")
    ns = netns(tag)
    c = conf(data_dir, version="1.0.0")
    rc, res, out, err = run_host_local("ADD", c, container_id=cid, netns=f"/var/run/netns/{ns}")
    assert rc == 0, out + err
    return c, ns, res["ips"][0]["address"].split("/")[0]


def test_host_local_reservations_are_unknown_until_asked(tmp_path, netns):
    c, ns, ip = host_local_add(tmp_path, netns, "hl", "hl1")
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json")
    assert rc == 0 and (rows(report)[ip]["state"], rows(report)[ip]["reason"]) == ("unknown", "no-metadata")
    assert files(tmp_path) == [ip]
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json", "--include-unknown", "--valid-ids", "hl1")
    assert rc == 0 and files(tmp_path) == [ip]
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json", "--include-unknown", "--valid-ids", "x")
    assert rc == 0 and rows(report)[ip]["reason"] == "not-in-valid-list" and files(tmp_path) == []
    assert run_host_local("DEL", c, container_id="hl1", netns=f"/var/run/netns/{ns}")[0] == 0
    # host-local still allocates in the directory we cleaned
    assert run_host_local("ADD", c, container_id="hl2", netns=f"/var/run/netns/{ns}")[0] == 0


def test_exit_codes(tmp_path, netns):
    rc, _, out, err = gc(tmp_path / "missing")  # a mistyped --data-dir is an error, not "nothing stranded"
    assert rc == 66 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert gc(tmp_path / "empty")[0] == 0 and "no networks" in gc(tmp_path / "empty")[2]
    ns = netns("ec")
    add(tmp_path, "cec", ns)
    assert gc(tmp_path, "--network", "nope")[0] == 4
    assert gc(tmp_path, "--network", NET)[0] == 0
    assert gc(tmp_path, "--valid-ids-file", str(tmp_path / "none"))[0] == 4
    assert gc(tmp_path, "--valid-ids-file", "-", stdin="# nothing\n")[0] == 4  # empty list refused
    assert gc(tmp_path, "--valid-ids-file", "-", stdin="cec\n")[0] == 0
    assert gc(tmp_path, "--runtime-cache", str(tmp_path / "no-cache"))[0] == 4
    assert gc(tmp_path, "--grace", "soon")[0] == 64  # usage error: the same code in every command
    rc, report, _, _ = gc(tmp_path / "empty", "--runtime-cache", str(tmp_path / "no-cache"), "--json")
    assert rc == 4 and "runtime cache" in report["error"]


def test_lock_held_means_partial_exit(tmp_path, netns):
    import fcntl

    ns = netns("lk")
    add(tmp_path, "clk", ns)
    fd = os.open(os.path.join(tmp_path, NET, "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rc, report, _, _ = gc(tmp_path, "--lock-timeout", "0.5", "--json")
    finally:
        os.close(fd)
    assert rc == 3 and "could not lock" in report["networks"][NET]["errors"][0]


def test_gc_apply_while_pods_start(tmp_path, netns):
    """ADDs racing with `gc --apply --grace 0`: every ADD keeps its address (the lock and the
    metadata written under it protect them), and no address is handed out twice."""
    ns = netns("race")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env["PYTHONPATH"] = ROOT
    data = json.dumps(conf(tmp_path)).encode()
    procs = []
    gcs = []
    for i in range(24):
        e = dict(
            env,
            CNI_COMMAND="ADD",
            CNI_CONTAINERID=f"race{i}",
            CNI_IFNAME="eth0",
            CNI_NETNS=f"/var/run/netns/{ns}",
            CNI_PATH="/usr/lib/cni",
        )
        p = subprocess.Popen(
            plugin_argv(), env=e, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        p.stdin.write(data)
        p.stdin.close()
        procs.append(p)
        if i % 4 == 0:
            gcs.append(
                subprocess.Popen(
                    plugin_argv() + ["gc", "--data-dir", str(tmp_path), "--grace", "0", "--apply", "--json"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        if len(procs) % 6 == 0:
            for q in procs[-6:]:
                q.wait(timeout=120)
    ips = []
    for p in procs:
        out = p.stdout.read()
        assert p.wait(timeout=120) == 0, out
        ips.append(json.loads(out)["ips"][0]["address"].split("/")[0])
    for g in gcs:
        out = g.stdout.read()
        assert g.wait(timeout=120) in (0, 1), out
        assert json.loads(out)["totals"]["released"] == 0
    assert len(set(ips)) == 24
    assert files(tmp_path) == sorted(ips)


# ---------------------------------------------------------------------- scale
def prefill(data_dir, count, ns_path):
    """``count`` reservations in host-local format plus owner entries with metadata: even ones
    from a previous boot, odd ones in this boot inside a live namespace."""
    st = os.stat(ns_path)
    boot = read_boot_id()
    net = os.path.join(str(data_dir), NET)
    index = os.path.join(net, ".cni-ipam", "index")
    os.makedirs(index)
    buckets: dict = {}
    base = int(ipaddress.ip_address("10.64.0.10"))
    created = time.time() - 3600
    for i in range(count):
        ip = str(ipaddress.ip_address(base + i))
        cid = f"bench{i:06d}"
        with open(os.path.join(net, ip), "w") as fh:
            fh.write(f"{cid}\r\neth0")
        meta = {
            "created": created,
            "bootId": "previous-boot" if i % 2 == 0 else boot,
            "netns": ns_path,
            "netnsDev": st.st_dev,
            "netnsIno": st.st_ino,
        }
        fst = os.stat(os.path.join(net, ip))  # the store believes meta only for the file it names
        line = format_line(cid, "eth0", [ip], {ip: [fst.st_ino, fst.st_ctime_ns]}, meta, boot)
        buckets.setdefault(bucket_of(index_field(cid, "eth0")), []).append(line + "\n")
    for b, lines in buckets.items():  # the rebuild at the first open keeps lines that name the very files
        with open(os.path.join(index, str(b)), "w") as fh:
            fh.write("".join(lines))
    with NetworkStore(str(data_dir), NET):  # index check once, so the timings measure GC only
        pass


def test_gc_scale_timing(tmp_path, netns, capsys):
    count = int(os.environ.get("CNI_IPAM_GC_BENCH", "2000"))
    ns = netns("bench")
    prefill(tmp_path, count, f"/var/run/netns/{ns}")
    t0 = time.monotonic()
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--json")
    dry = time.monotonic() - t0
    assert rc == 1
    dry_inner = report["elapsedSeconds"]
    assert report["totals"]["stranded"] == count // 2 + count % 2
    assert report["totals"]["live"] == count // 2
    t0 = time.monotonic()
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json")
    applied = time.monotonic() - t0
    assert rc == 0 and report["totals"]["released"] == count // 2 + count % 2
    assert len(files(tmp_path)) == count // 2
    with capsys.disabled():
        print(
            f"\n[gc scale] {count} reservations ({count // 2 + count % 2} stranded): "
            f"dry run {dry:.2f}s wall / {dry_inner:.2f}s pass, "
            f"apply {applied:.2f}s wall / {report['elapsedSeconds']:.2f}s pass"
        )
    assert dry < 120 and applied < 120


def test_include_unknown_uses_boot_ids_not_file_times(tmp_path, netns):
    """A live host-local file dated before this boot (no RTC before NTP, rsync -a) is
    not "previous boot"; the boot id under which the owner index first saw the file is the evidence."""
    (ip,) = host_local_add(tmp_path, netns, "hlboot", "hlb1")[2:]
    os.utime(os.path.join(tmp_path, NET, ip), (86400, 86400))  # 1970-01-02: long before any boot
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json", "--include-unknown")
    assert (rows(report)[ip]["state"], rows(report)[ip]["reason"], rows(report)[ip]["released"]) == (
        "unknown",
        "no-metadata",
        False,
    )
    assert files(tmp_path) == [ip]
    # the index saw this file under another boot: that is proof, with or without --include-unknown
    _edit_owner(tmp_path, "hlb1", lambda e: e.update(seenBoot="00000000-0000-0000-0000-0000000000ee"))
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--json")
    assert (rows(report)[ip]["state"], rows(report)[ip]["reason"]) == ("stranded", "previous-boot")
    assert "00000000-0000-0000-0000-0000000000ee" in rows(report)[ip]["detail"]
    _edit_owner(tmp_path, "hlb1", lambda e: e.update(seenBoot=read_boot_id()))
    rc, report, _, _ = gc(tmp_path, "--grace", "0", "--apply", "--json", "--include-unknown")
    assert rows(report)[ip]["state"] == "unknown" and files(tmp_path) == [ip]
