"""Reading a `transformers` model directory as a FundamentaLLM checkpoint.

Takes the architectures that export writes (architectures.py): Llama (including grouped-
query attention, untied embeddings, any rope_theta and MLP width, as small public models
such as SmolLM use), Qwen3, GPT-2 with exact GELU, and our own. config.json is read as
JSON and the weights as safetensors, so nothing in the directory runs; a config that asks
for remote code (`auto_map`) of anyone but ours is refused, and ours is read as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fundamentallm.config import config_from_dict, config_to_dict, validate
from fundamentallm.errors import UserError
from fundamentallm.hf.architectures import ARCHITECTURES
from fundamentallm.hf.tokenizer_files import read_json, read_tokenizer
from fundamentallm.tokenizers.chat import JINJA

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"  # sharded weights: {"weight_map": {tensor: file}}


def is_model_directory(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    try:  # the [hf] extra: only reading a model directory needs it
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise UserError("reading a Hugging Face model needs the safetensors package: "
                        "pip install 'fundamentallm[hf]'") from None
    if (directory / WEIGHTS).is_file():
        files = [directory / WEIGHTS]
    elif (directory / INDEX).is_file():
        index = read_json(directory / INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise UserError(f"{directory / INDEX}: no weight_map")
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        pickled = [p.name for p in directory.glob("*.bin")]
        raise UserError(f"{directory}: no {WEIGHTS}" + (
            f" ({', '.join(pickled)} is a pickle, which FundamentaLLM does not open: save the model with "
            "safetensors)" if pickled else ""))
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: not readable safetensors ({str(exc).splitlines()[0][:100]})") from None
    return tensors


def exported_chat_model(directory: Path) -> bool:
    """A chat model exported from here: its tokenizer config has our chat template."""
    path = directory / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    return isinstance(config, dict) and config.get("chat_template") == JINJA


def read_model_directory(directory: str | Path) -> dict[str, Any]:
    """The parts of a checkpoint (config, tokenizer, model weights) held by a model directory;
    checkpoint.load_checkpoint adds its format marks."""
    directory = Path(directory)
    config_path = directory / "config.json"
    hf = read_json(config_path)
    if not isinstance(hf, dict):
        raise UserError(f"{config_path}: not a model config (expected a JSON object)")
    model_type = hf.get("model_type")
    if hf.get("auto_map") and model_type != "fundamentallm":
        raise UserError(f"{config_path}: asks for remote code (auto_map), which FundamentaLLM never runs")
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise UserError(f"{config_path}: architecture {model_type!r} is not supported "
                        f"(supported: {', '.join(ARCHITECTURES)})")
    try:
        fields = arch.model_fields(hf)
    except KeyError as exc:
        raise UserError(f"{config_path}: lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{config_path}: malformed ({exc})") from None
    except UserError as exc:
        raise UserError(f"{config_path}: {exc}") from None
    tokenizer = read_tokenizer(directory)
    data = {"tokenizer": tokenizer.kind, "format": "chat" if exported_chat_model(directory) else "text"}
    cfg = config_from_dict({"model": fields, "data": data}, str(config_path))
    try:
        validate(cfg)  # e.g. heads that do not divide the width
    except UserError as exc:
        raise UserError(f"{config_path}: {exc}") from None
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise UserError(f"{directory}: the tokenizer has {tokenizer.vocab_size:,} tokens, more than the "
                        f"model's vocab_size {cfg.model.vocab_size:,}")
    try:
        weights = arch.from_hf(read_weights(directory), cfg.model)
    except UserError as exc:
        raise UserError(f"{directory}: {exc}") from None
    if cfg.model.tie_embeddings:
        weights["head.weight"] = weights["embed.weight"]  # one matrix, under both names as in our state dict
    return {"config": config_to_dict(cfg),
            "tokenizer": tokenizer.to_dict(), "model": weights}
