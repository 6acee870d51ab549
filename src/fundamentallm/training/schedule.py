"""Learning-rate schedules: linear warmup, then cosine, linear, warmup-stable-decay or constant.

Warmup (Goyal et al. 2017) raises the rate linearly over the first `warmup_steps` steps so
the early, badly scaled gradients do not blow the weights apart. After it the rate decays
from the peak to `min_lr` as training progresses (cosine: Loshchilov & Hutter 2017), or
stays at the peak and decays linearly to `min_lr` over the final `cooldown_fraction`
(warmup-stable-decay, Hägele et al. 2024; the linear cool-down of the modded-nanogpt speedrun).
Progress is the fraction of the step budget done, or of the time budget (`--max-time`)
if that is further along, so a time-bounded run still decays fully by its deadline.

A run resumed with a new budget (`--resume --max-time +60` after it finished) follows the
schedule of a run planned with that budget from the start. Where that rate differs from the
one it stopped at (a finished run decayed to `min_lr`; the longer plan is mid-way), it is
re-warmed linearly from the old rate to the new schedule over `warmup_steps` steps instead of
jumping: continual pre-training re-warms and re-decays the same way (Ibrahim et al. 2024), and
for warmup-stable-decay this is the intended continuation: back to the stable rate, then a
fresh cool-down at the new end (Hägele et al. 2024).
"""

from __future__ import annotations

import math

from fundamentallm.config.schema import ModelConfig, OptimConfig, TrainingConfig


class LRSchedule:
    def __init__(self, cfg: OptimConfig):
        self.kind = cfg.lr_schedule
        self.peak = cfg.learning_rate
        self.minimum = cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr
        self.warmup_steps = cfg.warmup_steps
        self.cooldown = cfg.cooldown_fraction

    def __call__(self, step: int, total_steps: int, time_fraction: float = 0.0,
                 rewarm: tuple[int, float] | None = None) -> float:
        """Learning rate for optimizer step `step` (0-based) of `total_steps`: warmup ends at
        the peak on step `warmup_steps - 1`, and the last step runs at `min_lr`. `rewarm`: (the
        first step of a resumed run with a new budget, the rate it had stopped at)."""
        lr = self.planned(step, total_steps, time_fraction)
        if rewarm is not None and rewarm[0] <= step < rewarm[0] + self.warmup_steps:
            first, origin = rewarm
            lr = origin + (lr - origin) * (step - first + 1) / self.warmup_steps
        return lr

    def planned(self, step: int, total_steps: int, time_fraction: float = 0.0) -> float:
        """The rate of a run planned for this budget from its start."""
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        step_fraction = (step + 1 - self.warmup_steps) / max(1, total_steps - self.warmup_steps)
        progress = min(1.0, max(step_fraction, time_fraction))
        if self.kind == "cosine":
            return self.minimum + (self.peak - self.minimum) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "linear":
            return self.peak - (self.peak - self.minimum) * progress
        if self.kind == "wsd":
            into_cooldown = max(0.0, progress - (1 - self.cooldown)) / max(self.cooldown, 1e-12)
            return self.peak - (self.peak - self.minimum) * into_cooldown
        return self.peak


    def rewarm_from(self, step: int, before: tuple[int, float], after: tuple[int, float]) -> float | None:
        """A resumed run whose budget changed, (total steps, time fraction) `before` and `after`:
        the rate to re-warm from at `step`, or None when the change leaves the schedule where it was
        (during warmup, or at a constant rate)."""
        old, new = self.planned(step, *before), self.planned(step, *after)
        return old if abs(new - old) > 1e-9 * max(abs(new), abs(old)) else None

    def describe(self, now: float, planned: float, rewarming: bool) -> str:
        """What the rate will do from here: `now` the stopped run's, `planned` the schedule's next."""
        ahead = {"cosine": f"then cosine to {self.minimum:.3g} by the end",
                 "linear": f"then linearly to {self.minimum:.3g} by the end",
                 "wsd": f"then stable, cooling down to {self.minimum:.3g} over the last "
                        f"{self.cooldown:.0%} of the budget",
                 "constant": "then constant"}[self.kind]
        if rewarming:
            return (f"{now:.3g} at the stop; re-warms to {planned:.3g} over {self.warmup_steps} steps (the budget "
                    f"changed), {ahead}")
        return f"{planned:.3g}, {ahead}"


class DropoutSchedule:
    """Curriculum dropout (Morerio et al. 2017): the dropout rate rises linearly from `start`
    to `end` over training. Early on the model underfits and noise only slows it; later,
    when it could memorise, the full rate regularises it. Progress is measured as for the
    learning rate (steps, or time under --max-time, whichever is further)."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end

    def __call__(self, step: int, total_steps: int, time_fraction: float = 0.0) -> float:
        progress = min(1.0, max(step / max(1, total_steps - 1), time_fraction))
        return self.start + (self.end - self.start) * progress

    def apply(self, model, step: int, total_steps: int, time_fraction: float = 0.0) -> float:
        """Set this step's rate on every dropout of `model`; return it (for the metrics)."""
        rate = self(step, total_steps, time_fraction)
        model.set_dropout(rate)
        return rate


class ConstantDropout:
    """--dropout-schedule constant: the model keeps the rate it was built with."""

    def apply(self, model, step: int, total_steps: int, time_fraction: float = 0.0) -> None:
        return None


def dropout_schedule(training: TrainingConfig, model: ModelConfig) -> DropoutSchedule | ConstantDropout:
    if training.dropout_schedule == "constant":
        return ConstantDropout()
    return DropoutSchedule(training.dropout_start, model.dropout)


def set_learning_rate(optimizer, lr: float) -> None:
    """Every parameter group at `lr` times its own scale (layer-wise decay, Muon's ratio)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
