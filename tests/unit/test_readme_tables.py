"""The README's error-code and exit-code tables are the code's (scripts/readme_tables.py writes
them from cni_ipam.errors.MEANINGS and cni_ipam.admin.options.EXIT_CODES)."""

import importlib.util
import os
import re

from cni_ipam import errors
from cni_ipam.admin import options
from tests.helpers import ROOT


def tool():
    spec = importlib.util.spec_from_file_location("readme_tables", os.path.join(ROOT, "scripts", "readme_tables.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return fh.read()


def test_readme_tables_are_generated_from_the_code():
    text = readme()
    assert tool().render(text) == text, "run python3 scripts/readme_tables.py"


def test_the_check_sees_a_drift():
    text = readme().replace("| 999 |", "| 998 |")
    assert tool().render(text) != text


def test_every_error_code_the_code_raises_is_described():
    """Every code constant of cni_ipam.errors is in MEANINGS, and no code nothing can raise is."""
    constants = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)}
    assert constants == set(errors.MEANINGS)
    used = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, "cni_ipam")):
        for name in files:
            if name.endswith(".py") and name != "errors.py":
                with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                    used |= set(re.findall(r"\b([A-Z][A-Z_]+)\b", fh.read()))
    unused = sorted(k for k, v in vars(errors).items() if k.isupper() and isinstance(v, int) and k not in used)
    assert not unused, f"error codes nothing raises: {unused}"


def test_every_command_has_usage_and_only_its_own_codes():
    from cni_ipam.admin.cli import COMMANDS

    # a command with subcommands ("pool") has a row per subcommand ("pool show", ...)
    assert set(COMMANDS) | {"cni-ipam"} == {name.split()[0] for name in options.EXIT_CODES}
    for command, codes in options.EXIT_CODES.items():
        assert options.EXIT_USAGE in codes, command
    assert options.EXIT_NO_INPUT not in options.EXIT_CODES["plan"]  # plan reads no data directory
