"""Every numeric option of every command, given an extreme value, on real inputs.

For each option (found from the typed declarations, so a new one is fuzzed without a word
here), Hypothesis draws extreme values: 0, negatives, huge whole numbers (beyond int64
too), 1e20 and beyond, NaN, ±infinity, a fraction where a whole number belongs. The rest
of the command line is a valid, tiny run (a 2-step training, a 4-token generation), so a
value that passes the checks does the real work. Each must end within seconds, in this
process, with status 0, or 2 and one `error:` line; never a traceback, a hang or an
out-of-memory kill (a hang trips the alarm; a kill would take the test worker with it).

`sweep` passes its train flags to train: their values are checked by the same code, fuzzed
here through train; the sweep's own options are fuzzed through sweep. `serve` is checked up
to the point where it would listen (its `serve` replaced by a stub that returns at once).
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fundamentallm.cli import COMMANDS, Command
from fundamentallm.config.loading import FieldInfo, class_fields

from integration_helpers import run_cli, sample_text, tiny_args, train

# Slow (`make test-fast` leaves it out): some hundreds of command runs, a few of them trainings.
pytestmark = pytest.mark.slow

ALARM_S = 60  # "within seconds", with room for a loaded CI machine

EXTREMES = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Every one of these is tried on every option (as an explicit example); Hypothesis draws more.
FIXED = [0, -1, 10**20, 99999999999999999999, 2**63, -(2**63) - 1, 0.5, 1e20, -1e20, 1e308, math.nan, math.inf,
         -math.inf, 5e-324]

extreme_values = st.one_of(
    st.integers(min_value=2**31, max_value=2**100),
    st.integers(min_value=-(2**100), max_value=-1),
    st.floats(min_value=1e15, allow_infinity=True),
    st.floats(max_value=-1e15, allow_infinity=True),
)


def numeric_fields(command: Command) -> Iterator[FieldInfo]:
    infos = [*class_fields(command.options), *(i for infos, _ in command.more for i in infos())]
    for info in infos:
        if info.flag is not None and (info.kind in (int, float) or (info.kind is list and info.item is int)):
            yield info


def cases() -> Iterator[tuple[str, str, str]]:
    """(command path, the option's flag or positional name, its key) for every numeric option."""
    for name, command in COMMANDS.items():
        for path, leaf in ([(f"{name} {a}", c) for a, c in command.actions.items()] if command.actions
                           else [(name, command)]):
            for info in numeric_fields(leaf):
                if path == "sweep" and info.section:  # train's options, fuzzed through train
                    continue
                yield path, (info.name if info.meta["positional"] else info.flag), info.key


CASES = sorted(set(cases()))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("extremes")
    text = root / "train.txt"
    text.write_text(sample_text(6_000), encoding="utf-8")
    run = train(text, root / "model", max_steps=2)
    space = root / "space.yaml"
    space.write_text("learning_rate: {low: 0.001, high: 0.01, log: true}\n", encoding="utf-8")
    return {"text": text, "checkpoint": run / "final.pt", "space": space, "root": root}


def base_command(path: str, where: dict[str, Path], out: Path) -> tuple[list[str], list[str]]:
    """(the command line before the fuzzed option, after it): a valid, tiny run of `path`."""
    text, ckpt = str(where["text"]), str(where["checkpoint"])
    tiny = tiny_args(max_steps=2, eval_interval=2)
    return {
        "train": ([text, "-o", str(out / "run"), "--quiet", *tiny], []),
        "sweep": ([text, "--space", str(where["space"]), "-o", str(out / "sweep"), "--trials", "1", "--quiet",
                   *tiny], []),
        "evaluate": ([ckpt, text, "--device", "cpu"], []),
        "generate": ([ckpt, "--prompt", "The", "--device", "cpu", "--max-tokens", "4"], []),
        "interactive": ([ckpt, "--device", "cpu", "--max-tokens", "4"], []),
        "serve": ([ckpt, "--device", "cpu"], []),
        "tokenizer train": ([text, "-o", str(out / "tok.json")], []),
        "tokenizer decode": ([ckpt], []),
        "data split": ([text, "-o", str(out / "split")], []),
        "data augment": ([text, str(out / "aug.txt"), "--back-translate", "--pivot", "fr", "--model-to",
                          str(out / "no-model"), "--model-back", str(out / "no-model")], []),
    }[path]


def as_text(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class Hang(Exception):
    pass


def raise_hang(signum, frame):
    raise Hang(f"no end within {ALARM_S} s")


@pytest.mark.parametrize("path,option,key", CASES, ids=[f"{p}:{o}" for p, o, _ in CASES])
@EXTREMES
@given(value=extreme_values)
@example(value=FIXED[0])
@example(value=FIXED[1])
@example(value=FIXED[2])
@example(value=FIXED[3])
@example(value=FIXED[4])
@example(value=FIXED[5])
@example(value=FIXED[6])
@example(value=FIXED[7])
@example(value=FIXED[8])
@example(value=FIXED[9])
@example(value=FIXED[10])
@example(value=FIXED[11])
@example(value=FIXED[12])
@example(value=FIXED[13])
def test_an_extreme_value_ends_in_a_result_or_one_line(inputs, tmp_path_factory, monkeypatch, capsys,
                                                       path, option, key, value):
    monkeypatch.setattr("fundamentallm.server.serve", lambda *a, **k: 0)  # checked up to listening
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # interactive: no input, it ends
    out = tmp_path_factory.mktemp("case")
    before, after = base_command(path, inputs, out)
    positional = not option.startswith("-")
    argv = [*path.split(), *before, *([as_text(value)] if positional else [option, as_text(value)]), *after]
    if path == "tokenizer decode" and positional:  # the ids: one extreme among ordinary ones
        argv = [*path.split(), *before, "1", as_text(value)]
    previous = signal.signal(signal.SIGALRM, raise_hang)
    signal.alarm(ALARM_S)
    try:
        rc = run_cli(*argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        lines = [line for line in err.strip().splitlines() if not line.startswith(("warning:", "note:"))]
        assert len(lines) == 1 and lines[0].startswith("error:"), (argv, err)
