"""The run's files in its output directory, and when each is written.

The checkpointer claims the directory for one run (never silently mixing two runs, nor
discarding a resumable one), writes `config.yaml`, and decides after every step whether
this is a step to save: `best_model.pt` when validation improves, `checkpoint_epoch_N.pt`
every `--save-every` epochs (keeping the newest `--keep-checkpoints`), and
`resume_checkpoint.pt` every `--checkpoint-interval` steps and whenever the run stops.
`final.pt` is written at the end. Rank 0 writes; every process takes part in gathering the
random states that a resume checkpoint holds.

Every file is written atomically (atomic.py), so a kill at any instant leaves each file
whole, old or new. The resume checkpoint before the latest is kept, as
`resume_checkpoint.previous.pt`, so that a latest file damaged on disk later still leaves
a state to continue from (training/start.py). A write the system refuses (a full disk, a
read-only directory) stops the run with one line; the files already there stay intact,
and `--resume` continues once the directory can be written again.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import torch

from fundamentallm.atomic import WriteFailed, write_text
from fundamentallm.checkpoint import save_checkpoint
from fundamentallm.data.fingerprint import file_digest
from fundamentallm.config import CheckpointConfig, Config, dump_yaml
from fundamentallm.errors import UserError
from fundamentallm.tokenizers import Tokenizer
from fundamentallm.tracking import Tracker
from fundamentallm.training.distributed import Cluster
from fundamentallm.training.runlock import exclusive
from fundamentallm.training.start import PREVIOUS_NAME, RESUME_NAME, SHARDED_DIR
from fundamentallm.training.state import TrainState, rng_state

# Files a run writes; a fresh run with --overwrite removes those an earlier run left.
RUN_FILES = ("final.pt", "best_model.pt", RESUME_NAME, PREVIOUS_NAME, SHARDED_DIR, "metrics.json", "summary.json",
             "loss_curve.png", "gradient_flow.png", "config.yaml", "checkpoint_epoch_*.pt",
             "events.out.tfevents.*")


def claim_output_dir(out: Path, resuming: bool, overwrite: bool, held: ExitStack) -> None:
    """Make `out` this run's directory: take its lock (runlock.py; held until `held` closes,
    so that no other command writes or removes files there meanwhile), then a fresh run
    refuses one that holds a resumable run unless `overwrite`, and then removes that run's
    files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {out}: cannot create the directory ({exc.strerror})") from None
    held.enter_context(exclusive(out))
    for unfinished in [*out.glob(".*.tmp"), *out.glob(f"{SHARDED_DIR}/.*.tmp")]:  # writes a killed run left half done
        shutil.rmtree(unfinished, ignore_errors=True) if unfinished.is_dir() else unfinished.unlink(missing_ok=True)
    if resuming or not (out / RESUME_NAME).exists():
        return
    if not overwrite:
        raise UserError(f"{out} already holds a run; continue it with --resume, or start over "
                        "with --overwrite (or choose another --output-dir)")
    for pattern in RUN_FILES:
        for old in out.glob(pattern):
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def write_run_config(out: Path, cfg: Config) -> None:
    write_text(out / "config.yaml", dump_yaml(cfg))


