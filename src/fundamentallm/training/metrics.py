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


class MetricsLog:
    def __init__(self, training: TrainingConfig, micro_per_epoch: int, throughput: Throughput,
                 tracker: Tracker, console: TrainingConsole):
        self.training, self.micro_per_epoch, self.throughput = training, micro_per_epoch, throughput
        self.tracker, self.console = tracker, console

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
        self.console.update(
            min(1.0, max(state.step / total_steps, time_fraction)),
            {"epoch": f"{self.epochs(state):.2f}", "step": state.step, "loss": state.last_train_loss, "lr": lr,
             "tok/s": int(self.throughput(state)), "time": clock(state.elapsed)},
        )

    def epochs(self, state: TrainState) -> float:
        """Epochs done, with the fraction of the current one."""
        return round(state.epoch + state.micro_batch / self.micro_per_epoch, 4)
