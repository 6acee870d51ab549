"""Shared fixtures for the unit tests: one tiny model shape that runs in milliseconds on CPU."""

from __future__ import annotations

import pytest
import torch

from fundamentallm.config import Config, ModelConfig
from fundamentallm.model import GPT

TINY_VOCAB = 30


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine the thread pool's
    spin-waiting can make a 30-token generation 100x slower. Restored after each test, so
    other suites run in the same session keep their threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return ModelConfig(vocab_size=TINY_VOCAB, model_dim=32, num_layers=2, num_heads=4,
                       context_length=16, dropout=0.0)


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