class Checkpointer:
    def __init__(self, saving: CheckpointConfig, cfg: Config, tokenizer: Tokenizer, cluster: Cluster,
                 tracker: Tracker, lora_base: dict[str, str] | None = None):
        """`lora_base`: a LoRA fine-tune's base (checkpoint.base_reference): its files then hold
        the adapters alone, and name the base."""
        self.saving, self.cfg, self.tokenizer, self.lora_base = saving, cfg, tokenizer, lora_base
        self.cluster, self.tracker = cluster, tracker
        self.out = Path(saving.output_dir)

    def save(self, name: str, state: TrainState, resumable: bool = True) -> None:
        """One checkpoint file: the model, and with `resumable` the whole training state."""
        if name == RESUME_NAME and self.saving.sharded_resume:
            self.save_sharded(state)
            return
        rank_rngs = self.cluster.gather(rng_state()) if resumable else None  # every process's
        # Every process takes part: a sharded (FSDP) model and optimizer are gathered to rank 0.
        model_state = state.layout.model_state(state.model)
        optimizer_state = state.layout.optimizer_state(state.model, state.optimizer) if resumable else None
        if not self.cluster.main:
            return
        self.tracker.flush()  # metrics.json holds every record up to the checkpoint
        if name == RESUME_NAME:
            self.keep_previous()
        save_checkpoint(self.out / name, self.cfg, self.tokenizer, model_state,
                        state.state_dict(rank_rngs, optimizer_state) if resumable else None, self.lora_base)

    def save_sharded(self, state: TrainState) -> None:
        """--sharded-resume: every process writes its shards into a work directory, which rank 0
        renames into place whole (atomic), checksums, and names in a small resume_checkpoint.pt."""
        rank_rngs = self.cluster.gather(rng_state())
        step = f"step_{state.step:08d}"
        work, final = self.out / SHARDED_DIR / f".{step}.tmp", self.out / SHARDED_DIR / step
        if self.cluster.main:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        self.cluster.barrier()
        state.layout.save_sharded(state.model, state.optimizer, work)  # every process, its own shards
        self.cluster.barrier()
        if not self.cluster.main:
            return
        files = {f.name: file_digest(f) for f in sorted(work.iterdir())}
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
        self.tracker.flush()
        self.keep_previous()
        train_state = state.state_dict(rank_rngs, optimizer_state={})
        train_state["sharded"] = {"dir": f"{SHARDED_DIR}/{step}", "files": files}
        save_checkpoint(self.out / RESUME_NAME, self.cfg, self.tokenizer, {}, train_state)
        keep = {shard_dir(self.out / name) for name in (RESUME_NAME, PREVIOUS_NAME)}
        for old in (self.out / SHARDED_DIR).glob("step_*"):
            if old.name not in keep:  # no checkpoint names it any more
                shutil.rmtree(old, ignore_errors=True)

    @contextmanager
    def write_failures_reported(self, state: TrainState) -> Iterator[None]:
        """A file of the run that cannot be written stops it with one line saying how to go on."""
        try:
            yield
        except WriteFailed as exc:
            raise UserError(f"{exc} at step {state.step}; the files already in {self.out} are intact: "
                            "free space there (or make it writable), then continue with --resume") from None

    def keep_previous(self) -> None:
        """The current resume checkpoint becomes the previous one, and stays in place as the
        latest until the new one replaces it (a hard link, then an atomic rename)."""
        latest, previous = self.out / RESUME_NAME, self.out / PREVIOUS_NAME
        if not latest.exists():
            return
        link = self.out / f".{PREVIOUS_NAME}.link.tmp"
        try:
            link.unlink(missing_ok=True)
            os.link(latest, link)
            os.replace(link, previous)
        except OSError:  # no hard links here: move it (the gap until the new file is covered by start.py)
            try:
                link.unlink(missing_ok=True)
                os.replace(latest, previous)
            except OSError as exc:
                raise WriteFailed(previous, exc, None) from None

    def save_best(self, state: TrainState) -> None:
        self.save("best_model.pt", state, resumable=False)

    def after_step(self, state: TrainState, epoch_done: bool, stopping: bool) -> None:
        if epoch_done and state.epoch % self.saving.save_every == 0:
            self.save(f"checkpoint_epoch_{state.epoch}.pt", state)
            if self.cluster.main:
                self.prune_epoch_checkpoints()
        if state.step % self.saving.checkpoint_interval == 0 or stopping:
            self.save(RESUME_NAME, state)

    def save_final(self, state: TrainState) -> Path:
        self.save("final.pt", state, resumable=False)
        return self.out / "final.pt"

    def prune_epoch_checkpoints(self) -> None:
        found = sorted(self.out.glob("checkpoint_epoch_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        for old in found[:-self.saving.keep_checkpoints]:
            old.unlink()


def shard_dir(checkpoint: Path) -> str | None:
    """The name of the shard directory a resume checkpoint uses, if it is a sharded one."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True).get("train_state") or {}
    except Exception:  # absent or unreadable: it keeps no shards alive
        return None
    return Path(state["sharded"]["dir"]).name if isinstance(state.get("sharded"), dict) else None
