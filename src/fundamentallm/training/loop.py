"""Training: set up the run, fit it step by step, finish it. Read top to bottom.

`train` is the whole of it: `plan_start` decides where the run begins (fresh, resumed or
fine-tuned), `setup` builds the run, `fit` takes optimizer steps until the stop condition
or a component says stop, and `finish` writes the final model and the summary.

Each step of `fit` is the optimizer step itself (learning rate, micro-batches with
gradient accumulation, clipping, the update), then one line per component. A component
decides for itself whether this step is one of its own: the validator evaluates every
--eval-interval steps, the checkpointer saves every --checkpoint-interval, and so on.
"""

from __future__ import annotations

import gc
import os
import shlex
import time
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, Callable

import torch

from fundamentallm.atomic import write_json
from fundamentallm.config import Config, ConfigSources
from fundamentallm.console import TrainingConsole
from fundamentallm.errors import UserError
from fundamentallm.tracking import Tracker
from fundamentallm.training.distributed import abandon_cluster, leave_cluster
from fundamentallm.training.optim import clip_gradients
from fundamentallm.training.profiling import peak_memory_bytes, reset_peak_memory
from fundamentallm.training.sharding import held_bytes
from fundamentallm.training.schedule import set_learning_rate
from fundamentallm.training.setup import Run, describe, setup
from fundamentallm.training.start import plan_start
from fundamentallm.training.state import deterministic_kernels
from fundamentallm.training.stopping import Interrupt, stop_signals
from fundamentallm.training.validator import Judge


def train(config: Config | ConfigSources, console: TrainingConsole | None = None, *,
          resume: str | bool | None = None, overwrite: bool = False, new_data: bool = False,
          tracker: Tracker | None = None, judge: Judge | None = None) -> dict[str, Any]:
    """Train as `config` says; return the run summary (also written to summary.json).

    `resume`: the --resume flag (None, True, "auto" or a checkpoint path); `overwrite` lets a
    fresh run replace an earlier run's files in the output directory; `new_data` lets a resumed
    run continue on other data than it trained on (data/fingerprint.py); `judge` sees every
    validation record and may stop the run there (a sweep's pruner: stop_reason "pruned")."""
    sources = config if isinstance(config, ConfigSources) else ConfigSources.of(config)
    cfg, start = plan_start(sources, resume, new_data)
    console = console or TrainingConsole("quiet")
    interrupt = Interrupt()
    with ExitStack() as held, cluster_left_on_failure(), stop_signals(interrupt, say_stop(console)):
        run = setup(cfg, start, console, interrupt, held, overwrite, tracker, judge)
        run.console.start(describe(run))
        with run.checkpointer.write_failures_reported(run.state):  # a full disk, a read-only directory
            with interrupt.deferred(), deterministic_kernels(run.device), \
                    finish_on_failure(run.tracker), out_of_memory_reported(run), lost_processes_reported(run):
                stop_reason = fit(run)
            return finish(run, stop_reason)


def say_stop(console: TrainingConsole) -> Callable[[str], None]:
    """Where a stop signal is acknowledged: the console, in a run of one process. With several
    (torchrun's WORLD_SIZE), the launcher's agent also sends SIGTERM to the survivors when a
    process dies, which is no stop to announce (the launcher reports what happened); those
    runs stop as before, silently."""
    return (lambda text: None) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else console.message


