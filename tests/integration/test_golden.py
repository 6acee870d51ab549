"""Golden losses: the first 8 training losses of a fixed tiny run, pinned.

Any change to initialisation, data order, the model, the loss or the optimizer moves these
numbers. If the change is intended, regenerate the file and review its diff:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_golden.py

The tolerance (relative 1e-4) absorbs the small differences of CPU kernels between
machines and thread counts; a real change to training moves the losses far more.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from integration_helpers import ROOT, losses, sample_text, tiny_args, train

GOLDEN = ROOT / "tests" / "assets" / "golden_losses.json"
STEPS = 8
RECIPE = tiny_args(max_steps=STEPS, seed=1234, learning_rate=0.002, log_interval=1, lr_schedule="constant",
                   warmup_steps=0, dropout=0.0, val_split=0, eval_interval=1000)


def test_first_losses_match_golden(tmp_path):
    data = tmp_path / "golden.txt"
    data.write_text(sample_text(5_000), encoding="utf-8")
    out = train(data, tmp_path / "run", *RECIPE)
    got = losses(out)
    assert sorted(got) == list(range(1, STEPS + 1))

    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "about": "train_loss of steps 1-8 of tests/integration/test_golden.py's run; "
                     "regenerate with UPDATE_GOLDEN=1",
            "args": RECIPE,
            "data": "first 5,000 characters of data/shakespeare_sample.txt",
            "torch": torch.__version__,
            "train_loss": {str(step): loss for step, loss in sorted(got.items())},
        }, indent=2) + "\n")
        pytest.skip(f"regenerated {GOLDEN.relative_to(ROOT)}")

    assert GOLDEN.exists(), "no golden file: run with UPDATE_GOLDEN=1 to create it"
    golden = json.loads(GOLDEN.read_text())
    assert golden["args"] == RECIPE, "the recipe changed: regenerate with UPDATE_GOLDEN=1"
    expected = {int(step): loss for step, loss in golden["train_loss"].items()}
    assert sorted(expected) == list(range(1, STEPS + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), (
            f"step {step}: {got[step]!r} != golden {expected[step]!r}")
    # the run learns: the golden numbers are not a flat line
    assert expected[STEPS] < expected[1]
