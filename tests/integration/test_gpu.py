"""GPU runs: CUDA training with mixed precision and fused AdamW. Skipped without a GPU (CI)."""

from __future__ import annotations

import json

import pytest
import torch

from integration_helpers import run_cli, tiny_args

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_mixed_precision_run_trains_and_evaluates(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    args = tiny_args(device="cuda", max_steps=20)
    assert run_cli("train", text_file, "-o", out, *args, "--mixed-precision", "--quiet") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].startswith("cuda")
    assert summary["precision"] in ("bf16", "fp16")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    capsys.readouterr()
    assert run_cli("evaluate", out / "final.pt", "--data", text_file, "--device", "cuda", "--json") == 0
    score = json.loads(capsys.readouterr().out)
    assert 0 < score["loss"] < metrics[0]["train_loss"]  # learned something, scored on the GPU
