"""The metrics records of a run: which steps get one, what goes in it, and where it goes.

A record is made every `--log-interval` steps, and on any step where another component has
something to add (a validation loss, a gradient check) or the run stops. Its training loss
is the one read on that step (divergence.py reads every step's, to catch a NaN on its own
step). Records go to the trackers (metrics.json, TensorBoard, W&B) and the console.
"""

from __future__ import annotations

from typing import Any

import torch

from fundamentallm.config import TrainingConfig
from fundamentallm.console import TrainingConsole
from fundamentallm.tracking import Tracker
from fundamentallm.training.state import TrainState


class Throughput:
    """Training tokens per second since this process started (or resumed) the run."""

    def __init__(self, state: TrainState, tokens_per_step: int):
        self.start_step, self.start_elapsed = state.step, state.elapsed
        self.tokens_per_step = tokens_per_step

    def __call__(self, state: TrainState) -> float:
        seconds = max(state.elapsed - self.start_elapsed, 1e-9)
        return (state.step - self.start_step) * self.tokens_per_step / seconds


def clock(seconds: float) -> str:
    """h:mm:ss, the run's own training time (the summary's wall_time_s)."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


LONG_RUN_S = 15 * 60  # a run without --max-time that will take longer says so, a few steps in


def duration(seconds: float) -> str:
    """A rough length for people: 40 min, 2 h 10 min."""
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class MetricsLog:
    def __init__(self, training: TrainingConfig, micro_per_epoch: int, throughput: Throughput,
                 tracker: Tracker, console: TrainingConsole):
        self.training, self.micro_per_epoch, self.throughput = training, micro_per_epoch, throughput
        self.tracker, self.console = tracker, console
        self.pace_from: tuple[int, float] | None = None  # (step, elapsed) after the first step
        self.paced = training.max_time is not None  # a time budget bounds the run already

    def due(self, step: int, stopping: bool) -> bool:
        return step % self.training.log_interval == 0 or stopping

    def record(self, state: TrainState, lr: float, grad_norm: torch.Tensor | None,
               dropout: float | None) -> dict[str, Any]:
        record = {
            "step": state.step,
            "epoch": self.epochs(state),
            "train_loss": state.last_train_loss,
            "lr": lr,
            "tokens": state.tokens,
            "tokens_per_s": round(self.throughput(state), 1),
            "elapsed_s": round(state.elapsed, 3),
        }
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        if dropout is not None:
            record["dropout"] = round(dropout, 6)
        return record

    def publish(self, record: dict[str, Any] | None) -> None:
        if record:
            self.tracker.log(record)
            self.console.record(record)

    def progress(self, state: TrainState, total_steps: int, time_fraction: float, lr: float) -> None:
        """The progress bar: the step budget or the time budget, whichever is further along."""
        self.warn_if_long(state, total_steps)
        self.console.update(
            min(1.0, max(state.step / total_steps, time_fraction)),
            {"epoch": f"{self.epochs(state):.2f}", "step": state.step, "loss": state.last_train_loss, "lr": lr,
             "tok/s": int(self.throughput(state)), "time": clock(state.elapsed)},
        )

    def warn_if_long(self, state: TrainState, total_steps: int) -> None:
        """Once, when a few steps have shown the pace (the first step, which may compile, does
        not count): a run that will take longer than LONG_RUN_S says so, and how to bound it."""
        if self.paced:
            return
        if self.pace_from is None:
            self.pace_from = (state.step, state.elapsed)
            return
        steps, seconds = state.step - self.pace_from[0], state.elapsed - self.pace_from[1]
        if steps < 5 and seconds < 5:
            return
        self.paced = True
        left = (total_steps - state.step) * seconds / max(steps, 1)
        if left > LONG_RUN_S:
            self.console.message(f"note: at this pace the run needs about {duration(left)} more "
                                 f"({total_steps - state.step:,} steps); --max-time SECONDS bounds it, and "
                                 "Ctrl-C stops it with its state saved for --resume")

    def epochs(self, state: TrainState) -> float:
        """Epochs done, with the fraction of the current one."""
        return round(state.epoch + state.micro_batch / self.micro_per_epoch, 4)
