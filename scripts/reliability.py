#!/usr/bin/env python3
"""The long reliability runs (the CI versions live in tests/reliability/).

    python3 scripts/reliability.py --ops 5000 --workers 16 --kill-points 500 --fuzz-examples 20000

* storm: ``--ops`` random ADD/DEL/CHECK calls from ``--workers`` processes at a time on one network,
  ``--host-local`` of them by Debian's host-local, ``--chaos`` of them SIGKILLed at a random moment;
  then every live container is checked, the index verified and everything deleted.
* crash: sweeps of the crash scenarios (ADD, DEL, GC; fresh, populated, stale index, rollback), each
  killing the plugin before every one of its file-system mutations, with a different base state per
  sweep, until ``--kill-points`` kills were made.
* fuzz: ``--fuzz-examples`` hypothesis inputs in-process and ``--fuzz-subprocess`` through the
  executable, random seed unless ``--seed`` is given.

Prints the figures (operations, kill points, fuzz inputs, duplicates, leaks) and a JSON summary with
``--json``; exits 1 when anything was found.  Works in directories /tmp/rel-long-*; uses Debian's
host-local from /usr/lib/cni when installed.  Run as root (as the plugin itself is).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.helpers import have_host_local  # noqa: E402
from tests.reliability import crashlib  # noqa: E402
from tests.reliability.relhelpers import Storm, inspect_network, run_inproc  # noqa: E402


def run_storm(args, work):
    total = {"operations": 0, "killed": 0, "duplicates": 0, "leaks": 0, "errors": [], "problems": [], "storms": []}
    remaining = args.ops
    round_no = 0
    while remaining > 0:
        ops = min(remaining, args.ops_per_storm)
        remaining -= ops
        round_no += 1
        tight = round_no % 3 == 0  # every third storm on an almost exhausted range
        data = os.path.join(work, f"storm{round_no}")
        storm = Storm(data, ops=ops, workers=args.workers, host_local_share=args.host_local, chaos=args.chaos,
                      seed=args.seed + round_no, name="rel-storm",
                      subnets=("fd00:98::/125", "10.98.0.0/29") if tight else ("10.99.0.0/26", "fd00:99::/122"),
                      max_live=1 if tight else 3)
        rep = storm.run()
        drain_problems = _drain(storm)
        total["operations"] += rep["operations"]
        total["killed"] += rep["killed"]
        total["duplicates"] += rep["duplicates"]
        total["leaks"] += rep["leaks"] + len(rep["wrong_or_missing"])
        total["errors"] += rep["errors"]
        total["problems"] += rep["problems"] + drain_problems
        total["storms"].append({k: rep[k] for k in ("operations", "killed", "live_containers", "duplicates", "leaks",
                                                    "elapsed_s", "by_kind")})
        print(
            f"storm {round_no}{' (tight range)' if tight else ''}: {rep['operations']} ops in {rep['elapsed_s']}s, "
            f"{rep['killed']} killed, {rep['live_containers']} live, "
            f"duplicates {rep['duplicates']}, leaks {rep['leaks']}, "
            f"errors {rep['error_count']}, problems {len(rep['problems']) + len(drain_problems)}",
            flush=True,
        )
        for item in (rep["errors"] + rep["problems"] + drain_problems)[:10]:
            print(f"  storm {round_no}: {item}", flush=True)
        shutil.rmtree(data, ignore_errors=True)
    return total


def _drain(storm):
    problems = []
    for cid, ifname in sorted(storm.live):
        rc, _, raw = run_inproc("CHECK", storm.conf, container_id=cid, ifname=ifname)
        if rc:
            problems.append(f"CHECK {cid}/{ifname} after the storm: {raw}")
    st = inspect_network(storm.net_dir, storm.subnets)
    problems += st.problems
    if not st.index_current:
        problems.append("index not current after CHECKs")
    if st.by_owner() != storm.live:
        problems.append("disk differs from the live containers after the storm")
    for cid, ifname in sorted(storm.live):
        rc, _, raw = run_inproc("DEL", storm.conf, container_id=cid, ifname=ifname)
        if rc:
            problems.append(f"DEL {cid}/{ifname} after the storm: {raw}")
    st = inspect_network(storm.net_dir, storm.subnets)
    # entries may linger only where host-local removed the files (see tests/reliability/test_concurrency.py)
    by_host_local = {f"{e.cid}:{e.ifname}" for e in storm.events if e.op in ("ADD", "DEL") and e.plugin == "host-local"}
    if st.reservations or set(st.owners) - by_host_local:
        problems.append(f"left after deleting everything: {st.reservations} {sorted(set(st.owners) - by_host_local)}")
    return problems


def run_crash(args, work):
    scns = [
        s
        for s in crashlib.scenarios()
        if not (s.needs == "host-local" and not have_host_local())
    ]
    tally = crashlib.Tally()
    sweep = 0
    bases = [4, 0, 9, 1, 12, 6, 3, 11, 2, 8]
    per_scenario = {}
    while tally.kill_points < args.kill_points:
        crashlib.BASE_OTHERS = bases[sweep % len(bases)]
        sweep += 1
        for scn in scns:
            if tally.kill_points >= args.kill_points:
                break
            d = os.path.join(work, f"crash{sweep}-{scn.name}")
            os.makedirs(d)
            before = tally.kill_points
            _, ops = crashlib.run_scenario(scn, d, tally=tally)
            per_scenario[scn.name] = per_scenario.get(scn.name, 0) + tally.kill_points - before
            shutil.rmtree(d, ignore_errors=True)
            print(f"crash sweep {sweep} ({crashlib.BASE_OTHERS} other containers) {scn.name}: {len(ops)} mutations, "
                  f"kill points so far {tally.kill_points}, problems {len(tally.problems)}", flush=True)
    return {"kill_points": tally.kill_points, "recovered": tally.recovered, "sweeps": sweep,
            "per_scenario": per_scenario, "problems": tally.problems}


def run_fuzz(args, work):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from cni_ipam.plugin import netconf as config
    from tests.reliability import fuzzlib
    from tests.reliability.test_fuzz import environb_strategy

    template = fuzzlib.Sandbox(os.path.join(work, "fuzz-template")).build()
    found = []
    counts = {"inproc": 0, "subprocess": 0}
    common = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=False)
    seed_kw = {}
    if args.seed_fuzz is not None:
        from hypothesis import seed as hyp_seed

        seed_kw["seed"] = hyp_seed(args.seed_fuzz)

    def clone():
        root = tempfile.mkdtemp(prefix="rel-fz-", dir=work)
        box = template.clone(os.path.join(root, "s"))
        config.DEFAULT_DATA_DIR = os.path.join(box.root, "default-data")
        return root, box

    saved = config.DEFAULT_DATA_DIR

    @settings(max_examples=args.fuzz_examples, **common)
    @given(environ=fuzzlib.environ_strategy(), data=st.data())
    def inproc(environ, data):
        root, box = clone()
        try:
            stdin = data.draw(fuzzlib.stdin_strategy(box))
            problems = fuzzlib.run_one_inproc(box, environ, stdin)
            counts["inproc"] += 1
            if problems:
                found.append(
                    {"environ": environ, "stdin": stdin[:300].decode("utf-8", "replace"), "problems": problems}
                )
                if len(found) > 20:
                    raise AssertionError("too many findings")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    @settings(max_examples=args.fuzz_subprocess, **common)
    @given(environb=environb_strategy(), data=st.data())
    def subproc(environb, data):
        root, box = clone()
        try:
            stdin = data.draw(fuzzlib.stdin_strategy(box))
            try:
                conf = json.loads(stdin)
                if (
                    not isinstance(conf, dict)
                    or not isinstance(conf.get("ipam"), dict)
                    or not conf["ipam"].get("dataDir")
                ):
                    return  # a subprocess would use the real /var/lib/cni/networks
            except Exception:  # noqa: BLE001
                pass
            problems, _ = fuzzlib.run_one_subprocess(box, environb, stdin)
            counts["subprocess"] += 1
            if problems:
                found.append(
                    {
                        "environ": {
                            k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in environb.items()
                        },
                        "stdin": stdin[:300].decode("utf-8", "replace"),
                        "problems": problems,
                    }
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)

    try:
        for fn in (inproc, subproc):
            target = seed_kw["seed"](fn) if seed_kw else fn
            try:
                target()
            except AssertionError:
                pass
            print(f"fuzz {fn.__name__}: {counts}, findings {len(found)}", flush=True)
    finally:
        config.DEFAULT_DATA_DIR = saved
    return {"inputs_in_process": counts["inproc"], "inputs_subprocess": counts["subprocess"],
            "outcomes": dict(sorted(fuzzlib.OUTCOMES.items(), key=lambda kv: -kv[1])[:25]), "findings": found}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=5000, help="storm operations in total (default 5000)")
    ap.add_argument("--ops-per-storm", type=int, default=1500, help="operations per storm round (default 1500)")
    ap.add_argument("--workers", type=int, default=16, help="concurrent plugin processes (default 16)")
    ap.add_argument("--host-local", type=float, default=0.3, help="share of calls made by host-local (default 0.3)")
    ap.add_argument(
        "--chaos", type=float, default=0.03, help="share of calls SIGKILLed at a random moment (default 0.03)"
    )
    ap.add_argument("--kill-points", type=int, default=500, help="crash-injection kills in total (default 500)")
    ap.add_argument("--fuzz-examples", type=int, default=20000, help="in-process fuzz inputs (default 20000)")
    ap.add_argument("--fuzz-subprocess", type=int, default=500, help="fuzz inputs through the executable (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="storm seed (default 1)")
    ap.add_argument("--seed-fuzz", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("--only", choices=["storm", "crash", "fuzz"], action="append", help="run only these parts")
    ap.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    args = ap.parse_args(argv)

    parts = args.only or ["storm", "crash", "fuzz"]
    work = tempfile.mkdtemp(prefix="rel-long-")
    summary = {"args": vars(args)}
    t0 = time.monotonic()
    try:
        if "storm" in parts:
            summary["storm"] = run_storm(args, work)
        if "crash" in parts:
            summary["crash"] = run_crash(args, work)
        if "fuzz" in parts:
            summary["fuzz"] = run_fuzz(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)

    bad = []
    s = summary.get("storm")
    c = summary.get("crash")
    f = summary.get("fuzz")
    print("\n== reliability figures ==")
    if s:
        print(f"operations      {s['operations']} ({s['killed']} SIGKILLed mid-call), duplicates {s['duplicates']}, "
              f"leaks {s['leaks']}, errors {len(s['errors'])}, directory problems {len(s['problems'])}")
        if s["duplicates"] or s["leaks"] or s["errors"] or s["problems"]:
            bad.append("storm")
    if c:
        print(
            f"kill points     {c['kill_points']} in {c['sweeps']} sweeps {c['per_scenario']}, "
            f"recovered {c['recovered']}, "
            f"problems {len(c['problems'])}"
        )
        if c["problems"]:
            bad.append("crash")
    if f:
        print(f"fuzz inputs     {f['inputs_in_process']} in-process + {f['inputs_subprocess']} through the executable, "
              f"findings {len(f['findings'])}")
        if f["findings"]:
            bad.append("fuzz")
    print(f"elapsed         {summary['elapsed_s']}s")
    for part in bad:
        detail = summary[part]
        for item in (detail.get("errors", []) + detail.get("problems", []) + detail.get("findings", []))[:10]:
            print(f"  {part}: {item}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
