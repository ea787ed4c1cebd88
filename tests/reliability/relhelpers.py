"""Shared pieces of the reliability suite (also used by scripts/reliability.py).

* ``inspect_network`` - an independent reader of the on-disk contract that lists every problem a
  network directory can have: empty/partial/foreign reservation files, stray or temporary files,
  symlinks, an owner index that claims to be current but is not, an owner with two addresses in one
  range set.  It never trusts ``cni_ipam.store.network``: it re-implements the freshness rule itself.
* ``run_inproc`` - one CNI call through ``cni_ipam.plugin.skel.plugin_main`` in this process (fast).
* ``kill_argv`` / ``count_ops`` - run the real plugin under ``killwrap.py``, which SIGKILLs it just
  before its N-th file-system mutation (crash injection without a hook in the core).
* ``Storm`` - the concurrency storm: many processes (ours and Debian's host-local) doing random
  ADD/DEL/CHECK on one network, with an event log from which duplicates and leaks are computed.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import helpers  # noqa: E402
from tests.helpers import HOST_LOCAL, CNI_BIN_DIR, plugin_argv  # noqa: E402

KILLWRAP = os.path.join(HERE, "killwrap.py")
PREFIX = "rel-"
ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


# --------------------------------------------------------------------------- configs
def net_conf(data_dir, name="rel-net", subnets=("10.99.0.0/27", "fd00:99::/123"), version="1.0.0", **ipam_extra):
    """A network config with one range set per subnet (both plugins read the same)."""
    ipam = {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": s}] for s in subnets]}
    ipam.update(ipam_extra)
    return {"cniVersion": version, "name": name, "ipam": ipam}


def cni_env(command, container_id="c1", ifname="eth0", netns="/var/run/netns/rel-none", cni_args=None):
    return helpers.cni_env(command, container_id, ifname, netns, cni_args)


def run_inproc(command, conf, **kw):
    """One call through the real entry point in this process: (exit status, parsed JSON or None, raw)."""
    from cni_ipam.__main__ import VERBS
    from cni_ipam.plugin.skel import plugin_main

    out = io.StringIO()
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    rc = plugin_main(VERBS, cni_env(command, **kw), data, out)
    raw = out.getvalue()
    try:
        parsed = json.loads(raw) if raw.strip() else None
    except ValueError:
        parsed = None
    return rc, parsed, raw


def result_addresses(result):
    """Addresses (ipaddress objects) listed in an ADD result of any version."""
    out = []
    if not isinstance(result, dict):
        return out
    for entry in result.get("ips") or []:
        out.append(ipaddress.ip_interface(entry["address"]).ip)
    for key in ("ip4", "ip6"):
        if isinstance(result.get(key), dict):
            out.append(ipaddress.ip_interface(result[key]["ip"]).ip)
    return out


def sub_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "REL_"))}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- on-disk inspection
def _boot_id():
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class NetworkState:
    """What a network directory holds, read without the plugin's code."""

    def __init__(self):
        self.reservations = {}  # ip -> (cid, ifname or None)
        self.owners = {}  # owner file name -> parsed JSON (or None when unreadable)
        self.tmp_leftovers = []
        self.stale_entries = {}  # owner entry -> addresses it lists that it no longer holds
        self.index_current = False
        self.problems = []

    def by_owner(self):
        out = {}
        for ip, (cid, ifname) in self.reservations.items():
            out.setdefault((cid, ifname), set()).add(ip)
        return out

    def assert_ok(self, context=""):
        assert not self.problems, f"{context}: network directory is inconsistent: {self.problems}"


def _owner_key(cid, ifname):
    key = f"{cid}:{ifname or ''}"
    if len(key.encode()) > 200:
        import hashlib

        key = "sha256-" + hashlib.sha256(key.encode()).hexdigest()
    return key


