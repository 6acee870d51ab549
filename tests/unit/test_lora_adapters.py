"""LoRA adapters (model/lora.py): where they go, what trains, and merging."""

from __future__ import annotations

import torch

from fundamentallm.config import ModelConfig
from fundamentallm.config.schema import OptimConfig
from fundamentallm.model import GPT
from fundamentallm.model.lora import LoRALinear, add_adapters, is_adapter, merge_lora
from fundamentallm.training.optim import build_optimizer


def adapted(targets=("qkv", "proj", "up", "down"), **model) -> tuple[GPT, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    gpt = GPT(ModelConfig(vocab_size=40, model_dim=32, num_layers=2, num_heads=2, context_length=16,
                          zero_init=False, **model))
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    add_adapters(gpt, 4, 8.0, targets)
    return gpt, before


def test_adapters_start_as_the_base_and_keep_its_weight_names():
    gpt, before = adapted()
    ids = torch.randint(0, 40, (2, 16))
    base = GPT(gpt.cfg)
    base.load_state_dict(before)
    assert torch.equal(gpt(ids), base(ids))  # B starts at zero
    names = set(gpt.state_dict())
    assert set(before) <= names  # every base weight under its own name
    assert {n for n in names - set(before)} == {n for n in names if is_adapter(n)}
    assert sum(isinstance(m, LoRALinear) for m in gpt.modules()) == 2 * 4  # qkv, proj, gate_up, down per block
    trained = [n for n, p in gpt.named_parameters() if p.requires_grad]
    assert trained and all(is_adapter(n) for n in trained)


def test_targets_choose_the_layers_and_the_mlp_input_covers_gelu_and_swiglu():
    gpt, _ = adapted(("up",), activation="gelu")
    assert [n for n, m in gpt.named_modules() if isinstance(m, LoRALinear)] == ["blocks.0.mlp.up", "blocks.1.mlp.up"]
    gpt, _ = adapted(("up", "qkv"))
    assert sorted(n.split(".", 2)[2] for n, m in gpt.named_modules() if isinstance(m, LoRALinear)) == \
        ["attn.qkv", "attn.qkv", "mlp.gate_up", "mlp.gate_up"]


def test_merged_model_computes_the_adapted_one_with_plain_layers():
    gpt, _ = adapted()
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(std=0.1)  # a trained adapter: the update is no longer zero
    ids = torch.randint(0, 40, (2, 16))
    expected = gpt(ids)
    merged = merge_lora(gpt)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert not any(is_adapter(n) for n in merged.state_dict())
    assert torch.allclose(merged(ids), expected, atol=1e-5)


def test_adapters_train_with_adamw_without_decay_under_muon():
    gpt, _ = adapted()
    optimizer = build_optimizer(gpt, OptimConfig(optimizer="muon"), torch.device("cpu"))
    groups = optimizer.param_groups
    adapters = {id(p) for n, p in gpt.named_parameters() if is_adapter(n)}
    assert {id(p) for g in groups for p in g["params"]} == adapters
    assert all(not g["muon"] and g["weight_decay"] == 0.0 for g in groups)
