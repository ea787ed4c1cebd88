"""Hostile input through the real entry point: property-based fuzzing (hypothesis) of stdin and every
CNI_* variable, in-process through ``cni_ipam.plugin.skel.plugin_main`` (fast) and a smaller sample
through the real executable; plus fixed cases for path traversal, symlinked/odd data directories,
symlinks planted in the network directory, huge input, invalid UTF-8, NaN and deep nesting.

The oracle (fuzzlib.check_call): one CNI error JSON with a code (never 999) and exit 1, or a valid
answer; no traceback, no hang, and nothing created, changed or removed in the sandbox outside the
network's data directory.  Size knobs: REL_FUZZ_EXAMPLES (in-process, default 800) and
REL_FUZZ_SUBPROCESS (default 40).
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_ipam.plugin import netconf as config
from cni_ipam.store.layout import bucket_of, index_field
from tests.helpers import plugin_argv
from tests.reliability import fuzzlib
from tests.reliability.conftest import size
from tests.reliability.relhelpers import inspect_network, net_conf, sub_env, tree_snapshot

FUZZ_SETTINGS = dict(deadline=None, derandomize=os.environ.get("REL_FUZZ_RANDOM") != "1", database=None,
                     suppress_health_check=list(HealthCheck))
COUNTER = {"inproc": 0, "subprocess": 0}


@pytest.fixture(scope="module")
def template():
    root = tempfile.mkdtemp(prefix="rel-fuzz-")
    box = fuzzlib.Sandbox(os.path.join(root, "t")).build()
    yield box
    shutil.rmtree(root, ignore_errors=True)


class _Clone:
    """A fresh copy of the template for one example; the default dataDir points into it."""

    def __init__(self, template):
        self.template = template

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="rel-fz-")
        self.box = self.template.clone(os.path.join(self.root, "s"))
        self.saved = config.DEFAULT_DATA_DIR
        config.DEFAULT_DATA_DIR = os.path.join(self.box.root, "default-data")
        return self.box

    def __exit__(self, *exc):
        config.DEFAULT_DATA_DIR = self.saved
        shutil.rmtree(self.root, ignore_errors=True)


def test_fuzz_in_process(template, capsys):
    @settings(max_examples=size("fuzz_examples", 800), **FUZZ_SETTINGS)
    @given(environ=fuzzlib.environ_strategy(), data=st.data())
    def one(environ, data):
        with _Clone(template) as box:
            stdin = data.draw(fuzzlib.stdin_strategy(box))
            problems = fuzzlib.run_one_inproc(box, environ, stdin)
            COUNTER["inproc"] += 1
            assert not problems, (environ, stdin[:500], problems)

    one()
    with capsys.disabled():
        print(f"\n[rel] fuzz in-process: {COUNTER['inproc']} inputs, 0 problems; outcomes (verb:code) "
              f"{dict(sorted(fuzzlib.OUTCOMES.items(), key=lambda kv: -kv[1]))}")


def _b(value):
    return value.encode("utf-8", "surrogateescape")


@st.composite
def environb_strategy(draw):
    env = {k.encode(): _b(v) for k, v in draw(fuzzlib.environ_strategy()).items()}
    # raw bytes the runtime might pass: invalid UTF-8 in any variable
    for key in (b"CNI_CONTAINERID", b"CNI_IFNAME", b"CNI_NETNS", b"CNI_ARGS"):
        if draw(st.integers(0, 5)) == 0:
            env[key] = draw(st.binary(min_size=1, max_size=30).filter(lambda b: b"\0" not in b))
    return env


def test_fuzz_subprocess(template, capsys):
    @settings(max_examples=size("fuzz_subprocess", 40), **FUZZ_SETTINGS)
    @given(environb=environb_strategy(), data=st.data())
    def one(environb, data):
        with _Clone(template) as box:
            stdin = data.draw(fuzzlib.stdin_strategy(box))
            if b"CNI_COMMAND" in environb and environb[b"CNI_COMMAND"] in (b"ADD", b"DEL", b"CHECK", b"GC"):
                # never let a subprocess fall back to the real /var/lib/cni/networks
                try:
                    conf = json.loads(stdin)
                    if (
                        isinstance(conf, dict)
                        and isinstance(conf.get("ipam"), dict)
                        and not conf["ipam"].get("dataDir")
                    ):
                        return
                    if isinstance(conf, dict) and not isinstance(conf.get("ipam"), dict):
                        return
                except Exception:  # noqa: BLE001
                    pass
            problems, _ = fuzzlib.run_one_subprocess(box, environb, stdin)
            COUNTER["subprocess"] += 1
            assert not problems, (environb, stdin[:500], problems)

    one()
    with capsys.disabled():
        print(f"\n[rel] fuzz subprocess: {COUNTER['subprocess']} inputs, 0 problems")


# --------------------------------------------------------------------------- fixed hostile cases
@pytest.fixture
def box(template):
    with _Clone(template) as b:
        yield b


def _call(box, command, conf, via="subprocess", **env):
    environ = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": env.get("cid", "rel-c9"),
        "CNI_IFNAME": env.get("ifname", "eth0"),
        "CNI_NETNS": "/var/run/netns/rel-none",
        "CNI_PATH": "/usr/lib/cni",
    }
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    if via == "inproc":
        problems = fuzzlib.run_one_inproc(box, environ, stdin)
        return problems, None
    environb = {k.encode(): _b(v) for k, v in environ.items()}
    return fuzzlib.run_one_subprocess(box, environb, stdin)


def _conf(box, **kw):
    conf = net_conf(box.data, name=fuzzlib.NET, subnets=("10.96.0.0/28", "fd00:96::/124"))
    conf.update(kw.pop("top", {}))
    conf["ipam"].update(kw)
    return conf


TRAVERSAL = ["../outside", "..", "../../etc", "a/../../outside", "rel-fz/../../outside", "/etc"]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_traversal_in_network_name(box, name):
    conf = _conf(box)
    conf["name"] = name
    problems, out = _call(box, "ADD", conf)
    assert not problems, problems
    assert out["code"] == 7 and "network name" in out["msg"], out


@pytest.mark.parametrize("cid", ["../../outside/victim", "..", "a/b", "/etc/passwd", "..\\x", "a" * 1025])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_traversal_in_container_id(box, cid, command):
    problems, out = _call(box, command, _conf(box), cid=cid)
    assert not problems, problems
    assert out["code"] == 4 and "CNI_CONTAINERID" in out["msg"], out


@pytest.mark.parametrize("ifname", ["..", ".", "a/b", "../x", "eth0:1", "x" * 16, "eth 0"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_traversal_in_ifname(box, ifname, command):
    problems, out = _call(box, command, _conf(box), ifname=ifname)
    assert not problems, problems
    assert out["code"] == 4, out


@pytest.mark.parametrize("which,expect", [("link-data", 0), ("outside/victim", 5), ("link-dangling", 5),
                                          ("relative", 7)])
def test_odd_data_dirs(box, which, expect):
    data_dir = which if which == "relative" else os.path.join(box.root, which)
    problems, out = _call(box, "ADD", _conf(box, dataDir=data_dir))
    assert not problems, problems
    if expect == 0:
        # a symlinked data directory is followed (as host-local does): the reservation lands in its target
        assert "ips" in out, out
        assert os.path.exists(os.path.join(box.data, fuzzlib.NET, out["ips"][0]["address"].split("/")[0]))
    else:
        assert out["code"] == expect, out
    with open(os.path.join(box.outside, "victim")) as fh:
        assert fh.read() == "do not touch\n"


def test_network_directory_is_a_symlink(box):
    os.symlink(box.outside + "/dir", os.path.join(box.data, "rel-fz2"))
    conf = _conf(box)
    conf["name"] = "rel-fz2"
    for command in ("ADD", "DEL", "CHECK", "GC"):
        if command == "GC":
            conf = dict(conf, cniVersion="1.1.0")
        problems, out = _call(box, command, conf)
        assert not problems, problems
        if out is not None:
            assert out["code"] in (5, 105), out
    assert os.listdir(box.outside + "/dir") == []


PLANTS = ["NEXT_IP", "lock", "last_reserved_ip.0", "last_reserved_ip.1", ".cni-ipam", ".cni-ipam/tmp",
          ".cni-ipam/owners", ".cni-ipam/state", ".cni-ipam/tmp/reserve", ".cni-ipam/tmp/write",
          ".cni-ipam/owners/rel-c9:eth0", ".cni-ipam/owners/rel-c1:eth0", ".cni-ipam/gc-stats.json",
          ".cni-ipam/gc-stats.json.tmp", ".cni-ipam/index", ".cni-ipam/files", ".cni-ipam/tmp/files",
          ".cni-ipam/index/" + str(bucket_of(index_field("rel-c9", "eth0"))),
          ".cni-ipam/index/" + str(bucket_of(index_field("rel-c1", "eth0")))]


@pytest.mark.parametrize("target", ["file", "dir"])
@pytest.mark.parametrize("plant", PLANTS)
def test_symlink_planted_in_network_dir(box, plant, target):
    """A symlink named like one of the plugin's files, pointing outside: no write follows it, and
    the answer is a result or a clean error (code 5)."""
    net = os.path.join(box.data, fuzzlib.NET)
    name = "10.96.0.4" if plant == "NEXT_IP" else plant
    path = os.path.join(net, name)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    victim = os.path.join(box.outside, "victim" if target == "file" else "dir")
    os.makedirs(os.path.dirname(path), exist_ok=True)  # e.g. the previous version's .cni-ipam/owners
    os.symlink(victim, path)
    outside_before = tree_snapshot(box.outside)
    answers = []
    for command, cid in (("ADD", "rel-c9"), ("CHECK", "rel-c9"), ("DEL", "rel-c9"), ("DEL", "rel-c1"), ("GC", None)):
        conf = _conf(box)
        if command == "GC":
            conf = dict(conf, cniVersion="1.1.0")
            conf["cni.dev/valid-attachments"] = [{"containerID": "rel-c2", "ifname": "eth0"}]
        environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid or "", "CNI_IFNAME": "eth0",
                   "CNI_NETNS": "/var/run/netns/rel-none", "CNI_PATH": "/usr/lib/cni"}
        stdin = json.dumps(conf).encode()
        proc = subprocess.run(plugin_argv(), input=stdin, env=sub_env(environ), capture_output=True, timeout=30)
        assert b"Traceback" not in proc.stderr, proc.stderr
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        if proc.returncode:
            assert isinstance(out, dict) and out.get("code") in (5, 105, 106), (command, out)
        answers.append((command, proc.returncode, out.get("code") if isinstance(out, dict) else None))
        if command == "ADD" and plant == "NEXT_IP" and proc.returncode == 0:
            assert "10.96.0.4/28" not in [ip["address"] for ip in out["ips"]], "handed out the planted name"
    assert tree_snapshot(box.outside) == outside_before, f"a write followed the planted {plant} symlink: {answers}"
    with open(os.path.join(box.outside, "victim")) as fh:
        assert fh.read() == "do not touch\n"
    if os.path.isdir(net) and not os.path.islink(os.path.join(net, ".cni-ipam")):
        allow = (name,) if os.path.islink(path) else ()
        st = inspect_network(net, allow_symlinks=allow, allow_tmp=plant.startswith(".cni-ipam/tmp"))
        assert all("symlink" in p or "stray" in p for p in st.problems), st.problems


@pytest.mark.parametrize("kind", ["fifo", "dir", "dev-zero", "missing"])
def test_resolv_conf_that_is_not_a_file(box, kind):
    """resolvConf pointing at a FIFO (nobody writing) must not hang the ADD; others fail cleanly."""
    path = {"fifo": os.path.join(box.root, "fifo"), "dir": box.outside, "dev-zero": "/dev/zero",
            "missing": os.path.join(box.root, "nope")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    problems, out = _call(box, "ADD", _conf(box, resolvConf=path))
    assert not problems, problems
    assert out["code"] == 7 and "resolvConf" in out["msg"], out


@pytest.mark.parametrize("case", ["stdin-20MiB", "deep-100000", "deep-995", "nan", "neg", "huge-number",
                                  "bad-utf8-stdin", "bad-utf8-env", "empty", "array", "null-bytes"])
def test_fixed_hostile_inputs(box, case):
    conf = _conf(box)
    env = {"CNI_COMMAND": b"ADD", "CNI_CONTAINERID": b"rel-c9", "CNI_IFNAME": b"eth0",
           "CNI_NETNS": b"/var/run/netns/rel-none", "CNI_PATH": b"/usr/lib/cni"}
    stdin = json.dumps(conf).encode()
    if case == "stdin-20MiB":
        stdin = b'{"name":"' + b"a" * (20 << 20) + b'"}'
    elif case.startswith("deep"):
        depth = int(case.split("-")[1])
        stdin = stdin[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
    elif case == "nan":
        conf["ipam"]["lockTimeout"] = float("nan")
        conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0", "mtu": float("nan")}]
        stdin = json.dumps(conf).encode()
    elif case == "neg":
        conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0", "mtu": -1}]
        stdin = json.dumps(conf).encode()
    elif case == "huge-number":
        stdin = stdin[:-1] + b',"n":1' + b"0" * 100000 + b"}"
    elif case == "bad-utf8-stdin":
        stdin = stdin.replace(b"rel-fz", b"rel-\xff\xfe")
    elif case == "bad-utf8-env":
        env["CNI_CONTAINERID"] = b"rel-\xff"
        env["CNI_IFNAME"] = b"e\xc3"
        env["CNI_ARGS"] = b"K8S_POD_NAME=\xff;IgnoreUnknown=1"
    elif case == "empty":
        stdin = b""
    elif case == "array":
        stdin = b"[" + stdin + b"]"
    elif case == "null-bytes":
        stdin = stdin.replace(b"rel-fz", b"rel\x00fz")
    problems, _ = fuzzlib.run_one_subprocess(box, {k.encode(): v for k, v in env.items()}, stdin, timeout=60)
    assert not problems, problems

