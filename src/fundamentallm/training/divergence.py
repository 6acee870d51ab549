"""When the loss goes wrong: a non-finite loss, and a loss spike.

Every step's loss is read once, on the step it is computed and before its update (one
host-device sync per step, as fp16's gradient scaler already makes; with several processes
the mean over all of them, so every process sees the same value and decides alike).

- **NaN or infinity.** The step's update is skipped (its data is consumed, the step
  counted), up to `--skip-nonfinite` times in a run; the next one stops the run with one
  line. The files on disk are from before it, so nothing bad is saved.
- **A spike.** Large models sometimes blow up without a NaN: the loss climbs far above
  where it was and stays there. PaLM (Chowdhery et al. 2022, section 5.1) restarted such
  runs from a checkpoint before the spike; llm-foundry's `KillLossSpike` detects them as a
  loss above k times its running median for m steps in a row. With `--spike-rollbacks N`
  this component does both: on such a spike it restores the newest checkpoint saved before
  the spike began and lowers the learning rate (times `--spike-lr-factor`), at most N
  times; one more spike stops the run.

Each event is a record in metrics.json (`"event": "nonfinite_loss"` or `"loss_spike"`) and a
line on the console. The window of recent losses is part of the training state, so a
resumed run decides exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Callable

import torch

from fundamentallm.checkpoint import load_checkpoint
from fundamentallm.config import TrainingConfig
from fundamentallm.errors import UserError
from fundamentallm.tracking import Tracker
from fundamentallm.training.distributed import Cluster
from fundamentallm.training.start import resumable_files
from fundamentallm.training.state import TrainState

# The median means little over a handful of steps: no spike is called before this many.
MIN_WINDOW = 20


class LossWatch:
    def __init__(self, training: TrainingConfig, out: Path, cluster: Cluster, tracker: Tracker,
                 message: Callable[[str], None]):
        self.training, self.out = training, out
        self.cluster, self.tracker, self.message = cluster, tracker, message

    def update_allowed(self, state: TrainState, step_loss: torch.Tensor) -> bool:
        """Read this step's loss (state.last_train_loss); False when it is not finite and may
        be skipped. `state.step` is still the number of steps before this one."""
        loss = state.last_train_loss = float(self.cluster.mean(step_loss))
        step = state.step + 1
        if math.isfinite(loss):
            return True
        state.skipped_steps += 1
        if state.skipped_steps > self.training.skip_nonfinite:
            skipped = (f" (after skipping {self.training.skip_nonfinite} such step(s), --skip-nonfinite)"
                       if self.training.skip_nonfinite else "; --skip-nonfinite N skips up to N such steps")
            raise UserError(f"loss became {loss} at step {step}{skipped}; try a lower --learning-rate "
                            "or a --gradient-clip")
        self.event(step, "nonfinite_loss", f"loss {loss} at step {step}: update skipped "
                   f"({state.skipped_steps} of --skip-nonfinite {self.training.skip_nonfinite})",
                   skipped_steps=state.skipped_steps)
        return False

    def spiked(self, state: TrainState) -> bool:
        """After the step: note its loss; on a spike, roll the run back (True) or stop it."""
        loss, training = state.last_train_loss, self.training
        if not training.spike_rollbacks or not math.isfinite(loss):
            return False
        recent = state.recent_losses
        high = len(recent) >= min(MIN_WINDOW, training.spike_window) and \
            loss > training.spike_factor * statistics.median(recent)
        median = statistics.median(recent) if recent else math.nan
        state.spike_streak = state.spike_streak + 1 if high else 0
        state.recent_losses = (recent + [loss])[-training.spike_window:]
        if state.spike_streak < training.spike_steps:
            return False
        began = state.step - training.spike_steps + 1  # the first step above the threshold
        if state.rollbacks >= training.spike_rollbacks:
            raise UserError(f"the loss spiked at step {began} ({loss:.4g}, its recent median {median:.4g}) "
                            f"after {state.rollbacks} rollback(s), all --spike-rollbacks allows; "
                            "try a lower --learning-rate or a --gradient-clip")
        path = self.cluster.agree(self.cluster.on_main(lambda: self.checkpoint_before(began)))
        if path is None:
            raise UserError(f"the loss spiked at step {began} ({loss:.4g}, its recent median {median:.4g}), "
                            f"and no checkpoint in {self.out} is from before it to roll back to; save more "
                            "often (--checkpoint-interval)")
        self.roll_back(state, Path(path), began, loss, median)
        return True

    def checkpoint_before(self, step: int) -> str | None:
        """The newest intact checkpoint of this run holding a training state from before `step`."""
        best, best_step = None, -1
        for path in resumable_files(self.out):
            try:
                saved = load_checkpoint(path)["train_state"]["counters"]["step"]
            except (UserError, KeyError, TypeError):
                continue
            if best_step < saved < step:
                best, best_step = str(path), saved
        return best

    def roll_back(self, state: TrainState, path: Path, began: int, loss: float, median: float) -> None:
        checkpoint = load_checkpoint(path)
        at, elapsed, skipped = state.step, state.elapsed, state.skipped_steps
        rollbacks, lr_factor = state.rollbacks + 1, state.lr_factor * self.training.spike_lr_factor
        state.load_state_dict(checkpoint["train_state"], checkpoint["model"], self.cluster.rank, path.parent)
        # The time spent stays spent (--max-time), and the run remembers what it has been through.
        state.elapsed, state.skipped_steps, state.rollbacks, state.lr_factor = elapsed, skipped, rollbacks, lr_factor
        self.event(at, "loss_spike", f"loss spike from step {began} ({loss:.4g}, recent median {median:.4g}): "
                   f"rolled back to step {state.step} ({path.name}), learning rate x{lr_factor:g} "
                   f"(rollback {rollbacks} of --spike-rollbacks {self.training.spike_rollbacks})",
                   loss=loss, median=median, began=began, rolled_back_to=state.step, lr_factor=lr_factor,
                   rollbacks=rollbacks)

    def event(self, step: int, kind: str, text: str, **figures) -> None:
        self.tracker.log({"step": step, "event": kind, **figures})
        self.message(f"warning: {text}")
