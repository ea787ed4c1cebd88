"""What the admin commands (gc, show, metrics, lint, plan) share: the exit codes, the check of
``--data-dir`` and an argparse parser whose usage errors all end the same way.

The same mistake has the same exit code in every command: a usage error (unknown option, a bad
value) is 64 and a ``--data-dir`` that does not exist or is not a directory is 66 (sysexits'
EX_USAGE and EX_NOINPUT; argparse's usual 2 is a level in ``show``).  The small codes 0-4 are each
command's own answer.  ``EXIT_CODES`` is the one table; the README prints it and a test keeps the
two equal.  Admin code only: never imported on the plugin path.
"""

from __future__ import annotations

import argparse
import ipaddress
import os

from cni_ipam.plugin.netconf import DEFAULT_DATA_DIR

EXIT_USAGE = 64
EXIT_NO_DATA_DIR = 66

# command -> {exit code: meaning}; "every command" holds the codes all of them share.
EXIT_CODES = {
    "gc": {
        0: "clean: nothing stranded (dry run) or every stranded reservation released (`--apply`)",
        1: "dry run: stranded reservations found, nothing changed",
        3: "partial: a network could not be locked or a release failed; the rest was done",
        4: "nothing done: runtime cache or valid-ID file unusable, empty valid list, unknown `--network`",
    },
    "show": {
        0: "every network `ok`",
        1: "worst level `warning`",
        2: "worst level `critical`",
        3: "worst level `emergency`",
        4: "worst level `unknown`: a network without a (valid) conf file, whose directory cannot be read, "
        "or whose `usePodCidr` subnet is not known offline (no pod CIDR cache yet)",
    },
    "metrics": {
        0: "written",
        1: "a network could not be read, the file not written, or prometheus-client is missing",
    },
    "lint": {
        0: "no errors (warnings allowed unless `--strict`)",
        1: "errors (with `--strict`: warnings too)",
    },
    "plan": {
        0: "the plan fits",
        1: "warnings",
        2: "errors",
    },
    "every command": {
        EXIT_USAGE: "usage error: unknown command or option, bad option value, missing argument",
        EXIT_NO_DATA_DIR: "`--data-dir` does not exist or is not a directory (gc, show, metrics); "
        "no conf file found (lint)",
    },
}


def exit_text(command: str) -> str:
    """One line for a command's --help: its own codes, then the shared ones."""
    codes = {**EXIT_CODES[command], **EXIT_CODES["every command"]}
    return "exit status: " + "; ".join(f"{code} {text.replace('`', '')}" for code, text in codes.items())


class UsageError(Exception):
    """A usage error: the command prints it and exits EXIT_USAGE."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit 2
        raise UsageError(f"{self.prog}: {message}")


def make_parser(command: str, description: str) -> Parser:
    return Parser(prog=f"cni-ipam {command}", description=description, epilog=exit_text(command))


def cidr_arg(text: str):
    """argparse type of the CIDR options (lint, plan)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CIDR: {text!r}") from None


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
    """``EXIT_CODES`` as the README's table (tests/integration/test_admin_exit_codes.py keeps the README equal)."""
    lines = ["| exit | command | meaning |", "|---|---|---|"]
    for command, codes in EXIT_CODES.items():
        lines += [f"| {code} | {command} | {text} |" for code, text in codes.items()]
    return "\n".join(lines)
