"""--compile: the compiled training step computes the same losses as the eager one."""

from __future__ import annotations

import pytest
import torch

from fundamentallm.training.compilation import resolve_compile
from integration_helpers import losses, train

RECIPE = dict(max_steps=4, log_interval=1, val_split=0, warmup_steps=0, lr_schedule="constant")


@pytest.mark.skipif(not resolve_compile(True, torch.device("cpu")).enabled,
                    reason="torch.compile needs a C++ compiler on this machine")
def test_compiled_and_eager_training_give_the_same_losses(tmp_path, text_file):
    eager = losses(train(text_file, tmp_path / "eager", compile=False, **RECIPE))
    compiled = losses(train(text_file, tmp_path / "compiled", compile=True, **RECIPE))
    assert sorted(compiled) == [1, 2, 3, 4]
    for step in eager:
        # Fused kernels round differently; four steps stay within a few parts in 10^4.
        assert compiled[step] == pytest.approx(eager[step], rel=1e-3), step
    assert compiled[4] < compiled[1]


def test_compile_falls_back_to_eager_without_a_compiler(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    choice = resolve_compile(True, torch.device("cpu"))
    assert not choice.enabled and "no C++ compiler" in choice.note
    model = torch.nn.Linear(2, 2)
    assert choice.wrap(model) is model
    assert resolve_compile(False, torch.device("cpu")).note == "off"
