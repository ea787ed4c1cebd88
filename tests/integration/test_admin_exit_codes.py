"""The admin commands' exit codes, run as processes: one table (cni_ipam.admin.options.EXIT_CODES),
printed in the README, and the shared mistakes (usage, a mistyped --data-dir) giving the same code
in every command."""

import os
import subprocess
import sys

import pytest

from cni_ipam.admin import options
from tests.helpers import ROOT


def run(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run(
        [sys.executable, "-m", "cni_ipam", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_readme_prints_the_one_table():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    section = readme.split("### Exit codes of the admin commands", 1)[1].split("\n#", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == options.exit_codes_markdown()


@pytest.mark.parametrize("command", ["gc", "show", "metrics", "lint", "plan"])
def test_usage_error_is_64_everywhere(command):
    rc, out, err = run(command, "--no-such-option")
    assert rc == options.EXIT_USAGE == 64, (out, err)
    assert f"cni-ipam {command}" in err and "Traceback" not in err


def test_unknown_command_is_a_usage_error():
    rc, _, err = run("shwo")
    assert rc == 64 and "unknown command" in err


@pytest.mark.parametrize("command", ["gc", "show", "metrics"])
def test_mistyped_data_dir_is_66_everywhere(command, tmp_path):
    rc, out, err = run(
        command, "--data-dir", str(tmp_path / "no-such-dir"), *(["--conf-dir", ""] if command != "gc" else [])
    )
    assert rc == options.EXIT_NO_DATA_DIR == 66, (out, err)
    assert "does not exist" in err and "Traceback" not in err
    (tmp_path / "a-file").write_text("")
    rc, _, err = run(command, "--data-dir", str(tmp_path / "a-file"), *(["--conf-dir", ""] if command != "gc" else []))
    assert rc == 66 and "not a directory" in err


@pytest.mark.parametrize("command", ["show", "metrics", "lint", "plan", "gc", "pool show", "pool metrics",
                                     "pool release-node", "pool gc"])
def test_help_names_the_exit_codes(command):
    """Each command's --help lists exactly its own codes: 66 only where a missing input can happen."""
    rc, out, _ = run(*command.split(), "--help")  # "pool show": a command and its subcommand
    text = " ".join(out.split())
    assert rc == 0 and "exit status:" in text and "64 usage error" in text, (command, out)
    assert ("66 " in text.split("exit status:", 1)[1]) == (options.EXIT_NO_INPUT in options.EXIT_CODES[command])


def test_the_default_data_dir_may_be_missing(tmp_path):
    assert options.data_dir_problem(options.DEFAULT_DATA_DIR) is None or os.path.lexists(options.DEFAULT_DATA_DIR)
    assert options.data_dir_problem(str(tmp_path)) is None
    assert "does not exist" in options.data_dir_problem(str(tmp_path / "x"))


def test_no_arguments_prints_usage_and_exits_0():
    """As host-local prints its version line: on stderr (stdout is the CNI result channel), exit 0."""
    rc, out, err = run()
    assert rc == 0 and out == ""
    assert "CNI protocol versions supported: 0.1.0" in err and "usage: cni-ipam <command>" in err


@pytest.mark.parametrize("command", ["", "FOO", "add"])
def test_a_set_but_wrong_cni_command_is_still_a_cni_error(command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(PYTHONPATH=ROOT, CNI_COMMAND=command)
    proc = subprocess.run([sys.executable, "-m", "cni_ipam"], input=b"{}", capture_output=True, env=env, timeout=60)
    import json

    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["code"] == 4 and "CNI_COMMAND" in doc["msg"]
