"""The training loop: one function, read top to bottom.

Set-up (data → tokenizer → model → optimizer → state), then one optimizer step per
iteration: learning rate, micro-batches with gradient accumulation, clipping, step; then
the optional work of that step (log, evaluate, checkpoint), each an explicit line.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from fundamentallm.atomic import write_json, write_text
from fundamentallm.checkpoint import load_checkpoint, save_checkpoint
from fundamentallm.config import Config, config_to_dict, dump_yaml, validate
from fundamentallm.console import TrainingConsole
from fundamentallm.data.dataset import EpochSampler
from fundamentallm.data.tokens import load_tokens
from fundamentallm.errors import UserError
from fundamentallm.evaluation import bits_per_char, total_loss
from fundamentallm.model import GPT
from fundamentallm.tokenizers import tokenizer_from_dict
from fundamentallm.tracking import Tracker, build_tracker, weights_and_gradients
from fundamentallm.training.compilation import resolve_compile
from fundamentallm.training.distributed import join_cluster, leave_cluster
from fundamentallm.training.gradients import check_gradients
from fundamentallm.training.optim import build_optimizer, clip_gradients, freeze
from fundamentallm.training.precision import resolve_device, resolve_precision
from fundamentallm.training.resumption import init_config, resume_config
from fundamentallm.training.schedule import DropoutSchedule, LRSchedule
from fundamentallm.training.state import TrainState, deterministic_kernels, rng_state, seed_everything

RESUME_NAME = "resume_checkpoint.pt"
# Files a run writes; a fresh run with --overwrite removes those an earlier run left.
RUN_FILES = ("final.pt", "best_model.pt", RESUME_NAME, "metrics.json", "summary.json",
             "loss_curve.png", "gradient_flow.png", "config.yaml", "checkpoint_epoch_*.pt",
             "events.out.tfevents.*")


def every(step: int, interval: int) -> bool:
    return step % interval == 0


# Ctrl-C, and the notice a cluster scheduler (SLURM, Kubernetes) sends before it kills a job.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupt():
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step and save a
    resumable state; a second one interrupts at once. `requested["signal"]` says which."""
    requested: dict[str, Any] = {"stop": False, "signal": None}
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield requested  # signals are someone else's here
        return

    def handler(signum, frame):
        if requested["stop"]:
            raise KeyboardInterrupt
        requested["stop"], requested["signal"] = True, signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


