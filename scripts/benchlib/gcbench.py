"""The ``gc`` scenario: ``cni-ipam gc`` over prefilled reservations, then the CNI GC verb."""

from __future__ import annotations

import os

from benchlib.runner import Failure, Subject, have_time, netconf
from benchlib.fixtures import prefill


def bench_gc(rec, ours: Subject, work, count, log) -> dict:
    probe = ours.admin(["gc", "--help"])
    if probe.rc != 0:
        log(f"  gc: skipped ({ours.name} has no gc command)")
        return {"skipped": "no cni-ipam gc command in this build"}
    out: dict = {"subject": ours.name, "reservations": count}
    data_dir = os.path.join(work, "gc")
    ids = prefill(os.path.join(data_dir, "gcnet"), count, "10.200.0.0/16", "bench-gc-")
    valid = os.path.join(work, "gc-valid-ids")
    with open(valid, "w") as fh:
        fh.write("\n".join(ids[::2]) + "\n")
    stranded_expected = count - len(ids[::2])
    args = [
        "gc",
        "--data-dir",
        data_dir,
        "--network",
        "gcnet",
        "--include-unknown",
        "--grace",
        "0",
        "--valid-ids-file",
        valid,
        "--json",
    ]

    def run(tag, extra, rss=False):
        call = ours.admin(args + extra, rss=rss and have_time())
        rec.add("gc", ours.name, tag, call)
        if call.rc not in (0, 1):
            raise Failure(f"gc {tag} failed (exit {call.rc}): {call.out[:300]} {call.err[-300:]}")
        return call, _gc_counts(call.json())

    first, c1 = run("dry-run (first, rebuilds index)", [], rss=True)
    dry, c2 = run("dry-run", [])
    apply, c3 = run("apply", ["--apply"])
    after, c4 = run("dry-run after apply", [], rss=True)
    left = sum(1 for n in os.listdir(os.path.join(data_dir, "gcnet")) if n[0].isdigit() and not n.startswith("last_"))
    out["admin"] = {
        "dry_run_first_ms": round(first.ms, 1),
        "dry_run_ms": round(dry.ms, 1),
        "apply_ms": round(apply.ms, 1),
        "stranded_found": c2.get("stranded"),
        "released": c3.get("released"),
        "stranded_after_apply": c4.get("stranded"),
        "left_on_disk": left,
        "ok": c2.get("stranded") == stranded_expected and left == count - stranded_expected and c4.get("stranded") == 0,
        "maxrss_kb": first.maxrss_kb,
    }
    log(
        f"  gc admin: dry run {dry.ms:.0f} ms (first {first.ms:.0f} ms), apply {apply.ms:.0f} ms, "
        f"released {c3.get('released')} of {stranded_expected}"
    )

    # The CNI GC verb (spec 1.1.0): everything not in cni.dev/valid-attachments is released.
    verb_dir = os.path.join(work, "gcverb")
    ids = prefill(os.path.join(verb_dir, "gcverb"), count, "10.201.0.0/16", "bench-gv-")
    conf = netconf(verb_dir, name="gcverb", subnet="10.201.0.0/16", version="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": "eth0"} for cid in ids[::2]]
    call = ours.cni("GC", conf, rss=have_time())
    rec.add("gc", ours.name, "GC verb", call)
    left = sum(1 for n in os.listdir(os.path.join(verb_dir, "gcverb")) if n[0].isdigit() and not n.startswith("last_"))
    out["verb"] = {
        "ms": round(call.ms, 1),
        "rc": call.rc,
        "left_on_disk": left,
        "ok": call.rc == 0 and left == len(ids[::2]),
        "maxrss_kb": call.maxrss_kb,
        "error": None if call.rc == 0 else call.out.strip()[:300],
    }
    log(f"  gc verb: {call.ms:.0f} ms, {count - left} released (expected {count - len(ids[::2])})")
    return out


def _gc_counts(report) -> dict:
    """Counts from `cni-ipam gc --json`, whatever nesting it uses: sum the totals we recognise."""
    if not isinstance(report, dict):
        return {}
    totals = report.get("totals") or report.get("total") or report.get("summary")
    if isinstance(totals, dict):
        return {k: totals.get(k) for k in ("live", "stranded", "unknown", "released", "errors")}
    out = {"stranded": 0, "released": 0}
    for net in (report.get("networks") or {}).values():
        findings = net.get("findings", [])
        out["stranded"] += sum(1 for f in findings if isinstance(f, dict) and f.get("state") == "stranded")
        out["released"] += len(net.get("released", []))
    return out
