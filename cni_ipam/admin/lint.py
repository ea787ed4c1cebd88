"""``cni-ipam lint <files|dirs…>``: offline validation of network conf files that use cni-ipam.

Reports, with the file and the key:

* everything the plugin itself would reject (``config.load`` on each ipam section, the network name,
  the cniVersion, the conflist structure libcni needs);
* overlaps between the ranges of different networks, and with ``--service-cidr``,
  ``--node-cidr``, ``--cidr`` (any other network to keep clear of); a range that crosses the edge of
  ``--cluster-cidr``;
* overlaps with the networks the host already has: its interface addresses and its routes (main
  table), read with pyroute2 (imported only by ``admin.lintnet``), in the host's namespace or ``--netns NAME``;
* exclude entries outside their range, gateways on the network/broadcast address, ranges with no
  usable address, range sets smaller than ``--max-pods``, unknown keys (typos).

Every finding of a file comes out in one run: a config error does not hide the next one (the whole
ipam section is parsed, the part an error names is set aside, and it is parsed again: a valid
section is parsed once, a broken one once more per error), and the ranges of a file with errors that
are valid as written still take part in the size and overlap checks.

``"subnet": "usePodCidr"`` is checked without the Kubernetes API: the pod CIDR comes from
``--pod-cidr`` when given, otherwise the range is checked with a stand-in subnet and left out of the
overlap checks.  Exit status: ``options.EXIT_CODES["lint"]`` (0 clean, 1 errors; 64 usage, 66 no
conf file found).

This module is the command and the ``Linter`` driver (files, then the checks across files);
``admin.lintchecks`` owns the findings and the checks of one ipam section, ``admin.lintnet`` the
host's addresses and routes.
"""


from __future__ import annotations

import json
import os
from typing import Sequence

from cni_ipam.admin import lintnet, options
from cni_ipam.admin.conffiles import CONF_EXTENSIONS, IPAM_TYPES, Attachment, ConfFileError, conf_files, read_conf_file
from cni_ipam.admin.lintchecks import (
    ERROR,
    EXIT_ERRORS,
    EXIT_OK,
    INFO,
    WARNING,
    Checks,
    LintFinding,
    Options,
    RangeRecord,
    _range_overlaps,
)
from cni_ipam.admin.lintnet import host_networks
from cni_ipam.errors import CniError

# What tests and the inventory check import from here; the checks themselves live in lintchecks/lintnet.
__all__ = [
    "Linter", "LintFinding", "Options", "RangeRecord", "host_networks", "main", "lint", "ERROR", "WARNING", "INFO",
]


