"""--compile: the compiled training step computes the same losses as the eager one."""

from __future__ import annotations

import os

import pytest
import torch

from fundamentallm.config import ModelConfig
from fundamentallm.model import GPT
from fundamentallm.training.compilation import resolve_compile
from fundamentallm.training.state import deterministic_kernels
from integration_helpers import losses, train

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it compiles (seconds per shape).
pytestmark = pytest.mark.slow

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


def embedding_gradient() -> torch.Tensor:
    """One compiled forward + backward of a freshly seeded model on a fixed batch."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, model_dim=32, num_layers=1, num_heads=2, context_length=32))
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randint(0, 65, (32, 32), generator=g) for _ in "xy")
    torch.compile(model)(x, y).backward()
    return model.embed.weight.grad


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()  # the integration tests run on one
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not resolve_compile(True, torch.device("cpu")).enabled,
                    reason="torch.compile needs a C++ compiler on this machine")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for threads to race")
def test_compiled_gradients_are_reproducible_in_training_mode(two_threads):
    """Same seed, same gradients, to the last bit. Compiled, the embedding's gradient is a
    scatter-add that Inductor parallelises with atomic adds, whose order (and so rounding)
    varies between runs, unless deterministic mode is on, as it is while training on a CPU.
    A batch of 32 x 32 tokens puts the same tokens in both threads' halves of the batch."""
    with deterministic_kernels(torch.device("cpu")):
        first, *others = (embedding_gradient() for _ in range(3))
    assert all(torch.equal(first, other) for other in others)
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


def test_compile_falls_back_to_eager_without_a_compiler(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    choice = resolve_compile(True, torch.device("cpu"))
    assert not choice.enabled and "no C++ compiler" in choice.note
    model = torch.nn.Linear(2, 2)
    assert choice.wrap(model) is model
    assert resolve_compile(False, torch.device("cpu")).note == "off"
