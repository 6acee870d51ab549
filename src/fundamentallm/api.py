"""The Python API: train, load, generate, evaluate and export in a few lines.

    import fundamentallm as fl

    summary = fl.train("data/shakespeare_sample.txt", output_dir="runs/nb", max_time=30)
    model = fl.load("runs/nb/final.pt")
    print(model.generate("ROMEO:", max_tokens=100, seed=1))
    print(model.evaluate("data/val.txt").bits_per_char)
    model.export("exported/nb")

Settings are the command line's, by their field names: `train(..., model_dim=64)` is
`fundamentallm train ... --model-dim 64`, and `generate(..., top_k=40)` is `--top-k 40`. Each
is checked as its flag is, and an unknown name or a bad value raises `UserError` naming it.
These functions do what the commands do (the CLI calls the same library), so a run started
here resumes from the command line and the other way round.

This module is an application of the library, like the CLI: it sits above training and
inference and may use any layer (docs/architecture.md).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch

from fundamentallm.checkpoint import load_model
from fundamentallm.config import Config, ConfigSources
from fundamentallm.config.loading import coerce, fields
from fundamentallm.console import TrainingConsole
from fundamentallm.errors import UserError
from fundamentallm.evaluation import Score, evaluate, evaluate_data
from fundamentallm.generation import Completion, TextGenerator
from fundamentallm.interop import ExportReport, export_checkpoint
from fundamentallm.model import GPT
from fundamentallm.sampling import SamplingOptions
from fundamentallm.tokenizers import Tokenizer
from fundamentallm.training.loop import train as train_loop
from fundamentallm.training.precision import resolve_device

PROGRESS = ("rich", "quiet", "json", "silent")  # how train reports: as `train`, --quiet, --json, nothing


def settings_as_flags(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword settings (`model_dim=64`) as the config tree's flags (`model.model_dim`),
    each value checked as its flag is; errors name the keyword."""
    by_name = {info.name: info for info in fields()}
    flags = {}
    for name, value in settings.items():
        info = by_name.get(name)
        if info is None:
            near = difflib.get_close_matches(name, by_name, n=1)
            raise UserError(f"train: unknown setting {name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        flags[info.key] = coerce(info, value, name)
    return flags


def train(data: str | Path | list[str | Path] | None = None, *, config: str | Path | Config | None = None,
          resume: str | bool | None = None, overwrite: bool = False, progress: str = "rich",
          **settings: Any) -> dict[str, Any]:
    """Train a model, as `fundamentallm train` does; returns the run's summary (summary.json).

    Args:
        data: training text: a file, a directory, a JSONL or Parquet file, or a list of them
            (or `train=` in the config).
        config: a YAML run config (a path or a preset name, as `--config`) or a `Config`.
        resume: continue a run: True (the output directory's state), "auto" (that state if
            it exists) or a checkpoint path, as `--resume`.
        overwrite: start afresh in an output directory that holds an earlier run.
        progress: "rich" (the table and progress bar of `train`), "quiet", "json" or "silent".
        **settings: any train setting by its name, e.g. `output_dir="runs/a"`, `max_time=60`,
            `model_dim=128`, `tokenizer="bpe"`; they override `config`.

    The summary holds `output_dir` (where final.pt is), `stop_reason`, `steps`, the losses
    (`final_val_loss`, `best_val_loss`, `best_val_bits_per_char`), `tokens_per_s` and more.
    """
    if progress not in PROGRESS:
        raise UserError(f"train: progress {progress!r}: choose one of {', '.join(PROGRESS)}")
    files = [] if data is None else [str(p) for p in ([data] if isinstance(data, (str, Path)) else data)]
    flags = settings_as_flags(settings)
    if isinstance(config, Config):
        sources = ConfigSources.of(config)
        sources.flags.update(flags)
        sources.data = files
    else:
        sources = ConfigSources(None if config is None else str(config), flags, files)
    return train_loop(sources, TrainingConsole(progress), resume=resume, overwrite=overwrite)


class Model:
    """A trained model with its tokenizer, ready to generate, score and export.

    `module` is the `GPT` (a torch module, in eval mode), `tokenizer` its tokenizer and
    `config` the run's config; `path` is the checkpoint it was loaded from."""

    def __init__(self, module: GPT, tokenizer: Tokenizer, config: Config, path: str | Path):
        self.module, self.tokenizer, self.config, self.path = module, tokenizer, config, Path(path)
        self._generator = TextGenerator(module, tokenizer, chat=config.data.format == "chat",
                                        ends=config.data.doc_boundary == "eos")

    def __repr__(self) -> str:
        m = self.config.model
        return (f"Model({str(self.path)!r}: {self.module.num_parameters():,} parameters, {m.num_layers} layers "
                f"of width {m.model_dim}, {self.tokenizer.kind} tokenizer of {self.tokenizer.vocab_size:,} tokens)")

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def complete(self, prompt: str = "\n", **sampling: Any) -> list[Completion]:
        """Every sample's `Completion` (text, tokens, mean log-probability, tokens/s).

        `sampling` are `generate`'s options by name: `max_tokens`, `temperature`, `top_k`,
        `top_p`, `min_p`, `repetition_penalty`, `stop`, `ban`, `greedy`, `beam_width`,
        `num_samples`, `seed`, ..."""
        options = SamplingOptions().updated(sampling, "generate")
        return self._generator.complete(prompt, options)

    def generate(self, prompt: str = "\n", **sampling: Any) -> str:
        """The text that follows `prompt` (one sample; see `complete` for several)."""
        if sampling.get("num_samples", 1) != 1:
            raise UserError("generate: returns one text; use complete(..., num_samples=N) for several")
        return self.complete(prompt, **sampling)[0].text

    def evaluate(self, data: str | Path | None = None, *, text: str | None = None, batch_size: int = 32,
                 precision: str = "auto") -> Score:
        """Loss, perplexity and bits per character and byte on a file (read as training read
        its files: a directory, JSONL) or on `text`, as `fundamentallm evaluate` scores;
        `precision` "auto" (bf16 where it is faster), "fp32" or "bf16"."""
        if (data is None) == (text is None):
            raise UserError("evaluate: give a file to score, or text=")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"evaluate: batch_size must be a positive whole number (got {batch_size!r})")
        if precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"evaluate: precision must be auto, fp32 or bf16 (got {precision!r})")
        if data is not None:
            return evaluate_data(self.module, self.tokenizer, self.config.data, str(data), batch_size,
                                 precision=precision)
        return evaluate(self.module, self.tokenizer, text, batch_size, precision=precision,
                        doc_mask=self.config.data.doc_mask)

    def export(self, out: str | Path, *, dtype: str | None = None, outtype: str | None = None,
               overwrite: bool = False, merge_lora: bool = False) -> ExportReport:
        """Write the model as a Hugging Face `transformers` directory (`dtype` fp32 or bf16),
        or as a GGUF file when `out` ends in .gguf (`outtype` f16, f32 or q8_0), with its
        model card, as `fundamentallm export` (`merge_lora`: --merge-lora)."""
        return export_checkpoint(self.path, out, dtype, overwrite, outtype, merge_lora)


def load(path: str | Path, device: str = "auto") -> Model:
    """A checkpoint (.pt, e.g. OUTPUT_DIR/final.pt) or a Hugging Face model directory, on
    `device` ("auto": a GPU where there is one, else the CPU)."""
    module, tokenizer, cfg = load_model(path, resolve_device(device))
    return Model(module, tokenizer, cfg, path)
