"""``cni-ipam gc --runtime``: liveness from the real runtimes (podman 4.3, containerd 1.6).

A container removed behind the plugin's back (its DEL never arrived) is found; a running one never
is.  Where the namespace rules already prove it (cni-ipam's own metadata: the netns is gone) that
reason stays; where nothing else can (reservations written by host-local, no metadata) the runtime's
answer is the proof: ``not-in-runtime``, naming the runtime asked.  A runtime that cannot be asked
proves nothing.
"""

import os
import subprocess
import time

from tests.runtime import kit


HL = "/usr/lib/cni/host-local"


def _podman_spec(w):
    return f"podman:{w.rt.dir}/root:{w.rt.dir}/runroot"


def test_podman_removed_container_is_found_running_never(podman_world):
    w = podman_world
    lose_ci = kit.lossy_ipam(w.rt, "lossy-cni-ipam", w.rt.plugin_exe)
    lose_hl = kit.lossy_ipam(w.rt, "lossy-host-local", HL)
    kit.bridge_conflist(w.rt, "podlossy", "10.233.0.0/24", f"rt{w.rt.token}bl", ipam_type="lossy-cni-ipam")
    kit.bridge_conflist(w.rt, "podhl", "10.234.0.0/24", f"rt{w.rt.token}bh", ipam_type="lossy-host-local")
    names = ("gc-live-ci", "gc-gone-ci", "gc-live-hl", "gc-gone-hl")
    try:
        for name in names:
            network = "podlossy" if name.endswith("ci") else "podhl"
            w.podman("run", "-d", "--name", name, *w.ulimits, "--network", network,
                     "--rootfs", w.rootfs, "sleep", "600", check=True)
        ids = {name: w.container_id(name) for name in names}
        for marker in (lose_ci, lose_hl):
            open(marker, "w").close()
        w.podman("rm", "-f", "-t", "0", "gc-gone-ci", "gc-gone-hl", check=True)
        for marker in (lose_ci, lose_hl):
            os.unlink(marker)
        held = {owner.split("\r\n")[0] for owner in
                list(w.rt.reservations("podlossy").values()) + list(w.rt.reservations("podhl").values())}
        assert {ids["gc-gone-ci"], ids["gc-gone-hl"]} <= held  # the DELs were lost: both still reserved

        env = kit.clean_env(CONTAINERS_CONF=w.conf)
        common = ("--network", "podlossy", "--network", "podhl", "--include-unknown")

        # without the runtime: host-local's reservation (no metadata) cannot be judged
        rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", *common, env=env)
        hl = kit.verdicts(doc, "podhl")
        assert hl[ids["gc-gone-hl"]][0] == "unknown"

        # inside the grace period, the runtime's answer changes nothing
        rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--runtime", _podman_spec(w), *common, env=env)
        assert kit.verdicts(doc, "podhl")[ids["gc-gone-hl"]][:2] == ("live", "grace-period")

        # a runtime that cannot be asked proves nothing
        rc, doc, err = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", "--runtime", f"podman:{w.rt.dir}/nowhere",
                                     *common, env=env)
        assert "proves nothing" in err and "nowhere" in err
        assert kit.verdicts(doc, "podhl")[ids["gc-gone-hl"]][0] == "unknown"
        assert doc["runtimes"][0]["available"] is False

        # asked: the removed containers are stranded, the running ones never
        rc, doc, _ = kit.gc_report(
            w.mounts, w.rt, w.host, "--grace", "0", "--runtime", _podman_spec(w), *common, env=env
        )
        assert rc == 1  # dry run, stranded found
        assert doc["runtimes"][0]["available"] is True and doc["runtimes"][0]["containers"] >= 2
        ci, hl = kit.verdicts(doc, "podlossy"), kit.verdicts(doc, "podhl")
        # podman removed its netns: the kernel says so where it can answer, else the runtime decides
        assert ci[ids["gc-gone-ci"]][:2] in (("stranded", "netns-gone"), ("stranded", "not-in-runtime"))
        assert ci[ids["gc-live-ci"]][0] == "live"
        state, reason, detail = hl[ids["gc-gone-hl"]]
        assert (state, reason) == ("stranded", "not-in-runtime") and "podman" in detail
        assert hl[ids["gc-live-hl"]][0] == "unknown"  # running: never stranded

        # the same through podman's REST API socket
        sock = os.path.join(w.rt.dir, "podman.sock")
        service = subprocess.Popen(w.argv("system", "service", "--time", "0", f"unix://{sock}"), env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                assert time.monotonic() < deadline and service.poll() is None, "podman system service did not start"
                time.sleep(0.1)
            rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", "--runtime", f"podman-api:{sock}",
                                       *common, env=env)
            hl = kit.verdicts(doc, "podhl")
            assert hl[ids["gc-gone-hl"]][:2] == ("stranded", "not-in-runtime")
            assert hl[ids["gc-live-hl"]][0] == "unknown"
        finally:
            service.terminate()
            service.wait(20)

        # --apply releases exactly the removed containers' addresses, once
        rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", "--apply", "--runtime", _podman_spec(w),
                                   *common, env=env)
        assert rc == 0
        left = {owner.split("\r\n")[0] for owner in
                list(w.rt.reservations("podlossy").values()) + list(w.rt.reservations("podhl").values())}
        assert left == {ids["gc-live-ci"], ids["gc-live-hl"]}
        rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", "--apply", "--runtime", _podman_spec(w),
                                   *common, env=env)
        assert rc == 0 and doc["totals"]["released"] == 0
    finally:
        w.podman("rm", "-f", "-t", "0", *names)


