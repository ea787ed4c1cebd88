"""The ``empty`` scenario (ADD, CHECK, DEL, VERSION call by call) and the recorder of timed calls
every interleaved scenario writes into."""

from __future__ import annotations

import os
import threading

from benchlib.runner import Call, Failure, have_time, ips_of, med, must, netconf


# --------------------------------------------------------------------------- scenarios
class Recorder:
    def __init__(self) -> None:
        self.times: dict = {}  # (scenario, subject, op) -> [ms]
        self.cpu: dict = {}
        self.rss: dict = {}  # (scenario, subject) -> max KiB
        self.lock = threading.Lock()

    def add(self, scenario: str, subject: str, op: str, call: Call) -> None:
        with self.lock:
            self.times.setdefault((scenario, subject, op), []).append(call.ms)
            self.cpu.setdefault((scenario, subject, op), []).append(call.cpu_ms)

    def add_rss(self, scenario: str, subject: str, call: Call) -> None:
        if call.maxrss_kb is not None:
            key = (scenario, subject)
            self.rss[key] = max(self.rss.get(key, 0), call.maxrss_kb)

    def median(self, scenario, subject, op):
        return med(self.times.get((scenario, subject, op), []))

    def cpu_median(self, scenario, subject, op):
        return med(self.cpu.get((scenario, subject, op), []))


def lifecycle_round(
    rec: Recorder, scenario: str, subjects: list, dirs: dict, run: int, cid_prefix: str, conf_kw: dict
) -> None:
    """One interleaved ADD, CHECK, DEL, VERSION round over every subject (order rotates by run)."""
    order = subjects[run % len(subjects) :] + subjects[: run % len(subjects)]
    results = {}
    cid = f"{cid_prefix}{run:05d}"
    for s in order:
        conf = netconf(dirs[s.name], **conf_kw)
        call = must(s.cni("ADD", conf, cid), f"{scenario} {s.name} ADD")
        rec.add(scenario, s.name, "ADD", call)
        results[s.name] = call.json()
        if not ips_of(results[s.name]):
            raise Failure(f"{scenario} {s.name} ADD returned no address: {call.out[:300]}")
    for s in reversed(order):
        conf = netconf(dirs[s.name], **conf_kw)
        conf["prevResult"] = results[s.name]
        rec.add(scenario, s.name, "CHECK", must(s.cni("CHECK", conf, cid), f"{scenario} {s.name} CHECK"))
    for s in order:
        conf = netconf(dirs[s.name], **conf_kw)
        rec.add(scenario, s.name, "DEL", must(s.cni("DEL", conf, cid), f"{scenario} {s.name} DEL"))
    for s in reversed(order):
        rec.add(scenario, s.name, "VERSION", must(s.cni("VERSION", {}), f"{scenario} {s.name} VERSION"))


def bench_empty(rec, subjects, work, runs, log) -> dict:
    dirs = {s.name: os.path.join(work, "empty", s.name) for s in subjects}
    for s in subjects:  # one untimed warm-up each (page cache, directory creation)
        conf = netconf(dirs[s.name])
        must(s.cni("ADD", conf, "bench-warm"), f"warm-up {s.name}")
        must(s.cni("DEL", conf, "bench-warm"), f"warm-up {s.name}")
    for run in range(runs):
        lifecycle_round(rec, "empty", subjects, dirs, run, "bench-e-", {})
    sample_rss(rec, "empty", subjects, dirs)
    log(f"  empty: {runs} rounds done")
    return {}


def sample_rss(rec, scenario, subjects, dirs) -> None:
    """Peak RSS of one ADD and one DEL per subject, under GNU time (not timed)."""
    if not have_time():
        return
    for s in subjects:
        conf = netconf(dirs[s.name])
        rec.add_rss(scenario, s.name, must(s.cni("ADD", conf, "bench-rss", rss=True), f"{scenario} {s.name} ADD (rss)"))
        rec.add_rss(scenario, s.name, must(s.cni("DEL", conf, "bench-rss", rss=True), f"{scenario} {s.name} DEL (rss)"))
