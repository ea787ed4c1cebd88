"""``cni-ipam metrics``: the ``show`` numbers in the Prometheus text format.

To stdout (for a one-shot scrape or a wrapper script), or into a node_exporter textfile-collector
directory with ``--textfile-dir`` (``<dir>/cni_ipam.prom``, mode 0644, written to a new temporary
file and renamed into place, so node_exporter never reads half a file; see ``write_textfile``).  Uses
prometheus_client's registry and exposition code; it is imported here only, never on the plugin path.

Series (labels ``network``; ``range_set`` index, ``family`` ipv4/ipv6 and ``ranges`` text for
the per-range-set ones):

=============================================  =====  ================================================
cni_ipam_range_set_size                         gauge  addresses the range set can hand out
cni_ipam_range_set_reserved                     gauge  reserved addresses in the range set
cni_ipam_range_set_free                         gauge  size - reserved
cni_ipam_range_set_utilization_ratio            gauge  reserved / size (0..1; 1 for an empty range)
cni_ipam_network_reservations                   gauge  reservation files of the network (all)
cni_ipam_network_reservations_outside_ranges    gauge  reservations in no configured range (conf changed)
cni_ipam_network_config_known                   gauge  1 when a conf file gives the network's ranges
cni_ipam_reservations_liveness                  gauge  reservations by liveness ``state`` (live/stranded/unknown)
cni_ipam_stranded_reservations                  gauge  stranded reservations by ``reason`` (every reason, 0 too)
cni_ipam_gc_last_run_timestamp_seconds          gauge  last GC pass (dry run or apply) of the network
cni_ipam_gc_last_apply_timestamp_seconds        gauge  last GC pass that released (``--apply`` or GC verb)
cni_ipam_gc_last_reclaimed                      gauge  addresses released by that last applying pass
cni_ipam_gc_reclaimed_total                     counter addresses released by GC since the directory was made
cni_ipam_metrics_generated_timestamp_seconds    gauge  when these numbers were taken
=============================================  =====  ================================================
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from cni_ipam.admin import options
from cni_ipam.admin import show as report

TEXTFILE_NAME = "cni_ipam.prom"
EXIT_OK, EXIT_ERROR = 0, 1


class IpamCollector:
    """A prometheus_client collector over ``report.collect()`` results taken once."""

    def __init__(self, reports: Sequence[report.NetworkReport], now: float | None = None) -> None:
        self.reports = reports
        self.now = time.time() if now is None else now

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from cni_ipam.admin.liveness import LIVE, STRANDED, STRANDED_REASONS, UNKNOWN
        from cni_ipam.store.gcstats import read_gc_stats

        set_labels = ["network", "range_set", "family", "ranges"]
        size = GaugeMetricFamily(
            "cni_ipam_range_set_size",
            "Addresses the range set can hand out (gateway, network, broadcast and excluded addresses do not count).",
            labels=set_labels,
        )
        reserved = GaugeMetricFamily(
            "cni_ipam_range_set_reserved", "Reserved addresses in the range set.", labels=set_labels
        )
        free = GaugeMetricFamily("cni_ipam_range_set_free", "Free addresses in the range set.", labels=set_labels)
        ratio = GaugeMetricFamily(
            "cni_ipam_range_set_utilization_ratio",
            "Reserved / size of the range set (1 when it holds no address).",
            labels=set_labels,
        )
        def per_network(name: str, text: str):
            return GaugeMetricFamily(name, text, labels=["network"])

        total = per_network("cni_ipam_network_reservations", "Reservation files of the network.")
        outside = per_network(
            "cni_ipam_network_reservations_outside_ranges", "Reservations in no configured range set."
        )
        known = per_network("cni_ipam_network_config_known", "1 when a conf file gives the network's range sets.")
        states = GaugeMetricFamily(
            "cni_ipam_reservations_liveness",
            "Reservations by liveness state as the GC pass judges them.",
            labels=["network", "state"],
        )
        stranded = GaugeMetricFamily(
            "cni_ipam_stranded_reservations", "Stranded reservations by reason.", labels=["network", "reason"]
        )
        gc_run = per_network("cni_ipam_gc_last_run_timestamp_seconds", "When the last GC pass over the network ran.")
        gc_apply = per_network(
            "cni_ipam_gc_last_apply_timestamp_seconds", "When the last releasing GC pass over the network ran."
        )
        gc_last = per_network("cni_ipam_gc_last_reclaimed", "Addresses released by the last releasing GC pass.")
        gc_total = CounterMetricFamily(
            "cni_ipam_gc_reclaimed", "Addresses released by GC over the life of the data directory.", labels=["network"]
        )
        for rep in self.reports:
            net = rep.name
            for s in rep.sets:
                labels = [net, str(s.index), s.family, s.ranges_text()]
                size.add_metric(labels, s.size)
                reserved.add_metric(labels, s.reserved)
                free.add_metric(labels, s.free)
                ratio.add_metric(labels, s.ratio)
            total.add_metric([net], len(rep.entries))
            outside.add_metric([net], len(rep.outside))
            known.add_metric([net], 1 if rep.known else 0)
            counts = rep.liveness_counts()
            for state in (LIVE, STRANDED, UNKNOWN):
                states.add_metric([net, state], counts.get(state, 0))
            for reason in sorted(set(STRANDED_REASONS) | set(rep.stranded)):
                stranded.add_metric([net, reason], rep.stranded.get(reason, 0))
            stats = read_gc_stats(rep.data_dir, net) if rep.exists else {}
            if _number(stats.get("lastRun")):
                gc_run.add_metric([net], stats["lastRun"])
            if _number(stats.get("lastApply")):
                gc_apply.add_metric([net], stats["lastApply"])
            if _number(stats.get("lastReleased")):
                gc_last.add_metric([net], stats["lastReleased"])
            gc_total.add_metric([net], stats["releasedTotal"] if _number(stats.get("releasedTotal")) else 0)
        yield from (
            size,
            reserved,
            free,
            ratio,
            total,
            outside,
            known,
            states,
            stranded,
            gc_run,
            gc_apply,
            gc_last,
            gc_total,
        )
        stamp = GaugeMetricFamily(
            "cni_ipam_metrics_generated_timestamp_seconds", "When cni-ipam metrics took these numbers."
        )
        stamp.add_metric([], self.now)
        yield stamp


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def registry_for(reports: Sequence[report.NetworkReport], now: float | None = None):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(IpamCollector(reports, now))
    return registry


def exposition(reports: Sequence[report.NetworkReport], now: float | None = None) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(registry_for(reports, now))


def write_textfile(
    directory: str, reports: Sequence[report.NetworkReport], name: str = TEXTFILE_NAME, now: float | None = None
) -> str:
    """Write ``<directory>/<name>`` atomically, mode 0644 whatever the umask (node_exporter reads
    it, nobody else may write it).  Not prometheus_client's writer: that one opens a predictable
    ``<name>.<pid>.<thread>`` with a plain ``open``, so a link planted there is followed as root.
    Here the temporary file is new (``O_EXCL|O_NOFOLLOW``, random name, not ``*.prom``), created
    through a descriptor of the directory, and renamed over ``name`` (a symlink there is replaced,
    never written through).  The directory must exist: it is never created."""
    from cni_ipam.store import fs as safefs

    data = exposition(reports, now)
    fd = safefs.open_dir(directory, follow=True)  # the operator named it; it may be a link
    try:
        safefs.write_atomic(fd, name, data, 0o644)
    finally:
        os.close(fd)
    return os.path.join(directory, name)


class Metrics(options.Command):
    name = "metrics"
    description = "Prometheus metrics of every network."

    def add_options(self, parser: options.Parser) -> None:
        report.add_selection_options(parser)
        parser.add_argument(
            "--textfile-dir",
            metavar="DIR",
            help="write <DIR>/cni_ipam.prom atomically for node_exporter's textfile collector",
        )
        parser.add_argument(
            "--textfile-name", default=TEXTFILE_NAME, metavar="NAME", help="default %(default)s (must end in .prom)"
        )
        report.add_liveness_options(parser)

    def check_args(self, args) -> None:
        args.thresholds = report.thresholds_of(args)
        if not args.textfile_name.endswith(".prom") or "/" in args.textfile_name:
            raise options.UsageError("--textfile-name must be a file name ending in .prom")

    def input_problem(self, args) -> str | None:
        return report.selection_problem(args)

    def run(self, args) -> int:
        return export(args)


def main(argv: list[str]) -> int:
    return Metrics().main(argv)


def export(args) -> int:
    thresholds = args.thresholds
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print(
            "cni-ipam metrics: needs prometheus-client, a dependency of cni-ipam (pip install prometheus-client)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        reports = report.collect(
            args.data_dir, args.conf_dir, args.network, args.from_conf, thresholds, report.make_checker(args)
        )
        if args.textfile_dir:
            write_textfile(args.textfile_dir, reports, args.textfile_name)
        else:
            sys.stdout.buffer.write(exposition(reports))
            sys.stdout.flush()
    except OSError as exc:
        print(f"cni-ipam metrics: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for rep in reports:  # exported with cni_ipam_network_config_known 0; not a failure of the export
        if rep.conf is not None and rep.conf.pod_cidr_unknown and not rep.error:
            print(f"cni-ipam metrics: warning: {rep.name}: {rep.conf.error}", file=sys.stderr)
    failed = [r for r in reports if r.error]
    for rep in failed:
        print(f"cni-ipam metrics: {rep.error}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK
