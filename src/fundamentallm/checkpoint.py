"""One checkpoint format, saved atomically and loaded without unpickling code.

A checkpoint is a dict of plain values and tensors, so `torch.load(path, weights_only=True)`
reads it and a checkpoint from a stranger cannot run code on your machine:

    format, version       identify the file as ours
    config                the resolved config tree (nested dicts)
    tokenizer             tokenizer.to_dict()
    model                 model.state_dict(); a LoRA fine-tune's: its adapters only
    lora_base             (LoRA fine-tunes only) the base the adapters belong to: its path
                          and the checksum of its contents, checked on loading
    train_state           (resume checkpoints only) TrainState.state_dict()
    checksum              a digest of everything above (version 5 on), checked on loading

Every checkpoint can be evaluated and sampled from; those with `train_state` can resume.

The checksum is over the contents, not the file's bytes: every tensor's dtype, shape and
bytes and every other value, in a fixed order. A file cut off while written, emptied, or
with a flipped bit anywhere is then reported as damaged, instead of being trained on or
sampled from as if it were good. (The zip container PyTorch writes has CRC-32s, but the
reader does not check them.) Files from before version 5 carry none and load unchecked.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from fundamentallm.atomic import atomic_write
from fundamentallm.config import Config, config_from_dict, config_to_dict
from fundamentallm.config.schema import LoraConfig
from fundamentallm.errors import UserError
from fundamentallm.hf import is_model_directory, read_model_directory
from fundamentallm.model import GPT
from fundamentallm.model.lora import add_adapters, is_adapter, merge_lora
from fundamentallm.tokenizers import Tokenizer, tokenizer_from_dict

FORMAT = "fundamentallm"
VERSION = 5
# Settings that older checkpoints predate, by version: such a config is read with these
# values under the stored ones, so the file still loads as the model it was.
# Version 1: before the architecture and optimizer options. Version 2: before --norm-gain.
# Version 3: before data.vocab_size was renamed (below). Version 4: before the checksum.
LEGACY_SETTINGS = {
    1: {"model": {"norm": "rmsnorm", "position": "rope", "activation": "gelu", "qk_norm": False,
                  "zero_init": False, "norm_gain": True},
        "optim": {"optimizer": "adamw"}},
    2: {"model": {"norm_gain": True}},
    3: {},
    4: {},
}
# Settings renamed since: (section, old name, new name), applied to every older version.
RENAMED = (("data", "vocab_size", "bpe_vocab_size"),)


def save_checkpoint(path: str | Path, cfg: Config, tokenizer: Tokenizer, model: torch.nn.Module | dict[str, Any],
                    train_state: dict[str, Any] | None = None, lora_base: dict[str, str] | None = None) -> None:
    """`model`: the model, or its state dict (a sharded run's, gathered). `lora_base`: a LoRA
    fine-tune's base (`base_reference`); only the adapters of `model` are stored."""
    weights = model if isinstance(model, dict) else model.state_dict()
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(cfg),
        "tokenizer": tokenizer.to_dict(),
        "model": {k: v for k, v in weights.items() if is_adapter(k)} if lora_base else weights,
    }
    if lora_base:
        ckpt["lora_base"] = lora_base
    if train_state is not None:
        ckpt["train_state"] = train_state
    seal(ckpt)
    atomic_write(path, lambda f: torch.save(ckpt, f), expected_bytes=tensor_bytes(ckpt))


class DamagedCheckpoint(UserError):
    """A file that was a checkpoint but cannot be trusted now: cut off, emptied, altered."""


