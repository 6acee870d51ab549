"""Where a run begins, decided in one place: afresh, resumed from a training state
(`--resume`), fine-tuned from a checkpoint's weights (`--init-from`), or continued from a
weights-only checkpoint (`--resume best_model.pt`: its weights and whole config, with a
fresh optimizer and schedule, since the file holds no optimizer state).

The command line passes the `--resume` flag as it was given; this module finds and loads
the checkpoint, resolves the config against it (config/sources.py) and checks that the
saved state can continue here.

A damaged latest checkpoint (cut off, emptied, or failing its checksum) is never trained
from. `--resume` then stops and names the newest intact checkpoint of the run, to be
chosen explicitly; `--resume auto` continues from that one by itself, and says so. Every
file holding a training state is a candidate: the latest, the one before it (kept as
`resume_checkpoint.previous.pt`), and the epoch checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fundamentallm.checkpoint import DamagedCheckpoint, load_checkpoint
from fundamentallm.data.fingerprint import file_digest
from fundamentallm.config import AddedSeconds, Config, ConfigSources, validate
from fundamentallm.errors import UserError
from fundamentallm.training.memory import check_fits
from fundamentallm.training.precision import resolve_device
from fundamentallm.training.sizing import LEARNING_RATE_KEY, SHAPE_KEYS

RESUME_NAME = "resume_checkpoint.pt"
PREVIOUS_NAME = "resume_checkpoint.previous.pt"  # the resume checkpoint before the latest
SHARDED_DIR = "resume_checkpoint.dcp"  # --sharded-resume: the shards, a directory per saved step


@dataclass
class Start:
    kind: str = "fresh"  # "fresh", "resume", "init" (--init-from) or "continue" (weights-only --resume)
    path: Path | None = None
    checkpoint: dict[str, Any] | None = None  # the loaded file; setup moves its weights out
    note: str | None = None  # one line for the user about how the run starts
    # A new run with --max-time and no shape set: the settings the budget sizing may choose
    # (training/sizing.py); empty when the shape is given, saved or fixed (--no-auto-size).
    sizable: tuple[str, ...] = ()
    compile_given: bool = False  # --compile (or --no-compile) chosen: not weighed against --max-time
    new_data: bool = False  # --new-data: a resumed run may continue on data other than it trained on

    @property
    def resumed(self) -> bool:
        return self.kind == "resume"

    @property
    def from_weights(self) -> bool:
        """A new run (step 0, fresh optimizer) that starts from the checkpoint's weights."""
        return self.kind in ("init", "continue")


