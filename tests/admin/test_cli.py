"""Every admin command, run as a process, answers the same mistakes the same way: an unknown option
with its usage line and the shared usage code (64, sysexits' EX_USAGE: argparse's own 2 is a level
in ``show``), ``--help`` with exit 0 and exactly its own rows of ``options.EXIT_CODES``, and no
traceback anywhere."""

import re

import pytest

from cni_ipam.admin import gc, lint, metrics, options, plan, pool, show
from tests.helpers import run_admin

# command -> the arguments it needs besides options (a NODE, a conf file), so that --bogus is the only fault
COMMANDS = {
    "show": [],
    "metrics": [],
    "lint": ["x.conf"],
    "plan": [],
    "gc": [],
    "pool show": [],
    "pool metrics": [],
    "pool release-node": ["node-a"],
    "pool gc": [],
}


def run(command, *args):
    return run_admin(*command.split(), *args)


def test_the_list_covers_every_command_of_the_table():
    assert set(COMMANDS) == set(options.EXIT_CODES) - {"cni-ipam"}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_a_usage_error_with_the_usage_line(command):
    rc, out, err = run(command, *COMMANDS[command], "--bogus")
    assert rc == options.EXIT_USAGE == 64, (out, err)
    assert err.startswith(f"usage: cni-ipam {command} "), err
    assert err.rstrip().endswith(f"cni-ipam {command}: unrecognized arguments: --bogus"), err
    assert "Traceback" not in err and out == ""


def help_codes(text: str) -> dict:
    """{code: meaning} of the 'exit status:' line of a --help (argparse wraps it: joined again)."""
    tail = " ".join(text.split()).split("exit status: ", 1)[1]
    parts = re.split(r"(?:^|; )(\d+) ", tail)[1:]
    return {int(code): meaning for code, meaning in zip(parts[::2], parts[1::2])}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_exactly_the_command_s_own_exit_codes(command):
    rc, out, err = run(command, "--help")
    assert rc == 0 and err == "" and out.startswith(f"usage: cni-ipam {command} "), (out, err)
    codes = help_codes(out)
    assert set(codes) == set(options.EXIT_CODES[command]), (command, codes)
    for code, meaning in options.EXIT_CODES[command].items():
        assert codes[code].strip() == meaning.replace("`", ""), (command, code)
    assert (options.EXIT_NO_INPUT in codes) == (command in ("show", "metrics", "lint", "gc"))


def test_pool_without_a_subcommand():
    rc, out, err = run_admin("pool")
    assert rc == 64 and "usage: cni-ipam pool <command>" in out and err == ""
    rc, out, err = run_admin("pool", "--bogus")
    assert rc == 64 and "cni-ipam pool: unknown command '--bogus'" in err and "Traceback" not in err
    rc, out, _ = run_admin("pool", "--help")
    assert rc == 0 and all(f"  {sub} " in out for sub in ("show", "metrics", "release-node", "gc"))


@pytest.mark.parametrize("command, code", [("pool show", 4), ("pool metrics", 1), ("pool release-node", 1),
                                           ("pool gc", 1)])
def test_pool_commands_without_a_pool(command, code, tmp_path):
    """No pool in the conf files is the pool commands' missing input: their own code, one line."""
    rc, out, err = run(command, *COMMANDS[command], "--conf-dir", str(tmp_path))
    assert rc == code and code in options.EXIT_CODES[command], (out, err)
    assert err == f"cni-ipam {command}: no pool found (give --conf FILE or --conf-dir)\n" and out == ""


def test_lint_without_a_conf_file_is_a_missing_input(tmp_path):
    rc, out, err = run("lint", str(tmp_path))
    assert rc == options.EXIT_NO_INPUT and err == f"cni-ipam lint: no conf files found in {tmp_path}\n", err


def test_a_check_of_the_values_answers_like_argparse():
    """A usage error found after parsing (thresholds out of order) looks like one argparse finds."""
    for command in ("show", "pool show"):
        rc, out, err = run(command, "--warning", "90", "--critical", "10")
        assert rc == 64 and out == "" and err.startswith(f"usage: cni-ipam {command} "), err
        assert err.rstrip().endswith(
            f"cni-ipam {command}: thresholds must satisfy 0 <= --warning <= --critical <= --emergency <= 100"
        )


def all_commands() -> list:
    return [show.Show(), metrics.Metrics(), lint.Lint(), plan.PlanCommand(), gc.GcCommand()] + [
        cls() for cls, _ in pool.Pool.subcommands.values()
    ]


def test_every_option_says_what_it_is_for():
    assert {c.name for c in all_commands()} == set(COMMANDS)
    silent = [(c.name, a.option_strings or a.dest) for c in all_commands() for a in c.parser()._actions if not a.help]
    assert not silent
