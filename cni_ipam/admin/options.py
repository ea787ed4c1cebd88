"""What the admin commands share: the exit codes of every command in one table, a ``Command`` base
that runs a command with the shared handling of ``--help``, usage errors and a missing input (and
``CommandGroup`` for a command of subcommands, ``pool``), and the option types and checks several
commands use.

The same mistake has the same exit code in every command: a usage error (unknown option, a bad
value) is 64 and a missing input (a ``--data-dir`` that does not exist or is not a directory, no
conf file) is 66 (sysexits' EX_USAGE and EX_NOINPUT; argparse's usual 2 is a level in ``show``);
the pool commands answer no pool found with a code of their own (``Command.no_input_exit``).
The small codes 0-4 are each command's own answer.  ``EXIT_CODES`` is the one table: each command's
``--help`` prints its own rows, and the README's table is generated from it (scripts/readme_tables.py;
a test keeps the two equal).  Admin code only: never imported on the plugin path.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from cni_ipam.plugin.netconf import DEFAULT_DATA_DIR

EXIT_USAGE = 64
EXIT_NO_INPUT = 66
EXIT_NO_DATA_DIR = EXIT_NO_INPUT  # the name the commands used first

_USAGE = {EXIT_USAGE: "usage error: unknown option, bad option value, missing argument"}
_NO_DATA_DIR = {EXIT_NO_INPUT: "`--data-dir` does not exist or is not a directory"}
_SHOW_LEVELS = {
    0: "every network `ok`",
    1: "worst level `warning`",
    2: "worst level `critical`",
    3: "worst level `emergency`",
}

# command -> {exit code: meaning}, every code the command can exit with; "cni-ipam" is the front door.
EXIT_CODES: dict[str, dict[int, str]] = {
    "cni-ipam": {
        0: "usage printed (no arguments, `--help`) or `version`",
        2: "the command is not available in this build (its module cannot be imported)",
        EXIT_USAGE: "unknown command",
        141: "the reader of the output went away (`cni-ipam show` piped into `head`), as SIGPIPE would end a C tool",
    },
    "gc": {
        0: "clean: nothing stranded (dry run) or every stranded reservation released (`--apply`)",
        1: "dry run: stranded reservations found, nothing changed",
        3: "partial: a network could not be locked or a release failed; the rest was done",
        4: "nothing done: runtime cache or valid-ID file unusable, empty valid list, unknown `--network`",
        **_USAGE,
        **_NO_DATA_DIR,
    },
    "show": {
        **_SHOW_LEVELS,
        4: "worst level `unknown`: a network without a (valid) conf file, whose directory cannot be read, "
        "or whose `usePodCidr` subnet is not known offline (no pod CIDR cache yet)",
        **_USAGE,
        **_NO_DATA_DIR,
    },
    "metrics": {
        0: "written",
        1: "a network could not be read, the file not written, or prometheus-client is missing",
        **_USAGE,
        **_NO_DATA_DIR,
    },
    "lint": {
        0: "no errors (warnings allowed unless `--strict`)",
        1: "errors (with `--strict`: warnings too)",
        **_USAGE,
        EXIT_NO_INPUT: "no conf file found in the paths given",
    },
    "plan": {
        0: "the plan fits",
        1: "warnings",
        2: "errors",
        **_USAGE,
    },
    "pool show": {
        0: "every pool `ok`",
        1: "worst level `warning`",
        2: "worst level `critical`",
        3: "worst level `emergency`",
        4: "a pool could not be read (etcd unreachable or refusing), shows an identity conflict "
           "(two instances under one node name), or no pool was found",
        **_USAGE,
    },
    "pool metrics": {
        0: "written",
        1: "a pool could not be read, the file not written, no pool found, or prometheus-client is missing",
        **_USAGE,
    },
    "pool release-node": {
        0: "every block of the node released (or it holds none; `--dry-run`: nothing would be kept)",
        1: "a block kept (it holds address records and Kubernetes does not say the node is gone), "
           "changed meanwhile, written to while releasing, a pool could not be read, or no pool was found",
        **_USAGE,
    },
    "pool gc": {
        0: "nothing left undecided (blocks of live nodes, and in-use blocks without Kubernetes access, are kept)",
        1: "a block kept for lack of evidence (no clear answer, a name Kubernetes never knew, a renamed node), "
           "a release refused or failed, a pool could not be read, or no pool was found",
        **_USAGE,
    },
}


def exit_text(command: str) -> str:
    """One line for a command's --help: the codes it can exit with."""
    return "exit status: " + "; ".join(f"{code} {text.replace('`', '')}" for code, text in EXIT_CODES[command].items())


class UsageError(Exception):
    """A usage error: the command prints its usage line and the message, and exits EXIT_USAGE."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print and exit 2, a level in ``show``
        raise UsageError(message)


def make_parser(command: str, description: str) -> Parser:
    return Parser(prog=f"cni-ipam {command}", description=description, epilog=exit_text(command))


class Command:
    """One admin command (pip's ``Command`` is the model): its name (the key of its EXIT_CODES row)
    and description, its options (``add_options``), the checks of their values beyond argparse
    (``check_args``: raise UsageError), the check of its input (``input_problem``: a reason means
    ``no_input_exit``) and the work (``run``, which returns one of the command's EXIT_CODES; it may
    raise UsageError before it writes anything).  ``main`` runs them in that order, so every command
    answers ``--help``, a usage error and a missing input alike."""

    name = ""
    description = ""
    no_input_exit = EXIT_NO_INPUT

    def add_options(self, parser: Parser) -> None:
        """Add the command's options to ``parser``."""

    def check_args(self, args: argparse.Namespace) -> None:
        """Raise UsageError when option values do not go together."""

    def input_problem(self, args: argparse.Namespace) -> str | None:
        """Why the command has nothing to read (a mistyped --data-dir, no conf file), or None."""
        return None

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError

    def fail(self, args: argparse.Namespace, message: str, code: int) -> int:
        """Say why the command stops and return ``code``: one line on stderr."""
        print(f"cni-ipam {self.name}: {message}", file=sys.stderr)
        return code

    def parser(self) -> Parser:
        parser = make_parser(self.name, self.description)
        self.add_options(parser)
        return parser

    def main(self, argv: list[str]) -> int:
        parser = self.parser()
        try:
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help printed (argparse exits 0 only there)
                return EXIT_USAGE if exc.code else 0
            self.check_args(args)
            problem = self.input_problem(args)
            if problem:
                return self.fail(args, problem, self.no_input_exit)
            return self.run(args)
        except UsageError as exc:
            print(f"{parser.format_usage()}{parser.prog}: {exc}", file=sys.stderr)
            return EXIT_USAGE


class CommandGroup:
    """A command whose first argument names one of its ``subcommands`` (``pool show``), each a
    Command named ``"<group> <subcommand>"``: no argument or an unknown one is a usage error, and
    ``--help`` lists the subcommands."""

    name = ""
    subcommands: dict[str, tuple[type[Command], str]] = {}  # name -> (command, one line of help)

    def usage(self) -> str:
        lines = [f"usage: cni-ipam {self.name} <command> [options]", "", "commands:"]
        width = max(map(len, self.subcommands))
        lines += [f"  {name:<{width}}  {text}" for name, (_, text) in self.subcommands.items()]
        return "\n".join(lines + ["", f"cni-ipam {self.name} <command> --help for the options"])

    def main(self, argv: list[str]) -> int:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(self.usage())
            return 0 if argv else EXIT_USAGE
        entry = self.subcommands.get(argv[0])
        if entry is None:
            print(f"cni-ipam {self.name}: unknown command {argv[0]!r}\n\n{self.usage()}", file=sys.stderr)
            return EXIT_USAGE
        return entry[0]().main(argv[1:])


def cidr_arg(text: str):
    """argparse type of the CIDR options (lint, plan)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CIDR: {text!r}") from None


def add_cidr_option(parser: Parser, flag: str, help: str) -> None:
    """A repeatable CIDR option (``--service-cidr`` and the like of lint and plan): the list of the
    networks given, empty without one."""
    parser.add_argument(flag, action="append", type=cidr_arg, default=[], metavar="CIDR", help=help)


def data_dir_problem(path: str) -> "str | None":
    """Why ``path`` cannot be the data directory, or None.  The default directory may be missing
    (a node before its first pod: nothing to see); any other directory must exist, so a mistyped
    ``--data-dir`` is an error instead of an empty report."""
    if os.path.isdir(path):
        return None
    if not os.path.lexists(path):
        if os.path.normpath(os.path.abspath(path)) == os.path.normpath(DEFAULT_DATA_DIR):
            return None
        return f"data directory {path} does not exist"
    return f"data directory {path} is not a directory"


def pod_label(k8s: "dict | None") -> str:
    """A reservation's pod as far as it is known: ``namespace/name``, or only the name (podman and
    other runtimes pass K8S_POD_NAME without a namespace), or the pod UID; ``-`` when none."""
    if not isinstance(k8s, dict):
        return "-"
    name, namespace, uid = (
        k8s.get(k) if isinstance(k8s.get(k), str) and k8s.get(k) else None for k in ("name", "namespace", "uid")
    )
    if name:
        return f"{namespace}/{name}" if namespace else name
    if uid:
        return f"{namespace}/uid={uid}" if namespace else f"uid={uid}"
    return f"{namespace}/-" if namespace else "-"


def exit_codes_markdown() -> str:
    """``EXIT_CODES`` as the README's table (scripts/readme_tables.py writes it, a test compares)."""
    lines = ["| exit | command | meaning |", "|---|---|---|"]
    for command, codes in EXIT_CODES.items():
        lines += [f"| {code} | {command} | {text} |" for code, text in sorted(codes.items())]
    return "\n".join(lines) + "\n"
