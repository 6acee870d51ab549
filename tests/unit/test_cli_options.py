"""Every argument of every subcommand comes from a typed option, declared once."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from fundamentallm.cli import CFG_PREFIX, OPTIONS_PREFIX, SAMPLING_PREFIX, build_parser, main
from fundamentallm.config.schema import DEVICES


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    pending = [("fundamentallm", build_parser())]
    while pending:
        name, parser = pending.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", p) for sub, p in action.choices.items()]


def leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, p) for name, p in parsers()
            if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


def test_every_command_is_reached():
    names = {name for name, _ in leaf_parsers()}
    assert names == {f"fundamentallm {c}" for c in (
        "train", "sweep", "evaluate", "generate", "interactive", "serve", "export", "import", "tokenizer train",
        "tokenizer encode",
        "tokenizer decode", "tokenizer info", "data split", "data augment")}


@pytest.mark.parametrize("name, parser", leaf_parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_argument_comes_from_a_typed_option(name, parser):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.dest.startswith((OPTIONS_PREFIX, CFG_PREFIX, SAMPLING_PREFIX)), (name, action.dest)
        assert action.help, (name, action.dest)


def test_device_is_one_declaration_everywhere():
    with_device = {name: a for name, p in leaf_parsers() for a in p._actions if "--device" in a.option_strings}
    assert set(with_device) == {f"fundamentallm {c}" for c in ("train", "sweep", "evaluate", "generate",
                                                               "interactive", "serve", "data augment")}
    assert all(tuple(a.choices) == DEVICES for a in with_device.values())


def test_options_are_checked_by_their_declaration(capsys):
    assert main(["evaluate", "x.pt", "--batch-size", "0"]) == 2
    assert "error: --batch-size must be greater than 0 (got 0)" in capsys.readouterr().err
    assert main(["serve", "x.pt", "--max-tokens-limit", "0"]) == 2
    assert "--max-tokens-limit must be greater than 0" in capsys.readouterr().err
    assert main(["data", "split", "x.txt", "--seed", "-1"]) == 2
    assert "--seed must be between 0 and 2**63 - 1" in capsys.readouterr().err
