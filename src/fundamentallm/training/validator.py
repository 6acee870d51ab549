"""Validation during training, and early stopping.

The validator decides when to validate (every `--eval-interval` steps, and whenever the run
stops, so the last figure is always fresh), measures the loss on `--eval-iters` batches of
the held-out tokens, hands each result to a judge when one is given (a sweep's pruner),
and keeps the early-stopping count (as in Keras: the loss to beat by
more than `--min-delta`, and how many evaluations in a row have not). Its counters live in
the TrainState, so they survive a resume.

Losses are per token; per character (bits/char) they compare across tokenizers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fundamentallm.config import TrainingConfig
from fundamentallm.scoring import Shard, bits_per_char, total_loss
from fundamentallm.model import GPT
from fundamentallm.training.precision import Precision
from fundamentallm.training.state import TrainState


# A judge sees every validation record ({"step", "val_loss", "val_bits_per_char", ...}) and
# answers whether the run should stop there (a sweep's pruner: the run is hopeless).
Judge = Callable[[dict[str, Any]], bool]


class Validator:
    def __init__(self, training: TrainingConfig, model: GPT, val_ids: torch.Tensor | np.ndarray | None, *,
                 unk_id: int | None, chars_per_token: float, precision: Precision, shard: Shard,
                 judge: Judge | None = None, trained: np.ndarray | None = None):
        self.training, self.model, self.val_ids, self.trained = training, model, val_ids, trained
        self.unk_id, self.chars_per_token, self.precision = unk_id, chars_per_token, precision
        self.shard = shard
        self.judge = judge
        self.condemned = False  # the judge said stop
        self.seconds: float | None = None  # how long the last validation took

    @property
    def enabled(self) -> bool:
        return self.val_ids is not None

    def due(self, step: int, stopping: bool) -> bool:
        return self.enabled and (step % self.training.eval_interval == 0 or stopping)

    def loss(self) -> float:
        """Mean nats per token over evenly spaced validation windows (the plain model, not the
        compiled one: the windows' shapes vary, which would recompile): --eval-iters batches of
        the global batch, each process scoring its share (the same figure as one process with
        the combined batch would give, at 1/N of the work each)."""
        windows = self.training.eval_iters * self.training.batch_size * self.shard.count
        nats, scored, _ = total_loss(self.model, self.val_ids, self.training.batch_size, self.unk_id,
                                     windows, self.precision.autocast, self.shard, trained=self.trained)
        return nats / max(1, scored)

    def validate(self, state: TrainState, record: dict[str, Any]) -> bool:
        """Measure, add the figures to `record`, update the counters; True for a new best."""
        began = time.perf_counter()
        state.last_val_loss = record["val_loss"] = self.loss()
        self.seconds = time.perf_counter() - began
        record["val_bits_per_char"] = bits_per_char(state.last_val_loss, self.chars_per_token)
        if state.stopping_reference - state.last_val_loss > self.training.min_delta:
            state.stopping_reference = state.last_val_loss
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        if self.judge is not None:
            self.condemned = self.judge(record)
        if state.last_val_loss < state.best_val_loss:
            state.best_val_loss = state.last_val_loss
            record["best"] = True
            return True
        return False

    def closing_seconds(self, step_s: float) -> float:
        """How long the validation that closes the run will take (a time budget keeps room for
        it): as long as the last one, or before any, 0.4 of a training step (of `step_s` seconds)
        per batch: the forward pass is about a third of a step, and validation runs eagerly
        (measured: 0.27 of an eager step on a 2-core CPU)."""
        if not self.enabled:
            return 0.0
        return self.seconds if self.seconds is not None else 0.4 * step_s * self.training.eval_iters

    def stop_reason(self, state: TrainState) -> str | None:
        """Why the run should stop after this validation, if it should."""
        if self.condemned:
            return "pruned"
        if self.training.early_stopping and state.evals_without_improvement >= self.training.patience:
            return "early_stopping"
        return None

    def best_bits_per_char(self, state: TrainState) -> float:
        return bits_per_char(state.best_val_loss, self.chars_per_token)
