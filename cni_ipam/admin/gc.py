"""``cni-ipam gc``: find stranded reservations on this node, say why, and (with --apply) release them.

Walks every network directory under ``--data-dir`` (or the ``--network`` ones), classifies each
reservation with ``cni_ipam.admin.liveness`` and prints a table (or ``--json``).  A dry run unless
``--apply``; with it, each network is classified and released under one hold of its lock, so a pod
starting meanwhile either finished its ADD before (and is judged with its metadata, inside the grace
period) or waits for us.  Running it twice releases nothing the second time.

Exit codes (for cron jobs and systemd units):

* 0 - dry run: nothing stranded; --apply: every stranded reservation was released (or none existed)
* 1 - dry run: stranded reservations found (nothing was changed)
* 3 - partial: some networks or reservations failed (lock timeout, I/O error); the rest was done
* 4 - nothing done: runtime cache or valid-ID file unusable, unknown --network
* 64 - usage error (bad arguments), 66 - --data-dir does not exist or is not a directory: the same
  codes in every admin command (``cni_ipam.admin.options.EXIT_CODES``, the README's table)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from cni_ipam.admin import liveness
from cni_ipam.admin import options
from cni_ipam.plugin.netconf import DEFAULT_DATA_DIR
from cni_ipam.errors import CniError
from cni_ipam.store import gcstats
from cni_ipam.store import is_cni_name
from cni_ipam.store.network import NetworkStore
from cni_ipam.store.snapshot import list_networks

EXIT_OK = 0
EXIT_STRANDED = 1
EXIT_USAGE = options.EXIT_USAGE
EXIT_PARTIAL = 3
EXIT_FATAL = 4


class GcCommand(options.Command):
    name = "gc"
    description = "Find reservations whose container is gone (stranded), explain why, and release them with --apply."

    def add_options(self, parser: options.Parser) -> None:
        add_gc_options(parser)

    def input_problem(self, args) -> str | None:
        args.data_dir = os.path.abspath(args.data_dir)
        return options.data_dir_problem(args.data_dir)  # a mistyped --data-dir is not "nothing stranded"

    def fail(self, args, message: str, code: int) -> int:
        """Stop: the reason on stderr, and with --json as a JSON document on stdout too."""
        if args.json:
            sys.stdout.write(json.dumps({"error": message, "exitCode": code}, indent=2) + "\n")
        return super().fail(args, message, code)

    def run(self, args) -> int:
        """One pass over ``args.data_dir`` (an existing directory): classify, release with --apply, report."""
        out = sys.stdout
        try:
            valid_ids = read_valid_ids(args)
        except ValueError as exc:
            return self.fail(args, str(exc), EXIT_FATAL)
        runtime_ids, runtime_name = None, "the runtime"
        runtime_answers: list = []
        if args.runtime:
            from cni_ipam.admin import runtimes  # admin-only; subprocess and sockets stay off the plugin path

            try:
                runtime_ids, runtime_name, runtime_answers = runtimes.evidence(args.runtime)
            except ValueError as exc:
                return self.fail(args, str(exc), EXIT_FATAL)
            for answer in runtime_answers:
                if not answer.ok:
                    print(
                        f"cni-ipam gc: runtime {answer.spec} not used (proves nothing): {answer.error}", file=sys.stderr
                    )
        data_dir = args.data_dir
        if args.runtime_cache is not None and not os.path.isdir(args.runtime_cache):
            why = "without it every reservation would look stranded"
            return self.fail(args, f"runtime cache {args.runtime_cache} is not a directory; {why}", EXIT_FATAL)
        if args.network:
            bad = [n for n in args.network if not is_cni_name(n) or not os.path.isdir(os.path.join(data_dir, n))]
            if bad:
                return self.fail(args, f"no such network under {data_dir}: {', '.join(bad)}", EXIT_FATAL)
            networks = list(dict.fromkeys(args.network))
        else:
            try:
                networks = list_networks(data_dir)
            except OSError as exc:
                return self.fail(args, f"cannot list {data_dir}: {exc.strerror or exc}", EXIT_FATAL)

        checker = liveness.Checker(
            grace=args.grace,
            netns_root=args.netns_root,
            runtime_cache=args.runtime_cache,
            valid_ids=valid_ids,
            include_unknown=args.include_unknown,
            previous_boot_only=args.previous_boot_only,
            proc=args.proc,
            node_pidns=args.pidns_is_node,
            runtime_ids=runtime_ids,
            runtime_name=runtime_name,
        )
        warnings = liveness.environment_warnings(args.netns_root, args.proc, args.pidns_is_node)
        if args.runtime_cache is not None:
            try:
                checker.cache_names()
            except OSError as exc:
                reason = exc.strerror or exc
                return self.fail(args, f"cannot read runtime cache {args.runtime_cache}: {reason}", EXIT_FATAL)
        started = time.monotonic()
        report = run_pass(data_dir, networks, checker, args.apply, args.lock_timeout)
        elapsed = time.monotonic() - started
        unsure = sum(
            1
            for net in report["networks"].values()
            for f in net["findings"]
            if f.verdict.reason in (liveness.NETNS_UNSURE, liveness.NETNS_UNREADABLE)
        )
        if unsure:
            why = checker.kernel.why_not() or "no kernel namespace id was recorded for them at ADD"
            warnings.append(
                f"the kernel cannot say whether their network namespaces are gone ({why}): "
                f"{unsure} reservation(s) kept as unknown"
            )
        for warning in warnings:
            print(f"cni-ipam gc: warning: {warning}", file=sys.stderr)

        totals = {liveness.LIVE: 0, liveness.STRANDED: 0, liveness.UNKNOWN: 0, "released": 0, "errors": 0}
        for net in report["networks"].values():
            for key, value in _counts(net["findings"]).items():
                totals[key] += value
            totals["released"] += len(net["released"])
            totals["errors"] += len(net["errors"])
        if totals["errors"]:
            code = EXIT_PARTIAL
        elif totals[liveness.STRANDED] and not args.apply:
            code = EXIT_STRANDED
        else:
            code = EXIT_OK

        if args.json:
            doc = _json_report(args, data_dir, checker, report, totals, elapsed, code)
            doc["warnings"] = warnings
            if args.runtime:
                doc["runtimes"] = [a.to_json() for a in runtime_answers]
            out.write(json.dumps(doc, indent=2) + "\n")
        else:
            _print_table(out, args, data_dir, checker, report, totals, elapsed)
        out.flush()
        return code


def main(argv: list) -> int:
    return GcCommand().main(argv)


def add_gc_options(p: options.Parser) -> None:
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"IPAM data directory (default {DEFAULT_DATA_DIR})")
    p.add_argument("--network", action="append", default=[], metavar="NAME", help="only this network (repeatable)")
    p.add_argument("--grace", type=_seconds, default=liveness.DEFAULT_GRACE, metavar="SECONDS",
                   help=f"reservations younger than this are never stranded (default {liveness.DEFAULT_GRACE:g})")
    p.add_argument("--apply", action="store_true", help="release the stranded reservations (default: dry run)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--all", action="store_true", help="list live reservations in the table too")
    p.add_argument("--valid-ids", action="append", default=[], metavar="ID[,ID...]",
                   help="container IDs known to be valid; others are stranded (unless their namespace is alive)")
    p.add_argument(
        "--valid-ids-file", metavar="FILE", help="valid container IDs, one per line ('-' for stdin, # comments)"
    )
    p.add_argument(
        "--runtime-cache",
        nargs="?",
        const=liveness.DEFAULT_RUNTIME_CACHE,
        metavar="DIR",
        help=f"consult libcni's result cache (default DIR {liveness.DEFAULT_RUNTIME_CACHE})",
    )
    p.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="containerd[:SOCK]|podman[:ROOT[:RUNROOT]]|podman-api[:SOCK]|cri[:SOCK]",
        help="ask this container runtime which containers exist (cri: the CRI's pod sandboxes, READY or "
        "NOTREADY; default socket /run/containerd/containerd.sock, CRI-O's is /var/run/crio/crio.sock); "
        "those it does not know are stranded where the kernel cannot tell whether their network namespace "
        "is gone and nothing showed it alive (repeatable: name every runtime using the networks; one that "
        "cannot be asked, or lists nothing at all, proves nothing)",
    )
    p.add_argument(
        "--include-unknown",
        action="store_true",
        help="also judge reservations without metadata (host-local's) by the runtime, the runtime cache and "
        "the valid list instead of skipping them (their file time only counts for the grace period)",
    )
    p.add_argument(
        "--previous-boot-only",
        action="store_true",
        help="only reservations made before the running kernel booted (the boot-time unit)",
    )
    p.add_argument(
        "--netns-root",
        default="/",
        metavar="DIR",
        help="where the host's / is mounted, when run in a container (default /; the container needs "
        "hostPID and the host's /run/netns with HostToContainer propagation, see docs/gc.md)",
    )
    p.add_argument(
        "--proc",
        default="/proc",
        metavar="DIR",
        help="the host's procfs, walked to find who holds a namespace (default /proc)",
    )
    p.add_argument(
        "--pidns-is-node",
        action="store_true",
        help="this PID namespace holds every process of the node although it is not the host's "
        "(a kind / sysbox node container): a walk of /proc there may show a namespace alive; "
        "it never proves one gone",
    )
    p.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="wait at most this long for each network lock",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 <= value < 10**9):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range")
    return value


def read_valid_ids(args: argparse.Namespace) -> "set | None":
    """The valid container IDs, or None when none were given.  Raises ValueError with a message."""
    if not args.valid_ids and args.valid_ids_file is None:
        return None
    ids: set[str] = set()
    for item in args.valid_ids:
        ids.update(part for part in item.replace(",", " ").split() if part)
    if args.valid_ids_file is not None:
        try:
            if args.valid_ids_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.valid_ids_file, encoding="utf-8") as fh:
                    text = fh.read()
        except OSError as exc:
            raise ValueError(f"cannot read --valid-ids-file {args.valid_ids_file}: {exc.strerror or exc}") from None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            ids.update(part for part in line.replace(",", " ").split() if part)
    if not ids:
        raise ValueError(
            "the list of valid container IDs is empty; refusing to treat every container as gone "
            "(leave out --valid-ids/--valid-ids-file instead)"
        )
    return ids


def run_pass(data_dir: str, networks: list, checker: liveness.Checker, apply: bool, lock_timeout: float) -> dict:
    """Classify (and release) network by network.  Returns the report as a dict."""
    report: dict = {"networks": {}}
    for name in networks:
        net: dict = {"findings": [], "released": [], "errors": []}
        report["networks"][name] = net
        try:
            with NetworkStore(data_dir, name, lock_timeout, create=False) as store:
                if not store.exists:
                    continue
                findings = liveness.scan_store(store, checker)
                net["findings"] = findings
                if apply:
                    from cni_ipam.cluster.pool import Releaser  # cluster pool: etcd records before files

                    releaser = Releaser(store, probe=True)  # a no-op without a pool record
                    for f in findings:
                        if not f.verdict.stranded:
                            continue
                        try:
                            res = f.reservation
                            if res.container_id is not None:
                                releaser.free(res.address, res.container_id, res.ifname or "")
                            if store.release_reservation(f.reservation):
                                net["released"].append(f)
                        except CniError as exc:
                            net["errors"].append(f"{f.address}: {exc.msg}")
                    releaser.finish()  # return emptied blocks
                counts = _counts(findings)
                gcstats.record_gc_stats(
                    data_dir, name, "cli", apply, counts, len(net["released"]), len(net["errors"]), checker.now
                )
        except CniError as exc:
            net["errors"].append(exc.msg)
        except OSError as exc:  # e.g. the runtime cache vanished mid-pass
            net["errors"].append(f"{exc.filename or name}: {exc.strerror or exc}")
    return report


def _counts(findings: list) -> dict:
    counts = {liveness.LIVE: 0, liveness.STRANDED: 0, liveness.UNKNOWN: 0}
    for f in findings:
        counts[f.verdict.state] = counts.get(f.verdict.state, 0) + 1
    return counts


def _json_report(
    args, data_dir: str, checker: liveness.Checker, report: dict, totals: dict, elapsed: float, code: int
) -> dict:
    nets = {}
    for name, net in report["networks"].items():
        released = {(str(f.address)) for f in net["released"]}
        rows = []
        for f in net["findings"]:
            row = f.to_json(checker.now)
            row["released"] = str(f.address) in released
            rows.append(row)
        nets[name] = {
            "counts": _counts(net["findings"]),
            "released": len(net["released"]),
            "errors": net["errors"],
            "reservations": rows,
        }
    return {
        "dataDir": data_dir,
        "applied": bool(args.apply),
        "now": round(checker.now, 3),
        "bootId": checker.boot_id,
        "graceSeconds": checker.grace,
        "previousBootOnly": checker.previous_boot_only,
        "includeUnknown": checker.include_unknown,
        "runtimeCache": checker.runtime_cache,
        "elapsedSeconds": round(elapsed, 3),
        "totals": totals,
        "exitCode": code,
        "networks": nets,
    }


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _print_table(
    out, args, data_dir: str, checker: liveness.Checker, report: dict, totals: dict, elapsed: float
) -> None:
    rows = []
    for name, net in report["networks"].items():
        released = {str(f.address) for f in net["released"]}
        for f in net["findings"]:
            if f.verdict.state == liveness.LIVE and not args.all:
                continue
            state = "released" if str(f.address) in released else f.verdict.state
            pod = options.pod_label(f.meta.get("k8s"))
            cid = f.container_id or "-"
            rows.append(
                [
                    name,
                    str(f.address),
                    state,
                    f.verdict.reason,
                    _age(f.age(checker.now)),
                    cid[:12],
                    f.ifname or "-",
                    pod,
                    f.verdict.detail,
                ]
            )
    header = ["NETWORK", "IP", "STATE", "REASON", "AGE", "CONTAINER", "IFNAME", "POD", "DETAIL"]
    if rows:
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        out.write(fmt.format(*header) + "\n")
        for r in rows:
            out.write(fmt.format(*r) + "\n")
        out.write("\n")
    for name, net in report["networks"].items():
        c = _counts(net["findings"])
        line = f"{name}: {c['live']} live, {c['stranded']} stranded, {c['unknown']} unknown"
        if args.apply:
            line += f", {len(net['released'])} released"
        out.write(line + "\n")
        for err in net["errors"]:
            out.write(f"{name}: error: {err}\n")
    if not report["networks"]:
        out.write(f"no networks under {data_dir}\n")
    mode = "released" if args.apply else "dry run, nothing changed"
    out.write(
        f"total: {totals['live']} live, {totals['stranded']} stranded, {totals['unknown']} unknown, "
        f"{totals['released']} released, {totals['errors']} errors ({mode}; {elapsed:.2f}s)\n"
    )
    if totals[liveness.STRANDED] and not args.apply:
        out.write("run again with --apply to release the stranded reservations\n")