def inspect_network(net_dir, range_subnets=(), allow_tmp=False, allow_symlinks=()):
    """Read ``net_dir`` and list every violation of the on-disk contract in ``state.problems``.

    ``allow_tmp``: temporary files in ``.cni-ipam/tmp`` are acceptable (right after a crash; the next
    call must clean them).  ``allow_symlinks``: names a test planted on purpose.
    """
    st = NetworkState()
    p = st.problems
    if not os.path.lexists(net_dir):
        return st
    for name in sorted(os.listdir(net_dir)):
        path = os.path.join(net_dir, name)
        if name in allow_symlinks and os.path.islink(path):
            continue
        if os.path.islink(path):
            p.append(f"symlink {name} in the network directory")
            continue
        if name == "lock":
            if not os.path.isfile(path):
                p.append("lock is not a regular file")
            continue
        if name == ".cni-ipam":
            continue
        if name.startswith("last_reserved_ip."):
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                ipaddress.ip_address(data.decode().strip())
            except (UnicodeDecodeError, ValueError):
                p.append(f"{name} holds {data!r}, not an address")
            continue
        try:
            addr = ipaddress.ip_address(name)
        except ValueError:
            p.append(f"stray file {name!r} in the network directory")
            continue
        if str(addr) != name:
            p.append(f"reservation file {name!r} is not in canonical form")
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8", "replace")
        if not text.strip():
            p.append(f"empty reservation file {name}")
            continue
        cid, sep, ifname = text.strip().partition("\r\n")
        if not ID_RE.fullmatch(cid) or (sep and not ifname) or "\n" in ifname:
            p.append(f"reservation file {name} has malformed content {data!r}")
            continue
        st.reservations[addr] = (cid, ifname if sep else None)

    meta = os.path.join(net_dir, ".cni-ipam")
    if os.path.islink(meta):
        if ".cni-ipam" not in allow_symlinks:
            p.append(".cni-ipam is a symlink")
        return st
    if os.path.isdir(meta):
        tmp = os.path.join(meta, "tmp")
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            st.tmp_leftovers = sorted(os.listdir(tmp))
            if st.tmp_leftovers and not allow_tmp:
                p.append(f"temporary files left behind: {st.tmp_leftovers}")
        for extra in os.listdir(meta):
            if extra not in ("tmp", "owners", "index", "state", "files") and not extra.endswith(".json"):
                # other helpers may keep bookkeeping files here (e.g. gc stats); temp names are not ok
                if "tmp" in extra or extra.startswith("."):
                    st.tmp_leftovers.append(extra)
                    if not allow_tmp:
                        p.append(f"stray file .cni-ipam/{extra}")
        owners = os.path.join(meta, "owners")  # the previous version's index (migrated by a rebuild)
        if os.path.isdir(owners) and not os.path.islink(owners):
            for name in os.listdir(owners):
                try:
                    with open(os.path.join(owners, name), "rb") as fh:
                        st.owners[name] = json.loads(fh.read())
                except (OSError, ValueError):
                    st.owners[name] = None
        index = os.path.join(meta, "index")
        if os.path.isdir(index) and not os.path.islink(index):
            for name in os.listdir(index):
                # one line per attachment: cid TAB ifname TAB "ip inode ctime"[,...] TAB JSON tail
                try:
                    with open(os.path.join(index, name), "rb") as fh:
                        text = fh.read().decode()
                except (OSError, UnicodeDecodeError):
                    p.append(f"unreadable index bucket .cni-ipam/index/{name}")
                    continue
                for line in text.split("\n"):
                    if not line:
                        continue
                    fields = line.split("\t")
                    if len(fields) != 4:
                        p.append(f"malformed index line in bucket {name}: {line!r}")
                        continue
                    cid, ifname, files, _ = fields
                    st.owners[_owner_key(cid, ifname or None)] = {
                        "ips": [item.split(" ")[0] for item in files.split(",")]
                    }
        st.index_current = _index_current(net_dir, meta)
    if st.index_current:
        # The marker says the index is up to date.  Contract (store.py): every reservation file is
        # listed under its owner's entry; an entry may also list addresses that someone else
        # (host-local) released since - lookups check the file's owner, so those are never believed.
        want = {}
        for ip, (cid, ifname) in st.reservations.items():
            want.setdefault(_owner_key(cid, ifname), set()).add(str(ip))
        have = {k: set((v or {}).get("ips", [])) for k, v in st.owners.items()}
        missing = {k: sorted(ips - have.get(k, set())) for k, ips in want.items() if ips - have.get(k, set())}
        if missing:
            p.append(f"owner index marked current but misses reservations (entry: addresses): {missing}")
        for k, ips in have.items():
            extra = sorted(ips - want.get(k, set()))
            if extra:
                st.stale_entries[k] = extra
    # No owner holds two addresses of one range set (host-local's "duplicate allocation").
    nets = [ipaddress.ip_network(s) for s in range_subnets]
    for owner, ips in st.by_owner().items():
        for net in nets:
            inside = sorted(str(ip) for ip in ips if ip in net)
            if len(inside) > 1:
                p.append(f"{owner} holds {inside} in {net}")
    return st


