"""Entry point: a CNI plugin call when CNI_COMMAND is set, the admin CLI when arguments are given."""

import os
import sys


def main() -> int:
    if "CNI_COMMAND" not in os.environ and len(sys.argv) > 1:
        from cni_ipam.cli import cli_main  # admin commands load only here

        return cli_main(sys.argv[1:])
    from cni_ipam.protocol import plugin_main

    return plugin_main()


if __name__ == "__main__":
    sys.exit(main())
