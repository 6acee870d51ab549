"""Everything a run needs to continue exactly where it stopped, in one object.

`state_dict()` holds only tensors and plain Python values (RNG states included), so it is
stored inside a checkpoint that loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import copy
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fundamentallm.training.sharding import Replicated


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def deterministic_kernels(device: torch.device):
    """Same seed, same data → same losses on a CPU, compiled or not.

    Compiled, the embedding's gradient (a scatter-add over the batch's tokens) is generated
    with atomic float adds, whose order, and so whose rounding, changes from run to run.
    Deterministic mode makes Inductor and PyTorch use ordered kernels instead (on this
    model it is also faster: no atomics). Not on CUDA, where it would slow cuBLAS and
    scatter kernels and needs CUBLAS_WORKSPACE_CONFIG. The previous mode is restored after.
    """
    if device.type != "cpu":
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Filling every new tensor with NaN is a debugging aid, not needed for the same results.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.utils.deterministic.fill_uninitialized_memory = previous[2]


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    layout: Replicated = field(default_factory=Replicated, repr=False)  # or Sharded (FSDP): how weights are held
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # completed epochs; the data position is (epoch, micro_batch)
    micro_batch: int = 0  # next micro-batch within the epoch
    tokens: int = 0  # training tokens consumed
    elapsed: float = 0.0  # seconds of training so far (for --max-time across resumes)
    last_train_loss: float = math.nan
    last_val_loss: float = math.nan
    best_val_loss: float = math.inf  # lowest validation loss: best_model.pt
    # Early stopping (as in Keras): the loss to beat by more than --min-delta, and how many
    # evaluations in a row have not.
    stopping_reference: float = math.inf
    evals_without_improvement: int = 0
    # When the loss goes wrong (divergence.py): steps skipped for a NaN or infinite loss, loss-spike
    # rollbacks so far and the learning-rate multiplier they left, and the spike test's recent
    # losses and how many steps in a row have been above its threshold.
    skipped_steps: int = 0
    rollbacks: int = 0
    lr_factor: float = 1.0
    recent_losses: list[float] = field(default_factory=list)
    spike_streak: int = 0
    # A re-warm-up after a resume with a new budget (schedule.py): from which step, and from
    # which rate (NaN: none).
    rewarm_step: int = 0
    rewarm_from: float = math.nan
    # The --max-time the run stopped for (0: none). It stops a little early, to fit its closing
    # validation, so its clock alone would leave a few seconds "left" to resume into.
    spent_budget: float = 0.0
    # What the run trains on (data/fingerprint.py): a resume on other data is refused unless asked for.
    data: dict[str, Any] | None = None
    counters: tuple[str, ...] = field(default=(
        "step", "epoch", "micro_batch", "tokens", "elapsed", "last_train_loss", "last_val_loss",
        "best_val_loss", "stopping_reference", "evals_without_improvement", "skipped_steps", "rollbacks",
        "lr_factor", "recent_losses", "spike_streak", "rewarm_step", "rewarm_from",
        "spent_budget"), repr=False)

    @property
    def rewarm(self) -> tuple[int, float] | None:
        """(first step, rate) of a re-warm-up after a resume with a new budget, if there is one."""
        return None if math.isnan(self.rewarm_from) else (self.rewarm_step, self.rewarm_from)

    def advance(self, tokens: int, elapsed: float, micro_per_epoch: int) -> bool:
        """Count one optimizer step; True when it completed an epoch."""
        self.step += 1
        self.tokens += tokens
        self.elapsed = elapsed
        if self.micro_batch < micro_per_epoch:
            return False
        self.epoch, self.micro_batch = self.epoch + 1, 0
        return True

    def state_dict(self, rank_rngs: list[dict[str, Any]] | None = None,
                   optimizer_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """All but the model weights, which a checkpoint stores once, as its `model` entry.
        `rank_rngs`: with several processes, every process's random state (rank order);
        `optimizer_state`: the optimizer's, gathered (a sharded run), else read here."""
        state = {
            "optimizer": optimizer_state if optimizer_state is not None else self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "counters": {name: copy.copy(getattr(self, name)) for name in self.counters},
            "rng": rng_state(),
        }
        if rank_rngs is not None and len(rank_rngs) > 1:
            state["rank_rngs"] = rank_rngs
        if self.data is not None:
            state["data"] = self.data
        return state

    def load_state_dict(self, state: dict[str, Any], model_state: dict[str, Any], rank: int = 0,
                        directory: Path | None = None) -> None:
        """`directory`: where the checkpoint is (a sharded state's shards are found from there)."""
        if "sharded" in state:  # --sharded-resume: model and optimizer in their own files
            self.layout.load_sharded(self.model, self.optimizer, (directory or Path(".")) / state["sharded"]["dir"])
        else:
            self.layout.load(self.model, self.optimizer, model_state, state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        for name in self.counters:  # a counter an older state lacks keeps its default
            setattr(self, name, state["counters"].get(name, getattr(self, name)))
        saved = state.get("rank_rngs") or [state["rng"]]  # every process's state, or the one process's
        if rank < len(saved):  # a process the saved run did not have keeps the fresh state it was seeded with
            set_rng_state(saved[rank])
