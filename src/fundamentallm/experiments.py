"""Comparing training runs side by side, from the files the trainer leaves in each run directory.

A run directory holds `summary.json` (written when training ends), `metrics.json` (written
as it goes) and `config.yaml`. A run that was interrupted has no summary, so its figures
are rebuilt from the metrics; a run whose JSON is unreadable is skipped with a warning
rather than spoiling the comparison of all the others.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from fundamentallm.errors import UserError

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
DEFAULT_SORT = "best_val_loss"


@dataclass(frozen=True)
class RunResult:
    """One run's headline figures; None wherever the run's files do not say."""

    run: str  # path relative to the directory searched
    source: str  # SUMMARY_FILE, or METRICS_FILE for a run that never finished
    best_val_loss: float | None = None  # nats per token: compare within one tokenizer
    best_val_bits_per_char: float | None = None  # compares across tokenizers
    final_val_loss: float | None = None
    final_train_loss: float | None = None
    steps: int | None = None
    epochs: float | None = None
    tokens: int | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None
    parameters: int | None = None
    learning_rate: float | None = None
    model_dim: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    context_length: int | None = None
    batch_size: int | None = None
    stop_reason: str | None = None
    tokenizer: str | None = None
    device: str | None = None
    precision: str | None = None


_TEXT_FIELDS = ("source", "stop_reason", "tokenizer", "device", "precision")
SORT_KEYS = tuple(f.name for f in fields(RunResult) if f.name not in _TEXT_FIELDS)


@dataclass(frozen=True)
class Comparison:
    """The runs that could be read, and one warning for each that could not."""

    runs: list[RunResult]
    warnings: list[str]


class RunFileError(ValueError):
    """A run's file exists but cannot be used; the run is skipped, not the comparison."""


def compare_runs(root: str | Path, sort: str = DEFAULT_SORT) -> Comparison:
    """Read every run below `root`, sorted by `sort` ascending with missing values last."""
    if sort not in SORT_KEYS:
        raise UserError(f"cannot sort by {sort!r}; choose one of {', '.join(SORT_KEYS)}")
    root = Path(root)
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise UserError(f"no runs found below {root}")
    runs, warnings = [], []
    for run_dir in run_dirs:
        try:
            runs.append(load_run(run_dir, root, warnings))
        except RunFileError as exc:
            warnings.append(f"skipping {run_dir}: {exc}")
    return Comparison(sort_runs(runs, sort), warnings)


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every directory at or below `root` that holds a summary or metrics file."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such directory")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # a stable order, whatever the file system returns
        if SUMMARY_FILE in filenames or METRICS_FILE in filenames:
            found.append(Path(dirpath))
    return found


def load_run(run_dir: Path, root: Path, warnings: list[str]) -> RunResult:
    """One run's figures; raises RunFileError for unreadable JSON, notes config trouble in `warnings`."""
    name = run_dir.relative_to(root).as_posix()
    if (run_dir / SUMMARY_FILE).exists():
        figures = _from_summary(_read_json(run_dir / SUMMARY_FILE))
        source = SUMMARY_FILE
    else:
        figures = _from_metrics(_read_json(run_dir / METRICS_FILE))
        source = METRICS_FILE
    try:
        figures.update(_from_config(run_dir / CONFIG_FILE))
    except RunFileError as exc:
        warnings.append(f"{run_dir}: ignoring config ({exc})")
    return RunResult(run=name, source=source, **figures)


def sort_runs(runs: list[RunResult], key: str = DEFAULT_SORT) -> list[RunResult]:
    """Runs in ascending order of `key`; those without a value go last, ties by name."""

    def order(run: RunResult) -> tuple[bool, Any, str]:
        value = getattr(run, key)
        return (value is None, value if value is not None else 0, run.run)

    return sorted(runs, key=order)