class Linter(Checks):
    """Lints files: each ipam section (``Checks``), then the checks across files and with the host."""

    # ------------------------------------------------------------------ per file
    def lint_file(self, path: str) -> None:
        try:
            attachments = read_conf_file(path)
        except ConfFileError as exc:
            self.add(ERROR, path, exc.key, exc.msg, "structure")
            return
        is_list = bool(attachments) and attachments[0].prefix != ""
        if not path.endswith(CONF_EXTENSIONS):
            self.add(
                WARNING,
                path,
                "",
                "libcni reads only .conf, .conflist and .json files from a conf directory",
                "structure",
            )
        if path.endswith(".conflist") and not is_list:
            self.add(
                ERROR,
                path,
                "plugins",
                'a .conflist must hold a "plugins" list (libcni: no plugins in list)',
                "structure",
            )
        if is_list and not path.endswith((".conflist", ".json")):
            self.add(
                ERROR,
                path,
                "plugins",
                'libcni reads a .conf file as one plugin; name a file with "plugins" .conflist',
                "structure",
            )
        head = attachments[0]
        self._check_header(path, head)
        linted = 0
        for att in attachments:
            ptype = att.plugin_type
            if not isinstance(ptype, str) or not ptype:
                self.add(
                    ERROR, path, f"{att.prefix}type", 'every plugin needs a "type" (the executable name)', "structure"
                )
            if "ipam" not in att.plugin:
                continue
            ipam = att.plugin["ipam"]
            if not isinstance(ipam, dict):
                self.add(ERROR, path, f"{att.prefix}ipam", "'ipam' must be an object", "config")
                continue
            if att.ipam_type not in IPAM_TYPES:
                continue
            linted += 1
            self.lint_ipam(att)
        if linted == 0:
            self.add(
                INFO,
                path,
                "",
                "no plugin of this file uses cni-ipam (or host-local): only the structure was checked",
                "ipam-type",
            )

    def _check_header(self, path: str, head: Attachment) -> None:
        from cni_ipam.plugin.skel import SUPPORTED_VERSIONS, validate_network_name

        try:
            validate_network_name(head.name)
        except CniError as exc:
            self.add(ERROR, path, "name", f"{exc.msg} (libcni and the plugin reject it)", "config")
        version = head.cni_version
        if version in (None, ""):
            self.add(
                WARNING,
                path,
                "cniVersion",
                "missing: the plugin treats the network as 0.1.0 (no CHECK or GC, one address per family)",
                "config",
            )
        elif version not in SUPPORTED_VERSIONS:
            self.add(
                ERROR,
                path,
                "cniVersion",
                f"{version!r} is not supported (plugin supports {', '.join(SUPPORTED_VERSIONS)})",
                "config",
            )

    # ------------------------------------------------------------------ across files
    def check_overlaps(self) -> None:
        recs = self.records
        for i, a in enumerate(recs):
            for b in recs[i + 1 :]:
                if (a.network, a.data_dir) == (b.network, b.data_dir):
                    continue
                if a.range.overlaps(b.range):
                    self.add(
                        ERROR,
                        b.file,
                        b.key,
                        f"range {b.text()} of network {b.network!r} overlaps {a.key} {a.text()} "
                        f"of network {a.network!r} in {a.file}",
                        "overlap-network",
                    )
        groups: dict[tuple[str, str], dict[str, set]] = {}
        for r in recs:
            groups.setdefault((r.network, r.data_dir), {}).setdefault(r.file, set()).add(
                (str(r.range.subnet), r.range.start, r.range.end)
            )
        for (network, _), by_file in groups.items():
            files = sorted(by_file)
            if len(files) > 1 and any(by_file[f] != by_file[files[0]] for f in files[1:]):
                self.add(
                    WARNING,
                    files[1],
                    "name",
                    f"network {network!r} is also defined in {files[0]} with other ranges; "
                    "both share one data directory",
                    "duplicate-network",
                )

    def check_cidrs(self) -> None:
        o = self.opts
        for rec in self.records:
            rng = rec.range
            for label, nets, check in (
                ("--service-cidr", o.service_cidrs, "overlap-service"),
                ("--cidr", o.cidrs, "overlap-cidr"),
            ):
                for net in nets:
                    if _range_overlaps(rng, net):
                        self.add(ERROR, rec.file, rec.key, f"range {rec.text()} overlaps {label} {net}", check)
                    elif rng.subnet.overlaps(net) if rng.version == net.version else False:
                        self.add(
                            WARNING,
                            rec.file,
                            rec.key,
                            f"subnet {rng.subnet} overlaps {label} {net} (the range itself does not)",
                            check,
                        )
            for net in o.node_cidrs:
                if _range_overlaps(rng, net):
                    if rec.l2:
                        self.add(
                            WARNING,
                            rec.file,
                            rec.key,
                            f"range {rec.text()} overlaps --node-cidr {net}: make sure no node "
                            f"uses an address of the range (or exclude it)",
                            "overlap-node",
                        )
                    else:
                        self.add(
                            ERROR,
                            rec.file,
                            rec.key,
                            f"range {rec.text()} overlaps --node-cidr {net}: it could hand out node addresses",
                            "overlap-node",
                        )
                elif rng.version == net.version and rng.subnet.overlaps(net):
                    level = INFO if rec.l2 else WARNING
                    self.add(
                        level,
                        rec.file,
                        rec.key,
                        f"subnet {rng.subnet} overlaps --node-cidr {net} (the range itself does not)"
                        + (f"; expected for {rec.att.plugin_type}" if rec.l2 else ""),
                        "overlap-node",
                    )
            same_family = [n for n in o.cluster_cidrs if n.version == rng.version]
            if rec.pod_cidr and same_family and not any(rng.subnet.subnet_of(n) for n in same_family):
                self.add(
                    WARNING,
                    rec.file,
                    rec.key,
                    f"usePodCidr subnet {rng.subnet} is not inside --cluster-cidr "
                    f"{', '.join(map(str, same_family))}: node pod CIDRs are cut from the cluster CIDR",
                    "cluster-cidr",
                )
            for net in o.cluster_cidrs:
                if rng.version != net.version or not rng.subnet.overlaps(net):
                    continue
                if not rng.subnet.subnet_of(net):
                    self.add(
                        ERROR,
                        rec.file,
                        rec.key,
                        f"subnet {rng.subnet} crosses the edge of --cluster-cidr {net}",
                        "cluster-cidr",
                    )

    def check_host(self) -> None:
        lintnet.check_host(self)

    def run(self, paths: Sequence[str]) -> list[LintFinding]:
        for path in paths:
            self.lint_file(path)
        self.check_overlaps()
        self.check_cidrs()
        if self.opts.host:
            self.check_host()
        order = {p: i for i, p in enumerate(paths)}
        self.findings.sort(key=lambda f: order.get(f.file, len(order)))  # stable: grouped by file
        return self.findings