def fit(run: Run) -> str:
    """Optimizer steps until the run stops; returns why it stopped."""
    cfg, state, optimizer = run.cfg, run.state, run.state.optimizer
    accum = cfg.training.grad_accum_steps
    phase = run.profiler.phase  # marks the parts of a step in a --profile trace
    stop_reason = run.stop.before_start(state)
    reset_peak_memory(run.device)  # summary.json's peak memory is the steps', not the setup's
    run.model.train()
    while stop_reason is None:
        # ---- one optimizer step ----
        time_fraction = run.stop.time_fraction(state)
        lr = run.lr_schedule(state.step, run.total_steps, time_fraction, state.rewarm) * state.lr_factor
        set_learning_rate(optimizer, lr)
        dropout = run.dropout.apply(run.model, state.step, run.total_steps, time_fraction)
        optimizer.zero_grad(set_to_none=True)  # gradients live on until the next step (histograms)
        step_loss = torch.zeros((), device=run.device)
        targets = step_targets(run, accum)  # None: each micro-batch's mean counts alike
        for micro in range(accum):
            run.sync_gradients(micro == accum - 1)  # several processes: average once, after the last
            with phase("data"):
                x, y = run.sampler.batch_at(state.epoch, state.micro_batch)
                x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            with phase("forward"), run.precision.autocast():
                loss = (run.step_module(x, y) / accum if targets is None
                        else run.step_module(x, y, reduction="sum") / targets)
            with phase("backward"):
                state.scaler.scale(loss).backward()
            step_loss += loss.detach()
            state.micro_batch += 1
        state.scaler.unscale_(optimizer)  # true gradients from here on (a no-op without fp16 scaling)
        update = run.loss_watch.update_allowed(state, step_loss)  # a NaN loss: skip (--skip-nonfinite) or stop
        gradient_check = run.gradients.check(state.step + 1)  # before clipping
        with phase("optimizer"):
            grad_norm = None
            if update:
                grad_norm = clip_gradients(run.trainable, cfg.optim.gradient_clip) if cfg.optim.gradient_clip else None
                state.scaler.step(optimizer)
            state.scaler.update()
        epoch_done = state.advance(run.tokens_per_step, time.perf_counter() - run.clock_zero,
                                   run.sampler.micro_per_epoch)
        run.compilation.after_step()  # the first step compiled: its time is kept for the next runs' choice
        if run.loss_watch.spiked(state):  # rolled back to a checkpoint from before it, lr lowered
            continue

        # ---- when to stop ----
        stop_reason = run.stop.after_step(state)
        run.profiler.after_step(state.step, stop_reason is not None)  # the step only, not what follows

        # ---- the components, each on the steps that are its own ----
        stopping = stop_reason is not None
        validate = run.validator.due(state.step, stopping)
        record = None  # a metrics record, on the steps where anything has a figure for it
        if validate or gradient_check is not None or run.metrics.due(state.step, stopping):
            record = run.metrics.record(state, lr, grad_norm, dropout)
        run.gradients.after_step(state.step, gradient_check, record)
        if validate:
            if run.validator.validate(state, record):
                run.checkpointer.save_best(state)
            stop_reason = stop_reason or run.validator.stop_reason(state)  # early stopping, pruning
        run.metrics.publish(record)
        run.checkpointer.after_step(state, epoch_done, stop_reason is not None)  # incl. early stopping
        run.metrics.progress(state, run.total_steps, time_fraction, lr)
    return stop_reason


def step_targets(run: Run, accum: int) -> float | None:
    """With targets left out by design (conversations: only the assistant's), micro-batches
    hold different numbers of them, and some none: the step's loss is then the sum over all
    its targets divided by their count (here per process: DDP averages the processes' gradients),
    so a micro-batch with no target adds nothing instead of a NaN, and none weighs more than its
    share. None where every window is full of targets (each micro-batch's mean / accum, as ever)."""
    targets = run.sampler.step_targets(run.state.epoch, run.state.micro_batch, accum)
    if targets is None:
        return None
    total = float(run.cluster.sum(torch.tensor(float(targets), device=run.device)))
    return max(1.0, total / run.cluster.world_size)


def finish(run: Run, stop_reason: str) -> dict[str, Any]:
    """The final model, the trackers closed, the summary written and shown."""
    state, cluster = run.state, run.cluster
    run.profiler.after_step(state.step, stopping=True)  # a window that early stopping cut short
    peak, kind = peak_memory_bytes(run.device)
    peaks = cluster.gather(round(peak / 1e6, 1))  # every process's: sharding shows here
    held = cluster.gather(round(held_bytes(run.model, state.optimizer) / 1e6, 1))
    final = run.checkpointer.save_final(state)
    run.tracker.save_model(final)
    run.tracker.finish()
    summary = {
        "stop_reason": stop_reason,
        "steps": state.step,
        "epochs": run.metrics.epochs(state),
        "tokens": state.tokens,
        "final_train_loss": state.last_train_loss,
        "final_val_loss": state.last_val_loss,
        "best_val_loss": state.best_val_loss,
        "best_val_bits_per_char": run.validator.best_bits_per_char(state),
        "tokenizer": run.data.tokenizer.kind,
        "wall_time_s": round(time.perf_counter() - run.clock_zero, 2),  # the final validation and save included
        "tokens_per_s": round(run.metrics.throughput(state), 1),
        "parameters": run.model.num_parameters(),
        "trained_parameters": sum(p.numel() for p in run.trainable),  # fewer when frozen or LoRA
        "device": str(run.device),
        "precision": run.precision.name,
        "peak_memory_mb": peaks if cluster.distributed else peaks[0],  # per process, rank order
        "peak_memory_kind": kind,
        "training_state_mb": held if cluster.distributed else held[0],  # parameters, gradients, optimizer state
        "output_dir": run.cfg.checkpoint.output_dir,
    }
    if run.interrupt.signal:
        summary["signal"] = run.interrupt.signal
    if cluster.main:
        write_json(run.checkpointer.out / "summary.json", summary)
    run.console.end(summary)
    if stop_reason == "interrupted":
        run.console.message(f"interrupted: state saved; continue exactly where it stopped with: "
                            f"{resume_command(run.cfg)}")
    elif cluster.main:
        run.console.next_commands("next:", next_commands(run.cfg, stop_reason, state.step))
    cluster.barrier()  # every process leaves together, after rank 0 has written everything
    # DDP's reducer holds the process group and its gloo threads: let it go first, while the
    # interpreter is alive. Freed only at interpreter exit, a worker thread still joinable
    # there aborts the process ("terminate called without an active exception").
    run.ddp = run.step_module = None
    gc.collect()
    leave_cluster(cluster)
    return summary