def content_digest(ckpt: dict[str, Any]) -> str:
    """A digest of every entry but the checksum: tensors by dtype, shape and bytes, other
    values by their repr, dict entries in sorted order (a tuple and a list read the same)."""
    digest = hashlib.blake2b(digest_size=16)

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)  # (numel,)
            digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy())  # the raw bytes, for any dtype (bf16 too)
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode() + b":")
                walk(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                walk(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode() + b",")

    walk({k: v for k, v in ckpt.items() if k != "checksum"})
    return "blake2b-128:" + digest.hexdigest()


def seal(ckpt: dict[str, Any]) -> None:
    """Set the checksum of `ckpt` (after every change to it, before it is saved)."""
    ckpt["checksum"] = content_digest(ckpt)


def tensor_bytes(value: Any) -> int:
    """Bytes of tensor data in `value`: about the size of its file."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint; every problem is a one-line UserError. A directory is
    read as a Hugging Face model directory (hf/), converted on the fly."""
    path = Path(path)
    if path.is_dir():
        if not is_model_directory(path):
            raise UserError(f"{path}: a directory, but not a model directory (no config.json)")
        return {"format": FORMAT, "version": VERSION, **read_model_directory(path)}
    if not path.is_file():
        # the original FundamentaLLM's name for the final model
        hint = "; this FundamentaLLM writes final.pt" if path.name == "final_model.pt" else ""
        raise UserError(f"{path}: no such checkpoint{hint}")
    if path.stat().st_size == 0:
        raise DamagedCheckpoint(f"{path}: not a readable checkpoint (an empty file: cut off while "
                                "it was written, or never written)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the safe unpickler fails in many ways on a corrupt file
        raise DamagedCheckpoint(f"{path}: {unreadable(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a FundamentaLLM checkpoint")
    if ckpt.get("version") not in (*LEGACY_SETTINGS, VERSION):
        raise UserError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported "
                        f"(this FundamentaLLM reads versions 1 to {VERSION})")
    if ckpt["version"] == VERSION and ckpt.get("checksum") != content_digest(ckpt):
        raise DamagedCheckpoint(f"{path}: damaged checkpoint: its contents do not match the checksum "
                                "written with them (changed or corrupted on disk since)")
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


def unreadable(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in one line. A pickle that would call
    Python code (the way a malicious .pt runs its payload) is named for what it is."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"not a readable checkpoint: refused, as loading it would call {found.group(1)} (Python "
                "code, which no checkpoint needs: FundamentaLLM reads only tensors and plain values)")
    detail = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    reason = detail.group(1) if detail else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"not a readable checkpoint ({reason[:120]})"


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint"
                          ) -> tuple[GPT, Tokenizer, Config]:
    """Rebuild the model, tokenizer and config stored in a loaded checkpoint."""
    cfg = config_from_dict(ckpt["config"], source)
    sharded = (ckpt.get("train_state") or {}).get("sharded") if isinstance(ckpt.get("train_state"), dict) else None
    if not ckpt["model"] and sharded:
        raise UserError(f"{source}: holds a sharded training state (its weights are in {sharded.get('dir')}), to "
                        "continue with --resume; evaluate, generate or export final.pt or best_model.pt")
    try:
        tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    model = GPT(cfg.model)
    weights = ckpt["model"]
    if "lora_base" in ckpt:  # the base's weights, then the adapters on them
        base = read_base(ckpt["lora_base"], source)
        weights = special_rows(base_weights(base, ckpt["lora_base"]["path"]), tokenizer_from_dict(base["tokenizer"]),
                               tokenizer, cfg.model.vocab_size)
    try:
        model.load_state_dict(weights)
        if "lora_base" in ckpt:
            add_adapters(model, cfg.lora.rank, lora_alpha(cfg.lora), tuple(cfg.lora.targets))
            missing = set(k for k in model.state_dict() if is_adapter(k)) ^ set(ckpt["model"])
            if missing:
                raise RuntimeError(f"the adapters differ from the LoRA settings at {sorted(missing)[0]}")
            model.load_state_dict({**model.state_dict(), **ckpt["model"]})
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not match the stored model config "
                        f"({str(exc).splitlines()[0]})") from None
    return model, tokenizer, cfg


def lora_alpha(lora: LoraConfig) -> float:
    """--lora-alpha, by default twice the rank (as litgpt's defaults, rank 8 and alpha 16)."""
    return lora.alpha if lora.alpha is not None else 2.0 * lora.rank


def base_reference(path: str | Path, base: dict[str, Any]) -> dict[str, str]:
    """What a LoRA checkpoint keeps of its base: where it is and a digest of its contents."""
    return {"path": str(Path(path).resolve()), "checksum": base.get("checksum") or content_digest(base)}


def read_base(reference: dict[str, str], source: str) -> dict[str, Any]:
    """The base checkpoint a LoRA checkpoint names, checked to be the one it was trained on."""
    try:
        base = load_checkpoint(reference["path"])
    except UserError as exc:
        raise UserError(f"{source}: holds LoRA adapters for the base {reference['path']}, which cannot be read "
                        f"({exc})") from None
    if base_reference(reference["path"], base)["checksum"] != reference["checksum"]:
        raise UserError(f"{source}: holds LoRA adapters for the base {reference['path']}, which has changed since "
                        "they were trained (its contents differ)")
    return base


def base_weights(ckpt: dict[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A checkpoint's model weights as plain tensors: a LoRA checkpoint's with its adapters
    merged into its base's (what --init-from starts from)."""
    if "lora_base" not in ckpt:
        return ckpt["model"]
    return merge_lora(model_from_checkpoint(ckpt, source)[0]).state_dict()


def special_rows(weights: dict[str, torch.Tensor], saved: Tokenizer, tokenizer: Tokenizer,
                 vocab_size: int) -> dict[str, torch.Tensor]:
    """The saved weights with a row for each special token the tokenizer gained (with_specials):
    the embedding and output matrices grown to `vocab_size` rows, and the new tokens' rows
    set to the mean of the trained ones (so a new token starts as an average token, as
    transformers' resize_token_embeddings does, not as noise that dominates the logits)."""
    if tokenizer.vocab_size == saved.vocab_size:
        return weights
    grown = dict(weights)
    for name in ("embed.weight", "head.weight"):
        if name not in weights:
            continue
        old = weights[name]
        rows = torch.cat([old, old.new_zeros(max(0, vocab_size - old.shape[0]), old.shape[1])])
        rows[saved.vocab_size:tokenizer.vocab_size] = old[:saved.vocab_size].float().mean(0).to(old.dtype)
        grown[name] = rows
    return grown


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[GPT, Tokenizer, Config]:
    """Load a checkpoint for evaluation or generation, in eval mode on `device`."""
    model, tokenizer, cfg = model_from_checkpoint(load_checkpoint(path), str(path))
    return model.to(device).eval(), tokenizer, cfg
