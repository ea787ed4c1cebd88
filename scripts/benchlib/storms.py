"""The ``storm`` scenario: concurrent ADDs, then churn (DEL-then-ADD pairs), checked on disk."""

from __future__ import annotations

import os
import shutil
import statistics

from benchlib.runner import OtherCpu, ips_of, load1, must, netconf, rotate, run_concurrent, stats
from benchlib.fixtures import on_disk


def _check_storm(net_dir: str, calls: list, cids: list, what: str) -> dict:
    """Every call succeeded, every address is distinct, and the files on disk are the ADDs' answers."""
    failed = [c for c in calls if c.rc != 0]
    answers = {}
    for c, cid in zip(calls, cids):
        for ip in ips_of(c.json()):
            answers.setdefault(ip, []).append(cid)
    addrs = [ip for c in calls for ip in ips_of(c.json())]
    dupes = len(addrs) - len(set(addrs))
    disk = on_disk(net_dir)
    expected = {ip: owners[0] for ip, owners in answers.items()}
    ok = not failed and dupes == 0 and len(addrs) == len(cids) and disk == expected
    return {
        "failed": len(failed),
        "first_failure": (failed[0].out.strip()[:300] + " " + failed[0].err.strip()[-300:]) if failed else None,
        "duplicates": dupes,
        "reserved_on_disk": len(disk),
        "disk_matches_answers": disk == expected,
        "ok": ok,
    }


def bench_storms(subjects, work, sizes: list, reps: int, log) -> dict:
    """ADD storms and churn storms of every size, interleaved across subjects, repeated."""
    hl = next(s for s in subjects if not s.ours)
    raw: dict = {}  # (kind, size, subject) -> {"wall": [], "cpu": []}; kind: add | churn
    loads: dict = {}  # size -> [load per rep]
    others: dict = {}  # size -> [other jobs' CPU share during each storm]
    checks: list = []
    for rep in range(reps):
        for k, n in enumerate(sizes):
            loads.setdefault(n, []).append(load1())
            order = rotate(subjects, rep + k)
            dirs = {}
            for s in order:  # a fresh network each time; one untimed ADD+DEL creates it (and cni-ipam's index)
                d = os.path.join(work, "storm", f"{rep}-{n}-{s.name}")
                conf = netconf(d, name="storm")
                must(s.cni("ADD", conf, "bench-warm"), f"storm warm-up {s.name}")
                must(s.cni("DEL", conf, "bench-warm"), f"storm warm-up {s.name}")
                dirs[s.name] = (d, conf)
            for kind in ("add", "churn"):
                for s in order:
                    d, conf = dirs[s.name]
                    new = [f"bench-{kind}-{i:04d}" for i in range(n)]
                    if kind == "add":
                        chains = [[(s, "ADD", conf, cid)] for cid in new]
                    else:  # each pair: DEL one of the n reservations the ADD storm made, ADD a new container
                        chains = [
                            [(s, "DEL", conf, f"bench-add-{i:04d}"), (s, "ADD", conf, cid)] for i, cid in enumerate(new)
                        ]
                    other = OtherCpu()
                    wall, results = run_concurrent(chains)
                    others.setdefault(n, []).append(other.share())
                    calls = [c for chain in results for c in chain]
                    adds = [chain[-1] for chain in results]
                    check = _check_storm(os.path.join(d, "storm"), adds, new, f"{kind} {n} {s.name}")
                    if any(c.rc != 0 for c in calls):
                        check["ok"] = False
                        check["failed"] = sum(1 for c in calls if c.rc != 0)
                        bad = next(c for c in calls if c.rc != 0)
                        check["first_failure"] = bad.out.strip()[:300] + " " + bad.err.strip()[-300:]
                    r = raw.setdefault((kind, n, s.name), {"wall": [], "cpu": []})
                    r["wall"].append(wall)
                    r["cpu"].append(sum(c.cpu_ms for c in calls) / 1000)
                    if not check["ok"]:
                        checks.append({"kind": kind, "size": n, "subject": s.name, "rep": rep, **check})
                        log(f"  storm {kind} {n} {s.name}: FAILED {check}")
            for s in order:
                shutil.rmtree(dirs[s.name][0], ignore_errors=True)
            log(
                f"  storms of {n}, rep {rep + 1}/{reps} (load {loads[n][-1]}): "
                + "; ".join(
                    f"{s.name} {raw[('add', n, s.name)]['wall'][-1]:.2f}s/{raw[('churn', n, s.name)]['wall'][-1]:.2f}s"
                    for s in subjects
                )
            )
    out: dict = {
        "sizes": sizes,
        "reps": reps,
        "load_per_rep": {str(n): loads[n] for n in sizes},
        "other_cpu_share": {str(n): stats([x for x in others[n] if x is not None]) for n in sizes},
        "failures": checks,
        "ok": not checks,
        "add": {},
        "churn": {},
    }
    for kind in ("add", "churn"):
        for n in sizes:
            h = raw[(kind, n, hl.name)]
            rows = {}
            for s in subjects:
                r = raw[(kind, n, s.name)]
                rows[s.name] = {
                    "wall_s": stats(r["wall"]),
                    "cpu_s": stats(r["cpu"]),
                    "per_s": round(n / statistics.median(r["wall"]), 1),
                    "x_wall": stats([a / b for a, b in zip(r["wall"], h["wall"])]),
                    "x_cpu": stats([a / b for a, b in zip(r["cpu"], h["cpu"])]),
                    "wall_all": [round(x, 4) for x in r["wall"]],
                    "cpu_all": [round(x, 4) for x in r["cpu"]],
                }
            out[kind][str(n)] = rows
    return out
