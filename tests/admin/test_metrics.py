"""`cni-ipam metrics`: exposition parsed back with prometheus_client's own text parser."""

import ipaddress
import json
import os
import subprocess
import sys
import time

import pytest

from cni_ipam.admin import liveness
from cni_ipam.store import gcstats
from cni_ipam.store.network import NetworkStore
from tests.helpers import ROOT, have_host_local, run_admin, run_host_local

parser = pytest.importorskip("prometheus_client.parser")


def write_conf(conf_dir, name, ipam, data_dir):
    ipam = dict(ipam, dataDir=str(data_dir))
    ipam.setdefault("type", "cni-ipam")
    doc = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "bridge", "ipam": ipam}]}
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / f"10-{name}.conflist").write_text(json.dumps(doc))
    return doc


def reserve(data_dir, network, items, meta):
    with NetworkStore(str(data_dir), network) as st:
        for ip, cid in items:
            addr = ipaddress.ip_address(ip)
            assert st.reserve(addr, cid, "eth0")
            st.save_owner(cid, "eth0", [addr], dict(meta))


def metrics(*args):
    return run_admin("metrics", *args)


def samples(text):
    """{(name, frozenset(labels)): value} and {family name: type}."""
    values, types = {}, {}
    for fam in parser.text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return values, types


def key(name, **labels):
    return (name, frozenset(labels.items()))


@pytest.fixture
def prepared(tmp_path):
    """ops-m1: dual stack, 10 + 16 addresses, 3 + 1 reserved, 1 stranded (previous boot), 1 unknown (a
    vanished netns path with no recorded identity proves nothing),
    a GC pass recorded; ops-m2: a directory with no conf file."""
    data, conf = tmp_path / "data", tmp_path / "conf"
    data.mkdir()
    write_conf(conf, "ops-m1", {"ranges": [
        [{"subnet": "10.71.0.0/28", "rangeStart": "10.71.0.2", "rangeEnd": "10.71.0.11"}],
        [{"subnet": "fd00:71::/112", "rangeStart": "fd00:71::100", "rangeEnd": "fd00:71::10f"}],
    ]}, data)
    boot = liveness.read_boot_id()
    old = time.time() - 3600
    alive = tmp_path / "alive"
    alive.write_text("")
    st = os.stat(alive)
    reserve(data, "ops-m1", [("10.71.0.2", "live"), ("fd00:71::100", "live")],
            {"created": old, "bootId": boot, "netns": str(alive), "netnsDev": st.st_dev, "netnsIno": st.st_ino})
    reserve(data, "ops-m1", [("10.71.0.3", "gone")], {"created": old, "bootId": boot, "netns": str(tmp_path / "gone")})
    reserve(data, "ops-m1", [("10.71.0.4", "reboot")], {"created": old, "bootId": "other-boot"})
    with NetworkStore(str(data), "ops-m1"):  # record_gc_stats wants the lock held
        gcstats.record_gc_stats(
            str(data), "ops-m1", "test", True, {"stranded": 3}, released=3, errors=0, now=1700000000.0
        )
        gcstats.record_gc_stats(
            str(data), "ops-m1", "test", True, {"stranded": 2}, released=2, errors=0, now=1700000600.0
        )
        gcstats.record_gc_stats(
            str(data), "ops-m1", "test", False, {"stranded": 2}, released=0, errors=0, now=1700000900.0
        )
    (data / "ops-m2").mkdir()
    (data / "ops-m2" / "10.72.0.9").write_text("hl\r\neth0")
    return tmp_path


