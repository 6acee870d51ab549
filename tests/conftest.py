"""Fixtures shared by the whole suite (unit and integration): one CPU thread, the tiny
model shape, and the tiny training text. Helpers to import live in helpers.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fundamentallm.config import Config, ModelConfig
from fundamentallm.model import GPT
from fundamentallm.training import precision
from helpers import TINY_SHAPE, sample_text, sharpen

TINY_VOCAB = 30


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Tiny models train several times faster on one thread than on many (no fork/join per
    op), and on a busy machine the thread pool's spin-waiting can make a 30-token generation
    100x slower. Restored after each test, so every test starts from the same setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def cpu_without_native_bf16(monkeypatch):
    """`--precision auto`, the default, trains in bf16 on a CPU with native bf16 and in fp32
    elsewhere, so its losses depend on the machine. The suite's expected losses are fp32's:
    every test sees a CPU without native bf16 unless it declares another (the precision tests)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return ModelConfig(vocab_size=TINY_VOCAB, dropout=0.0, **TINY_SHAPE)


@pytest.fixture
def tiny_config(tiny_model_config: ModelConfig) -> Config:
    cfg = Config()
    cfg.model = tiny_model_config
    return cfg


@pytest.fixture
def tiny_model(tiny_model_config: ModelConfig) -> GPT:
    """A freshly initialised tiny GPT (seeded, so every test sees the same weights), in eval mode."""
    torch.manual_seed(0)
    return GPT(tiny_model_config).eval()


@pytest.fixture
def sharp_model(tiny_model_config: ModelConfig) -> GPT:
    """A tiny GPT with large random weights, whose next token depends on the context. Its
    recipe is pinned (ReLU² MLPs and a tied head, as the defaults were when the tests that read
    its greedy text were written), so a change of default does not change which tokens it writes."""
    torch.manual_seed(1)
    return sharpen(GPT(dataclasses.replace(tiny_model_config, activation="relu2", tie_embeddings=True)).eval())


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """The first 20,000 characters of the bundled sample."""
    return sample_text(20_000)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_text: str) -> Path:
    """The tiny text as a file shared by a module's runs."""
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture
def text_file(tmp_path: Path, tiny_text: str) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path
