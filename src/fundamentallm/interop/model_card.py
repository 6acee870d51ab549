"""The model card: a README.md written with every export, ready for the Hugging Face Hub.

A card says what the model is (architecture, size, tokenizer), what it learnt from (the
data files and the tokens it saw), how (training time, device, precision) and how well (the
validation loss, perplexity, bits per character), and gives the command that trains it
again. The model's settings come from its checkpoint (the resolved config: every setting
the run used, sizes chosen by the time budget included); the training figures come from the
run's summary.json beside the checkpoint, where it is (a moved or imported checkpoint has
none, and the card says so rather than guessing).
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

from fundamentallm.checkpoint import lora_alpha
from fundamentallm.config import Config
from fundamentallm.config.loading import fields
from fundamentallm.config.sources import get_value
from fundamentallm.console import amount
from fundamentallm.hf.architectures import architecture_for
from fundamentallm.tokenizers import Tokenizer
from fundamentallm.training.sizing import LEARNING_RATE_KEY, SHAPE_KEYS


def train_command(cfg: Config) -> str:
    """A `fundamentallm train` command line that sets every setting `cfg` holds and a new run
    would not have by default. A model sized to its time budget gets its shape and learning
    rate written out: the sizing depends on the machine, the command must not."""
    defaults = Config()
    sized = cfg.training.auto_size and cfg.training.max_time
    pinned = set(SHAPE_KEYS) | {LEARNING_RATE_KEY} if sized else set()
    words = ["fundamentallm", "train", *cfg.data.train]
    for info in fields():
        value = get_value(cfg, info)
        if info.flag is None or info.meta["positional"] or value is None or (
                value == get_value(defaults, info) and info.key not in pinned):
            continue
        if info.kind is bool:
            words.append(info.flag if value else "--no-" + info.flag.removeprefix("--"))
        elif info.kind is list:
            for item in value:
                words += [info.flag, str(item)]
        else:
            words += [info.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(word) for word in words)


def lora_row(cfg: Config) -> list[str]:
    """A LoRA fine-tune's adapters (exported merged into its base's weights)."""
    lora = cfg.lora
    if not lora.rank:
        return []
    return [f"| fine-tuning | LoRA rank {lora.rank} (alpha {lora_alpha(lora):g}) on {', '.join(lora.targets)}, from "
            f"`{cfg.training.init_from}`; the adapters are merged into these weights |"]


def run_summary(checkpoint: Path) -> dict[str, Any] | None:
    """The summary.json of the run the checkpoint is in, if it is there and readable."""
    path = checkpoint.parent / "summary.json" if checkpoint.is_file() else None
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def data_lines(cfg: Config) -> list[str]:
    lines = []
    for name in cfg.data.train:
        path = Path(name)
        size = f" ({amount(path.stat().st_size, ' B')})" if path.is_file() else ""
        lines.append(f"- `{name}`{size}")
    return lines or ["- (not recorded: an imported model)"]


def model_card(cfg: Config, tokenizer: Tokenizer, parameters: int, checkpoint: Path, exported_as: str,
               usage: str) -> str:
    """The README.md text. `exported_as`: one line on the format; `usage`: how to run it."""
    m = cfg.model
    summary = run_summary(checkpoint)
    arch = architecture_for(m).model_type
    library = "gguf" if "GGUF" in exported_as else "transformers"
    lines = ["---", f"library_name: {library}", "pipeline_tag: text-generation",
             "tags:", "- fundamentallm", f"- {arch}", "---", "",
             f"# {checkpoint.stem if checkpoint.is_file() else checkpoint.name}", "",
             f"A language model trained from scratch with FundamentaLLM; {exported_as}.", "",
             "## Model", "",
             "| | |", "|---|---|",
             f"| architecture | {arch} ({m.norm}, {m.position} positions, {m.activation}"
             f"{', QK-norm' if m.qk_norm else ''}) |",
             f"| parameters | {parameters:,} |",
             f"| layers × width | {m.num_layers} × {m.model_dim}, {m.num_heads} heads"
             f"{f' ({m.num_kv_heads} key-value)' if m.num_kv_heads else ''} |",
             f"| context | {m.context_length} tokens |",
             f"| tokenizer | {tokenizer.describe()} |",
             *lora_row(cfg),
             f"| data format | {cfg.data.format}"
             f"{' (conversations: the chat template is included)' if cfg.data.format == 'chat' else ''} |",
             "", "## Training data", "", *data_lines(cfg), ""]
    if summary:
        seen = summary.get("tokens")
        lines += [f"{amount(seen)} training tokens seen" if isinstance(seen, (int, float)) else "", ""]
        lines += ["## Training", "", "| | |", "|---|---|"]
        for label, key, fmt in (("steps", "steps", "{:,}"), ("epochs", "epochs", "{:.2f}"),
                                ("wall time", "wall_time_s", "{:,.0f} s"), ("device", "device", "{}"),
                                ("precision", "precision", "{}"), ("stopped by", "stop_reason", "{}")):
            if summary.get(key) is not None:
                lines.append(f"| {label} | {fmt.format(summary[key])} |")
        lines += ["", "## Validation", "", "| | |", "|---|---|"]
        best = summary.get("best_val_loss")
        if isinstance(best, (int, float)) and math.isfinite(best):
            lines += [f"| loss | {best:.4f} nats/token |", f"| perplexity | {math.exp(best):.2f} |"]
        for key, label in (("best_val_bits_per_char", "bits per character"),
                           ("best_val_bits_per_byte", "bits per byte")):
            if isinstance(summary.get(key), (int, float)):
                lines.append(f"| {label} | {summary[key]:.4f} |")
        lines.append("")
    else:
        lines += ["No training summary was found beside the checkpoint (summary.json), so the training time "
                  "and validation figures are not given here.", ""]
    lines += ["## Reproduce", "", "```bash", train_command(cfg), "```", "", "## Use", "", usage.strip(), ""]
    return "\n".join(line for line in lines if line is not None) + "\n"

