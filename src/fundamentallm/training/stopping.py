"""When a run stops: its step budget, its time budget, or a signal.

The first Ctrl-C or SIGTERM (the notice a cluster scheduler such as SLURM or Kubernetes
sends before it kills a job) during the steps asks the run to stop after the current step and
save a resumable state; a second one interrupts at once. Before the first step (reading the
data, building the model) a signal stops the command at once: nothing is trained to save.
With several processes the clocks and signals may differ, so rank 0 decides and every
process follows. (Early stopping is the
validator's decision: it alone knows the validation losses.)

A stop is said at once, whatever the run is doing: a step can take long (compiling the model
on its first step), and Python runs a signal handler only between bytecodes of the main
thread. So the C-level handler also writes the signal's number to a pipe
(`signal.set_wakeup_fd`), and a thread waiting on that pipe prints the acknowledgment.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

from fundamentallm.config import TrainingConfig
from fundamentallm.errors import StopSignal
from fundamentallm.training.distributed import Cluster
from fundamentallm.training.state import TrainState

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt:
    """Whether a stop signal arrived, and which (its name, e.g. "SIGTERM").

    While the steps run (`deferring`), the first signal is noted and the run stops after the
    step, with its state saved. Before them (reading and tokenizing the data, building the
    model) there is nothing to save yet, so a signal stops the command at once, as it does
    after them (the final save writes atomically: a file is the old one or the new one)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None
        self.deferring = False
        self.said = threading.Event()  # the acknowledgment is printed once, by whoever is first
        self.say: Callable[[str], None] = lambda text: None

    def handle(self, signum, frame) -> None:
        if self.requested or not self.deferring:
            raise StopSignal(signum)
        self.requested, self.signal = True, signal.Signals(signum).name
        self.acknowledge(signum)

    def acknowledge(self, signum: int) -> None:
        if self.said.is_set():
            return
        self.said.set()
        name = signal.Signals(signum).name
        if not self.deferring:
            self.say(f"{name}: stopping now (nothing trained yet: no state to save)")
            return
        again = "; Ctrl-C again stops at once" if signum == signal.SIGINT else ""
        self.say(f"{name}: stopping after this step, with its state saved for --resume{again}")

    def watch(self, pipe: int) -> None:
        """The thread that acknowledges a signal while the main thread is busy in C code."""
        while data := os.read(pipe, 16):  # empty: the write end was closed, the command is over
            for signum in data:
                if signum in STOP_SIGNALS:
                    self.acknowledge(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """The steps: a first signal stops the run after the current step."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False


@contextmanager
def stop_signals(interrupt: Interrupt, say: Callable[[str], None]) -> Iterator[None]:
    """Inside this block (a training command), stop signals go to `interrupt` and are said at
    once through `say`, whatever the main thread is doing."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield  # signals are someone else's here
        return
    interrupt.say = say
    previous = {sig: signal.signal(sig, interrupt.handle) for sig in STOP_SIGNALS}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the C handler must never block
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watcher = threading.Thread(target=interrupt.watch, args=(read_end,), daemon=True, name="stop-signals")
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # ends the watcher's read
        watcher.join(timeout=5)
        os.close(read_end)
        for sig, old in previous.items():
            signal.signal(sig, old)


class StopCondition:
    """`closing_s(step seconds)`: how long the run's closing work takes after its last step (the
    final validation), which a time budget keeps room for: the run ends within --max-time plus
    one step and the final save."""

    def __init__(self, training: TrainingConfig, total_steps: int, cluster: Cluster, interrupt: Interrupt,
                 closing_s: Callable[[float], float] = lambda step_s: 0.0):
        self.training, self.total_steps = training, total_steps
        self.cluster, self.interrupt, self.closing_s = cluster, interrupt, closing_s
        self.step_times: deque[float] = deque(maxlen=5)  # the last steps' seconds (validations included)
        self.elapsed: float | None = None

    def before_start(self, state: TrainState) -> str | None:
        """A resumed run may already be done."""
        self.elapsed = state.elapsed
        if state.step >= self.total_steps:
            return "max_steps" if self.total_steps == self.training.max_steps else "epochs"
        if self.time_used(state):
            return "max_time"
        return None

    def time_used(self, state: TrainState) -> bool:
        """The --max-time is spent: the clock reached it, or an earlier session stopped for it."""
        budget = self.training.max_time
        return bool(budget) and (state.elapsed >= budget or state.spent_budget == budget)

    def after_step(self, state: TrainState) -> str | None:
        """Why the run stops after this step, or None to go on."""
        reason = None
        if self.interrupt.requested:  # first: the user's reason, whatever budget ran out meanwhile
            reason = "interrupted"
        elif state.step >= self.total_steps:
            reason = "max_steps" if self.total_steps == self.training.max_steps else "epochs"
        elif self.training.max_time and (state.elapsed + self.closing_s(self.step_s(state))
                                         >= self.training.max_time):
            reason = "max_time"
        reason = self.cluster.agree(reason)
        if reason == "max_time":
            state.spent_budget = self.training.max_time
        return reason

    def step_s(self, state: TrainState) -> float:
        """A step's usual length: the median of the last few (one with a validation in it is long)."""
        if self.elapsed is not None:
            self.step_times.append(state.elapsed - self.elapsed)
        self.elapsed = state.elapsed
        if len(self.step_times) < 3:  # the first steps warm up (and may compile): no pace yet
            return 0.0
        return sorted(self.step_times)[len(self.step_times) // 2]

    def time_fraction(self, state: TrainState) -> float:
        """How far through its --max-time the run is (0 without one)."""
        return state.elapsed / self.training.max_time if self.training.max_time else 0.0
