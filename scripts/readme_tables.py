#!/usr/bin/env python3
"""Write the README's generated tables from the code: the CNI error codes
(``cni_ipam.errors.MEANINGS``) under "## Error codes" and the admin commands' exit codes
(``cni_ipam.admin.options.EXIT_CODES``) under "### Exit codes of the admin commands".

Usage: python3 scripts/readme_tables.py [--check]
  --check   change nothing; exit 1 (and say which table) when the README differs from the code.
tests/unit/test_readme_tables.py runs the check.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def error_codes_markdown() -> str:
    from cni_ipam.errors import MEANINGS

    lines = ["| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {text} |" for code, text in sorted(MEANINGS.items())]
    return "\n".join(lines) + "\n"


def tables() -> dict:
    """heading -> the table the code makes (the heading's first table is replaced)."""
    from cni_ipam.admin.options import exit_codes_markdown

    return {"## Error codes": error_codes_markdown(), "### Exit codes of the admin commands": exit_codes_markdown()}


def render(text: str) -> str:
    """``text`` (the README) with every generated table replaced by the code's."""
    lines = text.splitlines(keepends=True)
    for heading, table in tables().items():
        start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == heading)
        first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
        end = first
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[first:end] = table.splitlines(keepends=True)
    return "".join(lines)


def main(argv: list) -> int:
    sys.path.insert(0, ROOT)
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md: the generated tables differ from the code; run python3 scripts/readme_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        with open(README, "w", encoding="utf-8") as fh:
            fh.write(new)
        print("README.md: tables updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
