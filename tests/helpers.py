"""Helpers shared by the unit and the integration tests: the one tiny model shape, the
commands that start real processes, and the assertions several test files make.
(Fixtures live in tests/conftest.py; this module is what test files import.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "shakespeare_sample.txt"

# The one tiny model shape of the whole suite: a forward pass takes well under a millisecond.
TINY_SHAPE: dict[str, int] = {"model_dim": 32, "num_layers": 2, "num_heads": 2, "context_length": 16}


def sample_text(chars: int = 20_000) -> str:
    """The first `chars` characters of the bundled Shakespeare sample."""
    return SAMPLE.read_text(encoding="utf-8")[:chars]


def fundamentallm_command(*argv: str | Path) -> list[str]:
    """`python -m fundamentallm ARGV`, for subprocess.run or Popen (with `process_env()`)."""
    return [sys.executable, "-m", "fundamentallm", *map(str, argv)]


def script_command(script: str, *argv: str | Path) -> list[str]:
    """`python scripts/x.py ARGV` or `python benchmarks/x.py ARGV`, run from ROOT."""
    return [sys.executable, script, *map(str, argv)]


def process_env(**extra: str) -> dict[str, str]:
    # The package is installed editable, but do not depend on it: put src/ first on the path.
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def run_script(script: str, *argv: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(script_command(script, *argv), cwd=ROOT, env=process_env(), capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str = "") -> str:
    """Exit status 2 and exactly one `error: ...` line on stderr (holding `fragment`), no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and lines[0][len("error:"):].strip(), result.stderr
    assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def figures(score: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluate score without its timing (`seconds`), for comparing two scorings."""
    return {k: v for k, v in score.items() if k != "seconds"}


def load_pt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def weights(source: Path | torch.nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A checkpoint file's model weights, a module's state dict, or a state dict itself."""
    if isinstance(source, Path):
        return load_pt(source)["model"]
    return source.state_dict() if isinstance(source, torch.nn.Module) else source


def same_weights(a, b) -> bool:
    """Bit for bit the same tensors under the same names (files, modules or state dicts)."""
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def sharpen(model: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Large random matrices (in place). A freshly initialised model predicts its last input
    token (tied embeddings), so its greedy text is one token repeated and cannot tell the
    right context from a wrong one; a sharpened model's next token depends on the context."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    return model