def check_values(text):
    v, types = samples(text)
    s0 = dict(network="ops-m1", range_set="0", family="ipv4", ranges="10.71.0.0/28[10.71.0.2-10.71.0.11]")
    s1 = dict(network="ops-m1", range_set="1", family="ipv6", ranges="fd00:71::/112[fd00:71::100-fd00:71::10f]")
    assert v[key("cni_ipam_range_set_size", **s0)] == 10
    assert v[key("cni_ipam_range_set_reserved", **s0)] == 3
    assert v[key("cni_ipam_range_set_free", **s0)] == 7
    assert v[key("cni_ipam_range_set_utilization_ratio", **s0)] == pytest.approx(0.3)
    assert v[key("cni_ipam_range_set_size", **s1)] == 16
    assert v[key("cni_ipam_range_set_reserved", **s1)] == 1
    assert v[key("cni_ipam_range_set_utilization_ratio", **s1)] == pytest.approx(1 / 16)
    assert v[key("cni_ipam_network_reservations", network="ops-m1")] == 4
    assert v[key("cni_ipam_network_reservations", network="ops-m2")] == 1
    assert v[key("cni_ipam_network_config_known", network="ops-m1")] == 1
    assert v[key("cni_ipam_network_config_known", network="ops-m2")] == 0
    assert v[key("cni_ipam_stranded_reservations", network="ops-m1", reason="netns-gone")] == 0
    assert v[key("cni_ipam_stranded_reservations", network="ops-m1", reason="previous-boot")] == 1
    assert v[key("cni_ipam_stranded_reservations", network="ops-m1", reason="netns-replaced")] == 0
    assert v[key("cni_ipam_reservations_liveness", network="ops-m1", state="live")] == 2
    assert v[key("cni_ipam_reservations_liveness", network="ops-m1", state="stranded")] == 1
    assert v[key("cni_ipam_reservations_liveness", network="ops-m1", state="unknown")] == 1
    assert v[key("cni_ipam_reservations_liveness", network="ops-m2", state="unknown")] == 1
    assert v[key("cni_ipam_gc_last_run_timestamp_seconds", network="ops-m1")] == 1700000900.0
    assert v[key("cni_ipam_gc_last_apply_timestamp_seconds", network="ops-m1")] == 1700000600.0
    assert v[key("cni_ipam_gc_last_reclaimed", network="ops-m1")] == 2
    assert v[key("cni_ipam_gc_reclaimed_total", network="ops-m1")] == 5
    assert v[key("cni_ipam_gc_reclaimed_total", network="ops-m2")] == 0
    assert key("cni_ipam_gc_last_run_timestamp_seconds", network="ops-m2") not in v  # never ran: no sample
    assert abs(v[key("cni_ipam_metrics_generated_timestamp_seconds")] - time.time()) < 120
    assert not any(n == "cni_ipam_range_set_size" and dict(lb).get("network") == "ops-m2" for n, lb in v)
    assert types["cni_ipam_gc_reclaimed"] == "counter" and types["cni_ipam_range_set_size"] == "gauge"


def test_stdout_exposition(prepared):
    rc, out, err = metrics("--data-dir", str(prepared / "data"), "--conf-dir", str(prepared / "conf"))
    assert rc == 0, err
    check_values(out)


def test_textfile_is_written_atomically(prepared):
    tf = prepared / "textfile"
    tf.mkdir()
    (tf / "cni_ipam.prom").write_text("# stale\n")
    ino = os.stat(tf / "cni_ipam.prom").st_ino
    rc, out, err = metrics(
        "--data-dir", str(prepared / "data"), "--conf-dir", str(prepared / "conf"), "--textfile-dir", str(tf)
    )
    assert rc == 0 and out == "", err
    assert sorted(os.listdir(tf)) == ["cni_ipam.prom"]  # no temporary file left behind
    assert os.stat(tf / "cni_ipam.prom").st_ino != ino  # replaced by rename, not rewritten in place
    check_values((tf / "cni_ipam.prom").read_text())
    rc, _, err = metrics("--data-dir", str(prepared / "data"), "--textfile-dir", str(tf), "--textfile-name", "x.txt")
    assert rc == 64 and ".prom" in err  # usage error: the same code in every command
    rc, _, err = metrics("--data-dir", str(prepared / "data"), "--textfile-dir", str(prepared / "no-such-dir"))
    assert rc == 1 and "no-such-dir" in err
    rc, out, err = metrics("--data-dir", str(prepared / "no-such-data"), "--textfile-dir", str(tf))
    assert rc == 66 and "does not exist" in err and out == ""  # a mistyped --data-dir is not an empty success


