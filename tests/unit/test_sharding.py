"""FSDP's layout in one process (a one-rank gloo group): checkpoints in the plain form, the
optimizer state's two spellings, what each process holds, and what
--fsdp-reshard-after-forward does between a block's forward and its backward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist

from fundamentallm.config import OptimConfig
from fundamentallm.model import GPT
from fundamentallm.training.optim import build_optimizer
from fundamentallm.training.sharding import Replicated, Sharded, by_index, by_name, held_bytes


@pytest.fixture
def one_rank_group():
    store = dist.HashStore()
    dist.init_process_group("gloo", rank=0, world_size=1, store=store)
    yield
    dist.destroy_process_group()


def trained_step(model, optimizer, cfg):
    x = torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(0))
    model(x, x).backward()
    optimizer.step()


@pytest.mark.parametrize("reshard", [True, False])
def test_reshard_after_forward_decides_whether_blocks_stay_gathered(one_rank_group, tiny_model_config, reshard):
    from torch.distributed.tensor import DTensor

    model = GPT(tiny_model_config)
    Sharded(model, None, reshard_after_forward=reshard)
    x = torch.randint(0, tiny_model_config.vocab_size, (2, 8))
    loss = model(x, x)  # between this forward and its backward:
    weight = model.blocks[0].attn.qkv.weight
    assert isinstance(weight, DTensor) == reshard  # resharded: only the shard; kept: the whole tensor
    loss.backward()
    assert isinstance(model.blocks[0].attn.qkv.weight, DTensor)  # after the backward, sharded either way


def test_sharded_checkpoints_are_the_plain_form(one_rank_group, tiny_model_config):
    torch.manual_seed(0)
    plain = GPT(tiny_model_config)
    torch.manual_seed(0)
    sharded = GPT(tiny_model_config)
    layout = Sharded(sharded, None, True)
    cfg = OptimConfig()
    opt_plain, opt_sharded = build_optimizer(plain, cfg, torch.device("cpu")), build_optimizer(sharded, cfg, torch.device("cpu"))
    trained_step(plain, opt_plain, tiny_model_config)
    trained_step(sharded, opt_sharded, tiny_model_config)
    model_state, optim_state = layout.model_state(sharded), layout.optimizer_state(sharded, opt_sharded)
    assert model_state.keys() == plain.state_dict().keys()
    assert all(torch.allclose(model_state[k], v, atol=1e-6) for k, v in plain.state_dict().items())
    expected = opt_plain.state_dict()
    assert optim_state["state"].keys() == expected["state"].keys()
    assert [g["params"] for g in optim_state["param_groups"]] == [g["params"] for g in expected["param_groups"]]
    # ... and a plain state loads into a sharded model: the layouts are interchangeable
    fresh = GPT(dataclasses.replace(tiny_model_config))
    fresh_layout = Sharded(fresh, None, True)
    fresh_opt = build_optimizer(fresh, cfg, torch.device("cpu"))
    fresh_layout.load(fresh, fresh_opt, plain.state_dict(), expected)
    assert all(torch.allclose(fresh_layout.model_state(fresh)[k], v, atol=1e-6) for k, v in plain.state_dict().items())


def test_optimizer_state_spellings_round_trip(tiny_model_config):
    model = GPT(tiny_model_config)
    optimizer = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    trained_step(model, optimizer, tiny_model_config)
    state = optimizer.state_dict()
    named = by_name(state, model, optimizer)
    assert all(isinstance(k, str) for k in named["state"])
    back = by_index(named)
    assert back["state"].keys() == state["state"].keys()
    assert [g["params"] for g in back["param_groups"]] == [g["params"] for g in state["param_groups"]]


def test_held_bytes_counts_parameters_gradients_and_optimizer_state(tiny_model_config):
    model = GPT(tiny_model_config)
    optimizer = torch.optim.AdamW(model.parameters())
    params = sum(p.numel() * 4 for p in model.parameters())
    assert held_bytes(model, optimizer) == params
    trained_step(model, optimizer, tiny_model_config)
    # + a gradient per parameter, + AdamW's two moments (and a step counter each)
    counters = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    assert held_bytes(model, optimizer) == 4 * params + counters
    assert Replicated().name == "replicated"