def resume_command(cfg: Config, more: str = "") -> str:
    """The command that continues this run, with its real paths."""
    data = " ".join(shlex.quote(path) for path in cfg.data.train)
    return f"fundamentallm train {data} --output-dir {shlex.quote(cfg.checkpoint.output_dir)} --resume{more}"


def next_commands(cfg: Config, stop_reason: str, steps: int) -> list[str]:
    """Sample from the model, score it, and (when its budget ran out) train it further."""
    final = shlex.quote(str(Path(cfg.checkpoint.output_dir) / "final.pt"))
    scored = cfg.data.validation_data or cfg.data.train[0]
    sample = (f"fundamentallm interactive {final} --chat" if cfg.data.format == "chat"
              else f"fundamentallm generate {final} --max-tokens 300")
    commands = [sample, f"fundamentallm evaluate {final} --data {shlex.quote(scored)}"]
    budget = {"max_steps": ("--max-steps", 2 * steps), "epochs": ("--epochs", 2 * cfg.training.epochs),
              "max_time": ("--max-time", f"+{cfg.training.max_time or 0:g}")}.get(stop_reason)
    if budget:  # a budget ran out (not early stopping): as much again
        commands.append(resume_command(cfg, f" {budget[0]} {budget[1]}"))
    return commands


@contextmanager
def cluster_left_on_failure():
    """A process that fails (an input error every rank found, a lost peer) leaves the process
    group before it exits: gloo's threads, left running to interpreter exit, abort it
    (SIGABRT), which would hide the one-line error behind a crash report."""
    try:
        yield
    except UserError as exc:  # reported in one line, so its traceback is not needed: drop it, and
        exc.__traceback__ = None  # with it the frames holding the run (DDP's reducer keeps gloo busy)
        gc.collect()
        abandon_cluster()
        raise exc from None
    except BaseException:
        abandon_cluster()
        raise


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, a CPU's MemoryError, or MPS's RuntimeError saying so."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


@contextmanager
def out_of_memory_reported(run: Run):
    """Running out of memory is a setting to change, said in one line (the files on disk are
    from before: continue with --resume and a smaller batch)."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        training = run.cfg.training
        raise UserError(
            f"out of memory on {run.device} at step {run.state.step + 1} (--batch-size {training.batch_size}, "
            f"--context-length {run.cfg.model.context_length}); try a smaller --batch-size with a larger "
            f"--grad-accum-steps (the same effective batch: {training.batch_size} x {training.grad_accum_steps} "
            "now), a shorter --context-length or a smaller model") from None


PEER_ERRORS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "broken pipe",
               "timed out", "timeout")


def is_lost_process(exc: RuntimeError) -> bool:
    """A communication failure (the other side gone), not a bug of ours that happens to be a RuntimeError."""
    return isinstance(exc, torch.distributed.DistError) or any(k in str(exc).lower() for k in PEER_ERRORS)


class LostProcesses(UserError):
    """Another process of the run is gone (killed, crashed, its machine lost): not an input
    error, so exit status 1, but still one line."""

    exit_code = 1


@contextmanager
def lost_processes_reported(run: Run):
    """A collective that fails because another process died stops this one with one line,
    not a traceback from deep inside the communication library."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed.DistError and the backends' own errors
        if not (run.cluster.distributed and is_lost_process(exc)):
            raise
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LostProcesses(f"process {run.cluster.rank} of {run.cluster.world_size} lost the others at step "
                            f"{run.state.step + 1} ({detail}); continue from the last save with --resume") from None


@contextmanager
def finish_on_failure(tracker: Tracker):
    """A run that fails (NaN loss, a full disk, a second Ctrl-C) still leaves what it logged:
    metrics.json and the loss plot up to that step, a closed TensorBoard file, an ended W&B run."""
    try:
        yield
    except BaseException:
        with suppress(Exception):  # the original error is the one to report
            tracker.finish()
        raise