@pytest.mark.skipif(not have_host_local(), reason="Debian's host-local is not installed")
def test_host_local_directory(tmp_path):
    data, conf = tmp_path / "data", tmp_path / "conf"
    doc = write_conf(conf, "ops-mhl", {"type": "host-local", "ranges": [[{"subnet": "10.73.0.0/29"}]]}, data)
    p = dict(doc["plugins"][0], name=doc["name"], cniVersion=doc["cniVersion"])
    for i in range(2):
        assert run_host_local("ADD", p, container_id=f"m{i}")[0] == 0
    rc, out, err = metrics("--data-dir", str(data), "--conf-dir", str(conf))
    assert rc == 0, err
    v, _ = samples(out)
    labels = dict(network="ops-mhl", range_set="0", family="ipv4", ranges="10.73.0.0/29")
    assert (v[key("cni_ipam_range_set_size", **labels)], v[key("cni_ipam_range_set_reserved", **labels)]) == (5, 2)
    assert v[key("cni_ipam_reservations_liveness", network="ops-mhl", state="unknown")] == 2
    assert not os.path.exists(data / "ops-mhl" / ".cni-ipam")


def test_admin_modules_load_prometheus_and_pyroute2_only_when_a_command_needs_them():
    """(What the plugin path imports is checked once, in tests/integration/test_plugin_imports.py.)"""
    code = (
        "import sys, cni_ipam.admin.show, cni_ipam.admin.metrics, cni_ipam.admin.lint, cni_ipam.admin.plan\n"
        "print([m for m in ('prometheus_client', 'pyroute2') if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.split("\n")[0] == "[]", (
        proc.stderr
    )  # even the admin modules load them only when a command needs them


# ---------------------------------------------------------------------------------- the textfile
def test_textfile_mode_is_0644_whatever_the_umask(tmp_path):
    """prometheus_client's writer left the umask's mode: 0666 under umask 000."""
    from cni_ipam.admin import metrics as m

    old = os.umask(0)
    try:
        path = m.write_textfile(str(tmp_path), [], now=1.0)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["cni_ipam.prom"]
    assert "cni_ipam_metrics_generated_timestamp_seconds 1.0" in open(path).read()


def test_textfile_never_follows_planted_links(tmp_path):
    """main opened '<file>.<pid>.<thread>' with a plain open(): a symlink planted there was followed
    (root overwrote the link's target) and then renamed over the textfile."""
    import threading

    from cni_ipam.admin import metrics as m

    out = tmp_path / "textfile"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = out / "cni_ipam.prom"
    os.symlink(victim, f"{path}.{os.getpid()}.{threading.current_thread().ident}")  # prometheus_client's name
    os.symlink(victim, path)  # and the textfile itself
    m.write_textfile(str(out), [], now=2.0)
    assert victim.read_text() == "precious\n"
    assert not os.path.islink(path) and "cni_ipam_metrics_generated_timestamp_seconds 2.0" in path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o644
    leftovers = sorted(n for n in os.listdir(out) if n != "cni_ipam.prom")
    assert leftovers == [
        f"cni_ipam.prom.{os.getpid()}.{threading.current_thread().ident}"
    ]  # the planted link, untouched


def test_textfile_writer_leaves_nothing_when_it_fails(tmp_path):
    from cni_ipam.admin import metrics as m

    out = tmp_path / "textfile"
    out.mkdir()
    (out / "cni_ipam.prom").mkdir()  # a directory in the way: the rename fails
    with pytest.raises(OSError):
        m.write_textfile(str(out), [], now=3.0)
    assert sorted(os.listdir(out)) == ["cni_ipam.prom"]
