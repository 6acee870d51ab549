"""`train --max-time` with no shape sizes the model to the budget; any shape setting, a
resumed run and --no-auto-size keep the shape they have."""

from __future__ import annotations

import pytest
import yaml

from fundamentallm.training import setup, sizing
from integration_helpers import run_cli, summary, tiny_args, train

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it measures this machine before sizing each run.
pytestmark = pytest.mark.slow

UNSHAPED = {"model_dim": None, "num_layers": None, "num_heads": None, "context_length": None,
            "batch_size": None}


@pytest.fixture
def measured(monkeypatch):
    """A machine of 1000 GFLOP/s, and no cap from the tiny corpus (whose 20,000 tokens would
    hold every run to a small shape)."""
    probes = []

    def peak(dtype, device, quick=False):
        assert quick  # sizing takes the short probe: its time comes out of the budget
        probes.append(dtype)
        return 1000.0, {512: 1000.0}

    monkeypatch.setattr(setup, "peak_gflops", peak)
    monkeypatch.setattr(sizing, "supported_parameters", lambda tokens: 10**12)
    return probes


def printed(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def shape(out):
    model = yaml.safe_load((out / "config.yaml").read_text())["model"]
    return model["model_dim"], model["num_layers"], model["num_heads"], model["context_length"]


def test_a_larger_budget_picks_a_larger_model(tmp_path, corpus, measured, capsys):
    short = train(corpus, tmp_path / "short", "--json", max_time=60, max_steps=1, **UNSHAPED)
    assert "model sized to the budget: 128 wide x 4 layers" in printed(capsys)
    long = train(corpus, tmp_path / "long", "--json", max_time=36_000, max_steps=1, **UNSHAPED)
    out = printed(capsys)
    assert "model sized to the budget" in out and "in 36000 s" in out
    assert shape(short) == (128, 4, 4, 128)
    assert summary(long)["parameters"] > 2 * summary(short)["parameters"]
    wide = next(s for s in sizing.LADDER if s.model_dim == shape(long)[0])
    assert shape(long) == (wide.model_dim, wide.num_layers, wide.num_heads, wide.context_length)
    assert yaml.safe_load((long / "config.yaml").read_text())["training"]["batch_size"] == wide.batch_size
    assert measured == [sizing.torch.float32, sizing.torch.float32]  # probed in the run's precision


def test_a_shape_setting_wins_and_nothing_is_sized(tmp_path, corpus, measured):
    out = train(corpus, tmp_path / "given", max_time=36_000, max_steps=1,
                **{**UNSHAPED, "num_layers": 2})
    assert shape(out) == (128, 2, 4, 128) and measured == []


def test_no_auto_size_keeps_the_default_shape(tmp_path, corpus, measured):
    out = train(corpus, tmp_path / "fixed", "--no-auto-size", max_time=36_000, max_steps=1, **UNSHAPED)
    assert shape(out) == (128, 4, 4, 128) and measured == []


def test_a_given_learning_rate_is_kept(tmp_path, corpus, measured, monkeypatch):
    rung = sizing.LADDER[1]
    monkeypatch.setattr(sizing, "LADDER", (sizing.LADDER[0], type(rung)(**{**rung.__dict__, "learning_rate": 1e-3})))
    sized = train(corpus, tmp_path / "sized", max_time=36_000, max_steps=1, **UNSHAPED)
    assert yaml.safe_load((sized / "config.yaml").read_text())["optim"]["learning_rate"] == 1e-3
    mine = train(corpus, tmp_path / "mine", "--learning-rate", "0.002", max_time=36_000, max_steps=1, **UNSHAPED)
    config = yaml.safe_load((mine / "config.yaml").read_text())
    assert config["optim"]["learning_rate"] == 0.002 and config["model"]["model_dim"] == rung.model_dim


def test_a_resumed_run_keeps_its_sized_shape(tmp_path, corpus, measured):
    out = train(corpus, tmp_path / "run", max_time=36_000, max_steps=1, **UNSHAPED)
    first = shape(out)
    measured.clear()
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "2", "--quiet") == 0
    assert shape(out) == first and measured == []  # not sized again
    assert summary(out)["steps"] == 2


def test_sweep_trials_are_not_sized_unless_asked(tmp_path, corpus, measured):
    """Trials compare settings on one shape; `sweep --auto-size` sizes them all the same."""
    pytest.importorskip("optuna", reason="the sweep needs Optuna")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"parameters": {"dropout": {"low": 0.0, "high": 0.1}}}))
    flags = tiny_args(max_time=36_000, max_steps=1, eval_interval=1, **UNSHAPED)
    for name, extra in (("fixed", ()), ("sized", ("--auto-size",))):
        assert run_cli("sweep", corpus, "--space", space, "-o", tmp_path / name, "--trials", "1",
                       "--sampler", "random", *flags, *extra) == 0
    assert shape(tmp_path / "fixed" / "trial_0000") == (128, 4, 4, 128)
    assert shape(tmp_path / "sized" / "trial_0000")[0] > 128
