"""Starting from a checkpoint: what a resumed run must keep, and what a fine-tuned run
(--init-from) takes from it. Each mismatch is a one-line error that names the setting."""

from __future__ import annotations

from typing import Any

from fundamentallm.config import Config, config_from_dict
from fundamentallm.config.loading import field_by_key
from fundamentallm.errors import UserError


def check_model_unchanged(cfg: Config, saved: Config, path: str, run: str) -> None:
    """A resumed or fine-tuned run keeps the checkpoint's model shape (its dropout and
    DropConnect rates may change)."""
    changed = [f"{name} {getattr(cfg.model, name)} (checkpoint: {value})"
               for name, value in vars(saved.model).items()
               if name not in ("dropout", "dropconnect") and getattr(cfg.model, name) != value]
    if changed:
        raise UserError(f"{path}: {run} keeps its model shape; changed: {', '.join(changed)}")


# The optimizer's param groups follow these; a resumed run's saved state needs the same groups.
OPTIMIZER_LAYOUT = ("optimizer", "freeze_embeddings", "freeze_layers", "layer_lr_decay", "lookahead_steps")


def resume_config(cfg: Config, payload: dict[str, Any], path: str, world_size: int = 1) -> None:
    """A resumed run keeps its model shape, tokenizer, optimizer and number of processes;
    anything else (dropout too) may change."""
    saved_cfg = config_from_dict(payload["config"], path)
    check_model_unchanged(cfg, saved_cfg, path, "a resumed run")
    for name in OPTIMIZER_LAYOUT:  # the saved state belongs to that optimizer and its groups
        mine, saved = getattr(cfg.optim, name), getattr(saved_cfg.optim, name)
        if mine != saved:
            flag = field_by_key()[f"optim.{name}"].flag
            raise UserError(f"{path}: a resumed run keeps its optimizer; {flag} {mine} (checkpoint: {saved})")
    if "train_state" not in payload:
        raise UserError(f"{path}: holds model weights only, not a training state to resume")
    state = payload["train_state"]
    if not isinstance(state, dict) or not all(
            isinstance(state.get(k), dict) for k in ("optimizer", "counters", "rng")):
        raise UserError(f"{path}: the training state in this checkpoint is malformed")
    saved_world = len(state.get("rank_rngs", [None]))  # the processes split the data between them
    if saved_world != world_size:
        raise UserError(f"{path}: this run trained on {saved_world} process(es); resume it on as many "
                        f"(torchrun --nproc-per-node {saved_world}), not {world_size}")


def init_config(cfg: Config, payload: dict[str, Any], path: str) -> None:
    """--init-from: the new run must be able to take the checkpoint's weights and tokenizer."""
    saved_cfg = config_from_dict(payload["config"], path)
    check_model_unchanged(cfg, saved_cfg, path, "a fine-tuned run")
    if cfg.data.tokenizer != saved_cfg.data.tokenizer:
        raise UserError(f"{path}: a fine-tuned run keeps its tokenizer; --tokenizer {cfg.data.tokenizer} "
                        f"(checkpoint: {saved_cfg.data.tokenizer})")
