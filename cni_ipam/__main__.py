"""Entry point: a CNI plugin call when CNI_COMMAND is set, the admin CLI when arguments are given.

With neither (someone typed ``cni-ipam``), it prints what it is, the CNI versions it speaks and the
admin usage on stderr and exits 0, as host-local (CNI's skel) prints its version line: stdout is
kept for CNI results.  A CNI_COMMAND that is set but empty or unknown is a plugin call: a CNI error.
"""

import os
import sys


def _verb(name: str):
    """``cni_ipam.plugin.verbs.<name>``, imported on first call (VERSION imports no verb)."""

    def call(env, netconf):
        from cni_ipam.plugin import verbs

        return getattr(verbs, name)(env, netconf)

    return call


# The verb table handed to the protocol boundary (cni_ipam.plugin.skel): command -> (what the verb
# needs of the netconf, parsed once by skel through cni_ipam.plugin.netconf.parse; the verb).
VERBS = {
    "ADD": ("full", _verb("cmd_add")),
    "DEL": ("ref", _verb("cmd_del")),  # name, dataDir, lockTimeout: works when the ranges no longer parse
    "CHECK": ("full", _verb("cmd_check")),
    "GC": ("gc", _verb("cmd_gc")),
    "STATUS": ("status", _verb("cmd_status")),
}


def main() -> int:
    if "CNI_COMMAND" not in os.environ:
        if len(sys.argv) > 1:
            from cni_ipam.admin.cli import cli_main  # admin commands load only here

            return cli_main(sys.argv[1:])
        return about()
    from cni_ipam.plugin.skel import plugin_main

    return plugin_main(VERBS)


def about() -> int:
    from cni_ipam import __version__
    from cni_ipam.admin.cli import usage
    from cni_ipam.plugin.skel import SUPPORTED_VERSIONS

    print(
        f"cni-ipam {__version__}: a host-local compatible CNI IPAM plugin\n"
        f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n\n{usage()}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
