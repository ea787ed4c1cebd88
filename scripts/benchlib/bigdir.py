"""The scenarios on a big directory host-local wrote: ``first``, ``big`` and ``after``."""

from __future__ import annotations

import ipaddress
import os
import shutil

from benchlib.runner import Failure, have_time, ips_of, load1, med, must, netconf, ratio, rotate, stats
from benchlib.fixtures import Template
from benchlib.lifecycle import lifecycle_round, sample_rss
from benchlib.report import mb


def is_host_local_name(name: str) -> bool:
    """A name host-local itself writes in a network directory: an address, last_reserved_ip.N, lock."""
    if name == "lock" or name.startswith("last_reserved_ip."):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def reset_to_host_local(data_dir: str, network: str) -> int:
    """Make a data directory again what host-local alone would have left: remove every entry of the
    data directory but the network's, every entry of the network directory host-local does not
    write (cni-ipam's index, state, temp files, whatever their name) and any extended attribute of
    it; then sync.  The reservation files are left as they are.  Returns the number of entries
    removed.  This is how a repetition gets a never-indexed directory without a fresh 60,000-file
    copy (which costs more than the call it prepares: about 240 MB to write back on ext4)."""
    removed = 0

    def drop(path: str) -> None:
        nonlocal removed
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        removed += 1

    for name in os.listdir(data_dir):
        if name != network:
            drop(os.path.join(data_dir, name))
    net = os.path.join(data_dir, network)
    for name in os.listdir(net):
        if not is_host_local_name(name):
            drop(os.path.join(net, name))
    for attr in os.listxattr(net, follow_symlinks=False):
        os.removexattr(net, attr, follow_symlinks=False)
        removed += 1
    os.sync()
    return removed


def bench_first(subjects, work, template: Template, reps: int, log) -> "tuple[dict, dict]":
    """First call on a host-local directory, per repetition and cni-ipam subject: host-local's ADD
    there (timed, peak RSS), then the subject's first ADD (timed, peak RSS), then its DEL (untimed).
    Each subject gets one real copy of the template (``cp -a``); before every repetition it is
    reset to what host-local alone would have left (``reset_to_host_local``), so the subject finds no
    index of its own.  Returns (results, {subject: its directory}); those directories, now indexed,
    become the subjects' ``big`` directories."""
    hl = next(s for s in subjects if not s.ours)
    ours = [s for s in subjects if s.ours]
    rss = have_time()
    samples = {
        s.name: {
            "ms": [],
            "cpu_ms": [],
            "sys_ms": [],
            "rss_kb": [],
            "hl_ms": [],
            "hl_cpu_ms": [],
            "hl_rss_kb": [],
            "x_wall": [],
            "x_cpu": [],
            "load": [],
        }
        for s in ours
    }
    dirs = {s.name: template.clone(os.path.join(work, "first", s.name)) for s in ours}
    for rep in range(reps):
        for s in rotate(ours, rep):
            d = dirs[s.name]
            if rep:
                reset_to_host_local(d, "bench")
            conf = netconf(d)
            load = load1()
            h = must(
                hl.cni("ADD", conf, f"bench-hl-first-{rep:03d}", rss=rss), f"first: host-local ADD before {s.name}"
            )
            f = must(s.cni("ADD", conf, "bench-first", rss=rss), f"first: {s.name} first ADD")
            if not ips_of(f.json()):
                raise Failure(f"first: {s.name} ADD returned no address: {f.out[:300]}")
            must(s.cni("DEL", conf, "bench-first"), f"first: {s.name} DEL after its first ADD")
            row = samples[s.name]
            for key, v in (
                ("ms", f.ms),
                ("cpu_ms", f.cpu_ms),
                ("sys_ms", f.sys_ms),
                ("rss_kb", f.maxrss_kb),
                ("hl_ms", h.ms),
                ("hl_cpu_ms", h.cpu_ms),
                ("hl_rss_kb", h.maxrss_kb),
                ("x_wall", f.ms / h.ms),
                ("x_cpu", f.cpu_ms / h.cpu_ms if h.cpu_ms else None),
                ("load", load),
            ):
                if v is not None:
                    row[key].append(v)
            log(
                f"  first call rep {rep + 1}/{reps} {s.name}: {f.ms:.0f} ms (CPU {f.cpu_ms:.0f}, of it sys "
                f"{f.sys_ms:.0f}; {mb(f.maxrss_kb)}); "
                f"host-local ADD {h.ms:.0f} ms ({mb(h.maxrss_kb)}); load {load}"
            )
    out = {}
    for name, row in samples.items():
        out[name] = {
            "reps": len(row["ms"]),
            "ADD_ms": stats(row["ms"]),
            "ADD_cpu_ms": stats(row["cpu_ms"]),
            "ADD_sys_ms": stats(row["sys_ms"]),
            "ADD_ms_all": [round(x, 1) for x in row["ms"]],
            "ADD_cpu_ms_all": [round(x, 1) for x in row["cpu_ms"]],
            "maxrss_kb": max(row["rss_kb"]) if row["rss_kb"] else None,
            "maxrss_kb_all": row["rss_kb"],
            "host_local_ADD_ms": stats(row["hl_ms"]),
            "host_local_ADD_cpu_ms": stats(row["hl_cpu_ms"]),
            "host_local_maxrss_kb": max(row["hl_rss_kb"]) if row["hl_rss_kb"] else None,
            "x_host_local": stats(row["x_wall"]),
            "x_host_local_cpu": stats(row["x_cpu"]),
            "load": row["load"],
        }
    return out, dirs


def bench_big(rec, subjects, work, template: Template, dirs: dict, runs, log) -> None:
    """Steady state at the template's size: interleaved lifecycle rounds.  ``dirs`` holds the cni-ipam
    subjects' directories (already indexed by their first call); the others get a copy (the last
    one the template itself, which is not needed any more)."""
    missing = [s for s in subjects if s.name not in dirs]
    for i, s in enumerate(missing):
        dest = os.path.join(work, "big", s.name)
        dirs[s.name] = template.take(dest) if i == len(missing) - 1 else template.clone(dest)
        conf = netconf(dirs[s.name])
        must(s.cni("ADD", conf, "bench-first"), f"big: {s.name} first ADD (untimed)")
        must(s.cni("DEL", conf, "bench-first"), f"big: {s.name} first DEL (untimed)")
    for s in subjects:
        if not s.ours:
            continue
        conf = netconf(dirs[s.name])
        must(s.cni("ADD", conf, "bench-warm"), f"big warm-up {s.name}")
        must(s.cni("DEL", conf, "bench-warm"), f"big warm-up {s.name}")
    for run in range(runs):
        lifecycle_round(rec, "big", subjects, dirs, run, "bench-b-", {})
    sample_rss(rec, "big", subjects, dirs)
    log(f"  big: {runs} rounds done")


def bench_after_write(subjects, dirs: dict, reps: int, log) -> dict:
    """The call right after a host-local write in a directory the subject has indexed, against the
    subject's steady ADD in the same directory a moment later."""
    hl = next(s for s in subjects if not s.ours)
    ours = [s for s in subjects if s.ours]
    rows = {
        s.name: {
            "after_ms": [],
            "after_cpu_ms": [],
            "steady_ms": [],
            "steady_cpu_ms": [],
            "x_wall": [],
            "x_cpu": [],
            "host_local_write": [],
            "load": [],
        }
        for s in ours
    }
    for rep in range(reps):
        for s in rotate(ours, rep):
            conf = netconf(dirs[s.name])
            load = load1()
            if rep % 2 == 0:
                must(hl.cni("ADD", conf, f"bench-hw-{rep:03d}"), f"after: host-local ADD in {s.name}'s directory")
                what = "ADD"
            else:
                must(hl.cni("DEL", conf, f"bench-hw-{rep - 1:03d}"), f"after: host-local DEL in {s.name}'s directory")
                what = "DEL"
            a = must(s.cni("ADD", conf, f"bench-aw-{rep:03d}"), f"after: {s.name} ADD after host-local {what}")
            must(s.cni("DEL", conf, f"bench-aw-{rep:03d}"), f"after: {s.name} DEL")
            st = must(s.cni("ADD", conf, f"bench-st-{rep:03d}"), f"after: {s.name} steady ADD")
            must(s.cni("DEL", conf, f"bench-st-{rep:03d}"), f"after: {s.name} DEL")
            row = rows[s.name]
            row["after_ms"].append(a.ms)
            row["after_cpu_ms"].append(a.cpu_ms)
            row["steady_ms"].append(st.ms)
            row["steady_cpu_ms"].append(st.cpu_ms)
            row["x_wall"].append(a.ms / st.ms)
            row["x_cpu"].append(a.cpu_ms / st.cpu_ms if st.cpu_ms else 0.0)
            row["host_local_write"].append(what)
            row["load"].append(load)
    out = {}
    for name, row in rows.items():
        r = {"reps": len(row["after_ms"]), "load": row["load"]}
        worst = None
        for what in ("ADD", "DEL"):  # a host-local ADD and a host-local DEL are caught up differently: apart
            idx = [i for i, w in enumerate(row["host_local_write"]) if w == what]
            if not idx:
                continue

            def pick(key: str, row: dict = row, idx: list = idx) -> list:
                return [row[key][i] for i in idx]

            k = {
                "n": len(idx),
                "after_ms": stats(pick("after_ms")),
                "after_cpu_ms": stats(pick("after_cpu_ms")),
                "steady_ms": stats(pick("steady_ms")),
                "steady_cpu_ms": stats(pick("steady_cpu_ms")),
                "x_steady": ratio(med(pick("after_ms")), med(pick("steady_ms"))),
                "x_steady_cpu": ratio(med(pick("after_cpu_ms")), med(pick("steady_cpu_ms"))),
                "x_steady_paired": stats(pick("x_wall")),
            }
            r[f"after_host_local_{what}"] = k
            if worst is None or k["x_steady"] > r[f"after_host_local_{worst}"]["x_steady"]:
                worst = what
        r["worst"] = worst
        r["x_steady"] = r[f"after_host_local_{worst}"]["x_steady"]
        r["x_steady_cpu"] = r[f"after_host_local_{worst}"]["x_steady_cpu"]
        out[name] = r
        log(
            f"  after host-local write {name}: "
            + "; ".join(
                f"after {w} {r[f'after_host_local_{w}']['after_ms']['median']:.1f} ms vs steady "
                f"{r[f'after_host_local_{w}']['steady_ms']['median']:.1f} ms "
                f"({r[f'after_host_local_{w}']['x_steady']}x)"
                for w in ("ADD", "DEL")
                if f"after_host_local_{w}" in r
            )
        )
    return out
