"""Helpers for the integration tests: tiny-model flags and in-process / subprocess drivers
for the `fundamentallm` command. (A uniquely named module, not conftest, so that test files
can import it without clashing with tests/unit/conftest.py.)

Most tests call `fundamentallm.cli.main(argv)` in-process (fast: torch is imported once);
only tests that need a real process (exit status, stderr, signals) spawn one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fundamentallm.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "shakespeare_sample.txt"

# The tiny model and run every test starts from; override with tiny_args(name=value),
# remove a flag with tiny_args(name=None).
TINY: dict[str, Any] = {
    "model_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "context_length": 16,
    "batch_size": 4,
    "max_steps": 5,
    "eval_interval": 5,
    "eval_iters": 2,
    "device": "cpu",
    "compile": False,  # compiling costs seconds per new shape; test_compile covers it
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


def sample_text(chars: int = 20_000) -> str:
    return SAMPLE.read_text(encoding="utf-8")[:chars]


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


def load_pt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def run_process(*argv: str | Path, timeout: float = 120, cwd: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    """`python -m fundamentallm ARGV` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "fundamentallm", *map(str, argv)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=process_env(),
    )


def process_env() -> dict[str, str]:
    # The package is installed editable, but do not depend on it: put src/ first on the path.
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit status 2 and exactly one `error: ...` line on stderr, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and lines[0][len("error:"):].strip(), result.stderr
    return lines[0]
