"""Helpers for the integration tests: tiny-model flags and in-process / subprocess drivers
for the `fundamentallm` command. (A uniquely named module, not conftest, so that test files
can import it without clashing with tests/unit/conftest.py.)

Most tests call `fundamentallm.cli.main(argv)` in-process (fast: torch is imported once);
only tests that need a real process (exit status, stderr, signals) spawn one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from fundamentallm.checkpoint import save_checkpoint
from fundamentallm.cli import main
from fundamentallm.config import Config, ModelConfig
from fundamentallm.model import GPT
from fundamentallm.tokenizers import build_tokenizer
from helpers import (  # noqa: F401  (re-exported for the test modules)
    ROOT, SAMPLE, TINY_SHAPE, assert_one_line_error, assert_same_weights, fundamentallm_command, load_pt,
    process_env, same_weights, sample_text, sharpen,
)

# The tiny model and run every test starts from; override with tiny_args(name=value),
# remove a flag with tiny_args(name=None).
TINY: dict[str, Any] = {
    **TINY_SHAPE,
    "batch_size": 4,
    "max_steps": 5,
    "eval_interval": 5,
    "eval_iters": 2,
    "device": "cpu",
    "compile": False,  # compiling costs seconds per new shape; test_compile covers it
    # auto would train in bf16 on a CPU with native bf16 (in subprocesses too, which the
    # conftest's cpu_without_native_bf16 cannot reach): expected losses are fp32's
    "precision": "fp32",
}


def tiny_args(**overrides: Any) -> list[str]:
    """Flags for a tiny run: TINY updated by `overrides` (None drops a flag, True is a bare
    flag, False its --no- form)."""
    values = {**TINY, **overrides}
    argv: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    return argv


def run_cli(*argv: str | Path) -> int:
    """`fundamentallm ARGV` in this process; returns the exit status."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors, --version, --help
        return int(exc.code or 0)


def train(data: Path | list[Path], out: Path, *extra: str, expect: int = 0, quiet: bool = True,
          **overrides: Any) -> Path:
    """Run a tiny training in-process into `out`; assert its exit status; return `out`."""
    data = [data] if isinstance(data, Path) else data
    mode = ["--quiet"] if quiet and "--json" not in extra else []
    rc = run_cli("train", *data, "-o", out, *tiny_args(**overrides), *mode, *extra)
    assert rc == expect, f"train exited {rc}, expected {expect}"
    return out


def metrics(out: Path) -> list[dict[str, Any]]:
    records = json.loads((out / "metrics.json").read_text())
    assert isinstance(records, list)
    return records


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in metrics(out)}


def run_process(*argv: str | Path, timeout: float = 120, cwd: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    """`python -m fundamentallm ARGV` in a real process."""
    return subprocess.run(fundamentallm_command(*argv), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=process_env())


def exportable_checkpoint(directory: Path, text: str, kind: str, **model: Any) -> Path:
    """directory/model.pt: a tiny model of `kind`'s tokenizer (BPE: 300 tokens) on `text`,
    TINY_SHAPE updated by `model`, with sharpened matrices and norm gains away from one, so
    that an export which lost or misplaced any tensor would compute something else."""
    tokenizer = build_tokenizer(kind, text, 300 if kind == "bpe" else None)
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=tokenizer.vocab_size, **{**TINY_SHAPE, **model})
    cfg.data.tokenizer = kind
    torch.manual_seed(0)
    network = sharpen(GPT(cfg.model), 0.3)
    with torch.no_grad():
        for p in network.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    save_checkpoint(directory / "model.pt", cfg, tokenizer, network)
    return directory / "model.pt"
