"""When a run stops: its step budget, its time budget, or a signal.

The first Ctrl-C or SIGTERM (the notice a cluster scheduler such as SLURM or Kubernetes
sends before it kills a job) asks the run to stop after the current step and save a
resumable state; a second one interrupts at once. With several processes the clocks and
signals may differ, so rank 0 decides and every process follows. (Early stopping is the
validator's decision: it alone knows the validation losses.)
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from fundamentallm.config import TrainingConfig
from fundamentallm.training.distributed import Cluster
from fundamentallm.training.state import TrainState

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt:
    """Whether a stop signal arrived, and which (its name, e.g. "SIGTERM")."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signal.Signals(signum).name


@contextmanager
def deferred_interrupt(interrupt: Interrupt) -> Iterator[None]:
    """Inside this block (the steps), stop signals are noted in `interrupt`, not raised."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield  # signals are someone else's here
        return
    previous = {sig: signal.signal(sig, interrupt.handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StopCondition:
    def __init__(self, training: TrainingConfig, total_steps: int, cluster: Cluster, interrupt: Interrupt):
        self.training, self.total_steps = training, total_steps
        self.cluster, self.interrupt = cluster, interrupt

    def before_start(self, state: TrainState) -> str | None:
        """A resumed run may already be done."""
        return "max_steps" if state.step >= self.total_steps else None

    def after_step(self, state: TrainState) -> str | None:
        """Why the run stops after this step, or None to go on."""
        reason = None
        if state.step >= self.total_steps:
            reason = "max_steps" if self.total_steps == self.training.max_steps else "epochs"
        elif self.training.max_time and state.elapsed >= self.training.max_time:
            reason = "max_time"
        elif self.interrupt.requested:
            reason = "interrupted"
        return self.cluster.agree(reason)

    def time_fraction(self, state: TrainState) -> float:
        """How far through its --max-time the run is (0 without one)."""
        return state.elapsed / self.training.max_time if self.training.max_time else 0.0
