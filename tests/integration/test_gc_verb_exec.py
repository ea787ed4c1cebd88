"""The CNI 1.1 GC and STATUS verbs through the executable, as libcni's GCNetworkList and
GetStatusNetworkList call them (config on stdin, CNI_COMMAND only), next to Debian's host-local."""

import json
import os

import pytest

from tests.helpers import have_host_local, run_host_local, run_plugin

NET = "gcverb"


def conf(data_dir, subnet="10.78.0.0/24", version="1.1.0", **extra):
    c = {"cniVersion": version, "name": NET, "type": "bridge",
         "ipam": {"type": "cni-ipam", "dataDir": str(data_dir), "subnet": subnet}}
    c.update(extra)
    return c


def add(c, cid, ifname="eth0"):
    rc, res, out, err = run_plugin("ADD", c, container_id=cid, ifname=ifname, netns="/var/run/netns/gc-verb-none")
    assert rc == 0, out + err
    return res["ips"][0]["address"].split("/")[0]


def verb(command, c):
    """GC/STATUS as libcni runs them: no container ID, interface or namespace in the environment."""
    rc, parsed, out, err = run_plugin(command, c, container_id=None, ifname=None, netns=None)
    assert "Traceback" not in err
    return rc, parsed, out


def files(data_dir):
    d = os.path.join(str(data_dir), NET)
    return sorted(n for n in os.listdir(d) if n[0].isdigit())


def test_gc_verb_releases_what_the_runtime_does_not_list(tmp_path):
    c = conf(tmp_path)
    keep = add(c, "pod-a", "eth0")
    add(c, "pod-a", "net1")
    add(c, "pod-b", "eth0")
    # libcni 1.2 sends the list under both keys
    attachments = [{"containerID": "pod-a", "ifname": "eth0"}]
    rc, parsed, out = verb(
        "GC", dict(c, **{"cni.dev/valid-attachments": attachments, "cni.dev/attachments": attachments})
    )
    assert (rc, out.strip()) == (0, "")
    assert files(tmp_path) == [keep]
    # CHECK of the kept attachment still passes; DEL of a collected one is a no-op success
    assert run_plugin("CHECK", c, container_id="pod-a", netns="/var/run/netns/gc-verb-none")[0] == 0
    assert run_plugin("DEL", c, container_id="pod-b", netns="")[0] == 0


def test_gc_verb_without_a_list_releases_nothing(tmp_path):
    c = conf(tmp_path)
    add(c, "pod-a")
    assert verb("GC", c)[0] == 0
    assert verb("GC", dict(c, **{"cni.dev/valid-attachments": None}))[0] == 0
    assert len(files(tmp_path)) == 1
    assert verb("GC", dict(c, **{"cni.dev/valid-attachments": []}))[0] == 0
    assert files(tmp_path) == []


def test_gc_verb_errors_are_cni_json(tmp_path):
    c = conf(tmp_path)
    add(c, "pod-a")
    rc, parsed, _ = verb("GC", dict(c, cniVersion="1.0.0", **{"cni.dev/valid-attachments": []}))
    assert rc == 1 and parsed["code"] == 1 and "1.1.0" in parsed["msg"]
    rc, parsed, _ = verb("GC", dict(c, **{"cni.dev/valid-attachments": {"containerID": "pod-a"}}))
    assert rc == 1 and parsed["code"] == 7
    assert len(files(tmp_path)) == 1


def test_gc_verb_collects_host_local_reservations_and_host_local_keeps_working(tmp_path):
    if not have_host_local():
        pytest.skip("Debian's host-local is not installed (apt-get install containernetworking-plugins)")
    ours = add(conf(tmp_path), "pod-a")
    hl_conf = conf(tmp_path, version="1.0.0")
    rc, res, out, err = run_host_local("ADD", hl_conf, container_id="hl-1", netns="/var/run/netns/gc-verb-none")
    assert rc == 0, out + err
    hl_ip = res["ips"][0]["address"].split("/")[0]
    assert (
        verb("GC", dict(conf(tmp_path), **{"cni.dev/valid-attachments": [{"containerID": "pod-a", "ifname": "eth0"}]}))[
            0
        ]
        == 0
    )
    assert files(tmp_path) == [ours]
    rc, res, out, err = run_host_local(
        "ADD", hl_conf, container_id="hl-2", netns="/var/run/netns/gc-verb-none", cni_args=f"IP={hl_ip}"
    )
    assert rc == 0, out + err  # the collected address is free for host-local too
    assert sorted(files(tmp_path)) == sorted([ours, hl_ip])