# ---------------------------------------------------------------------- command line
def expand_paths(items: Sequence[str]) -> list[str]:
    out = []
    for item in items:
        out += conf_files(item) if os.path.isdir(item) else [item]
    return out


class Lint(options.Command):
    name = "lint"
    description = "Validate .conf/.conflist files that use cni-ipam."

    def add_options(self, parser: options.Parser) -> None:
        add_lint_options(parser)

    def check_args(self, args) -> None:
        if args.max_pods is not None and args.max_pods < 1:
            raise options.UsageError("--max-pods must be at least 1")
        args.inv = load_inventory(args)

    def input_problem(self, args) -> str | None:
        args.files = expand_paths(args.paths)
        return None if args.files else f"no conf files found in {' '.join(args.paths)}"

    def run(self, args) -> int:
        return lint(args)


def main(argv: list[str]) -> int:
    return Lint().main(argv)


def add_lint_options(parser: options.Parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR", help="conf files, or directories of them")
    for flag, text in (
        ("--service-cidr", "the cluster's Service CIDR: no range may overlap it"),
        ("--cluster-cidr", "ranges must lie inside it or outside it, never across its edge"),
        ("--node-cidr", "the network the nodes live on"),
        ("--cidr", "any other network to keep clear of"),
        ("--pod-cidr", "the node's pod CIDR, used for usePodCidr ranges (one per family)"),
    ):
        options.add_cidr_option(parser, flag, text)
    parser.add_argument("--max-pods", type=int, metavar="N", help="every range set must hold at least N addresses")
    parser.add_argument("--no-host", action="store_true", help="do not compare with the host's addresses and routes")
    parser.add_argument("--netns", metavar="NAME", help="compare with the networks of this named network namespace")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")
    parser.add_argument("--json", action="store_true", help="JSON for tools")
    parser.add_argument("--quiet", "-q", action="store_true", help="errors and warnings only, no info lines")
    parser.add_argument("--inventory", metavar="FILE",
                        help="check the ranges against an inventory file (see plan --inventory)")
    parser.add_argument("--cluster", metavar="NAME", help="with --inventory: the cluster these confs belong to")


def load_inventory(args):
    """The inventory of ``--inventory`` (None without it); a usage error when it cannot be used."""
    if args.inventory is None and args.cluster is None:
        return None
    from cni_ipam.admin import inventory

    try:
        if args.inventory is None:
            raise inventory.InventoryError("--cluster", 0, "goes with --inventory FILE")
        inv = inventory.load(args.inventory)
        if args.cluster is not None and inv.cluster(args.cluster) is None:
            raise inventory.InventoryError(args.inventory, 0, f"no cluster named {args.cluster!r}")
    except inventory.InventoryError as exc:
        raise options.UsageError(str(exc)) from None
    return inv


def lint(args) -> int:
    paths = args.files
    opts = Options(
        args.service_cidr,
        args.cluster_cidr,
        args.node_cidr,
        args.cidr,
        args.pod_cidr,
        args.max_pods,
        host=not args.no_host,
        netns=args.netns,
    )
    linter = Linter(opts)
    findings = linter.run(paths)
    if args.inv is not None:  # the inventory's findings after each file's own
        from cni_ipam.admin import inventory_lint

        for file, key, message, check in inventory_lint.check(args.inv, linter.records, args.cluster):
            findings.append(LintFinding(ERROR, file, key, message, check))
        order = {p: i for i, p in enumerate(paths)}
        findings.sort(key=lambda f: order.get(f.file, len(order)))
    errors = sum(1 for f in findings if f.level == ERROR)
    warnings = sum(1 for f in findings if f.level == WARNING)
    if args.json:
        print(
            json.dumps(
                {"files": paths, "errors": errors, "warnings": warnings, "findings": [f.to_json() for f in findings]},
                indent=2,
            )
        )
    else:
        for f in findings:
            if args.quiet and f.level == INFO:
                continue
            print(f)
        print(f"{len(paths)} file(s): {errors} error(s), {warnings} warning(s)")
    if errors or (args.strict and warnings):
        return EXIT_ERRORS
    return EXIT_OK