def plan_start(sources: ConfigSources, resume: str | bool | None = None, new_data: bool = False
               ) -> tuple[Config, Start]:
    """The run's config and where it starts. `resume`: None (no --resume), True (the output
    directory's resume checkpoint), "auto" (that file if it exists) or a checkpoint path;
    `new_data`: a resumed run may continue on other data than it trained on."""
    cfg = sources.resolve()
    out = Path(cfg.checkpoint.output_dir)
    if resume == "auto" and not resumable_files(out):
        resume = None  # nothing to continue: a fresh run
    if new_data and not resume:
        raise UserError("--new-data lets a resumed run continue on changed data: it applies only with --resume")
    if resume and "training.init_from" in sources.flags:
        raise UserError("--init-from starts a new run from a checkpoint's weights; it does not apply "
                        "with --resume, which continues one")
    if resume:
        path, checkpoint, note = (load_checkpoint_to_resume(out, fall_back=resume == "auto")
                                  if resume in (True, "auto") else (Path(resume), load_resumable(Path(resume)), None))
        cfg = sources.resolve(checkpoint["config"], resumed=True, source=str(path))
        if "embedding_lr" not in checkpoint["config"].get("optim", {}) and cfg.optim.embedding_lr is None:
            cfg.optim.embedding_lr = cfg.optim.learning_rate  # saved before the embedding had a rate of its own
        if "train_state" in checkpoint or resume in (True, "auto"):
            check_train_state(checkpoint, path)
            start = Start("resume", path, checkpoint, note)
            if isinstance(cfg.training.max_time, AddedSeconds):  # --max-time +S: S more than trained so far
                trained = float(checkpoint["train_state"]["counters"].get("elapsed", 0.0))
                cfg.training.max_time = round(trained + cfg.training.max_time, 2)
        else:
            start = continue_from_weights(cfg, path, checkpoint)
    elif cfg.training.init_from:
        path = Path(cfg.training.init_from)
        checkpoint = load_checkpoint(path)
        cfg = sources.resolve(checkpoint["config"], resumed=False, source=str(path))
        if cfg.optim.embedding_lr is None:  # a trained embedding is fine-tuned at the common rate
            cfg.optim.embedding_lr = cfg.optim.learning_rate
        start = Start("init", path, checkpoint)
    else:
        start = Start(sizable=sizable_settings(cfg, sources.given()))
    if isinstance(cfg.training.max_time, AddedSeconds):
        raise UserError(f"--max-time +{cfg.training.max_time:g} adds time to a run continued with --resume; "
                        f"a new run takes --max-time {cfg.training.max_time:g}")
    if not cfg.data.train:
        raise UserError("train: give a training text file (fundamentallm train FILE)")
    start.compile_given = "training.compile" in sources.given()
    start.new_data = new_data
    validate(cfg)  # flag errors before minutes of reading and tokenizing
    # and a shape or batch that cannot fit, before anything is read or allocated (torchrun's processes: each)
    check_fits(cfg, resolve_device(cfg.training.device), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return cfg, start


def resumable_files(out: Path) -> list[Path]:
    """The files in a run directory that may hold a training state, newest first."""
    names = [out / RESUME_NAME, out / PREVIOUS_NAME, *out.glob("checkpoint_epoch_*.pt")]
    found = [p for p in names if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name == RESUME_NAME), reverse=True)


def load_checkpoint_to_resume(out: Path, fall_back: bool) -> tuple[Path, dict[str, Any], str | None]:
    """The run's latest resume checkpoint, or where it is damaged or missing, the newest intact
    file with a training state: taken with `fall_back` (--resume auto), else named in the error."""
    latest = out / RESUME_NAME
    try:
        return latest, load_resumable(latest), None
    except UserError as exc:
        if not isinstance(exc, DamagedCheckpoint) and latest.exists():
            raise  # readable, but not a checkpoint of ours to resume: not a case for another file
        problem = str(exc)
    for path in resumable_files(out):
        if path == latest:
            continue
        try:
            checkpoint = load_resumable(path)
        except UserError:
            continue
        if "train_state" not in checkpoint or not isinstance(checkpoint["train_state"], dict):
            continue
        step = (checkpoint["train_state"].get("counters") or {}).get("step", "?")
        if fall_back:
            return path, checkpoint, (f"{problem}; continuing from {path.name} (step {step}), the newest "
                                      "intact checkpoint, instead")
        raise UserError(f"{problem}; the newest intact checkpoint is {path} (step {step}): continue from "
                        f"it with --resume {path}, or let --resume auto fall back to it")
    if not latest.exists() and not resumable_files(out):
        raise UserError(problem)  # no checkpoint at all
    raise UserError(f"{problem}; no intact checkpoint of this run is left to continue from in {out}")


def load_resumable(path: Path) -> dict[str, Any]:
    """A checkpoint, and for a sharded training state (--sharded-resume) its shards, each
    checked against the checksum recorded with it: damage anywhere is a DamagedCheckpoint."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("train_state")
    sharded = state.get("sharded") if isinstance(state, dict) else None
    if sharded is None:
        return checkpoint
    if not (isinstance(sharded, dict) and isinstance(sharded.get("dir"), str)
            and isinstance(sharded.get("files"), dict) and sharded["files"]):
        raise DamagedCheckpoint(f"{path}: its record of the sharded state is malformed")
    directory = path.parent / sharded["dir"]
    for name, digest in sharded["files"].items():
        file = directory / name
        if not file.is_file():
            raise DamagedCheckpoint(f"{file}: missing (a shard of {path.name}'s training state)")
        if file_digest(file) != digest:
            raise DamagedCheckpoint(f"{file}: damaged (its checksum does not match the one {path.name} recorded)")
    return checkpoint


def sizable_settings(cfg: Config, given: set[str]) -> tuple[str, ...]:
    """What the budget sizing may set in a new run: the shape when none of it is given, and
    the learning rate unless given too."""
    if not (cfg.training.auto_size and cfg.training.max_time) or given & set(SHAPE_KEYS):
        return ()
    return SHAPE_KEYS + (() if LEARNING_RATE_KEY in given else (LEARNING_RATE_KEY,))


def continue_from_weights(cfg: Config, path: Path, checkpoint: dict[str, Any]) -> Start:
    """A weights-only file given to --resume: a new run from its weights and config. It
    writes in the run's directory (the checkpoint's, or -o) if that holds no run, else
    beside it, never over it: the run it came from keeps its files."""
    cfg.checkpoint.output_dir = str(free_run_dir(Path(cfg.checkpoint.output_dir)))
    note = (f"{path} holds model weights only (no optimizer state): starting a new run from its weights, "
            f"tokenizer and config, with a fresh optimizer and schedule, in {cfg.checkpoint.output_dir}")
    return Start("continue", path, checkpoint, note)


def free_run_dir(out: Path) -> Path:
    """`out` if it holds no run, else the first of OUT-continued, OUT-continued-2, ... that holds none."""
    candidates = [out, out.with_name(out.name + "-continued")]
    candidates += (out.with_name(f"{out.name}-continued-{i}") for i in range(2, 1000))
    return next(c for c in candidates if not (c / RESUME_NAME).exists())


def check_train_state(checkpoint: dict[str, Any], path: Path) -> None:
    if "train_state" not in checkpoint:
        raise UserError(f"{path}: holds model weights only, not a training state to resume")
    state = checkpoint["train_state"]
    if not isinstance(state, dict) or not all(
            isinstance(state.get(k), dict) for k in ("optimizer", "counters", "rng")):
        raise UserError(f"{path}: the training state in this checkpoint is malformed")


def regroup(start: Start, cfg: Config, world_size: int) -> str | None:
    """A run resumed on another number of processes than wrote it, or with another global
    batch: where in the data it continues, and one line saying so (None when nothing changed).

    The data position is (epoch, micro-batch) and the epoch's order is shared by all
    processes (data/batching.py): with the same global batch (batch x accumulation x
    processes) a step reads the same windows however they are dealt out, so the position
    carries over exactly. With another global batch it is re-derived from the windows the
    epoch has used, to the nearest whole step. Processes beyond those that wrote the state
    start from fresh random states (their dropout masks differ from an uninterrupted run's)."""
    if not start.resumed:
        return None
    saved = start.checkpoint["config"].get("training") or {}
    counters = start.checkpoint["train_state"]["counters"]
    saved_world = len(start.checkpoint["train_state"].get("rank_rngs", [None]))
    old_accum = int(saved.get("grad_accum_steps", cfg.training.grad_accum_steps))
    old = int(saved.get("batch_size", cfg.training.batch_size)) * old_accum * saved_world
    new = cfg.training.batch_size * cfg.training.grad_accum_steps * world_size
    steps_in_epoch = int(counters.get("micro_batch", 0)) // old_accum  # saves happen between steps
    where = f"resumed on {world_size} process(es), saved by {saved_world}" if world_size != saved_world else "resumed"
    if old == new:
        counters["micro_batch"] = steps_in_epoch * cfg.training.grad_accum_steps
        if world_size == saved_world:
            return None
        fresh = (f"; processes {saved_world} to {world_size - 1} start from fresh random states"
                 if world_size > saved_world else "")
        return f"{where}: the same global batch ({new} sequences a step), so the data position carries over exactly{fresh}"
    used = steps_in_epoch * old
    counters["micro_batch"] = used // new * cfg.training.grad_accum_steps
    keep = old / (cfg.training.grad_accum_steps * world_size)
    hint = f" (--batch-size {keep:g} keeps it)" if keep == int(keep) else ""
    return (f"{where}, and the global batch changed from {old} to {new} sequences a step{hint}: the data "
            f"position is re-derived from the {used:,} windows this epoch has used, to the nearest whole step")
