"""One checkpoint format, saved atomically and loaded without unpickling code.

A checkpoint is a dict of plain values and tensors, so `torch.load(path, weights_only=True)`
reads it and a checkpoint from a stranger cannot run code on your machine:

    format, version       identify the file as ours
    config                the resolved config tree (nested dicts)
    tokenizer             tokenizer.to_dict()
    model                 model.state_dict()
    train_state           (resume checkpoints only) TrainState.state_dict()

Every checkpoint can be evaluated and sampled from; those with `train_state` can resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fundamentallm.atomic import atomic_write
from fundamentallm.config import Config, config_from_dict, config_to_dict
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT = "fundamentallm"
VERSION = 4
# Settings that older checkpoints predate, by version: such a config is read with these
# values under the stored ones, so the file still loads as the model it was.
# Version 1: before the architecture and optimizer options. Version 2: before --norm-gain.
# Version 3: before data.vocab_size was renamed (below).
LEGACY_SETTINGS = {
    1: {"model": {"norm": "rmsnorm", "position": "rope", "activation": "gelu", "qk_norm": False,
                  "zero_init": False, "norm_gain": True},
        "optim": {"optimizer": "adamw"}},
    2: {"model": {"norm_gain": True}},
    3: {},
}
# Settings renamed since: (section, old name, new name), applied to every older version.
RENAMED = (("data", "vocab_size", "bpe_vocab_size"),)


def save_checkpoint(path: str | Path, cfg: Config, tokenizer: Tokenizer, model: torch.nn.Module,
                    train_state: dict[str, Any] | None = None) -> None:
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(cfg),
        "tokenizer": tokenizer.to_dict(),
        "model": model.state_dict(),
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint; every problem is a one-line UserError. A directory is
    read as a Hugging Face model directory (interop/), converted on the fly."""
    path = Path(path)
    if path.is_dir():
        from fundamentallm.interop import is_model_directory, read_model_directory

        if not is_model_directory(path):
            raise UserError(f"{path}: a directory, but not a model directory (no config.json)")
        return read_model_directory(path)
    if not path.is_file():
        # the original FundamentaLLM's name for the final model
        hint = "; this FundamentaLLM writes final.pt" if path.name == "final_model.pt" else ""
        raise UserError(f"{path}: no such checkpoint{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the safe unpickler fails in many ways on a corrupt file
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a FundamentaLLM checkpoint")
    if ckpt.get("version") not in (*LEGACY_SETTINGS, VERSION):
        raise UserError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported "
                        f"(this FundamentaLLM reads versions 1 to {VERSION})")
    malformed = [k for k in ("config", "tokenizer", "model") if not isinstance(ckpt.get(k), dict)]
    if malformed:
        raise UserError(f"{path}: checkpoint is missing or has malformed {', '.join(malformed)}")
    if ckpt["version"] in LEGACY_SETTINGS:
        config = dict(ckpt["config"])
        for section, legacy in LEGACY_SETTINGS[ckpt["version"]].items():
            stored = config.get(section) or {}
            if isinstance(stored, dict):  # anything else is reported when the config is read
                config[section] = {**legacy, **stored}
        for section, old, new in RENAMED:
            stored = config.get(section)
            if isinstance(stored, dict) and old in stored:
                config[section] = {(new if k == old else k): v for k, v in stored.items()}
        ckpt["config"], ckpt["version"] = config, VERSION
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint"
                          ) -> tuple[GPT, Tokenizer, Config]:
    """Rebuild the model, tokenizer and config stored in a loaded checkpoint."""
    cfg = config_from_dict(ckpt["config"], source)
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    model = GPT(cfg.model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not match the stored model config "
                        f"({str(exc).splitlines()[0]})") from None
    return model, tokenizer, cfg


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[GPT, Tokenizer, Config]:
    """Load a checkpoint for evaluation or generation, in eval mode on `device`."""
    model, tokenizer, cfg = model_from_checkpoint(load_checkpoint(path), str(path))
    return model.to(device).eval(), tokenizer, cfg
