"""Gradient checks: per-parameter gradient and weight norms, warnings, and the flow plot.

Taken after backward and before clipping and the optimizer step, so they show the
gradients the loss produced. Two readings matter most:
- the gradient-to-weight ratio `|g| / |w|`: the size of a plain SGD update relative to the
  weights; ~1e-3 is the usual healthy order (CS231n's rule of thumb for update/weight).
- the flow across layers (`gradient_flow.png`): mean and max |gradient| per parameter from
  the embedding to the head. Bars that shrink towards the input mean vanishing gradients;
  NaN, Inf or norms above 100 are reported as warnings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fundamentallm.config import TrackingConfig
from fundamentallm.plots import new_figure, save_figure
from fundamentallm.tracking import Tracker, weights_and_gradients

LARGE_GRADIENT = 100.0  # a per-parameter gradient norm above this is worth a warning


@dataclass(frozen=True)
class ParameterGradient:
    name: str
    grad_norm: float
    weight_norm: float
    grad_abs_mean: float
    grad_abs_max: float

    @property
    def ratio(self) -> float:
        return self.grad_norm / (self.weight_norm + 1e-7)


@dataclass(frozen=True)
class GradientCheck:
    parameters: list[ParameterGradient]

    def as_record(self) -> dict[str, dict[str, float]]:
        """{name: {grad_norm, weight_norm, ratio, grad_abs_mean, grad_abs_max}}, for metrics."""
        return {p.name: {"grad_norm": p.grad_norm, "weight_norm": p.weight_norm, "ratio": p.ratio,
                         "grad_abs_mean": p.grad_abs_mean, "grad_abs_max": p.grad_abs_max}
                for p in self.parameters}

    def warnings(self, large: float = LARGE_GRADIENT) -> list[str]:
        found = []
        for p in self.parameters:
            if not math.isfinite(p.grad_norm):
                found.append(f"non-finite gradient (NaN or Inf) in {p.name}")
            elif p.grad_norm > large:
                found.append(f"large gradient in {p.name}: norm {p.grad_norm:.4g} (above {large:g})")
        return found

    def plot(self, path: str | Path, title: str) -> None:
        """Mean and max |gradient| per parameter, input to output, on a log scale (they
        span orders of magnitude)."""
        names = [p.name for p in self.parameters]
        fig, ax = new_figure(max(8.0, 0.3 * len(names) + 2), 6)
        x = range(len(names))
        ax.bar(x, [p.grad_abs_max for p in self.parameters], alpha=0.5, label="max |gradient|")
        ax.bar(x, [p.grad_abs_mean for p in self.parameters], alpha=0.8, label="mean |gradient|")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, rotation=90, fontsize=7)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylabel("gradient magnitude")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        save_figure(fig, path)


def check_gradients(model: torch.nn.Module) -> GradientCheck:
    """Statistics of every parameter that has a gradient, in the model's order. One host
    sync for all of them (a `.item()` per number would stall a GPU hundreds of times)."""
    named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return GradientCheck([])
    rows = []
    for _, p in named:
        g = p.grad.detach().float()
        rows.append(torch.stack([g.norm(), p.detach().float().norm(), g.abs().mean(), g.abs().max()]))
    values: list[Any] = torch.stack(rows).tolist()  # (parameters, 4)
    return GradientCheck([ParameterGradient(name, *row) for (name, _), row in zip(named, values)])


class GradientMonitor:
    """Owns `--grad-check-interval` (checks after backward, before clipping: the gradients the
    loss produced) and `--histogram-interval` (weights and gradients to TensorBoard / W&B).
    Only rank 0 draws `gradient_flow.png` and warns; every rank's gradients are the same
    after DDP's averaging."""

    def __init__(self, tracking: TrackingConfig, model: torch.nn.Module, out: Path, main: bool,
                 tracker: Tracker, warn: Callable[[str], None]):
        self.tracking, self.model, self.out, self.main = tracking, model, out, main
        self.tracker, self.warn = tracker, warn

    def check(self, step: int) -> GradientCheck | None:
        """The check of optimizer step `step` (1-based), if it is due."""
        interval = self.tracking.grad_check_interval
        return check_gradients(self.model) if interval and step % interval == 0 else None

    def after_step(self, step: int, check: GradientCheck | None, record: dict[str, Any] | None) -> None:
        if check is not None:
            record["gradients"] = check.as_record()
            if self.main:
                for warning in check.warnings():
                    self.warn(f"step {step}: {warning}")
                check.plot(self.out / "gradient_flow.png", f"gradient flow at step {step}")
        interval = self.tracking.histogram_interval
        if interval and step % interval == 0:
            self.tracker.log_histograms(step, weights_and_gradients(self.model))