def test_containerd_removed_container_is_found_running_never(containerd_world):
    w = containerd_world
    # ctr run --cni uses the first conflist of /etc/cni/net.d (ours): a host-local network first,
    # for two containers, then cni-ipam's again.
    hl_conf = kit.bridge_conflist(w.rt, "ctrhl", "10.235.0.0/24", f"rt{w.rt.token}ch", ipam_type="host-local",
                                  file_name="00-ctrhl.conflist")
    try:
        w.run_detached("gc-live-hl")
        w.run_detached("gc-gone-hl")
    finally:
        os.unlink(hl_conf)
    w.run_detached("gc-live-ci")
    w.run_detached("gc-gone-ci")
    try:
        w.wait_reserved("gc-gone-ci")
        w.remove_behind_the_plugins_back("gc-gone-hl")
        w.remove_behind_the_plugins_back("gc-gone-ci")
        hl_owners = {o.split("\r\n")[0] for o in w.rt.reservations("ctrhl").values()}
        assert {w.cni_id("gc-live-hl"), w.cni_id("gc-gone-hl")} == hl_owners

        spec = f"containerd:{w.sock}"
        common = ("--network", "ctrhl", "--network", "ctrnet", "--include-unknown")
        rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", "--runtime", spec, *common)
        assert doc["runtimes"][0]["available"] is True
        hl, ci = kit.verdicts(doc, "ctrhl"), kit.verdicts(doc, "ctrnet")
        state, reason, detail = hl[w.cni_id("gc-gone-hl")]
        assert (state, reason) == ("stranded", "not-in-runtime") and "containerd" in detail
        assert hl[w.cni_id("gc-live-hl")][0] == "unknown"  # running, no metadata: never stranded
        assert ci[w.cni_id("gc-gone-ci")][0] == "stranded"  # /proc/<pid>/ns/net is gone (and containerd agrees)
        assert ci[w.cni_id("gc-live-ci")][0] == "live"

        # a socket that is not there proves nothing
        rc, doc, err = kit.gc_report(
            w.mounts, w.rt, w.host, "--grace", "0", "--runtime", f"containerd:{w.rt.dir}/no.sock", *common
        )
        assert "proves nothing" in err
        assert kit.verdicts(doc, "ctrhl")[w.cni_id("gc-gone-hl")][0] == "unknown"

        rc, doc, _ = kit.gc_report(w.mounts, w.rt, w.host, "--grace", "0", "--apply", "--runtime", spec, *common)
        assert rc == 0
        assert {o.split("\r\n")[0] for o in w.rt.reservations("ctrhl").values()} == {w.cni_id("gc-live-hl")}
        assert w.held_by(w.cni_id("gc-gone-ci")) == [] and len(w.held_by(w.cni_id("gc-live-ci"))) == 1
    finally:
        for name in ("gc-live-hl", "gc-live-ci"):
            w.remove_behind_the_plugins_back(name)
