"""``cni-ipam show``: how full each network is, and with ``--ips`` who holds each address.

For each network (a directory under the data directory, a ``--network`` name, or the networks of
the conf files in ``--conf-dir``): its range sets as the conf file defines them, their size
(``RangeSet.size()``: gateway, network/broadcast and excluded addresses do not count), reserved,
free, percent used and a level (ok / warning / critical / emergency at 70 / 85 / 95 %, configurable;
``unknown`` for a network without a valid conf file or whose directory cannot be read).  The exit
status is the worst level (``options.EXIT_CODES``), so the command doubles as a monitoring check.

Reading is **lock-free and read-only**: the reservation files and the owner index (``.cni-ipam/index``,
through ``store.snapshot.read_owner_index``) are read directly, without taking the network lock and
without opening a ``store.NetworkStore`` (which would create ``.cni-ipam/`` and rebuild the index).  So
``show`` never delays an ADD, needs no write permission, and leaves a directory written by host-local
exactly as it was.  The price is a snapshot that may be a few files out of date while pods start, which
is what a utilization report is anyway; reservation files are always complete (cni-ipam links them into
place; a host-local file caught half-written reads as "owner unknown").  Conf files are parsed offline
(``conffiles.load_offline``): a ``usePodCidr`` subnet comes from the pod CIDR cache only, never from the
API server, and the cache is never written; without a cache the network is shown as "pod CIDR not known
offline" (level ``unknown``).

``collect()`` is also what ``cni-ipam metrics`` exports.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

from cni_ipam.plugin import netconf as config
from cni_ipam.admin import options
from cni_ipam.admin.conffiles import DEFAULT_CONF_DIR, NetworkConf, conf_networks
from cni_ipam.admin.output import (
    DEFAULT_THRESHOLDS,
    LEVELS,
    UNKNOWN_LEVEL,
    format_age,
    level_for,
    table,
    worse,
    worst_level,
)
from cni_ipam.store.snapshot import Entry, list_networks, scan_network_dir
from cni_ipam.admin.liveness import Checker, Verdict
from cni_ipam.plugin.ranges import RangeSet

# How bad, for the worst level of several networks: a real alarm outranks "cannot tell", and
# "cannot tell" outranks ok (as monitoring aggregators order OK < UNKNOWN < WARNING < CRITICAL).
# Exit status of ``show``: the worst level (the table is options.EXIT_CODES["show"]).
EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2, "emergency": 3, UNKNOWN_LEVEL: 4}
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


# ---------------------------------------------------------------------- levels
# ---------------------------------------------------------------------- conf files
# ---------------------------------------------------------------------- lock-free scan
# ---------------------------------------------------------------------- the report
class SetStats:
    __slots__ = ("index", "range_set", "size", "reserved", "level", "percent", "stranded_attachments")

    def __init__(self, index: int, range_set: RangeSet, size: int, reserved: int, thresholds) -> None:
        self.index = index
        self.range_set = range_set
        self.size = size
        self.reserved = reserved
        self.percent = 100.0 if size == 0 else 100.0 * reserved / size
        self.level = level_for(self.percent, thresholds)
        self.stranded_attachments = 0  # attachments (container, ifname) with a stranded address here

    @property
    def free(self) -> int:
        return max(self.size - self.reserved, 0)

    @property
    def ratio(self) -> float:
        return 1.0 if self.size == 0 else self.reserved / self.size

    @property
    def family(self) -> str:
        return f"ipv{self.range_set.version}"

    def ranges_text(self) -> str:
        parts = []
        for r in self.range_set.ranges:
            net = r.subnet
            if r.is_default():
                parts.append(str(net))
            else:
                parts.append(f"{net}[{r.range_start}-{r.range_end}]")
        return ",".join(parts)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "family": self.family,
            "ranges": self.range_set.to_json(),
            "size": self.size,
            "reserved": self.reserved,
            "free": self.free,
            "percent": round(self.percent, 2),
            "level": self.level,
            "strandedAttachments": self.stranded_attachments,
        }


class NetworkReport:
    __slots__ = ("name", "data_dir", "conf", "exists", "entries", "sets", "outside", "level", "stranded", "error")

    def __init__(self, name: str, data_dir: str, conf: NetworkConf | None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.conf = conf
        self.exists = False
        self.entries: list[Entry] = []
        self.sets: list[SetStats] = []
        self.outside: list[Entry] = []  # reservations in no configured range set (or excluded)
        self.level = UNKNOWN_LEVEL
        self.stranded: dict[str, int] = {}
        self.error = ""

    @property
    def path(self) -> str:
        return os.path.join(self.data_dir, self.name)

    @property
    def known(self) -> bool:
        return self.conf is not None and self.conf.range_sets is not None

    def stranded_attachments(self) -> int:
        """Attachments (container ID, ifname) whose reservations are stranded: a dual-stack pod
        counts once, not once per address."""
        return len({e.attachment for e in self.entries if e.stranded})

    def liveness_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            verdict = verdict_of(e)
            if verdict is not None:
                out[verdict.state] = out.get(verdict.state, 0) + 1
        return out

    def to_json(self, now: float, with_ips: bool) -> dict:
        out = {
            "name": self.name,
            "dataDir": self.data_dir,
            "exists": self.exists,
            "confFile": self.conf.file if self.conf else None,
            "confError": (self.conf.error or None) if self.conf and not self.conf.pod_cidr_unknown else None,
            "podCidrNotKnownOffline": (self.conf.error or None) if self.conf and self.conf.pod_cidr_unknown else None,
            "level": self.level,
            "reserved": len(self.entries),
            "outsideRanges": len(self.outside),
            "rangeSets": [s.to_json() for s in self.sets],
            "liveness": self.liveness_counts(),
            "stranded": dict(sorted(self.stranded.items())),
            "strandedAttachments": self.stranded_attachments(),
        }
        if self.error:
            out["error"] = self.error
        if with_ips:
            out["reservations"] = [e.to_json(now) for e in self.entries]
        return out


def _allocatable_set(range_sets: Sequence[RangeSet], addr) -> int | None:
    """The index of the range set that could hand out ``addr`` under the current config."""
    for i, rset in enumerate(range_sets):
        if rset.contains(addr):
            return i if rset.can_hand_out(addr) else None
    return None


def verdict_of(entry: Entry) -> Verdict | None:
    """The liveness verdict the checker gave ``entry`` (None without ``--check-liveness``)."""
    return entry.verdict if isinstance(entry.verdict, Verdict) else None


def build_report(
    name: str, data_dir: str, conf: NetworkConf | None, thresholds=DEFAULT_THRESHOLDS, checker: Checker | None = None
) -> NetworkReport:
    """Scan one network directory and count it against its range sets."""
    rep = NetworkReport(name, data_dir, conf)
    rep.exists = os.path.isdir(rep.path) and not os.path.islink(rep.path)
    try:
        rep.entries = scan_network_dir(rep.path) if rep.exists else []
    except OSError as exc:
        rep.error = f"cannot read {rep.path}: {exc.strerror or exc}"
    if checker is not None:
        for e in rep.entries:
            verdict = checker.classify(
                {"containerID": e.container_id, "ifname": e.ifname}, network=name, meta=e.meta, mtime=e.mtime
            )
            e.verdict = verdict
            if verdict.stranded:
                rep.stranded[verdict.reason] = rep.stranded.get(verdict.reason, 0) + 1
    range_sets = conf.range_sets if conf is not None else None
    if range_sets is not None:
        counts = [0] * len(range_sets)
        for e in rep.entries:
            e.set_index = _allocatable_set(range_sets, e.address)
            if e.set_index is None:
                rep.outside.append(e)
            else:
                counts[e.set_index] += 1
        rep.sets = [SetStats(i, rs, rs.size(), counts[i], thresholds) for i, rs in enumerate(range_sets)]
        stranded_in: dict[int, set] = {}
        for e in rep.entries:
            if e.set_index is not None and e.stranded:
                stranded_in.setdefault(e.set_index, set()).add(e.attachment)
        for s in rep.sets:
            s.stranded_attachments = len(stranded_in.get(s.index, ()))
        rep.level = "ok"
        for s in rep.sets:
            rep.level = worse(rep.level, s.level)
    if rep.error:
        rep.level = UNKNOWN_LEVEL
    return rep


def collect(
    data_dir: str = config.DEFAULT_DATA_DIR,
    conf_dir: str | None = DEFAULT_CONF_DIR,
    networks: Sequence[str] | None = None,
    from_conf: bool = False,
    thresholds=DEFAULT_THRESHOLDS,
    checker: Checker | None = None,
) -> list[NetworkReport]:
    """Reports for the selected networks.

    * default: every network directory under ``data_dir`` plus the conf-file networks whose
      dataDir is ``data_dir`` (configured but still empty networks show 0 %);
    * ``from_conf``: exactly the networks of the conf files, each in its own dataDir;
    * ``networks``: only those names (looked up in the selection above, else ``data_dir/<name>``).
    """
    confs = conf_networks(conf_dir) if conf_dir else []
    data_dir = os.path.normpath(data_dir)
    selected: list[tuple[str, str, NetworkConf | None]]
    if from_conf:
        selected = [(c.name, c.data_dir, c) for c in confs]
    else:
        by_name = {c.name: c for c in reversed(confs) if c.data_dir == data_dir}
        names = set(list_networks(data_dir)) | set(by_name)
        selected = [(n, data_dir, by_name.get(n)) for n in sorted(names)]
    if networks:
        wanted = []
        for name in networks:
            match = [s for s in selected if s[0] == name]
            if not match:
                conf = next((c for c in confs if c.name == name and c.data_dir == data_dir), None)
                match = [(name, data_dir, conf)]
            wanted += match
        selected = wanted
    return [build_report(n, d, c, thresholds, checker) for n, d, c in selected]


# ---------------------------------------------------------------------- output
def render_table(reports: Sequence[NetworkReport], with_ips: bool, now: float) -> str:
    # STRANDED: attachments (container, ifname) with a stranded address in that range set (a
    # dual-stack pod counts once in each set); for a network without known range sets, in all.
    rows = [["NETWORK", "SET", "RANGES", "SIZE", "RESERVED", "FREE", "USED", "LEVEL", "STRANDED ATTACHMENTS"]]
    notes = []
    for rep in reports:
        if rep.sets:
            for s in rep.sets:
                rows.append(
                    [
                        rep.name,
                        str(s.index),
                        s.ranges_text(),
                        str(s.size),
                        str(s.reserved),
                        str(s.free),
                        f"{s.percent:.1f}%",
                        s.level,
                        str(s.stranded_attachments),
                    ]
                )
        else:
            why = (
                "(no conf file)"
                if rep.conf is None
                else "(unreadable)"
                if rep.error
                else "(pod CIDR not known offline)"
                if rep.conf.pod_cidr_unknown
                else "(conf invalid)"
            )
            rows.append(
                [
                    rep.name,
                    "-",
                    why,
                    "-",
                    str(len(rep.entries)),
                    "-",
                    "-",
                    UNKNOWN_LEVEL,
                    str(rep.stranded_attachments()),
                ]
            )
        if rep.conf is not None and rep.conf.error:
            what = "warning: " if rep.conf.pod_cidr_unknown else ""
            notes.append(f"{rep.name}: {rep.conf.file}: {what}{rep.conf.error}")
        if rep.outside:
            notes.append(
                f"{rep.name}: {len(rep.outside)} reservation(s) outside the configured ranges: "
                + ", ".join(str(e.address) for e in rep.outside[:5])
                + (" ..." if len(rep.outside) > 5 else "")
            )
        if rep.error:
            notes.append(f"{rep.name}: {rep.error}")
    out = [table(rows, right=(3, 4, 5, 6, 8)) if len(rows) > 1 else "no networks found"]
    if notes:
        out.append("")
        out += notes
    if with_ips:
        for rep in reports:
            out.append("")
            out.append(f"{rep.name} ({rep.path}): {len(rep.entries)} reservation(s)")
            if not rep.entries:
                continue
            ip_rows = [["ADDRESS", "SET", "CONTAINER", "IFNAME", "POD", "AGE", "LIVENESS"]]
            for e in rep.entries:
                created, _ = e.created
                pod_text = options.pod_label(e.pod)
                v = verdict_of(e)
                verdict = f"{v.state}/{v.reason}" if v is not None else "-"
                ip_rows.append(
                    [
                        str(e.address),
                        "-" if e.set_index is None else str(e.set_index),
                        (e.container_id or "?")[:12],
                        e.ifname or "-",
                        pod_text,
                        format_age(None if created is None else now - created),
                        verdict,
                    ]
                )
            out.append(table(ip_rows))
    return "\n".join(out)


# ---------------------------------------------------------------------- command line
def add_liveness_options(parser) -> None:
    from cni_ipam.admin.liveness import DEFAULT_GRACE, DEFAULT_RUNTIME_CACHE

    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"reservations younger than this are never stranded (default {DEFAULT_GRACE:g})",
    )
    parser.add_argument(
        "--include-unknown",
        action="store_true",
        help="judge reservations without metadata (host-local's) by the evidence that needs none",
    )
    parser.add_argument(
        "--runtime-cache",
        nargs="?",
        const=DEFAULT_RUNTIME_CACHE,
        metavar="DIR",
        help=f"also consult libcni's result cache (default {DEFAULT_RUNTIME_CACHE}), as `gc --runtime-cache` does",
    )


def make_checker(args) -> Checker:
    from cni_ipam.admin.liveness import Checker

    return Checker(grace=args.grace, include_unknown=args.include_unknown, runtime_cache=args.runtime_cache)


def add_selection_options(parser) -> None:
    parser.add_argument("--data-dir", default=config.DEFAULT_DATA_DIR, help="default %(default)s")
    parser.add_argument(
        "--conf-dir",
        default=DEFAULT_CONF_DIR,
        help="conf files that give the range sets (default %(default)s; '' for none)",
    )
    parser.add_argument("--network", action="append", metavar="NAME", help="only this network (repeatable)")
    parser.add_argument(
        "--from-conf",
        action="store_true",
        help="report exactly the networks of the conf files, each in its own dataDir",
    )
    parser.add_argument(
        "--warning", type=float, default=DEFAULT_THRESHOLDS[0], metavar="PERCENT", help="default %(default)g"
    )
    parser.add_argument(
        "--critical", type=float, default=DEFAULT_THRESHOLDS[1], metavar="PERCENT", help="default %(default)g"
    )
    parser.add_argument(
        "--emergency", type=float, default=DEFAULT_THRESHOLDS[2], metavar="PERCENT", help="default %(default)g"
    )


def thresholds_of(args) -> tuple[float, float, float]:
    t = (args.warning, args.critical, args.emergency)
    if not (0 <= t[0] <= t[1] <= t[2] <= 100):
        raise options.UsageError("thresholds must satisfy 0 <= --warning <= --critical <= --emergency <= 100")
    return t


def selection_problem(args) -> str | None:
    """Why the selection cannot be reported (a mistyped --data-dir), or None."""
    return None if args.from_conf else options.data_dir_problem(args.data_dir)


class Show(options.Command):
    name = "show"
    description = "How full each network is."

    def add_options(self, parser: options.Parser) -> None:
        add_selection_options(parser)
        parser.add_argument(
            "--ips", action="store_true", help="list every reservation with its owner, age and liveness"
        )
        parser.add_argument("--json", action="store_true", help="JSON for tools")
        add_liveness_options(parser)

    def check_args(self, args) -> None:
        args.thresholds = thresholds_of(args)

    def input_problem(self, args) -> str | None:
        return selection_problem(args)

    def run(self, args) -> int:
        return show(args)


def main(argv: list[str]) -> int:
    return Show().main(argv)


def show(args) -> int:
    now = time.time()
    thresholds = args.thresholds
    try:
        reports = collect(args.data_dir, args.conf_dir, args.network, args.from_conf, thresholds, make_checker(args))
    except OSError as exc:
        print(f"cni-ipam show: {exc}", file=sys.stderr)
        return EXIT_CODES[UNKNOWN_LEVEL]
    level = worst_level(reports)
    if args.json:
        doc = {
            "dataDir": args.data_dir,
            "thresholds": dict(zip(LEVELS[1:], thresholds)),
            "level": level,
            "networks": [r.to_json(now, args.ips) for r in reports],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(render_table(reports, args.ips, now))
    return EXIT_CODES[level]
