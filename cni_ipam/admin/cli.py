"""Admin front door: ``cni-ipam <command> [options]`` when no CNI_COMMAND is set.

Each command lives in its own module with ``main(argv) -> int`` and is imported only when asked
for, so no admin code is loaded on the plugin path.  A reader that goes away (``cni-ipam show | head``)
ends the command quietly with status 141, as SIGPIPE does for C tools: never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

EXIT_BROKEN_PIPE = 141  # what a shell reports for a command killed by SIGPIPE (128 + 13)

COMMANDS = {
    "gc": ("cni_ipam.admin.gc", "find and reclaim stranded reservations (dry run unless --apply)"),
    "show": ("cni_ipam.admin.show", "how full each network is; --ips lists reservations"),
    "metrics": ("cni_ipam.admin.metrics", "Prometheus metrics to stdout or a textfile directory"),
    "lint": ("cni_ipam.admin.lint", "validate .conf/.conflist files and check for overlaps"),
    "plan": ("cni_ipam.admin.plan", "capacity planning for cluster/node CIDRs"),
    "pool": ("cni_ipam.admin.pool", "cluster pools in etcd: show, metrics, release-node, gc"),
}


def usage() -> str:
    lines = ["usage: cni-ipam <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["  version  print the version", "", "Run as a CNI plugin, it reads CNI_COMMAND from the environment."]
    return "\n".join(lines)


def cli_main(argv: list) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("version", "--version"):
        from cni_ipam import __version__

        print(f"cni-ipam {__version__}")
        return 0
    entry = COMMANDS.get(argv[0])
    if entry is None:
        from cni_ipam.admin.options import EXIT_USAGE  # a usage error: the same code in every command

        print(f"cni-ipam: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return EXIT_USAGE
    try:
        module = importlib.import_module(entry[0])
    except ImportError as exc:
        print(f"cni-ipam: {argv[0]} is not available in this build ({exc})", file=sys.stderr)
        return 2
    try:
        rc = module.main(argv[1:])
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """``cni-ipam show | head``: the reader closed the pipe.  Stop quietly, as SIGPIPE would, and
    point stdout at /dev/null so the interpreter's final flush cannot raise (and print) again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE
