"""Hostile-input generation and the oracle shared by test_fuzz.py and scripts/reliability.py.

Each input is (environ, stdin bytes) for one call of the real entry point.  The oracle accepts only:
exit 0 with a valid answer for the verb (ADD: a result whose addresses are reserved on disk for the
caller; DEL/CHECK/GC/STATUS: nothing; VERSION: the version list), or exit 1 with exactly one CNI
error JSON carrying an integer code (never 999, the "internal error" of an unexpected exception)
and a message.  Never a traceback, never a hang, and nothing created, changed or removed in the
sandbox outside the network's data directory (a snapshot of the whole sandbox tree before/after).
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil

from hypothesis import strategies as st

from tests.reliability.relhelpers import inspect_network, result_addresses, run_inproc, tree_snapshot

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
NET = "rel-fz"


# --------------------------------------------------------------------------- the sandbox
class Sandbox:
    """<root>/data holds network rel-fz with reservations; <root>/outside holds victims that a path
    traversal or a followed symlink would touch; <root>/link-* are symlinks for dataDir."""

    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "data")
        self.outside = os.path.join(root, "outside")

    def build(self):
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "victim"), "w") as fh:
            fh.write("do not touch\n")
        os.makedirs(os.path.join(self.outside, "dir"))
        # relative targets, so that a copy of the sandbox points into the copy
        os.symlink("data", os.path.join(self.root, "link-data"))
        os.symlink("outside", os.path.join(self.root, "link-outside"))
        os.symlink("nowhere", os.path.join(self.root, "link-dangling"))
        from tests.reliability.relhelpers import net_conf

        conf = net_conf(self.data, name=NET, subnets=("10.96.0.0/28", "fd00:96::/124"))
        for cid in ("rel-c1", "rel-c2"):
            rc, _, raw = run_inproc("ADD", conf, container_id=cid)
            assert rc == 0, raw
        return self

    def clone(self, root):
        shutil.copytree(self.root, root, symlinks=True)
        return Sandbox(root)

    def data_dirs(self):
        r = self.root
        return [
            self.data,
            self.data + "/",
            self.data + "/../data",
            os.path.join(r, "link-data"),
            os.path.join(r, "outside", "victim"),
            os.path.join(r, "link-dangling"),
            os.path.join(r, "fresh", "deep"),
            os.path.join(r, "data", "..", "outside", "dir"),
            r + "/data//./",
            "data",
            "./data",
            "../" * 8 + "etc",
        ]


# --------------------------------------------------------------------------- strategies
NAMES = [NET, "rel-fz2", "..", ".", "../outside", "a/../../outside", "/etc", NET + "/../../outside", "-x", "a" * 201,
         "a" * 200, "ünï", "rel fz", "rel\nfz", "lock", ".cni-ipam", "rel-fz/", "", None, 7, ["rel-fz"], {"a": 1}]
CIDS = ["rel-c1", "rel-c2", "rel-c3", "../../outside/victim", "..", ".", "/etc/passwd", "a/b", "a" * 1025, "a" * 1024,
        "x\udcff", "", "rel-c1 ", " rel-c1", "rel-c1\n", "-a", "a:b", "ünï", "sha256-" + "0" * 64]
IFNAMES = ["eth0", "net1", "..", ".", "a/b", "a:b", "eth 0", "x" * 16, "x" * 15, "ü" * 8, "\udcff", "", "eth0\n", "\t"]
NETNS = ["/var/run/netns/rel-none", "", "/proc/self/ns/net", "../x", "x" * 5000, "\udcfe"]
CNI_ARGS = [
    "",
    "IgnoreUnknown=1",
    "IP=10.96.0.9",
    "IP=10.96.0.9,fd00:96::9",
    "IP=10.96.0.1",
    "IP=10.96.0.2",
    "K8S_POD_NAME=x;K8S_POD_NAMESPACE=y;K8S_POD_UID=z",
    "foo",
    "a=b",
    "IgnoreUnknown=maybe",
    "IP=notanip",
    "IP=",
    ";;;",
    "IgnoreUnknown=1;IP=1.2.3.4",
    "IP=10.96.0.9;IP=10.96.0.10",
    "=",
    "IgnoreUnknown=1;" + "x=y;" * 2000,
]
SUBNETS = ["10.96.0.0/28", "fd00:96::/124", "10.96.0.0/30", "10.96.0.0/31", "10.96.0.0/32", "10.0.0.0/8", "::/0",
           "fd00::/64", "300.1.1.1/24", "10.96.0.1/28", "10.96.0.0/33", "10.96.0.0", "", " 10.96.0.0/28 ",
           "usePodCidr", "0.0.0.0/0", "fe80::/10", "::ffff:10.96.0.0/124", "10.96.0.16/28"]
ADDRS = ["10.96.0.1", "10.96.0.2", "10.96.0.14", "10.96.0.15", "10.96.0.0", "fd00:96::1", "fd00:96::f", "1.2.3.4",
         "notanip", "", "10.96.0.300", "::", "::ffff:10.96.0.3"]
NUMBERS = [float("nan"), float("inf"), float("-inf"), -1, 0, 1e-9, 0.5, 1, 3600, 3601, 1e308, -0.0, 2 ** 64, True,
           "5", None, [], {}]

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def mostly(good, bad, good_in_ten=8):
    """``good`` most of the time, so that inputs get past validation and reach the store."""
    return st.integers(0, 9).flatmap(lambda i: good if i < good_in_ten else bad)


GOOD_SUBNETS = ["10.96.0.0/28", "10.96.0.0/29", "10.96.1.0/24", "fd00:96::/124", "fd00:97::/120"]


@st.composite
def range_entry(draw):
    entry = {"subnet": draw(mostly(st.sampled_from(GOOD_SUBNETS), st.sampled_from(SUBNETS) | junk))}
    for key in ("rangeStart", "rangeEnd", "gateway"):
        if draw(st.integers(0, 4)) == 0:
            entry[key] = draw(st.sampled_from(ADDRS) | junk)
    if draw(st.integers(0, 5)) == 0:
        entry["exclude"] = draw(st.lists(st.sampled_from(ADDRS + SUBNETS) | junk, max_size=4))
    return entry


@st.composite
def ipam_strategy(draw, box):
    ipam = {"type": draw(st.sampled_from(["host-local", "cni-ipam", ""]) | junk)}
    if draw(st.integers(0, 9)) > 0:
        ipam["dataDir"] = draw(mostly(st.just(box.data), st.sampled_from(box.data_dirs()) | junk, 6))
    kind = draw(st.integers(0, 4))
    if kind <= 2:
        ipam["ranges"] = draw(mostly(st.lists(st.lists(range_entry(), min_size=1, max_size=2), min_size=1, max_size=2),
                                     st.lists(st.lists(range_entry(), max_size=2), max_size=3) | junk))
    elif kind == 3:
        ipam.update(draw(range_entry()))
    if draw(st.integers(0, 3)) == 0:
        ipam["lockTimeout"] = draw(st.sampled_from(NUMBERS))
    if draw(st.integers(0, 3)) == 0:
        ipam["routes"] = draw(st.lists(st.fixed_dictionaries(
            {"dst": st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.0/8", "x", "10.0.0.1"]) | junk},
            optional={"gw": st.sampled_from(ADDRS) | junk, "mtu": st.sampled_from(NUMBERS),
                      "priority": st.sampled_from(NUMBERS)}), max_size=3) | junk)
    if draw(st.integers(0, 5)) == 0:
        ipam["exclude"] = draw(st.lists(st.sampled_from(ADDRS + SUBNETS) | junk, max_size=4) | junk)
    if draw(st.integers(0, 7)) == 0:
        ipam["resolvConf"] = draw(st.sampled_from(["/etc/resolv.conf", box.outside, box.outside + "/victim",
                                                   "/nonexistent", "", "relative"]) | junk)
    return ipam


@st.composite
def wild_conf(draw, box):
    """A config assembled from hostile pieces (reaches the validators)."""
    conf = {}
    if draw(st.integers(0, 9)) > 0:
        conf["cniVersion"] = draw(
            mostly(st.sampled_from(VERSIONS[3:]), st.sampled_from(VERSIONS + ("", "1.2.0", "1.0", "x")) | junk)
        )
    if draw(st.integers(0, 9)) > 0:
        conf["name"] = draw(mostly(st.sampled_from([NET, "rel-fz2"]), st.sampled_from(NAMES) | st.text(max_size=30)))
    if draw(st.integers(0, 9)) > 0:
        conf["ipam"] = draw(mostly(ipam_strategy(box), junk, 9))
    if draw(st.integers(0, 4)) == 0:
        conf["runtimeConfig"] = draw(st.fixed_dictionaries({}, optional={
            "ips": st.lists(st.sampled_from(ADDRS + ["10.96.0.9/28"]) | junk, max_size=3) | junk,
            "ipRanges": st.lists(st.lists(range_entry(), max_size=2), max_size=2) | junk}) | junk)
    if draw(st.integers(0, 5)) == 0:
        conf["args"] = {"cni": {"ips": draw(st.lists(st.sampled_from(ADDRS) | junk, max_size=3) | junk)}}
    if draw(st.integers(0, 5)) == 0:
        conf["prevResult"] = draw(junk | st.just({"ips": [{"address": "10.96.0.2/28"}]}))
    if draw(st.integers(0, 5)) == 0:
        conf["cni.dev/valid-attachments"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"containerID": st.sampled_from(CIDS) | junk, "ifname": st.sampled_from(IFNAMES) | junk}
                ),
                max_size=3,
            )
            | junk
        )
    if draw(st.integers(0, 6)) == 0:
        conf[draw(st.text(max_size=10))] = draw(junk)
    return conf


HOSTILE_VALUES = NAMES + CIDS[3:] + SUBNETS + ADDRS + NUMBERS + [[], {}, [[]], [{}], "x" * 10000]


@st.composite
def valid_conf(draw, box):
    """A valid config (as a runtime sends) with 0-3 fields replaced by hostile values or removed."""
    sets = draw(st.sampled_from([["10.96.0.0/28"], ["10.96.0.0/28", "fd00:96::/124"], ["fd00:96::/124"],
                                 ["10.96.0.0/29", "fd00:97::/120"], ["10.96.1.0/24"]]))
    ranges = [[{"subnet": s}] for s in sets]
    if draw(st.integers(0, 4)) == 0:
        ranges[0][0]["rangeStart"] = "10.96.0.3" if ":" not in sets[0] else sets[0].split("/")[0] + "3"
    ipam = {"type": "host-local", "dataDir": box.data, "ranges": ranges}
    if draw(st.integers(0, 3)) == 0:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.96.0.1", "mtu": 1400}]
    if draw(st.integers(0, 3)) == 0:
        ipam["exclude"] = ["10.96.0.2", "10.96.0.8/30", "fd00:96::2"]
    if draw(st.integers(0, 3)) == 0:
        ipam["lockTimeout"] = 2
    conf = {
        "cniVersion": draw(st.sampled_from(VERSIONS + ("1.0.0", "1.1.0") * 3)),
        "name": draw(st.sampled_from([NET, NET, "rel-fz2"])),
        "ipam": ipam,
    }
    extra = draw(st.integers(0, 6))
    if extra == 0:
        conf["runtimeConfig"] = {"ips": [draw(st.sampled_from(["10.96.0.9/28", "10.96.0.2/28", "fd00:96::9/124"]))]}
    elif extra == 1:
        conf["args"] = {"cni": {"ips": [draw(st.sampled_from(["10.96.0.9", "10.96.0.1", "fd00:96::9"]))]}}
    elif extra == 2:
        conf["prevResult"] = {"cniVersion": "1.0.0", "ips": [{"address": "10.96.0.2/28"}]}
    elif extra == 3:
        conf["cni.dev/valid-attachments"] = [{"containerID": "rel-c2", "ifname": "eth0"}]
    # mutate
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        slots = []
        _slots(conf, slots)
        holder, key = draw(st.sampled_from(slots))
        if draw(st.integers(0, 4)) == 0 and isinstance(holder, dict):
            holder.pop(key, None)
        else:
            holder[key] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES) | junk))  # never share, never cycle
    return conf


def _slots(value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((value, k))
            _slots(v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((value, i))
            _slots(v, out)


def conf_strategy(box):
    return mostly(valid_conf(box), wild_conf(box), 8)


def _env_text(values, good):
    # real environment strings never hold NUL; os.environ decodes bad UTF-8 as \udcXX
    return mostly(st.sampled_from(good), st.sampled_from(values) | st.text(max_size=40).filter(lambda s: "\0" not in s))


@st.composite
def environ_strategy(draw):
    """A runtime's environment for a call, with 0-2 variables replaced by hostile values."""
    env = {
        "CNI_PATH": "/usr/lib/cni",
        "CNI_COMMAND": draw(st.sampled_from(["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "GC", "STATUS", "VERSION"])),
        "CNI_CONTAINERID": draw(st.sampled_from(CIDS[:3] + ["rel-c4", "a", "A.b_c-9", "a" * 300])),
        "CNI_IFNAME": draw(st.sampled_from(["eth0", "eth0", "net1", "x" * 15])),
        "CNI_NETNS": "/var/run/netns/rel-none",
    }
    if draw(st.integers(0, 4)) == 0:
        env["CNI_ARGS"] = draw(st.sampled_from(CNI_ARGS[:7]))
    pools = {"CNI_COMMAND": list(VERBS) + ["", "add", "ADD ", "FOO"], "CNI_CONTAINERID": CIDS, "CNI_IFNAME": IFNAMES,
             "CNI_NETNS": NETNS, "CNI_ARGS": CNI_ARGS, "CNI_PATH": ["", "/nonexistent:/tmp", "x" * 5000]}
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(pools)))
        if draw(st.integers(0, 5)) == 0:
            env.pop(key, None)
        else:
            env[key] = draw(st.sampled_from(pools[key]) | st.text(max_size=40).filter(lambda s: "\0" not in s))
    return env


def _nest(depth, kind):
    opener, closer = ("[", "]") if kind == "list" else ('{"a":', "}")
    return opener * depth + "1" + closer * depth


@st.composite
def stdin_strategy(draw, box):
    kind = draw(st.integers(0, 29))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        depth = draw(st.sampled_from([10, 500, 990, 1000, 5000, 100000]))
        doc = ('{"cniVersion":"1.0.0","name":"rel-fz",'
               '"ipam":{"dataDir":"%s","ranges":[[{"subnet":"10.96.0.0/28"}]]},"x":%s}')
        return (doc % (box.data, _nest(depth, draw(st.sampled_from(["list", "dict"]))))).encode()
    if kind == 2:
        size = draw(st.sampled_from([1 << 16, 1 << 20, 3 << 20]))
        conf = {"cniVersion": "1.0.0", "name": draw(st.sampled_from([NET, "a" * size])),
                "ipam": {"dataDir": box.data, "ranges": [[{"subnet": "10.96.0.0/28"}]]}, "pad": "p" * size}
        return json.dumps(conf).encode()
    data = json.dumps(draw(conf_strategy(box)), allow_nan=True, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )
    if kind == 3 and data:
        pos = draw(st.integers(0, len(data)))
        data = (
            data[:pos]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xf4\x90\x80\x80"]))
            + data[pos:]
        )
    return data


# --------------------------------------------------------------------------- the oracle
def allowed_dirs(box, stdin):
    """The network directory (and the data directory chain) this call may touch."""
    try:
        conf = json.loads(stdin.decode("utf-8"))
    except Exception:
        return None, []
    if not isinstance(conf, dict):
        return None, []
    name = conf.get("name")
    ipam = conf.get("ipam") if isinstance(conf.get("ipam"), dict) else {}
    data_dir = ipam.get("dataDir")
    from cni_ipam.plugin import netconf as config

    if data_dir in (None, ""):
        data_dir = config.DEFAULT_DATA_DIR
    if not isinstance(data_dir, str) or not isinstance(name, str) or not os.path.isabs(data_dir) or "\0" in data_dir:
        return None, []
    real = os.path.realpath(os.path.normpath(data_dir))
    chain = []
    p = real
    while p.startswith(box.root + "/") and p != box.root:
        chain.append(os.path.relpath(p, box.root))
        p = os.path.dirname(p)
    net = os.path.join(real, name)
    return (net if os.path.normpath(net).startswith(real + "/") else None), chain


class Verdict:
    def __init__(self):
        self.problems = []


def check_call(box, environ, stdin, rc, raw, stderr="", before=None):
    """Judge one call; returns a list of problems (empty when the answer is acceptable)."""
    problems = []
    cmd = environ.get("CNI_COMMAND")
    if "Traceback" in stderr:
        problems.append(f"traceback on stderr: {stderr[-800:]}")
    if rc not in (0, 1):
        problems.append(f"exit status {rc}")
    doc = None
    if raw.strip():
        try:
            doc = json.loads(raw)
        except ValueError:
            problems.append(f"stdout is not one JSON document: {raw[:300]!r}")
    if rc == 1:
        if not isinstance(doc, dict) or not isinstance(doc.get("code"), int) or not isinstance(doc.get("msg"), str):
            problems.append(f"exit 1 without a CNI error: {raw[:300]!r}")
        elif doc["code"] == 999:
            problems.append(f"internal error (a bug): {doc}")
    elif rc == 0:
        if cmd == "VERSION":
            if not isinstance(doc, dict) or "supportedVersions" not in doc:
                problems.append(f"bad VERSION answer {raw[:200]!r}")
        elif cmd == "ADD":
            try:
                addrs = result_addresses(doc)
            except Exception as exc:  # noqa: BLE001 - any malformed result is a finding
                addrs = []
                problems.append(f"malformed ADD result {raw[:300]!r}: {exc}")
            if not addrs:
                problems.append(f"ADD succeeded without addresses: {raw[:300]!r}")
            net, _ = allowed_dirs(box, stdin)
            for ip in addrs:
                path = os.path.join(net or "/nonexistent", str(ip))
                try:
                    with open(path, "rb") as fh:
                        owner = fh.read().decode("utf-8", "replace").split("\r\n")[0].strip()
                except OSError:
                    problems.append(f"ADD answered {ip} but {path} does not exist")
                    continue
                if owner != environ.get("CNI_CONTAINERID", "").strip():
                    problems.append(f"ADD answered {ip} but it is reserved for {owner!r}")
        elif raw.strip():
            problems.append(f"{cmd} printed {raw[:200]!r} on success")
    if before is not None:
        problems += check_tree(box, stdin, before)
    return problems


def check_tree(box, stdin, before):
    net, chain = allowed_dirs(box, stdin)
    skip = [net] if net else []
    after = tree_snapshot(box.root, skip=skip)
    problems = []
    for path in set(before) | set(after):
        if before.get(path) == after.get(path):
            continue
        full = os.path.join(box.root, path)
        if net and (full == net or full.startswith(net + "/")):
            continue
        if path not in before and path in chain and after[path][0] == "d":
            continue  # the data directory (and its parents) may be created
        if path not in before and net and os.path.realpath(full) == os.path.realpath(net):
            continue
        problems.append(f"{path}: {before.get(path)} -> {after.get(path)}")
    if net and os.path.isdir(net) and not os.path.islink(net):
        st = inspect_network(net)
        problems += [f"network directory: {p}" for p in st.problems]
    return problems


def run_one_inproc(box, environ, stdin):
    from cni_ipam.__main__ import VERBS
    from cni_ipam.plugin.skel import plugin_main

    before = tree_snapshot(box.root, skip=[p for p in [allowed_dirs(box, stdin)[0]] if p])
    out = io.StringIO()
    rc = plugin_main(VERBS, dict(environ), stdin, out)
    _tally(environ, rc, out.getvalue())
    return check_call(box, environ, stdin, rc, out.getvalue(), before=before)


OUTCOMES = {}


def _tally(environ, rc, raw):
    code = 0
    if rc:
        try:
            code = json.loads(raw).get("code")
        except Exception:  # noqa: BLE001
            code = "?"
    key = f"{environ.get('CNI_COMMAND')}:{code}"
    OUTCOMES[key] = OUTCOMES.get(key, 0) + 1


def run_one_subprocess(box, environb, stdin, timeout=30):
    import subprocess

    from tests.helpers import plugin_argv
    from tests.reliability.relhelpers import ROOT

    env = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith(("CNI_", "REL_"))}
    env[b"PYTHONPATH"] = ROOT.encode()
    env.update(environb)
    environ = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in environb.items()}
    before = tree_snapshot(box.root, skip=[p for p in [allowed_dirs(box, stdin)[0]] if p])
    try:
        proc = subprocess.run(plugin_argv(), input=stdin, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"hang: no answer within {timeout}s"], None
    _tally(environ, proc.returncode, proc.stdout.decode("utf-8", "replace"))
    problems = check_call(box, environ, stdin, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                          stderr=proc.stderr.decode("utf-8", "replace"), before=before)
    if proc.stderr.strip():
        problems.append(f"unexpected stderr: {proc.stderr[-300:]!r}")
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        doc = None
    return problems, doc
