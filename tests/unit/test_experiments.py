"""Comparing runs: discovery, the metrics.json fallback, sorting, and skipping broken runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from fundamentallm.errors import UserError
from fundamentallm.experiments import compare_runs, find_run_dirs, runs_as_json, runs_table, sort_runs


def summary(best: float | None, **overrides) -> dict:
    data = {"best_val_loss": best, "final_val_loss": best, "final_train_loss": 1.5, "steps": 100,
            "epochs": 2.0, "tokens": 50_000, "wall_time_s": 75.0, "tokens_per_s": 666.7,
            "parameters": 1_234_567, "stop_reason": "epochs", "device": "cpu", "precision": "fp32"}  # fmt: skip
    data.update(overrides)
    return data


def write_run(directory: Path, summary_data=None, metrics=None, config=None) -> Path:
    directory.mkdir(parents=True)
    if summary_data is not None:
        (directory / "summary.json").write_text(json.dumps(summary_data), encoding="utf-8")
    if metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    if config is not None:
        (directory / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return directory


CONFIG = {"model": {"model_dim": 128, "num_layers": 4, "num_heads": 4, "context_length": 64, "dropout": 0.0},
          "optim": {"learning_rate": 0.001}, "training": {"batch_size": 32, "epochs": 10}}  # fmt: skip
METRICS = [
    {"step": 10, "train_loss": 2.5, "lr": 0.001, "epoch": 0.5, "tokens": 1000},
    {"step": 20, "train_loss": 2.1, "lr": 0.001, "val_loss": 2.2, "epoch": 1.0, "tokens": 2000},
    {"step": 30, "train_loss": 1.9, "lr": 0.001, "val_loss": 1.8, "epoch": 1.5, "tokens": 3000},
    {"step": 40, "train_loss": 1.7, "lr": 0.001, "val_loss": 1.95, "epoch": 2.0, "tokens": 4000},
]


def test_runs_sorted_by_best_val_loss_with_missing_last(tmp_path):
    write_run(tmp_path / "b", summary(2.0))
    write_run(tmp_path / "a", summary(None))
    write_run(tmp_path / "group" / "c", summary(1.0), config=CONFIG)
    write_run(tmp_path / "d", summary(1.5))
    comparison = compare_runs(tmp_path)
    assert [r.run for r in comparison.runs] == ["group/c", "d", "b", "a"]
    assert comparison.warnings == []
    best = comparison.runs[0]
    assert (best.learning_rate, best.model_dim, best.num_layers, best.batch_size) == (0.001, 128, 4, 32)
    assert (best.steps, best.parameters, best.source) == (100, 1_234_567, "summary.json")


def test_sort_by_another_key_and_reject_unknown_keys(tmp_path):
    write_run(tmp_path / "slow", summary(1.0, tokens_per_s=10.0))
    write_run(tmp_path / "fast", summary(2.0, tokens_per_s=5.0))
    assert [r.run for r in compare_runs(tmp_path, sort="tokens_per_s").runs] == ["fast", "slow"]
    assert [r.run for r in compare_runs(tmp_path, sort="run").runs] == ["fast", "slow"]
    with pytest.raises(UserError, match="cannot sort by 'speed'"):
        compare_runs(tmp_path, sort="speed")


def test_interrupted_run_falls_back_to_metrics(tmp_path):
    write_run(tmp_path / "interrupted", metrics=METRICS, config=CONFIG)
    (run,) = compare_runs(tmp_path).runs
    assert run.source == "metrics.json"
    assert run.best_val_loss == 1.8
    assert run.final_val_loss == 1.95
    assert run.final_train_loss == 1.7
    assert (run.steps, run.epochs, run.tokens) == (40, 2.0, 4000)
    assert run.wall_time_s is None and run.parameters is None
    assert run.model_dim == 128


def test_summary_wins_over_metrics(tmp_path):
    write_run(tmp_path / "done", summary(1.2, steps=7), metrics=METRICS)
    (run,) = compare_runs(tmp_path).runs
    assert (run.best_val_loss, run.steps, run.source) == (1.2, 7, "summary.json")


def test_corrupt_json_skips_only_that_run(tmp_path):
    write_run(tmp_path / "good", summary(1.0))
    broken = write_run(tmp_path / "broken")
    (broken / "summary.json").write_text("{not json", encoding="utf-8")
    wrong_shape = write_run(tmp_path / "wrong")
    (wrong_shape / "metrics.json").write_text('{"step": 1}', encoding="utf-8")
    comparison = compare_runs(tmp_path)
    assert [r.run for r in comparison.runs] == ["good"]
    assert len(comparison.warnings) == 2
    assert "broken" in comparison.warnings[0] and "summary.json" in comparison.warnings[0]
    assert "not a JSON list" in comparison.warnings[1]


def test_corrupt_config_keeps_the_run_without_hyperparameters(tmp_path):
    run_dir = write_run(tmp_path / "r", summary(1.0))
    (run_dir / "config.yaml").write_text("model: [unclosed", encoding="utf-8")
    comparison = compare_runs(tmp_path)
    assert comparison.runs[0].model_dim is None
    assert "config" in comparison.warnings[0]


def test_nan_loss_counts_as_missing(tmp_path):
    write_run(tmp_path / "diverged", summary(float("nan")))
    write_run(tmp_path / "fine", summary(3.0))
    runs = compare_runs(tmp_path).runs
    assert [r.run for r in runs] == ["fine", "diverged"]
    assert runs[1].best_val_loss is None
    assert json.loads(json.dumps(runs_as_json(runs)))[1]["best_val_loss"] is None


def test_the_directory_itself_can_be_a_run(tmp_path):
    write_run(tmp_path / "only", summary(1.0))
    assert [r.run for r in compare_runs(tmp_path / "only").runs] == ["."]


def test_no_runs_and_bad_directories_are_user_errors(tmp_path):
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    with pytest.raises(UserError, match="no runs found below"):
        compare_runs(tmp_path / "empty")
    with pytest.raises(UserError, match="no such directory"):
        find_run_dirs(tmp_path / "missing")


def test_table_shows_formatted_figures(tmp_path):
    write_run(tmp_path / "done", summary(1.23456, wall_time_s=125.0), config=CONFIG)
    write_run(tmp_path / "cut", metrics=METRICS)
    table = runs_table(sort_runs(compare_runs(tmp_path).runs))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    text = console.export_text()
    for expected in ("done", "cut *", "1.2346", "1.23M", "0.001", "2m 05s", "667", "1.8000"):
        assert expected in text


def test_runs_with_different_tokenizers_compare_by_bits_per_char(tmp_path):
    """BPE's loss per token is higher (a token holds more text) though per character it is
    better: the table shows both, and sorting by bits/char puts the better model first."""
    write_run(tmp_path / "char", summary(1.50, tokenizer="char", best_val_bits_per_char=2.164))
    write_run(tmp_path / "bpe", summary(3.20, tokenizer="bpe", best_val_bits_per_char=1.923))
    write_run(tmp_path / "crashed", metrics=[{"step": 5, "train_loss": 3.0, "val_loss": 3.1,
                                              "val_bits_per_char": 2.5}, {"step": 9, "val_loss": 2.9,
                                                                          "val_bits_per_char": 2.3}])
    runs = compare_runs(tmp_path, sort="best_val_bits_per_char").runs
    assert [r.run for r in runs] == ["bpe", "char", "crashed"]
    assert [r.tokenizer for r in runs] == ["bpe", "char", None]
    assert runs[2].best_val_bits_per_char == 2.3
    console = Console(file=io.StringIO(), width=250)
    console.print(runs_table(runs))
    text = console.file.getvalue()
    assert "val bits/char" in text and "1.9230" in text and "bpe" in text
