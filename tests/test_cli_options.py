"""The CLI's option helpers: count options parse and fail the same way everywhere."""

from __future__ import annotations

import argparse

import pytest

from recsim_personas.cli.options import (
    add_command,
    add_count_option,
    command_description,
    config_from_args,
    count_type,
)


def test_count_type_takes_a_number_or_its_word_and_names_what_it_counts() -> None:
    users = count_type("user", words=("none",))
    assert users("3") == 3 and users("all") is None and users(" NONE ") is None
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a number of users or 'all', got 'zero'$"):
        users("zero")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected at least 1 user, got 0$"):
        users("0")
    bound = count_type("count", word="none", minimum=0, expected="an integer")
    assert bound("0") == 0 and bound("none") is None
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a count >= 0 or 'none', got -1$"):
        bound("-1")
    seed = count_type("seed", word="", minimum=0, expected="an integer seed")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected an integer seed, got 'all'$"):
        seed("all")


def test_a_count_option_is_a_usage_error_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="x")
    add_count_option(parser, "--k", "persona", word="elbow", default=4, help="personas")
    assert parser.parse_args([]).k == 4 and parser.parse_args(["--k", "elbow"]).k is None
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--k", "0"])
    assert exc.value.code == 2
    assert "argument --k: expected at least 1 persona, got 0" in capsys.readouterr().err
    assert "--k N|elbow" in parser.format_help()


def test_a_command_is_described_by_its_module_docstring() -> None:
    assert command_description("Title line.\n\n  Second   paragraph,\n  folded.\n\nThird.") == (
        "Second paragraph, folded."
    )
    assert command_description("Only a title.") is None
    sub = argparse.ArgumentParser(prog="x").add_subparsers()
    parser = add_command(sub, "opts", test_a_command_is_described_by_its_module_docstring, help="h")
    assert parser.description == command_description(__doc__) is None
    assert parser.get_default("func") is test_a_command_is_described_by_its_module_docstring


def test_config_from_args_takes_the_options_named_like_fields() -> None:
    from recsim_personas.envs.simulate import SimulationConfig

    args = argparse.Namespace(episodes=3, horizon=2, seed=1, unrelated="x")
    config = config_from_args(SimulationConfig, args, env={"agent": "bias"})
    assert (config.episodes, config.horizon, config.seed, config.env) == (3, 2, 1, {"agent": "bias"})