def test_status_exhausted_then_recovers_after_del(tmp_path):
    c = conf(tmp_path, subnet="10.78.0.0/29")
    c["ipam"]["statusOnExhaustion"] = "fail"  # a full range fails STATUS only when asked
    assert verb("STATUS", c)[:2] == (0, None)
    for i in range(5):
        add(c, f"pod-{i}")
    rc, parsed, _ = verb("STATUS", c)
    assert rc == 1 and parsed["code"] == 50 and "10.78.0.1-10.78.0.6" in parsed["msg"]
    rc, parsed, _, _ = run_plugin("ADD", c, container_id="pod-x", netns="/var/run/netns/gc-verb-none")
    assert rc == 1 and parsed["code"] == 100  # STATUS told the truth
    assert run_plugin("DEL", c, container_id="pod-2", netns="")[0] == 0
    assert verb("STATUS", c)[:2] == (0, None)
    add(c, "pod-x")
    assert verb("STATUS", c)[1]["code"] == 50


def test_status_and_gc_after_exhaustion_by_gc(tmp_path):
    """The runtime's usual sequence after a crash: STATUS says full, GC with the real list frees."""
    c = conf(tmp_path, subnet="10.78.0.0/29")
    c["ipam"]["statusOnExhaustion"] = "fail"  # a full range fails STATUS only when asked
    for i in range(5):
        add(c, f"pod-{i}")
    assert verb("STATUS", c)[1]["code"] == 50
    live = [{"containerID": f"pod-{i}", "ifname": "eth0"} for i in (0, 1)]
    assert verb("GC", dict(c, **{"cni.dev/valid-attachments": live}))[0] == 0
    assert verb("STATUS", c)[:2] == (0, None)
    assert len(files(tmp_path)) == 2
    stats = json.load(open(os.path.join(tmp_path, NET, ".cni-ipam", "gc-stats.json")))
    assert stats["lastReleased"] == 3 and stats["lastRunSource"] == "gc-verb"


