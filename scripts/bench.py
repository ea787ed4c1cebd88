#!/usr/bin/env python3
"""Benchmark cni-ipam against Debian's host-local, measured in the same run, and judge the performance goals.

Not a test: it prints tables, the goals with MET / NOT MET, writes ``bench-results/bench-<time>.json``
(and ``latest.json``).  Subjects: host-local, the built executable (``dist/cni-ipam``, or
``--built``) and the source entry point (``python3 -m cni_ipam``); ``--extra name=command`` adds more
(e.g. another build, or another checkout's ``python3 -m cni_ipam`` for an A/B).  Every call is a
fresh process, as a runtime makes it.

Scenarios (subjects are interleaved and their order rotates every repetition, so drift in machine
load hits all of them alike; CPU time, user+sys from ``wait4``, is recorded beside wall time):

* ``empty``   ADD, CHECK, DEL, VERSION on an empty /16 network, call by call; medians over ``--runs``.
* ``first``   the first call on a directory host-local wrote: ``--big`` (60,000) reservations in
              host-local's format (``<ip>`` files holding ``id\\r\\nifname``) prefilled once and copied
              (``cp -a``, synced) once per cni-ipam subject; per repetition (``--first-reps``) the copy is
              reset to what host-local alone leaves (everything else removed), host-local ADDs (timed)
              and then the subject makes its first ADD (timed; it rebuilds its owner index here).  Peak
              RSS of both under GNU time.  Ratio: first call / host-local's ADD, per repetition.
* ``big``     ADD, CHECK, DEL, VERSION at ``--big`` reservations, steady state (after the first call),
              medians over ``--big-runs``.
* ``after``   the call right after a host-local write: host-local ADDs (even repetitions) or DELs (odd)
              one address in a directory the subject has already indexed, then the subject ADDs
              (timed), DELs, and ADDs again (timed: its steady ADD).  ``--after-reps`` repetitions.
* ``storm``   ``--storm-sizes`` (16, 64, 110 = kubelet's default max pods) ADDs started at once into a
              fresh network, then a churn storm on it: as many concurrent DEL-then-ADD pairs (each pair
              deletes one of the reservations and adds a new container).  ``--storm-reps`` repetitions.
              Per storm: wall time from the first spawn to the last exit, the summed CPU time of all the
              calls, the load average; every call must succeed, every address must be distinct and the
              files on disk must be exactly the ADDs' answers.
* ``gc``      ``cni-ipam gc`` dry run and ``--apply`` over ``--gc`` (10,000) prefilled reservations, half
              of them stranded; then the CNI GC verb over the same number, half the attachments valid.
* ``pool``    (``--pool`` / ``--pool-only``; needs Debian's etcd-server, started on loopback for the run)
              cluster pools: held-block ADD/DEL vs node-local vs host-local, block claims with their etcd
              round trips, and a storm of ``--pool-nodes`` simulated nodes x ``--parallel`` ADDs.

On a 2-vCPU VM the default run took 502-640 s (plus up to 115 s removing its data) with other jobs
using a third to half of the CPUs; ``--quick`` (fewer repetitions, 20,000 reservations) 107 s (plus
22 s) on an idle machine.
Most of a run is the first calls and the storms, both shorter as cni-ipam gets faster.
Data directories are made under ``--workdir`` (default /tmp/bench-<pid>) and removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time

from benchlib.runner import BUILT_DEFAULT, Failure, HOST_LOCAL, OtherCpu, ROOT, Subject, load1
from benchlib.fixtures import Template
from benchlib.lifecycle import Recorder, bench_empty
from benchlib.bigdir import bench_after_write, bench_big, bench_first
from benchlib.storms import bench_storms
from benchlib.gcbench import bench_gc
from benchlib.pool import bench_pool
from benchlib.report import goals, goals_table, machine, print_report, summarise


# --------------------------------------------------------------------------- main
def sizes_arg(text: str) -> list:
    if text.strip() in ("", "0"):
        return []
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r}") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 20,000 reservations: about two minutes")
    ap.add_argument("--runs", type=int, help="rounds on the empty network (default 30, quick 15)")
    ap.add_argument(
        "--big",
        type=int,
        help="reservations for the first-call, big and after-write scenarios"
        " (default 60000, quick 20000; 0 skips them)",
    )
    ap.add_argument("--big-runs", type=int, help="steady rounds at --big reservations (default 5, quick 3)")
    ap.add_argument(
        "--first-reps",
        type=int,
        help="first calls per cni-ipam subject, its copy reset to host-local's files each time (default 3, quick 1; "
             "0 skips)",
    )
    ap.add_argument(
        "--after-reps",
        type=int,
        help="calls after a host-local write, per cni-ipam subject (default 6, quick 2; 0 skips)",
    )
    ap.add_argument(
        "--storm-sizes",
        type=sizes_arg,
        default=[16, 64, 110],
        metavar="N,N,...",
        help="concurrent ADDs per storm (default 16,64,110; 0 skips the storms)",
    )
    ap.add_argument(
        "--storm", type=int, choices=(0,), help=argparse.SUPPRESS
    )  # the old option: only "--storm 0" (no storms) is kept
    ap.add_argument("--storm-reps", type=int, help="repetitions of every storm (default 5, quick 2)")
    ap.add_argument("--gc", type=int, help="reservations for the GC scenario (default 10000, quick 3000; 0 skips)")
    ap.add_argument(
        "--built", default=BUILT_DEFAULT, help="the built executable under test (default dist/cni-ipam)"
    )
    ap.add_argument("--no-source", action="store_true", help="leave out python3 -m cni_ipam")
    ap.add_argument("--no-built", action="store_true", help="leave out the built binary")
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another cni-ipam command to measure (may start with VAR=value settings)",
    )
    ap.add_argument("--workdir", help="where the data directories go (default /tmp/bench-<pid>)")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument(
        "--out", default=os.path.join(ROOT, "bench-results"), help="where the JSON goes (default bench-results/)"
    )
    ap.add_argument(
        "--pool", action="store_true", help="also run the cluster-pool scenarios (starts an etcd on loopback)"
    )
    ap.add_argument("--pool-only", action="store_true", help="run only the cluster-pool scenarios")
    ap.add_argument("--pool-runs", type=int, help="interleaved held-block rounds (default 30, quick 15)")
    ap.add_argument("--pool-claims", type=int, default=10, help="claiming ADD + releasing DEL pairs (default 10)")
    ap.add_argument("--pool-nodes", type=int, default=4, help="simulated nodes in the pool storm (default 4)")
    ap.add_argument("--pool-storm", type=int, default=32, help="ADDs per node in the pool storm (default 32)")
    ap.add_argument("--parallel", type=int, default=16, help="concurrent ADDs per node in the pool storm (default 16)")
    ap.add_argument(
        "--goals-table", nargs="+", metavar="JSON", help="print the goal table (Markdown) of earlier runs and exit"
    )
    a = ap.parse_args(argv)
    if a.goals_table:
        return goals_table(a.goals_table)
    runs = a.runs or (15 if a.quick else 30)
    big = a.big if a.big is not None else (20000 if a.quick else 60000)
    big_runs = a.big_runs or (3 if a.quick else 5)
    first_reps = a.first_reps if a.first_reps is not None else (1 if a.quick else 3)
    after_reps = a.after_reps if a.after_reps is not None else (2 if a.quick else 6)
    storm_reps = a.storm_reps or (2 if a.quick else 5)
    if a.storm == 0:
        a.storm_sizes = []
    gc_n = a.gc if a.gc is not None else (3000 if a.quick else 10000)

    if not os.access(HOST_LOCAL, os.X_OK):
        print(f"bench: {HOST_LOCAL} not found (apt-get install containernetworking-plugins)", file=sys.stderr)
        return 2
    subjects = [Subject("host-local", [HOST_LOCAL], ours=False)]
    built_name = "built"
    if not a.no_built:
        if os.access(a.built, os.X_OK):
            subjects.append(Subject(built_name, [a.built], ours=True))
        else:
            print(f"bench: no built binary at {a.built} (scripts/build.sh); measuring the source only", file=sys.stderr)
    if not a.no_source:
        py_path = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        subjects.append(Subject("source", [sys.executable, "-m", "cni_ipam"], ours=True, env={"PYTHONPATH": py_path}))
    for item in a.extra:
        name, _, cmd = item.partition("=")
        words, env = shlex.split(cmd), {}
        while words and "=" in words[0] and not words[0].startswith("/"):  # leading VAR=value settings
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        subjects.append(Subject(name, words, ours=True, env=env))
    ours = next((s for s in subjects if s.ours), None)

    work = a.workdir or f"/tmp/bench-{os.getpid()}"
    os.makedirs(work, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rec = Recorder()
    data: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(
            shlex.quote(x)
            for x in [os.path.relpath(sys.argv[0], ROOT)] + (sys.argv[1:] if argv is None else list(argv))
        ),
        "machine": machine(),
        "subjects": {s.name: " ".join(s.argv) for s in subjects},
        "params": {
            "empty_runs": runs,
            "big_runs": big_runs,
            "big": big,
            "first_reps": first_reps,
            "after_reps": after_reps,
            "storm_sizes": a.storm_sizes,
            "storm_reps": storm_reps,
            "gc": gc_n,
            "quick": a.quick,
        },
        "phases_s": {},
        "other_cpu_share": {},
    }
    t_start, run_other = time.perf_counter(), OtherCpu()
    status = 0

    def phase(name, fn, *args):
        t0, other = time.perf_counter(), OtherCpu()
        result = fn(*args)
        data["phases_s"][name] = round(time.perf_counter() - t0, 1)
        data["other_cpu_share"][name] = other.share()
        log(
            f"  ({name}: {data['phases_s'][name]} s, load {load1()}, other jobs' share of the CPUs "
            f"{data['other_cpu_share'][name]})"
        )
        return result

    try:
        log(f"bench: subjects {', '.join(s.name for s in subjects)}; data under {work}; load {load1()}")
        if not a.pool_only:
            phase("empty", bench_empty, rec, subjects, work, runs, log)
            if big:
                t0 = time.perf_counter()
                template = Template(os.path.join(work, "template"), "bench", big, "10.128.0.0/16", "bench-pre-")
                os.sync()
                data["phases_s"]["prefill"] = round(time.perf_counter() - t0, 1)
                log(f"  prefilled {big} reservations in {data['phases_s']['prefill']} s")
                dirs: dict = {}
                if first_reps and ours is not None:
                    data["first"], dirs = phase("first", bench_first, subjects, work, template, first_reps, log)
                phase("big", bench_big, rec, subjects, work, template, dirs, big_runs, log)
                data["big"] = {"reservations": big}
                if after_reps and ours is not None:
                    data["after"] = phase("after", bench_after_write, subjects, dirs, after_reps, log)
            if a.storm_sizes and storm_reps:
                data["storm"] = phase("storm", bench_storms, subjects, work, a.storm_sizes, storm_reps, log)
            if gc_n and ours is not None:
                data["gc"] = phase(
                    "gc", bench_gc, rec, next((s for s in subjects if s.name == built_name), ours), work, gc_n, log
                )
        if a.pool or a.pool_only:
            data["pool"] = phase(
                "pool",
                bench_pool,
                rec,
                subjects,
                work,
                a.pool_runs or (15 if a.quick else 30),
                a.pool_claims,
                a.pool_nodes,
                a.pool_storm,
                a.parallel,
                log,
            )
    except Failure as exc:
        log(f"bench: FAILED: {exc}")
        data["failure"] = str(exc)
        status = 1
    except BaseException:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if data.get("storm") and not data["storm"]["ok"]:
        status = 1
    data["summary"] = summarise(rec, subjects, data)
    data["goals"] = goals(data, subjects)
    data["loadavg_at_end"] = os.getloadavg()
    data["other_cpu_share"]["run"] = run_other.share()
    data["seconds"] = round(time.perf_counter() - t_start, 1)
    data["samples_ms"] = {f"{k[0]}/{k[1]}/{k[2]}": [round(x, 3) for x in v] for k, v in rec.times.items()}
    data["samples_cpu_ms"] = {f"{k[0]}/{k[1]}/{k[2]}": [round(x, 3) for x in v] for k, v in rec.cpu.items()}
    print_report(data)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    for target in (path, os.path.join(a.out, "latest.json")):
        with open(target, "w") as fh:
            json.dump(data, fh, indent=2)
    la = data["loadavg_at_end"]
    oc = data["other_cpu_share"]["run"]
    print(
        f"\nwrote {path}; the run took {data['seconds']} s; load average at the end {la[0]:.2f} {la[1]:.2f} "
        f"{la[2]:.2f}; "
        f"other jobs used {'n/a' if oc is None else f'{oc * 100:.0f}%'} of the CPUs during the run",
        flush=True,
    )
    if a.keep:
        log(f"bench: data kept under {work}")
    else:
        t0 = time.perf_counter()
        shutil.rmtree(work, ignore_errors=True)
        log(f"bench: removed {work} in {time.perf_counter() - t0:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
