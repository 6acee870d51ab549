"""`fundamentallm export CKPT OUT_DIR`: a checkpoint as a `transformers` model directory."""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from fundamentallm.atomic import public_mode, write_text
from fundamentallm.checkpoint import load_checkpoint, model_from_checkpoint
from fundamentallm.errors import UserError
from fundamentallm.hf.architectures import Architecture, architecture_for, nearest_mismatch
from fundamentallm.hf.tokenizer_files import tokenizer_files
from fundamentallm.interop.generation_defaults import boundary_id, generation_config
from fundamentallm.interop.gguf_export import OUTTYPES, modelfile_path, write_gguf
from fundamentallm.interop.model_card import model_card
from fundamentallm.model.lora import merge_lora
from fundamentallm.training.runlock import exclusive

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Our modelling code, written beside the weights of a model no standard architecture computes.
REMOTE_FILES = {"configuration_fundamentallm.py": "interop/remote", "modeling_fundamentallm.py": "interop/remote",
                "transformer.py": "model", "kv_cache.py": "model"}


@dataclass
class ExportReport:
    architecture: str  # the transformers class (llama.cpp's architecture for a GGUF file)
    remote_code: bool  # needs trust_remote_code=True
    reason: str | None  # why no standard architecture fits (remote code only)
    bytes: int  # model.safetensors (the GGUF file)
    seconds: float
    weights: str = "fp32"  # the weights' type
    gguf: bool = False

    def describe(self) -> str:
        if self.gguf:
            return (f"exported as GGUF ({self.architecture}, {self.weights}) for llama.cpp, Ollama and LM Studio; "
                    "beside it: Modelfile (ollama create NAME -f Modelfile) and README.md (the model card)")
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


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str | None = None,
                      overwrite: bool = False, outtype: str | None = None, merge_lora: bool = False) -> ExportReport:
    """Write the checkpoint as a model directory, or as a GGUF file when `out_dir` ends in
    .gguf (`outtype`: its weights' type, default f16), each with its model card. A LoRA
    fine-tune leaves only with `merge_lora`: its base with the adapters folded in."""
    started = time.perf_counter()
    out = Path(out_dir)
    # One export at a time into one place (training/runlock.py): the lock file sits beside
    # the target, which is replaced whole.
    with exclusive(out.parent, out.parent / f".{out.name}.lock", "export"):
        if out.suffix == ".gguf":
            if dtype is not None:
                raise UserError("--dtype is for a model directory; a GGUF export takes --outtype f32, f16 or q8_0")
            return export_gguf(Path(checkpoint), out, outtype or "f16", overwrite, started, merge_lora)
        if outtype is not None:
            raise UserError("--outtype is for a GGUF export (OUT.gguf); a model directory takes --dtype fp32 or bf16")
        return export_directory(Path(checkpoint), out, dtype or "fp32", overwrite, started, merge_lora)


def export_directory(checkpoint: Path, out: Path, dtype: str, overwrite: bool, started: float,
                     merge_lora: bool) -> ExportReport:
    """OUT_DIR: a `transformers` model directory with its model card."""
    if dtype not in DTYPES:  # the CLI's choices say so; a library call is checked here
        raise UserError(f"export: dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} exists and is not empty (--overwrite replaces it)")
    model, tokenizer, cfg = exported_model(checkpoint, merge_lora)
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
        usage = DIRECTORY_USAGE.format(out=out, remote=", trust_remote_code=True" if remote else "")
        card = model_card(cfg, tokenizer, model.num_parameters(), Path(checkpoint),
                          f"exported as a `transformers` {arch.hf_class}", usage)
        (work / "README.md").write_text(card, encoding="utf-8")
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
                        (out / "model.safetensors").stat().st_size, time.perf_counter() - started, dtype)


DIRECTORY_USAGE = """
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{out}"{remote})
tokenizer = AutoTokenizer.from_pretrained("{out}")
```

or with FundamentaLLM: `fundamentallm generate {out} --prompt "..."`.
"""

GGUF_USAGE = """
```bash
llama-cli -m {out} -p "..."                      # llama.cpp
ollama create {name} -f Modelfile && ollama run {name}   # Ollama (the Modelfile is beside the file)
```
"""


def exported_model(checkpoint: Path, merge: bool) -> tuple[torch.nn.Module, Any, Any]:
    """The checkpoint's model, tokenizer and config; a LoRA fine-tune's with its adapters merged
    into the base's weights (model/lora.py), which only `merge` (--merge-lora) asks for."""
    ckpt = load_checkpoint(checkpoint)
    adapted = "lora_base" in ckpt
    if adapted and not merge:
        raise UserError(f"{checkpoint} holds LoRA adapters: export --merge-lora writes its base with them merged in")
    if merge and not adapted:
        raise UserError(f"--merge-lora: {checkpoint} holds no LoRA adapters (it exports as it is)")
    model, tokenizer, cfg = model_from_checkpoint(ckpt, str(checkpoint))
    return (merge_lora(model) if merge else model), tokenizer, cfg


def export_gguf(checkpoint: Path, out: Path, outtype: str, overwrite: bool, started: float,
                merge: bool = False) -> ExportReport:
    """OUT.gguf with a Modelfile and a README.md beside it (interop/gguf_export.py)."""
    beside = [out, modelfile_path(out), out.parent / "README.md"]
    if not overwrite and (taken := next((p for p in beside if p.exists()), None)) is not None:
        raise UserError(f"{taken} exists (--overwrite replaces it, with the GGUF file, Modelfile and README.md)")
    if outtype not in OUTTYPES:
        raise UserError(f"--outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    model, tokenizer, cfg = exported_model(checkpoint, merge)
    out.parent.mkdir(parents=True, exist_ok=True)
    arch = write_gguf(model, tokenizer, cfg, out, outtype, out.stem)
    usage = GGUF_USAGE.format(out=shlex.quote(str(out)), name=shlex.quote(out.stem.lower()))
    write_text(out.parent / "README.md", model_card(cfg, tokenizer, model.num_parameters(), checkpoint,
                                                    f"exported as GGUF ({arch}, {outtype}) for llama.cpp and Ollama",
                                                    usage))
    return ExportReport(arch, False, None, out.stat().st_size, time.perf_counter() - started, outtype, gguf=True)