def claim_output_dir(out: Path, resuming: bool, overwrite: bool) -> None:
    """Never silently mix two runs in one directory, nor discard a resumable one."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {out}: cannot create the directory ({exc.strerror})") from None
    if resuming or not (out / RESUME_NAME).exists():
        return
    if not overwrite:
        raise UserError(f"{out} already holds a run; continue it with --resume, or start over "
                        "with --overwrite (or choose another --output-dir)")
    for pattern in RUN_FILES:
        for old in out.glob(pattern):
            old.unlink()


def prune_epoch_checkpoints(out: Path, keep: int) -> None:
    found = sorted(out.glob("checkpoint_epoch_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    for old in found[:-keep]:
        old.unlink()


def train(cfg: Config, console: TrainingConsole | None = None, resume: dict | None = None,
          resume_path: str = "checkpoint", tracker: Tracker | None = None,
          overwrite: bool = False, init: dict | None = None) -> dict[str, Any]:
    """Train a model as `cfg` says; return the run summary (also written to summary.json).

    `resume` is a loaded checkpoint (checkpoint.load_checkpoint) to continue from;
    `overwrite` lets a fresh run replace an earlier run's files in the output directory;
    `init` is the loaded checkpoint of `cfg.training.init_from` (loaded here if not given;
    its weights are moved into the model).
    """
    console = console or TrainingConsole("quiet")
    t_cfg, c_cfg, tr_cfg = cfg.training, cfg.checkpoint, cfg.tracking
    out = Path(c_cfg.output_dir)

    # ---- processes, data and tokenizer ----
    validate(cfg)  # flag errors before minutes of reading and tokenizing
    device = resolve_device(t_cfg.device)
    cluster = join_cluster(device)  # one process, or those torchrun started
    if not cluster.main:
        console = TrainingConsole("silent")  # rank 0 speaks (and writes) for all
    payload = resume  # a loaded checkpoint, or None for a fresh run
    if payload:
        resume_config(cfg, payload, resume_path, cluster.world_size)
        init = None  # a resumed run holds its own weights
    elif t_cfg.init_from:  # fine-tuning: weights and tokenizer from a checkpoint, all else fresh
        init = init or load_checkpoint(t_cfg.init_from)
        init_config(cfg, init, t_cfg.init_from)
    else:
        init = None
    source = payload or init
    saved_tokenizer = tokenizer_from_dict(source["tokenizer"]) if source else None
    with cluster.main_first():  # one process builds a token cache, the others read it
        data = load_tokens(cfg.data, saved_tokenizer, console.stage)
    tokenizer, train_ids, val_ids = data.tokenizer, data.train, data.val
    cfg.model.vocab_size = tokenizer.vocab_size
    if val_ids is not None and not bool((val_ids[1:] != (-1 if tokenizer.unk_id is None
                                                          else tokenizer.unk_id)).any()):
        raise UserError("validation text has no token to score (it needs at least 2 characters, "
                        "seen in training); give more or use --val-split 0")
    # Losses are per token; per character they compare across tokenizers (bits/char).
    val_chars_per_token = data.val_chars_per_token
    sampler = EpochSampler(train_ids, cfg.model.context_length, t_cfg.batch_size,
                           t_cfg.grad_accum_steps, t_cfg.seed, tokenizer.unk_id, t_cfg.overfit_batches,
                           cfg.data.augment, cluster.rank, cluster.world_size)

    # ---- model, optimizer, precision, state ----
    seed_everything(t_cfg.seed)  # the same initial weights in every process
    model = GPT(cfg.model).to(device)
    if cluster.distributed:
        seed_everything(t_cfg.seed + cluster.rank)  # but each its own dropout masks
    initialised_from = t_cfg.init_from if init else None
    if init:  # taken out of `init`, so no second copy of the weights stays in memory
        model.load_state_dict(init.pop("model"))
    freeze(model, cfg.optim.freeze_embeddings, cfg.optim.freeze_layers)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("every parameter is frozen (--freeze-embeddings, --freeze-layers): nothing to train")
    scheduled_dropout = t_cfg.dropout_schedule != "constant"
    compilation = resolve_compile(t_cfg.compile, device, unsuitable=(
        "--dropout-schedule changes the dropout rate every step, and each rate would recompile"
        if scheduled_dropout else None))
    forward = compilation.wrap(model)  # evaluation uses `model`: its shapes vary, no recompiles
    ddp = None
    if cluster.distributed:  # averages the gradients across processes during backward
        ddp = DistributedDataParallel(forward, device_ids=[cluster.local_rank] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)  # the buffers (RoPE tables) are constants
        forward = ddp
    optimizer = build_optimizer(model, cfg.optim, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    precision = resolve_precision(t_cfg.mixed_precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    state = TrainState(model, optimizer, scaler)
    if payload:
        state.load_state_dict(payload["train_state"], payload["model"], cluster.rank)
    schedule = LRSchedule(cfg.optim)
    dropout_schedule = DropoutSchedule(t_cfg.dropout_start, cfg.model.dropout)
    dropout = cfg.model.dropout
    total_steps = sampler.steps_per_epoch * t_cfg.epochs
    if t_cfg.max_steps is not None:
        total_steps = min(total_steps, t_cfg.max_steps)
    tokens_per_step = t_cfg.batch_size * t_cfg.grad_accum_steps * cfg.model.context_length * cluster.world_size
    eval_windows = t_cfg.eval_iters * t_cfg.batch_size

    def claim_and_track() -> Tracker:
        claim_output_dir(out, resuming=payload is not None, overwrite=overwrite)
        write_text(out / "config.yaml", dump_yaml(cfg))
        return tracker or build_tracker(cfg.tracking, out, config_to_dict(cfg),
                                        resume_step=state.step if payload else None)

    tracker = cluster.on_main(claim_and_track) or Tracker()  # the other processes log nothing

    def checkpoint(path: Path, with_state: bool = True) -> None:
        rank_rngs = cluster.gather(rng_state()) if with_state else None  # every process's, for resume
        if cluster.main:
            tracker.flush()  # metrics.json holds every record up to the checkpoint
            save_checkpoint(path, cfg, tokenizer, model, state.state_dict(rank_rngs) if with_state else None)

    def validation_loss() -> float:
        nats, scored, _ = total_loss(model, val_ids, t_cfg.batch_size, tokenizer.unk_id,
                                     eval_windows, precision.autocast)
        return nats / max(1, scored)

    console.start({
        "parameters": model.num_parameters(),
        "trainable": f"{sum(p.numel() for p in trainable):,} (the rest frozen)"
                     if len(trainable) < len(list(model.parameters())) else None,
        "initialised from": initialised_from,
        "train tokens": len(train_ids),
        "validation": f"{len(val_ids):,} tokens ({data.source})" if val_ids is not None else "none",
        "token cache": data.cache,
        "tokenizer": tokenizer.describe()
                     + (f", {val_chars_per_token:.2f} characters/token" if val_ids is not None else ""),
        "device": str(device),
        "precision": precision.note,
        "compile": compilation.note,
        "steps": f"{total_steps:,} ({sampler.steps_per_epoch:,}/epoch, {tokens_per_step:,} tokens/step)"
                 + (f", at most {t_cfg.max_time:g} s" if t_cfg.max_time else "")
                 + (f"; the same {t_cfg.overfit_batches} micro-batch(es) every epoch (--overfit-batches)"
                    if t_cfg.overfit_batches else ""),
        "resumed at step": state.step if payload else None,
        "output": str(out),
        "tracking": tracker.describe(),
    })
    stop_reason = "max_steps" if state.step >= total_steps else None
    start_step, start_elapsed = state.step, state.elapsed
    clock = time.perf_counter() - state.elapsed

    def tokens_per_s() -> float:
        return (state.step - start_step) * tokens_per_step / max(state.elapsed - start_elapsed, 1e-9)

    model.train()
    with deferred_interrupt() as interrupt, deterministic_kernels(device), finish_on_failure(tracker):
        while stop_reason is None:
            # ---- one optimizer step ----
            time_fraction = state.elapsed / t_cfg.max_time if t_cfg.max_time else 0.0
            lr = schedule(state.step, total_steps, time_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            if scheduled_dropout:
                dropout = dropout_schedule(state.step, total_steps, time_fraction)
                model.set_dropout(dropout)
            optimizer.zero_grad(set_to_none=True)  # gradients live on until the next step (histograms)
            step_loss = torch.zeros((), device=device)
            for micro in range(t_cfg.grad_accum_steps):
                if ddp is not None:  # average the gradients once, after the last micro-batch
                    ddp.require_backward_grad_sync = micro == t_cfg.grad_accum_steps - 1
                x, y = sampler.batch_at(state.epoch, state.micro_batch)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with precision.autocast():
                    loss = forward(x, y) / t_cfg.grad_accum_steps
                scaler.scale(loss).backward()
                step_loss += loss.detach()
                state.micro_batch += 1
            scaler.unscale_(optimizer)  # true gradients from here on (a no-op without fp16 scaling)
            check_now = tr_cfg.grad_check_interval and every(state.step + 1, tr_cfg.grad_check_interval)
            gradient_check = check_gradients(model) if check_now else None  # before clipping
            grad_norm = None
            if cfg.optim.gradient_clip > 0:
                grad_norm = clip_gradients(trainable, cfg.optim.gradient_clip)
            scaler.step(optimizer)
            scaler.update()
            state.step += 1
            state.tokens += tokens_per_step
            state.elapsed = time.perf_counter() - clock
            epoch_done = state.micro_batch >= sampler.micro_per_epoch
            if epoch_done:
                state.epoch, state.micro_batch = state.epoch + 1, 0

            # ---- when to stop ----
            if state.step >= total_steps:
                stop_reason = "max_steps" if total_steps == t_cfg.max_steps else "epochs"
            elif t_cfg.max_time and state.elapsed >= t_cfg.max_time:
                stop_reason = "max_time"
            elif interrupt["stop"]:
                stop_reason = "interrupted"
            stop_reason = cluster.agree(stop_reason)  # the clock and signals may differ; rank 0 decides

            # ---- optional work of this step ----
            evaluate_now = val_ids is not None and (every(state.step, t_cfg.eval_interval) or stop_reason)
            record = None
            if every(state.step, t_cfg.log_interval) or evaluate_now or stop_reason or check_now:
                # The only host-device sync of a step, and only on logging steps.
                state.last_train_loss = float(cluster.mean(step_loss))
                if not math.isfinite(state.last_train_loss):
                    raise UserError(f"loss became {state.last_train_loss} at step {state.step}; "
                                    "try a lower --learning-rate or a --gradient-clip")
                record = {
                    "step": state.step,
                    "epoch": round(state.epoch + state.micro_batch / sampler.micro_per_epoch, 4),
                    "train_loss": state.last_train_loss,
                    "lr": lr,
                    "tokens": state.tokens,
                    "tokens_per_s": round(tokens_per_s(), 1),
                    "elapsed_s": round(state.elapsed, 3),
                }
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                if scheduled_dropout:
                    record["dropout"] = round(dropout, 6)
            if gradient_check is not None:
                record["gradients"] = gradient_check.as_record()
                for warning in gradient_check.warnings():
                    console.message(f"step {state.step}: {warning}")
                gradient_check.plot(out / "gradient_flow.png", f"gradient flow at step {state.step}")
            if evaluate_now:
                state.last_val_loss = record["val_loss"] = validation_loss()
                record["val_bits_per_char"] = bits_per_char(state.last_val_loss, val_chars_per_token)
                if state.stopping_reference - state.last_val_loss > t_cfg.min_delta:
                    state.stopping_reference = state.last_val_loss
                    state.evals_without_improvement = 0
                else:
                    state.evals_without_improvement += 1
                if state.last_val_loss < state.best_val_loss:
                    state.best_val_loss = state.last_val_loss
                    record["best"] = True
                    checkpoint(out / "best_model.pt", with_state=False)
                if t_cfg.early_stopping and state.evals_without_improvement >= t_cfg.patience:
                    stop_reason = stop_reason or "early_stopping"
            if record:
                tracker.log(record)
                console.record(record)
            if tr_cfg.histogram_interval and every(state.step, tr_cfg.histogram_interval):
                tracker.log_histograms(state.step, weights_and_gradients(model))
            if epoch_done and every(state.epoch, c_cfg.save_every):
                checkpoint(out / f"checkpoint_epoch_{state.epoch}.pt")
                prune_epoch_checkpoints(out, c_cfg.keep_checkpoints)
            if every(state.step, c_cfg.checkpoint_interval) or stop_reason:
                checkpoint(out / RESUME_NAME)
            console.update(
                min(1.0, max(state.step / total_steps, time_fraction)),
                {"epoch": state.epoch + 1, "step": state.step, "loss": state.last_train_loss, "lr": lr,
                 "tok/s": int(tokens_per_s())},
            )

    # ---- the end: final model, summary, plot ----
    checkpoint(out / "final.pt", with_state=False)
    tracker.save_model(out / "final.pt")
    tracker.finish()
    summary = {
        "stop_reason": stop_reason,
        "steps": state.step,
        "epochs": round(state.epoch + state.micro_batch / sampler.micro_per_epoch, 4),
        "tokens": state.tokens,
        "final_train_loss": state.last_train_loss,
        "final_val_loss": state.last_val_loss,
        "best_val_loss": state.best_val_loss,
        "best_val_bits_per_char": bits_per_char(state.best_val_loss, val_chars_per_token),
        "tokenizer": tokenizer.kind,
        "wall_time_s": round(state.elapsed, 2),
        "tokens_per_s": round(tokens_per_s(), 1),
        "parameters": model.num_parameters(),
        "device": str(device),
        "precision": precision.name,
        "output_dir": str(out),
    }
    if interrupt["signal"]:
        summary["signal"] = interrupt["signal"]
    if cluster.main:
        write_json(out / "summary.json", summary)
    console.end(summary)
    if stop_reason == "interrupted":
        console.message(f"interrupted: state saved; continue with --resume (output dir {out})")
    cluster.barrier()  # every process leaves together, after rank 0 has written everything
    leave_cluster(cluster)
    return summary
