"""`fundamentallm export CKPT OUT_DIR`: a checkpoint as a `transformers` model directory."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from fundamentallm.atomic import public_mode
from fundamentallm.checkpoint import load_checkpoint, model_from_checkpoint
from fundamentallm.errors import UserError
from fundamentallm.hf.architectures import Architecture, architecture_for, nearest_mismatch
from fundamentallm.hf.tokenizer_files import tokenizer_files
from fundamentallm.tokenizers import EOS, RESERVED, BPETokenizer, Tokenizer
from fundamentallm.tokenizers.chat import ChatTemplate

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Our modelling code, written beside the weights of a model no standard architecture computes.
REMOTE_FILES = {"configuration_fundamentallm.py": "interop/remote", "modeling_fundamentallm.py": "interop/remote",
                "transformer.py": "model", "kv_cache.py": "model"}


@dataclass
class ExportReport:
    architecture: str  # the transformers class
    remote_code: bool  # needs trust_remote_code=True
    reason: str | None  # why no standard architecture fits (remote code only)
    bytes: int  # model.safetensors
    seconds: float

    def describe(self) -> str:
        if self.remote_code:
            return (f"no standard transformers architecture computes this model ({self.reason}): exported with "
                    f"FundamentaLLM's modelling code; load it with trust_remote_code=True")
        return f"exported as {self.architecture}: a standard transformers model, no remote code"


def safetensors_save():
    try:
        from safetensors.torch import save_file  # the [hf] extra
    except ImportError:
        raise UserError("export needs the safetensors package: pip install 'fundamentallm[hf]'") from None
    return save_file


def generation_config(tokenizer: Tokenizer, chat: bool, ends: bool = True) -> dict:
    """Our `generate` defaults (temperature 0.8, no top-k), never <unk> or a turn token that
    does not end the text (as ours), and the end of a text (a chat model's reply: the end of
    its turn) ends generation, as ours."""
    eos = tokenizer.eos_id
    stops = ChatTemplate(tokenizer).stop_ids if chat else eos
    config = {"do_sample": True, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 200,
              "bos_token_id": boundary_id(tokenizer, "bos_token"), "eos_token_id": stops, "pad_token_id": eos}
    stop_list = (stops if isinstance(stops, list) else [stops]) if ends else []  # never learnt: never written
    suppressed = ([tokenizer.unk_id] if tokenizer.unk_id is not None else []) + [
        i for text in RESERVED if (i := tokenizer.special_id(text)) is not None and i not in stop_list]
    if suppressed:  # as our generate: never <unk>, nor a turn token in the middle of a text
        config["suppress_tokens"] = suppressed
    return config


def boundary_id(tokenizer: Tokenizer, role: str) -> int | None:
    """The id of the bos or eos token: ours is the end-of-text token (both, as GPT-2's), an
    imported tokenizer's its own."""
    own = tokenizer.role_id(role) if isinstance(tokenizer, BPETokenizer) else None
    return own if own is not None else tokenizer.special_id(EOS)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "fp32",
                      overwrite: bool = False) -> ExportReport:
    started = time.perf_counter()
    if dtype not in DTYPES:  # the CLI's choices say so; a library call is checked here
        raise UserError(f"export: dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} exists and is not empty (--overwrite replaces it)")
    model, tokenizer, cfg = model_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    arch: Architecture = architecture_for(cfg.model)
    remote = arch.model_type == "fundamentallm"
    tensors = {name: t.to(DTYPES[dtype]) if t.is_floating_point() else t
               for name, t in arch.to_hf(model.state_dict(), cfg.model).items()}
    config = {**arch.hf_config(cfg.model), "torch_dtype": str(DTYPES[dtype]).removeprefix("torch."),
              "use_cache": True, "bos_token_id": boundary_id(tokenizer, "bos_token"),
              "eos_token_id": boundary_id(tokenizer, "eos_token")}
    chat = cfg.data.format == "chat"
    ends = chat or cfg.data.doc_boundary == "eos"
    # Written in a fresh directory beside the destination, then moved into place: a failed
    # export leaves no half-written model.
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    work.chmod(public_mode(directory=True))  # mkdtemp's 0700 would stay with the renamed directory
    try:
        safetensors_save()(tensors, str(work / "model.safetensors"), metadata={"format": "pt"})
        (work / "model.safetensors").chmod(public_mode())  # safetensors writes its files private (0600)
        (work / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        generation = generation_config(tokenizer, chat, ends)
        (work / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
        for name, text in tokenizer_files(tokenizer, cfg.model.context_length, chat).items():
            (work / name).write_text(text, encoding="utf-8")
        if remote:
            package = resources.files("fundamentallm")
            for name, folder in REMOTE_FILES.items():
                (work / name).write_text(package.joinpath(f"{folder}/{name}").read_text(encoding="utf-8"),
                                         encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(arch.hf_class, remote, nearest_mismatch(cfg.model) if remote else None,
                        (out / "model.safetensors").stat().st_size, time.perf_counter() - started)
