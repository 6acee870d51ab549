"""The memory a run needs, estimated from its settings before anything is allocated (training/memory.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fundamentallm.config import Config
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.training import memory
from fundamentallm.training.memory import check_fits, estimate, parameters


@pytest.mark.parametrize("changes", [{}, {"tie_embeddings": False}, {"position": "learned"}, {"num_kv_heads": 2},
                                     {"activation": "gelu", "num_layers": 5}])
def test_the_parameters_are_counted_without_building_the_model(tiny_model_config, changes):
    model = dataclasses.replace(tiny_model_config, **changes)
    total, blocks = parameters(model)
    built = GPT(model)
    assert total == built.num_parameters()
    assert blocks == sum(p.numel() for p in built.blocks.parameters())
    bound, block_bound = memory.parameter_bound(model)  # what a run that fits is checked with: never less
    assert bound >= total and block_bound >= blocks


def test_the_estimate_grows_with_what_the_run_holds(tiny_config):
    base = estimate(tiny_config, 100)
    bigger_batch = dataclasses.replace(tiny_config, training=dataclasses.replace(tiny_config.training, batch_size=32))
    assert estimate(bigger_batch, 100).state_bytes == base.state_bytes
    assert estimate(bigger_batch, 100).activation_bytes > base.activation_bytes
    adamw = dataclasses.replace(tiny_config, optim=dataclasses.replace(tiny_config.optim, optimizer="adamw"))
    assert estimate(adamw, 100).state_bytes == 16 * base.parameters  # weights, gradients, two moments
    assert base.state_bytes < estimate(adamw, 100).state_bytes  # Muon keeps one moment for the block matrices
    checkpointed = dataclasses.replace(tiny_config, training=dataclasses.replace(
        tiny_config.training, activation_checkpointing=True))
    assert estimate(checkpointed, 100).activation_bytes < base.activation_bytes


def test_a_run_that_cannot_fit_is_one_line_with_the_estimate_and_the_limit(monkeypatch):
    cfg = Config()
    assert check_fits(cfg, torch.device("cpu")).total < 1e9  # the defaults fit anywhere
    monkeypatch.setattr(memory, "device_memory", lambda device: 10_000_000)
    with pytest.raises(UserError) as error:
        check_fits(cfg, torch.device("cpu"))
    message = str(error.value)
    assert "\n" not in message and "this run needs at least" in message and "cpu has 10.0 MB" in message, message
    assert f"{estimate(cfg, 256).parameters:,} parameters" in message
    assert "--batch-size 16 x --context-length 128" in message
    # several processes on one machine share its memory; FSDP shards the state over them
    monkeypatch.setattr(memory, "device_memory", lambda device: int(estimate(cfg, 256).total * 1.5))
    check_fits(cfg, torch.device("cpu"), processes=1)
    with pytest.raises(UserError, match="in each of 2 processes"):
        check_fits(cfg, torch.device("cpu"), processes=2)
