"""Building a run from its config and its starting point, before the first step.

In order: the processes (one, or those torchrun started), the data and tokenizer, the model
(fresh, or with the weights it starts from), compilation and DDP, the optimizer, precision
and the resume state; then the output directory and trackers, and the components the loop
calls: validator, checkpointer, metrics, gradient monitor and stop condition. Everything
here happens once; `loop.fit` runs the steps.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from fundamentallm.checkpoint import base_reference, base_weights, lora_alpha, read_base, special_rows
from fundamentallm.config import Config, ModelConfig, config_to_dict, config_warnings
from fundamentallm.console import TrainingConsole
from fundamentallm.data.batching import EpochSampler, PackedSampler
from fundamentallm.data.fingerprint import changes, named, unrepresentable
from fundamentallm.data.text import data_files, skipped_files, stream_text
from fundamentallm.data.tokens import TokenData, load_tokens
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.model.documents import DocumentMasked
from fundamentallm.model.lora import add_adapters
from fundamentallm.tokenizers import RESERVED, Tokenizer, tokenizer_from_dict
from fundamentallm.tracking import Tracker, build_tracker
from fundamentallm.training.activation_checkpointing import checkpoint_blocks
from fundamentallm.training.checkpointer import Checkpointer, claim_output_dir, write_run_config
from fundamentallm.training.compilation import Compilation, CompileHistory, CompileJob, resolve_compile
from fundamentallm.training.distributed import Cluster, join_cluster
from fundamentallm.training.divergence import LossWatch
from fundamentallm.training.gradients import GradientMonitor
from fundamentallm.training.metrics import MetricsLog, Throughput
from fundamentallm.training.optim import build_optimizer, freeze
from fundamentallm.training.precision import Precision, resolve_device, resolve_precision
from fundamentallm.training.profiling import Profiler, peak_gflops
from fundamentallm.training.sharding import OptimizerMismatch, Replicated, Sharded
from fundamentallm.training.sizing import Shape, Sizing, size_for_budget
from fundamentallm.training.schedule import ConstantDropout, DropoutSchedule, LRSchedule, dropout_schedule
from fundamentallm.training.start import Start, regroup
from fundamentallm.training.state import TrainState, seed_everything
from fundamentallm.training.stopping import Interrupt, StopCondition
from fundamentallm.training.validator import Judge, Validator


@dataclass(kw_only=True)
class Run:
    """Everything the loop needs, built once."""

    cfg: Config
    start: Start
    device: torch.device
    cluster: Cluster
    data: TokenData
    sampler: EpochSampler | PackedSampler
    model: GPT  # the plain model: checkpoints and evaluation use it
    step_module: torch.nn.Module  # what the training step calls: compiled and/or DDP-wrapped
    ddp: DistributedDataParallel | None
    sync_gradients: Callable[[bool], None]  # whether this backward averages the gradients over processes
    trainable: list[torch.nn.Parameter]
    precision: Precision
    compilation: Compilation
    state: TrainState
    lr_schedule: LRSchedule
    dropout: DropoutSchedule | ConstantDropout
    total_steps: int
    tokens_per_step: int
    console: TrainingConsole
    tracker: Tracker
    data_change: str | None  # a resumed run continued on other data (--new-data): what changed
    # the components; each decides for itself which steps are its own
    validator: Validator
    checkpointer: Checkpointer
    metrics: MetricsLog
    gradients: GradientMonitor
    loss_watch: LossWatch
    stop: StopCondition
    interrupt: Interrupt
    profiler: Profiler
    # The run's clock (state.elapsed, --max-time) reads perf_counter() - clock_zero: it starts when
    # the data is loaded (setup and compile count), continuing the time earlier sessions trained.
    clock_zero: float


def setup(cfg: Config, start: Start, console: TrainingConsole, interrupt: Interrupt, held: ExitStack,
          overwrite: bool = False, tracker: Tracker | None = None, judge: Judge | None = None) -> Run:
    """The run, ready to train. `held`: what the run holds until it ends (its directory's lock)."""
    training = cfg.training
    device = resolve_device(training.device)
    cluster = join_cluster(device)
    if not cluster.main:
        console = TrainingConsole("silent")  # rank 0 speaks (and writes) for all
    data_files(cfg.data.train, cfg.data.glob)  # a missing input is the one line a run that cannot start says
    for warning in config_warnings(cfg):
        console.message(f"warning: {warning}")
    for note in (start.note, regroup(start, cfg, cluster.world_size)):  # how it starts; where in the data
        if note:
            console.message(f"note: {note}")

    # ---- data and tokenizer ----
    saved = start.checkpoint
    saved_tokenizer = tokenizer_from_dict(saved["tokenizer"]) if saved else None
    if start.from_weights:  # a fine-tuned model gets the special tokens its tokenizer lacks (an older or imported one)
        saved_tokenizer = with_specials(saved_tokenizer, cfg.data.special_tokens)
    with cluster.main_first():  # one process builds a token cache, the others read it
        data = load_tokens(cfg.data, saved_tokenizer, console.stage)
    data_change = same_data(start, cfg, data) if start.resumed else None  # before any work on it
    loaded_at = time.perf_counter()  # where --max-time starts counting
    # auto resolved, as the checkpoints keep it: generation stops at the end of text where it was trained on
    cfg.data.doc_boundary = "eos" if data.ends else "none"
    # A new model has one row per token; a saved one keeps its rows (an imported model's
    # vocabulary may be padded beyond its tokenizer's, e.g. to a multiple of 64).
    cfg.model.vocab_size = max(cfg.model.vocab_size, data.tokenizer.vocab_size) if saved else data.tokenizer.vocab_size
    check_scorable(data)
    precision = resolve_precision(training.precision, device)
    sizing = None
    if start.sizable:  # --max-time and no shape: sized to the budget, this machine and the data
        sizing = cluster.agree(cluster.on_main(lambda: size_to_budget(
            training.max_time, device, precision.dtype or torch.float32, len(data.train),
            cfg.model, cluster.world_size)))  # one probe, on rank 0: every process builds one shape
        apply_sizing(cfg, sizing.shape, start.sizable)
        console.message(f"model sized to the budget: {sizing.note}")
    sampler = build_sampler(cfg, data, cluster)

    # ---- model, optimizer, precision, state ----
    seed_everything(training.seed)  # the same initial weights in every process
    model = GPT(cfg.model).to(device)
    if cluster.distributed:
        seed_everything(training.seed + cluster.rank)  # but each its own dropout masks
    lora_base = None  # a LoRA fine-tune's base: where its weights come from, checked when read back
    if start.from_weights:  # taken out of the checkpoint: no second copy of the weights stays
        lora_base = base_reference(start.path, saved) if cfg.lora.rank else None
        weights = base_weights(saved, str(start.path))  # (a LoRA checkpoint's: its adapters merged in)
        saved.pop("model")
        model.load_state_dict(special_rows(weights, tokenizer_from_dict(saved["tokenizer"]), data.tokenizer,
                                           cfg.model.vocab_size))
    elif start.resumed and cfg.lora.rank:  # the saved adapters sit on their base's weights
        lora_base = saved["lora_base"]
        base = read_base(lora_base, str(start.path))
        model.load_state_dict(special_rows(base_weights(base, lora_base["path"]),
                                           tokenizer_from_dict(base["tokenizer"]), data.tokenizer, cfg.model.vocab_size))
    if cfg.lora.rank:  # every weight frozen; only the adapters train (model/lora.py)
        count = add_adapters(model, cfg.lora.rank, lora_alpha(cfg.lora), tuple(cfg.lora.targets))
        if start.resumed:  # the frozen weights as read above, and the saved adapters
            saved["model"] = {**model.state_dict(), **saved["model"]}
        console.message(f"note: LoRA: rank {cfg.lora.rank} adapters on {count} matrices "
                        f"({', '.join(cfg.lora.targets)}); the model's own weights are frozen")
    if training.activation_checkpointing:  # recompute each block in the backward: memory for compute
        checkpoint_blocks(model)
    freeze(model, cfg.optim.freeze_embeddings, cfg.optim.freeze_layers)
    layout, precision = lay_out(model, cfg, cluster, precision, console)  # replicated, or sharded (--fsdp)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise UserError("every parameter is frozen (--freeze-embeddings, --freeze-layers): nothing to train")
    compilation = cluster.agree(cluster.on_main(lambda: decide_compile(cfg, start, device, precision, layout)))
    if not cluster.main:
        compilation.history = None  # rank 0 keeps the compile times
    # What the step and the validation call: the model, or with --doc-mask the model keeping
    # each window's documents apart (model/documents.py).
    forward = DocumentMasked(model, data.tokenizer.eos_id) if cfg.data.doc_mask else model
    step_module = compilation.wrap(forward)
    ddp, sync_gradients = None, (lambda on: None)
    if layout.name == "fsdp":  # FSDP reduce-scatters the gradients itself, during backward
        sync_gradients = model.set_requires_gradient_sync
    elif cluster.distributed:  # DDP averages the gradients across processes during backward
        ddp = DistributedDataParallel(step_module, device_ids=[cluster.local_rank] if device.type == "cuda"
                                      else None, forward_sync_buffers=False)  # buffers (RoPE) are constant
        step_module = ddp
        sync_gradients = lambda on: setattr(ddp, "require_backward_grad_sync", on)  # noqa: E731
    optimizer = build_optimizer(model, cfg.optim, device, precision.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    state = TrainState(model, optimizer, scaler, layout, data=data.fingerprint)
    if start.resumed:
        try:
            state.load_state_dict(saved["train_state"], saved["model"], cluster.rank, start.path.parent)
        except OptimizerMismatch as error:
            raise UserError(f"{start.path}: its optimizer state does not fit this run's parameter groups ({error}); "
                            f"it was saved by another version or with other optimizer settings: start a new run "
                            f"from its weights with --init-from {start.path}") from None
    total_steps, time_fraction = schedule_position(sampler.steps_per_epoch, training.epochs, training.max_steps,
                                                   training.max_time, state.elapsed)
    lr_schedule = LRSchedule(cfg.optim)
    if start.resumed:  # with a new budget, the learning rate re-warms to the new plan instead of jumping
        planned = start.checkpoint["config"].get("training") or {}  # the budget it was trained with
        before = schedule_position(sampler.steps_per_epoch, int(planned.get("epochs", training.epochs)),
                                   planned.get("max_steps"), planned.get("max_time"), state.elapsed)
        origin = lr_schedule.rewarm_from(state.step, before, (total_steps, time_fraction))
        if origin is not None:
            state.rewarm_step, state.rewarm_from = state.step, origin
    tokens_per_step = (training.batch_size * training.grad_accum_steps * cfg.model.context_length
                       * cluster.world_size)

    # ---- the output directory and the components ----
    out = Path(cfg.checkpoint.output_dir)

    def open_run_dir() -> Tracker:
        claim_output_dir(out, resuming=start.resumed, overwrite=overwrite, held=held)
        write_run_config(out, cfg)
        return tracker or build_tracker(cfg.tracking, out, config_to_dict(cfg),
                                        resume_step=state.step if start.resumed else None)

    tracker = cluster.on_main(open_run_dir) or Tracker()  # the other processes log nothing
    validator = Validator(training, forward, data.val, trained=data.val_mask, unk_id=data.tokenizer.unk_id,
                          chars_per_token=data.val_chars_per_token, precision=precision, shard=cluster.shard(),
                          judge=judge)
    return Run(
        cfg=cfg, start=start, device=device, cluster=cluster, data=data, sampler=sampler, model=model,
        step_module=step_module, ddp=ddp, sync_gradients=sync_gradients, trainable=trainable, precision=precision,
        compilation=compilation, state=state, lr_schedule=lr_schedule,
        dropout=dropout_schedule(training, cfg.model), total_steps=total_steps, tokens_per_step=tokens_per_step,
        console=console, tracker=tracker, data_change=data_change,
        validator=validator,
        checkpointer=Checkpointer(cfg.checkpoint, cfg, data.tokenizer, cluster, tracker, lora_base),
        metrics=MetricsLog(training, sampler.micro_per_epoch, Throughput(state, tokens_per_step), tracker, console),
        gradients=GradientMonitor(cfg.tracking, model, out, cluster.main, tracker, console.message),
        loss_watch=LossWatch(training, out, cluster, tracker, console.message),
        stop=StopCondition(training, total_steps, cluster, interrupt, closing_s=validator.closing_seconds),
        interrupt=interrupt,
        # rank 0 profiles its own share of the step: flops per process, against one device's peak
        profiler=Profiler(training.profile_steps if training.profile else None, out, device=device,
                          dtype=precision.dtype or torch.float32,
                          flops_per_step=model.flops_per_token() * tokens_per_step / cluster.world_size,
                          report=console.message, enabled=cluster.main),
        clock_zero=loaded_at - state.elapsed,
    )


def same_data(start: Start, cfg: Config, data: TokenData) -> str | None:
    """A resumed run on the data it trained on: None. On other data: refused in one line
    saying what changed, unless --new-data, and then what changed and the characters its
    tokenizer has no token for (a character tokenizer's <unk>), for the start summary."""
    saved = start.checkpoint["train_state"].get("data")
    found = changes(saved, data.fingerprint) if saved else []  # (a state from before fingerprints: unchecked)
    if not found:
        return None
    if not start.new_data:
        raise UserError(f"{start.path} was trained on other data: {'; '.join(found)}. Resume with the data it "
                        "trained on, or pass --new-data to continue on this data")
    if cfg.data.format == "chat":  # (conversations are read from their messages: counted by their tokens)
        unknown = sum(int((np.asarray(ids) == data.tokenizer.unk_id).sum()) for ids in (data.train, data.val)
                      if ids is not None) if data.tokenizer.unk_id is not None else 0
        unknowns = f"{unknown:,} tokens are <unk>" if unknown else ""
    else:
        paths = [*cfg.data.train, *([cfg.data.validation_data] if cfg.data.validation_data else [])]
        unknowns = named(unrepresentable(data.tokenizer, stream_text(
            paths, cfg.data.separator, cfg.data.glob, cfg.data.text_field, doc_separator=cfg.data.doc_separator)))
    return "; ".join([*found, unknowns or "every character has a token"]) + " (--new-data)"


def with_specials(tokenizer: Tokenizer, added: list[str]) -> Tokenizer:
    """The tokenizer with the reserved special tokens and the user's `added` ones, those it
    lacks appended (new ids after its own)."""
    missing = [text for text in (*RESERVED, *added) if tokenizer.special_id(text) is None]
    if not missing:
        return tokenizer
    return tokenizer_from_dict({**tokenizer.to_dict(), "specials": [*tokenizer.specials, *missing]})


def build_sampler(cfg: Config, data: TokenData, cluster: Cluster) -> EpochSampler | PackedSampler:
    """Random windows over the token stream; for conversations, whole ones packed into windows."""
    training = cfg.training
    common = dict(context_length=cfg.model.context_length, batch_size=training.batch_size,
                  grad_accum_steps=training.grad_accum_steps, seed=training.seed, unk_id=data.tokenizer.unk_id,
                  overfit_batches=training.overfit_batches, rank=cluster.rank, world_size=cluster.world_size)
    if data.train_mask is not None:
        return PackedSampler(data.train, data.train_mask, data.tokenizer.eos_id, **common)
    return EpochSampler(data.train, augment_p=cfg.data.augment, **common)


def lay_out(model: GPT, cfg: Config, cluster: Cluster, precision: Precision, console: TrainingConsole
            ) -> tuple[Replicated, Precision]:
    """The weights replicated on every process, or with --fsdp and several processes sharded
    over them (training/sharding.py); under FSDP its MixedPrecisionPolicy, not autocast, casts."""
    training, optim = cfg.training, cfg.optim
    if not training.fsdp:
        return Replicated(), precision
    if not cluster.distributed:
        console.message("note: --fsdp shards a model over several processes (--nproc N, or torchrun); "
                        "one process trains it whole")
        return Replicated(), precision
    unsupported = {"--precision fp16 (bf16 needs no gradient scaling)": precision.needs_scaler,
                   "--lookahead-steps": optim.lookahead_steps > 0,
                   "--grad-check-interval / --histogram-interval": bool(cfg.tracking.grad_check_interval
                                                                         or cfg.tracking.histogram_interval)}
    for what, used in unsupported.items():
        if used:
            raise UserError(f"--fsdp does not work with {what} yet; leave one of them out")
    layout = Sharded(model, precision.dtype, training.fsdp_reshard_after_forward)
    note = (f"bf16 through FSDP's mixed precision (weights gathered in bf16, gradients reduced in fp32; "
            f"chosen as {precision.note})" if precision.dtype else precision.note)
    return layout, dataclasses.replace(precision, autocasts=False, note=note)


def schedule_position(steps_per_epoch: int, epochs: int, max_steps: int | None, max_time: float | None,
                      elapsed: float) -> tuple[int, float]:
    """(the run's total steps, the share of its --max-time trained) for a budget."""
    total = steps_per_epoch * epochs if max_steps is None else min(steps_per_epoch * epochs, max_steps)
    return total, (elapsed / max_time if max_time else 0.0)


def decide_compile(cfg: Config, start: Start, device: torch.device, precision: Precision,
                   layout: Replicated) -> Compilation:
    """Compiled or eager, on rank 0 for every process: what the machine has, and under --max-time
    whether the compile pays within it (training/compilation.py)."""
    training, model = cfg.training, cfg.model
    graph = {"model": config_to_dict(cfg)["model"], "batch_size": training.batch_size,
             "precision": precision.name, "activation_checkpointing": training.activation_checkpointing,
             "frozen": [cfg.optim.freeze_embeddings, cfg.optim.freeze_layers],  # what the compiled graph depends on
             "lora": config_to_dict(cfg)["lora"]}
    return resolve_compile(training.compile, device, unsuitable=(
        "--dropout-schedule changes the dropout rate every step, and each rate would recompile"
        if training.dropout_schedule != "constant" else
        "--fsdp (sharded blocks are not compiled here yet)" if layout.name == "fsdp" else None),
        budget_s=training.max_time, forced=start.compile_given, job=CompileJob.of(graph, device, model.num_layers),
        history=CompileHistory() if training.compile else None)


def size_to_budget(budget_s: float, device: torch.device, dtype: torch.dtype, train_tokens: int,
                   template: ModelConfig, world_size: int) -> Sizing:
    peak, _ = peak_gflops(dtype, device, quick=True)  # a fifth of a second on 2 CPU cores
    return size_for_budget(budget_s, peak * world_size, dtype, train_tokens, template)


def apply_sizing(cfg: Config, shape: Shape, sizable: tuple[str, ...]) -> None:
    chosen = shape.settings()
    for key in sizable:
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, chosen[key])


def check_scorable(data: TokenData) -> None:
    """Validation text made only of unknown characters has nothing to score."""
    if data.val is None:
        return
    unk = -1 if data.tokenizer.unk_id is None else data.tokenizer.unk_id
    if not bool((data.val[1:] != unk).any()):
        raise UserError("validation text has no token to score (it needs at least 2 characters, "
                        "seen in training); give more or use --val-split 0")


def describe(run: Run) -> dict[str, Any]:
    """The start-of-run summary: what was built, and why where a choice was made."""
    training, data, sampler = run.cfg.training, run.data, run.sampler
    frozen = len(run.trainable) < len(list(run.model.parameters()))
    return {
        "parameters": run.model.num_parameters(),
        "trainable": f"{sum(p.numel() for p in run.trainable):,} (the rest frozen)" if frozen else None,
        "initialised from": str(run.start.path) if run.start.from_weights else None,
        "train tokens": len(data.train),
        "skipped": skipped_files(run.cfg.data.train, run.cfg.data.glob),
        "validation": validation_summary(run),
        "documents": data.documents + (
            f"; {sampler.truncated:,} longer than the context ({run.cfg.model.context_length:,} tokens): cut to it, "
            "their ends not trained on" if getattr(sampler, "truncated", 0) else ""),
        "token cache": data.cache,
        "paraphrases": data.paraphrases,
        "tokenizer": data.tokenizer.describe()
                     + (f", {data.val_chars_per_token:.2f} characters/token" if data.val is not None else ""),
        "device": str(run.device),
        "precision": run.precision.note,
        "compile": run.compilation.note,
        "steps": f"{run.total_steps:,} ({sampler.steps_per_epoch:,}/epoch, {run.tokens_per_step:,} tokens/step)"
                 + (f", at most {training.max_time:g} s" if training.max_time else "")
                 + (f"; the same {training.overfit_batches} micro-batch(es) every epoch (--overfit-batches)"
                    if training.overfit_batches else ""),
        "resumed": resume_summary(run),
        "data changed": run.data_change,
        "output": run.cfg.checkpoint.output_dir,
        "tracking": run.tracker.describe(),
    }


def validation_summary(run: Run) -> str:
    """The validation text's size, and how much of it each evaluation scores: --eval-iters batches
    of windows, a sample of a large split (the whole of it is one `evaluate --split` away)."""
    data, training = run.data, run.cfg.training
    if data.val is None:
        return "none"
    sampled = training.eval_iters * training.batch_size * run.cluster.world_size * run.cfg.model.context_length
    if sampled >= len(data.val):
        return f"{len(data.val):,} tokens ({data.source}), all of it at each evaluation"
    return (f"{len(data.val):,} tokens ({data.source}); each evaluation scores a sample of {sampled:,} "
            f"({sampled / len(data.val):.1%}: --eval-iters {training.eval_iters}); the whole split: fundamentallm "
            f"evaluate {Path(run.cfg.checkpoint.output_dir) / 'final.pt'} --split validation")


def resume_summary(run: Run) -> str | None:
    """Where a resumed run stands: its step, the budget left, and what the learning rate will do."""
    if not run.start.resumed:
        return None
    state, training, schedule = run.state, run.cfg.training, run.lr_schedule
    parts = [f"step {state.step:,} ({state.elapsed:.1f} s trained)"]
    if state.step >= run.total_steps:
        return (f"{parts[0]}; its {run.total_steps:,} steps are done: nothing to train (more with --max-steps "
                "or --epochs)")
    if run.stop.time_used(state):
        return (f"{parts[0]}; its --max-time {training.max_time:g} s is used: nothing to train (add time "
                f"with --max-time +SECONDS)")
    if training.max_time:
        parts.append(f"{training.max_time - state.elapsed:.1f} s of --max-time {training.max_time:g} s left")
    planned = schedule.planned(state.step, run.total_steps, run.stop.time_fraction(state)) * state.lr_factor
    rewarming = state.rewarm is not None and state.rewarm_step == state.step
    now = state.rewarm_from * state.lr_factor if rewarming else planned
    parts.append("learning rate " + schedule.describe(now, planned, rewarming))
    return "; ".join(parts)