def _index_current(net_dir, meta):
    try:
        with open(os.path.join(meta, "state"), "rb") as fh:
            state = json.loads(fh.read())
        dst = os.stat(net_dir)
    except (OSError, ValueError):
        return False
    return (
        isinstance(state, dict)
        and state.get("mtime") == dst.st_mtime_ns
        and state.get("ino") == dst.st_ino
        and state.get("boot") == _boot_id()
    )


def tree_snapshot(root, skip=()):
    """{relative path: (type, mode, size, mtime_ns, link target)} of everything under root."""
    snap = {}
    skip = tuple(os.path.normpath(s) for s in skip)
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.normpath(full) in skip:
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.normpath(full) in skip:
                continue
            stt = os.lstat(full)
            target = os.readlink(full) if os.path.islink(full) else None
            kind = "l" if target is not None else ("d" if os.path.isdir(full) else "f")
            # a directory's own mtime changes with its entries: compare entries, not dir mtimes
            snap[os.path.relpath(full, root)] = (kind, stt.st_mode, stt.st_size if kind == "f" else 0,
                                                 stt.st_mtime_ns if kind == "f" else 0, target)
    return snap


# --------------------------------------------------------------------------- crash injection
def kill_argv():
    return [sys.executable, KILLWRAP]


def run_killed(conf, command, kill_at, container_id, ifname="eth0", stop=False, timeout=60):
    """Run the plugin and SIGKILL (or SIGSTOP, returning the Popen) it before mutation ``kill_at``."""
    env = sub_env({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
                   "CNI_NETNS": "/var/run/netns/rel-none", "CNI_PATH": CNI_BIN_DIR,
                   "REL_KILL_AT": str(kill_at)})
    if stop:
        env["REL_SIGNAL"] = "STOP"
        proc = subprocess.Popen(
            kill_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        proc.stdin = None
        return proc
    proc = subprocess.run(kill_argv(), input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=timeout)
    return proc


def count_ops(conf, command, container_id, ifname="eth0"):
    """Run the plugin once under killwrap without killing; returns (exit status, [mutation names])."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix=PREFIX + "ops-", delete=False) as fh:
        log = fh.name
    try:
        env = sub_env({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
                       "CNI_NETNS": "/var/run/netns/rel-none", "CNI_PATH": CNI_BIN_DIR, "REL_OPS_LOG": log})
        proc = subprocess.run(kill_argv(), input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
        with open(log, encoding="utf-8") as fh:
            ops = [line.rstrip("\n") for line in fh if line.strip()]
        return proc.returncode, ops, proc
    finally:
        os.unlink(log)


# --------------------------------------------------------------------------- concurrency storm
class Event:
    __slots__ = ("worker", "op", "plugin", "cid", "ifname", "t0", "t1", "rc", "code", "msg", "addrs", "killed")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class Storm:
    """Random ADD/DEL/CHECK from ``workers`` threads, each running one plugin process at a time.

    Container IDs are partitioned by worker, so each worker knows exactly which of its containers
    are live.  ``host_local_share`` of the ADD/DEL/CHECK calls go to Debian's host-local on the same
    directory.  ``chaos`` is the probability of SIGKILLing a call after a random delay (a crash at a
    random point); the worker then does what a runtime does (DEL until it succeeds).
    """

    def __init__(self, data_dir, ops, workers=16, host_local_share=0.3, chaos=0.0, seed=1,
                 name="rel-storm", subnets=("10.99.0.0/27", "fd00:99::/123"), max_live=2, ifnames=("eth0", "net1")):
        self.conf = net_conf(data_dir, name=name, subnets=subnets)
        self.net_dir = os.path.join(data_dir, name)
        self.subnets = subnets
        self.ops = ops
        self.workers = workers
        self.hl_share = host_local_share if os.access(HOST_LOCAL, os.X_OK) else 0.0
        self.chaos = chaos
        self.seed = seed
        self.max_live = max_live
        self.ifnames = ifnames
        self.events = []
        self.errors = []
        self.live = {}  # (cid, ifname) -> set of addresses
        self._lock = threading.Lock()
        self._budget = ops
        self.stdin = json.dumps(self.conf).encode()

    def _take(self):
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def _call(self, rnd, op, plugin, cid, ifname, worker):
        argv = plugin_argv() if plugin == "ours" else [HOST_LOCAL]
        env = sub_env({"CNI_COMMAND": op, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
                       "CNI_NETNS": "/var/run/netns/rel-none", "CNI_PATH": CNI_BIN_DIR})
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        killed = False
        if self.chaos and rnd.random() < self.chaos:
            time.sleep(rnd.uniform(0.0, 0.12 if plugin == "ours" else 0.01))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed = True
        out, err = proc.communicate(self.stdin, timeout=120)
        t1 = time.monotonic()
        killed = killed and proc.returncode == -signal.SIGKILL
        try:
            parsed = json.loads(out) if out.strip() else None
        except ValueError:
            parsed = None
        ev = Event(
            worker=worker,
            op=op,
            plugin=plugin,
            cid=cid,
            ifname=ifname,
            t0=t0,
            t1=t1,
            rc=proc.returncode,
            killed=killed,
            code=parsed.get("code") if isinstance(parsed, dict) else None,
            msg=(parsed.get("msg") if isinstance(parsed, dict) else None) or err.decode("utf-8", "replace")[-300:],
        )
        if op == "ADD" and proc.returncode == 0:
            ev.addrs = result_addresses(parsed)
        if (
            plugin == "ours"
            and not killed
            and (b"Traceback" in err or (proc.returncode != 0 and not isinstance(parsed, dict)))
        ):
            self.errors.append(f"{op} {cid}: no CNI error JSON: {out[:200]!r} {err[-300:]!r}")
        with self._lock:
            self.events.append(ev)
        return ev

    def _worker(self, w):
        rnd = random.Random(self.seed * 1000 + w)
        mine = {}  # (cid, ifname) -> addresses
        dead = []
        used = set()
        n = 0
        while self._take():
            plugin = "host-local" if rnd.random() < self.hl_share else "ours"
            r = rnd.random()
            if mine and (len(mine) >= self.max_live or r < 0.45):
                key = rnd.choice(sorted(mine))
                op = "DEL" if rnd.random() < 0.7 else "CHECK"
            elif dead and r < 0.52:
                key, op = rnd.choice(dead), "CHECK"
                plugin = "ours"
            else:
                second = [(c, i) for c, _ in mine for i in self.ifnames if (c, i) not in used]
                if second and rnd.random() < 0.3:
                    key = rnd.choice(sorted(second))  # a second interface of a live container
                else:
                    n += 1
                    key = (f"rel-w{w}-c{n}", rnd.choice(self.ifnames))
                op = "ADD"
                used.add(key)
            ev = self._call(rnd, op, plugin, key[0], key[1], w)
            if ev.killed and op == "CHECK":
                continue  # CHECK changes nothing; a killed one needs no clean-up
            if ev.killed:
                # a runtime that lost its plugin call (ADD or DEL) cleans up with DEL until it works
                for _ in range(20):
                    ev2 = self._call(rnd, "DEL", "ours" if rnd.random() < 0.5 else plugin, key[0], key[1], w)
                    if ev2.rc == 0:
                        break
                else:
                    self.errors.append(f"DEL {key} never succeeded after a killed {op}")
                mine.pop(key, None)
                dead.append(key)
                continue
            if op == "ADD":
                if ev.rc == 0:
                    if len(ev.addrs) != len(self.subnets):
                        self.errors.append(f"ADD {key} by {plugin} returned {ev.addrs}")
                    mine[key] = set(ev.addrs)
                else:
                    exhausted = ev.code == 100 or "no IP addresses available" in (ev.msg or "")
                    if not exhausted:
                        self.errors.append(f"ADD {key} by {plugin} failed: rc={ev.rc} code={ev.code} {ev.msg}")
                    dead.append(key)
            elif op == "DEL":
                if ev.rc != 0:
                    self.errors.append(f"DEL {key} by {plugin} failed: rc={ev.rc} code={ev.code} {ev.msg}")
                else:
                    mine.pop(key)
                    dead.append(key)
            elif op == "CHECK":
                live = key in mine
                if not live:
                    ev.op = "CHECK-deleted"  # expected to fail with 105
                if live and ev.rc != 0:
                    self.errors.append(f"CHECK of live {key} by {plugin} failed: code={ev.code} {ev.msg}")
                if not live and (ev.rc == 0 or ev.code != 105):
                    self.errors.append(f"CHECK of deleted {key} by {plugin}: rc={ev.rc} code={ev.code} {ev.msg}")
        with self._lock:
            self.live.update(mine)

    def run(self):
        threads = [threading.Thread(target=self._worker, args=(w,), daemon=True) for w in range(self.workers)]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.elapsed = time.monotonic() - t
        return self.report()

    def duplicates(self):
        """Pairs of containers proven to hold one address at the same time.

        A container surely holds an address from the end of its ADD to the start of its DEL (or the
        end of the run); two such intervals overlapping for one address is a duplicate."""
        end = max((e.t1 for e in self.events), default=0) + 1
        adds = {}
        holds = {}
        for e in sorted(self.events, key=lambda e: e.t0):
            key = (e.cid, e.ifname)
            if e.op == "ADD" and e.rc == 0:
                adds[key] = e
            elif e.op == "DEL" and key in adds:
                a = adds.pop(key)
                for ip in a.addrs:
                    holds.setdefault(ip, []).append((a.t1, e.t0, key))
        for key, a in adds.items():
            for ip in a.addrs:
                holds.setdefault(ip, []).append((a.t1, end, key))
        dups = []
        for ip, spans in holds.items():
            spans.sort()
            for i, (_s1, e1, k1) in enumerate(spans):
                for s2, _e2, k2 in spans[i + 1:]:
                    if s2 >= e1:
                        break
                    if k1 != k2:
                        dups.append((str(ip), k1, k2))
        return dups

    def report(self):
        st = inspect_network(self.net_dir, self.subnets)
        on_disk = st.by_owner()
        leaks = {k: sorted(map(str, v)) for k, v in on_disk.items() if k not in self.live}
        missing = {}
        for key, addrs in self.live.items():
            have = on_disk.get(key, set())
            if have != addrs:
                missing[key] = (sorted(map(str, addrs)), sorted(map(str, have)))
        ops = {}
        for e in self.events:
            k = f"{e.plugin} {e.op} {'killed' if e.killed else ('ok' if e.rc == 0 else 'fail')}"
            ops[k] = ops.get(k, 0) + 1
        addr_owners = {}
        for key, addrs in self.live.items():
            for ip in addrs:
                addr_owners.setdefault(ip, []).append(key)
        shared = {str(ip): keys for ip, keys in addr_owners.items() if len(keys) > 1}
        return {
            "operations": len(self.events),
            "by_kind": dict(sorted(ops.items())),
            "killed": sum(1 for e in self.events if e.killed),
            "live_containers": len(self.live),
            "reservations": len(st.reservations),
            "duplicates": len(self.duplicates()) + len(shared),
            "duplicate_detail": self.duplicates()[:10] + list(shared.items())[:10],
            "leaks": len(leaks),
            "leak_detail": dict(list(leaks.items())[:10]),
            "wrong_or_missing": missing,
            "problems": st.problems,
            "errors": self.errors[:20],
            "error_count": len(self.errors),
            "index_current": st.index_current,
            "elapsed_s": round(getattr(self, "elapsed", 0.0), 1),
        }