def test_status_data_dir_not_writable(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    rc, parsed, _ = verb("STATUS", conf(blocker / "sub"))
    assert rc == 1 and parsed["code"] == 50 and "not writable" in parsed["msg"]


# ---------------------------------------------------------------------- through libcni
DRIVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libcni-driver", "cnidriver")


@pytest.fixture
def libcni_env(tmp_path):
    """A runtime built on libcni (tests/libcni-driver) running bridge + cni-ipam in gc- namespaces."""
    import subprocess

    from tests.helpers import CNI_BIN_DIR, ROOT, have_ip_tool, is_root, plugin_argv

    if not (is_root() and have_ip_tool()):
        pytest.skip("needs root and iproute2 for network namespaces")
    if not os.access(DRIVER, os.X_OK):
        pytest.skip("tests/libcni-driver/cnidriver is not built (scripts/setup.d/20-libcni-driver.sh)")
    if not os.access(os.path.join(CNI_BIN_DIR, "bridge"), os.X_OK):
        pytest.skip("Debian's bridge plugin is not installed")
    tag = os.getpid() % 100000
    bindir, confdir, cache = tmp_path / "bin", tmp_path / "net.d", tmp_path / "cache"
    for d in (bindir, confdir, cache):
        d.mkdir()
    wrapper = bindir / "cni-ipam"
    wrapper.write_text("#!/bin/sh\nPYTHONPATH=%s exec %s \"$@\"\n" % (ROOT, " ".join(plugin_argv())))
    wrapper.chmod(0o755)
    bridge = f"gc-b{tag}"
    (confdir / "gclibcni.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "gclibcni",
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True,
                     "ipam": {"type": "cni-ipam", "dataDir": str(tmp_path / "data"), "subnet": "10.79.0.0/24"}}],
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"NETCONFPATH": str(confdir), "CNI_PATH": f"{bindir}:{CNI_BIN_DIR}", "CNI_CACHE_DIR": str(cache)})
    made = []

    def netns(name):
        full = f"gc-{tag}-{name}"
        subprocess.run(["ip", "netns", "del", full], capture_output=True)
        subprocess.run(["ip", "netns", "add", full], check=True)
        made.append(full)
        return f"/var/run/netns/{full}"

    def driver(*args, **extra):
        e = dict(env, **extra)
        return subprocess.run([DRIVER, *args], env=e, capture_output=True, text=True, timeout=120)

    yield {"netns": netns, "driver": driver, "data": tmp_path / "data" / "gclibcni", "cache": cache, "env": env}
    for full in made:
        subprocess.run(["ip", "netns", "del", full], capture_output=True)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_libcni_gc_keeps_cached_attachments_and_frees_the_lost_one(libcni_env):
    import subprocess

    from tests.helpers import ROOT, plugin_argv

    drv, netns = libcni_env["driver"], libcni_env["netns"]
    ips = {}
    for cid in ("libcni-a", "libcni-b"):
        p = drv("add", "gclibcni", netns(cid), CNI_CONTAINERID=cid)
        assert p.returncode == 0, p.stdout + p.stderr
        ips[cid] = json.loads(p.stdout)["ips"][0]["address"].split("/")[0]
    # an attachment the runtime lost track of: reserved, but no result in libcni's cache
    lost_ns = netns("lost")
    rc, res, out, err = run_plugin(
        "ADD",
        {
            "cniVersion": "1.0.0",
            "name": "gclibcni",
            "type": "bridge",
            "ipam": {"type": "cni-ipam", "dataDir": str(libcni_env["data"].parent), "subnet": "10.79.0.0/24"},
        },
        container_id="libcni-lost",
        netns=lost_ns,
    )
    assert rc == 0, out + err
    lost_ip = res["ips"][0]["address"].split("/")[0]
    assert sorted(n for n in os.listdir(libcni_env["data"]) if n[0].isdigit()) == sorted([*ips.values(), lost_ip])

    # the admin pass reads the same cache: the lost one is flagged, but its namespace still lives
    env = dict(libcni_env["env"], PYTHONPATH=ROOT)
    env.pop("CNI_PATH")
    p = subprocess.run(plugin_argv() + ["gc", "--data-dir", str(libcni_env["data"].parent), "--grace", "0", "--json",
                                        "--runtime-cache", str(libcni_env["cache"] / "results")],
                       env=env, capture_output=True, text=True, timeout=120)
    rows = {r["ip"]: r for r in json.loads(p.stdout)["networks"]["gclibcni"]["reservations"]}
    assert p.returncode == 0
    assert rows[lost_ip]["reason"] == "netns-alive" and "result cache" in rows[lost_ip]["detail"]
    assert rows[ips["libcni-a"]]["reason"] == "netns-alive" and "cache" not in rows[ips["libcni-a"]]["detail"]

    # the runtime's GC: valid attachments = what libcni has cached
    p = drv("gc", "gclibcni")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cni-ipam (ipam of bridge) ok" in p.stderr
    assert sorted(n for n in os.listdir(libcni_env["data"]) if n[0].isdigit()) == sorted(ips.values())
    p = drv("status", "gclibcni")
    assert p.returncode == 0, p.stdout + p.stderr
    # the kept attachments still tear down normally
    for cid in ips:
        p = drv("del", "gclibcni", f"/var/run/netns/gc-{os.getpid() % 100000}-{cid}", CNI_CONTAINERID=cid)
        assert p.returncode == 0, p.stdout + p.stderr
    assert [n for n in os.listdir(libcni_env["data"]) if n[0].isdigit()] == []
