"""Gradient checks: the per-parameter statistics, the warnings, the flow plot."""

from __future__ import annotations

import math

import pytest
import torch

from fundamentallm.training.gradients import GradientCheck, ParameterGradient, check_gradients


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    model(torch.randn(5, 4)).pow(2).sum().backward()
    return model


def test_statistics_match_the_tensors():
    model = small_model()
    check = check_gradients(model)
    assert [p.name for p in check.parameters] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for stats, param in zip(check.parameters, model.parameters()):
        assert stats.grad_norm == pytest.approx(param.grad.norm().item())
        assert stats.weight_norm == pytest.approx(param.norm().item())
        assert stats.grad_abs_mean == pytest.approx(param.grad.abs().mean().item())
        assert stats.grad_abs_max == pytest.approx(param.grad.abs().max().item())
        assert stats.ratio == pytest.approx(stats.grad_norm / stats.weight_norm, rel=1e-5)
    record = check.as_record()
    assert set(record["2.weight"]) == {"grad_norm", "weight_norm", "ratio", "grad_abs_mean", "grad_abs_max"}


def test_parameters_without_gradients_are_left_out():
    model = small_model()
    model[0].bias.grad = None
    assert "0.bias" not in [p.name for p in check_gradients(model).parameters]
    assert check_gradients(torch.nn.Linear(2, 2)).parameters == []


def test_warnings_name_nan_inf_and_large_gradients():
    model = small_model()
    model[0].weight.grad[0, 0] = float("nan")
    model[2].bias.grad[0] = float("inf")
    model[2].weight.grad.fill_(500.0)
    warnings = check_gradients(model).warnings()
    assert warnings[0] == "non-finite gradient (NaN or Inf) in 0.weight"
    assert warnings[1].startswith("large gradient in 2.weight: norm 1225")
    assert warnings[2] == "non-finite gradient (NaN or Inf) in 2.bias"
    assert len(warnings) == 3
    assert check_gradients(small_model()).warnings() == []  # a healthy model: nothing to say


def test_flow_plot_is_a_png(tmp_path):
    check = GradientCheck([ParameterGradient("a", 1.0, 2.0, 0.1, 0.5),
                           ParameterGradient("b", 1e-4, 2.0, 1e-6, 1e-5)])
    check.plot(tmp_path / "flow.png", "step 1")
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not math.isnan(check.parameters[1].ratio)


@pytest.mark.parametrize("main", [True, False])
def test_only_the_main_process_draws_and_warns(tmp_path, main):
    """Under DDP every rank checks (the record is the same everywhere), rank 0 alone writes."""
    from fundamentallm.config import TrackingConfig
    from fundamentallm.tracking import Tracker
    from fundamentallm.training.gradients import GradientMonitor

    model = small_model()
    model[0].weight.grad[0, 0] = float("nan")
    warned: list[str] = []
    monitor = GradientMonitor(TrackingConfig(grad_check_interval=2), model, tmp_path, main, Tracker(),
                              warned.append)
    assert monitor.check(1) is None  # not its step
    check = monitor.check(2)
    record: dict = {}
    monitor.after_step(2, check, record)
    assert set(record["gradients"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert (tmp_path / "gradient_flow.png").exists() is main
    assert bool(warned) is main and (not main or "non-finite gradient" in warned[0])