def runs_table(runs: list[RunResult]) -> Table:
    """The comparison as a rich table, one row per run in the order given."""
    table = Table(title=f"{len(runs)} run(s)")
    headers = ["run", "tokenizer", "best val loss", "val bits/char", "final train loss", "steps", "params",
               "learning rate", "model dim", "layers", "wall time", "tokens/s"]  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header == "run" else "right")
    for run in runs:
        marker = " *" if run.source == METRICS_FILE else ""
        table.add_row(
            run.run + marker,
            _show(run.tokenizer, "{}"),
            _show(run.best_val_loss, "{:.4f}"),
            _show(run.best_val_bits_per_char, "{:.4f}"),
            _show(run.final_train_loss, "{:.4f}"),
            _show(run.steps, "{:,}"),
            _count(run.parameters),
            _show(run.learning_rate, "{:g}"),
            _show(run.model_dim, "{}"),
            _show(run.num_layers, "{}"),
            _duration(run.wall_time_s),
            _show(run.tokens_per_s, "{:,.0f}"),
        )
    if any(run.source == METRICS_FILE for run in runs):
        table.caption = f"* no {SUMMARY_FILE} (interrupted?): figures rebuilt from {METRICS_FILE}"
    return table


def runs_as_json(runs: list[RunResult]) -> list[dict[str, Any]]:
    """Plain data for `--json`."""
    return [asdict(run) for run in runs]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"{path.name} is not readable JSON ({exc})") from None


def _from_summary(summary: Any) -> dict[str, Any]:
    if not isinstance(summary, dict):
        raise RunFileError(f"{SUMMARY_FILE} is not a JSON object")
    floats = ("best_val_loss", "best_val_bits_per_char", "final_val_loss", "final_train_loss", "epochs",
              "wall_time_s", "tokens_per_s")
    figures: dict[str, Any] = {key: _float(summary.get(key)) for key in floats}
    figures.update({key: _int(summary.get(key)) for key in ("steps", "tokens", "parameters")})
    figures.update({key: _str(summary.get(key)) for key in ("stop_reason", "tokenizer", "device", "precision")})
    return figures


def _from_metrics(records: Any) -> dict[str, Any]:
    """Rebuild a summary from the metrics log: best is the lowest val loss ever logged."""
    if not isinstance(records, list):
        raise RunFileError(f"{METRICS_FILE} is not a JSON list")
    records = [r for r in records if isinstance(r, dict)]
    val_losses = [v for r in records if (v := _float(r.get("val_loss"))) is not None]
    val_bits = [v for r in records if (v := _float(r.get("val_bits_per_char"))) is not None]
    train_losses = [v for r in records if (v := _float(r.get("train_loss"))) is not None]
    last = records[-1] if records else {}
    return {
        "best_val_loss": min(val_losses) if val_losses else None,
        "best_val_bits_per_char": min(val_bits) if val_bits else None,
        "final_val_loss": val_losses[-1] if val_losses else None,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "steps": _int(last.get("step")),
        "epochs": _float(last.get("epoch")),
        "tokens": _int(last.get("tokens")),
    }


def _from_config(path: Path) -> dict[str, Any]:
    """Hyperparameters worth comparing, from the config's model/optim/training sections."""
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunFileError(f"{path.name} is not readable YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise RunFileError(f"{path.name} is not a mapping")

    def section(name: str) -> dict[str, Any]:
        value = config.get(name)
        return value if isinstance(value, dict) else {}

    model, optim, training = section("model"), section("optim"), section("training")
    return {
        "learning_rate": _float(optim.get("learning_rate")),
        "model_dim": _int(model.get("model_dim")),
        "num_layers": _int(model.get("num_layers")),
        "num_heads": _int(model.get("num_heads")),
        "context_length": _int(model.get("context_length")),
        "batch_size": _int(training.get("batch_size")),
    }


def _float(value: Any) -> float | None:
    """A finite number, or None: NaN/inf (a diverged run) must not win or break the sort."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _show(value: float | int | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def _count(value: int | None) -> str:
    """A parameter count the way people say it: 1.23M, 45.6K."""
    if value is None:
        return "-"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
