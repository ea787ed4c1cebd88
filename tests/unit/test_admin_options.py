"""``options.Command`` and ``options.CommandGroup``, the base of every admin command: the order of
the steps, what each kind of failure prints and exits with."""

import pytest

from cni_ipam.admin import options


class Toy(options.Command):
    name = "toy"
    description = "A command for the tests."
    no_input_exit = 5

    def __init__(self, problem=None, run_error=None) -> None:
        self.problem, self.run_error, self.steps = problem, run_error, []

    def add_options(self, parser):
        options.add_cidr_option(parser, "--cidr", "a network")
        parser.add_argument("--level", type=int, default=0, help="a level")

    def check_args(self, args):
        self.steps.append("check")
        if args.level < 0:
            raise options.UsageError("--level must not be negative")

    def input_problem(self, args):
        self.steps.append("input")
        return self.problem

    def run(self, args):
        self.steps.append("run")
        if self.run_error:
            raise options.UsageError(self.run_error)
        print(",".join(map(str, args.cidr)))
        return 3


@pytest.fixture(autouse=True)
def toy_row(monkeypatch):
    monkeypatch.setitem(options.EXIT_CODES, "toy", {0: "fine", 3: "ran", 5: "nothing to read", 64: "usage"})


def test_the_steps_run_in_order_and_run_decides_the_code(capsys):
    toy = Toy()
    assert toy.main(["--cidr", "10.0.0.0/8", "--cidr", "fd00::/64"]) == 3
    assert toy.steps == ["check", "input", "run"]
    assert capsys.readouterr().out == "10.0.0.0/8,fd00::/64\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nope"], "unrecognized arguments: --nope"),
        (["--cidr", "10.0.0.300/8"], "argument --cidr: not a CIDR: '10.0.0.300/8'"),
        (["--level", "-1"], "--level must not be negative"),
    ],
)
def test_a_usage_error_prints_the_usage_line_and_stops(argv, message, capsys):
    toy = Toy()
    assert toy.main(argv) == options.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err == f"usage: cni-ipam toy [-h] [--cidr CIDR] [--level LEVEL]\ncni-ipam toy: {message}\n"
    assert "input" not in toy.steps and "run" not in toy.steps


def test_run_may_still_find_a_usage_error(capsys):
    assert Toy(run_error="these do not go together").main([]) == options.EXIT_USAGE
    assert capsys.readouterr().err.endswith("cni-ipam toy: these do not go together\n")


def test_a_missing_input_is_the_command_s_own_code(capsys):
    toy = Toy(problem="no such thing")
    assert toy.main([]) == 5 and toy.steps == ["check", "input"]
    assert capsys.readouterr() == ("", "cni-ipam toy: no such thing\n")


def test_help_returns_0_with_the_command_s_exit_codes(capsys):
    assert Toy().main(["--help"]) == 0  # a return, not argparse's SystemExit
    out = " ".join(capsys.readouterr().out.split())
    assert "--cidr CIDR a network" in out
    assert out.endswith("exit status: 0 fine; 3 ran; 5 nothing to read; 64 usage")


def test_the_cidr_option_is_empty_without_a_value():
    parser = Toy().parser()
    assert parser.parse_args([]).cidr == []


class Group(options.CommandGroup):
    name = "grp"
    subcommands = {"toy": (Toy, "the toy"), "longer-name": (Toy, "another")}


def test_a_group_hands_the_rest_to_its_subcommand(capsys):
    assert Group().main(["toy", "--cidr", "10.1.0.0/16"]) == 3
    assert capsys.readouterr().out == "10.1.0.0/16\n"


def test_a_group_without_a_known_subcommand(capsys):
    assert Group().main([]) == options.EXIT_USAGE
    out, _ = capsys.readouterr()
    assert out.splitlines()[:5] == [
        "usage: cni-ipam grp <command> [options]", "", "commands:", "  toy          the toy", "  longer-name  another"
    ]
    assert Group().main(["--help"]) == 0 and "longer-name" in capsys.readouterr().out
    assert Group().main(["toyy"]) == options.EXIT_USAGE
    assert capsys.readouterr().err.startswith("cni-ipam grp: unknown command 'toyy'\n")
