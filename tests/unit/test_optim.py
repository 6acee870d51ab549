"""Optimizer parameter groups: weight decay on linear-layer matrices only; the registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fundamentallm.config import OptimConfig
from fundamentallm.model import GPT
from fundamentallm.training.muon import Muon
from fundamentallm.training.optim import (
    EMBEDDING_LR_RATIO, build_optimizer, clip_gradients, depth, freeze, param_groups)


def names_by_group(model: torch.nn.Module, groups: list[dict]) -> list[set[str]]:
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [{name_of[id(p)] for p in g["params"]} for g in groups]


def test_decay_only_on_non_embedding_matrices(tiny_model):
    decay_group, no_decay_group = param_groups(tiny_model, 0.1)
    assert decay_group["weight_decay"] == 0.1
    assert no_decay_group["weight_decay"] == 0.0
    decay, no_decay = names_by_group(tiny_model, [decay_group, no_decay_group])

    assert {"embed.weight", "head.weight"} <= no_decay  # the vocabulary's two ends
    assert "norm.weight" in no_decay
    assert {"blocks.0.attn_norm.weight", "blocks.1.mlp_norm.weight"} <= no_decay
    assert {"blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
            "blocks.1.mlp.gate_up.weight", "blocks.1.mlp.down.weight"} <= decay
    params = dict(tiny_model.named_parameters())
    assert all(params[n].dim() >= 2 and not n.startswith(("embed.", "head.")) for n in decay)
    assert all(params[n].dim() < 2 or n.startswith(("embed.", "head.")) for n in no_decay)


def test_an_untied_head_trains_like_the_embedding_not_like_a_hidden_matrix(tiny_model_config):
    untied = GPT(dataclasses.replace(tiny_model_config, tie_embeddings=False))
    opt = build_optimizer(untied, OptimConfig(), torch.device("cpu"))
    name_of = {id(p): name for name, p in untied.named_parameters()}
    muon = {name_of[id(p)] for g in opt.param_groups if g["muon"] for p in g["params"]}
    assert "head.weight" not in muon and "embed.weight" not in muon
    assert "blocks.0.attn.qkv.weight" in muon
    head_group = next(g for g in opt.param_groups if any(p is untied.head.weight for p in g["params"]))
    assert head_group["weight_decay"] == 0.0


def test_every_trainable_parameter_appears_exactly_once(tiny_model):
    groups = param_groups(tiny_model, 0.1)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in tiny_model.parameters()}


def test_frozen_parameters_are_left_out(tiny_model):
    tiny_model.norm.weight.requires_grad_(False)
    grouped = {id(p) for g in param_groups(tiny_model, 0.1) for p in g["params"]}
    assert id(tiny_model.norm.weight) not in grouped
    assert len(grouped) == sum(1 for p in tiny_model.parameters() if p.requires_grad)


def test_build_optimizer_uses_the_config(tiny_model):
    cfg = OptimConfig(optimizer="adamw", learning_rate=3e-4, weight_decay=0.05, beta1=0.8, beta2=0.95)
    opt = build_optimizer(tiny_model, cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"]  # one kernel per step on CPU too
    # matrices (decayed), the untied input embedding at its own rate, the rest
    assert [(g["weight_decay"], g["lr"]) for g in opt.param_groups] == [
        (0.05, 3e-4), (0.0, pytest.approx(3e-4 * EMBEDDING_LR_RATIO)), (0.0, 3e-4)]
    assert all(g["betas"] == (0.8, 0.95) for g in opt.param_groups)


def test_muon_is_the_default_optimizer(tiny_model):
    opt = build_optimizer(tiny_model, OptimConfig(), torch.device("cpu"))
    assert isinstance(opt, Muon)
    assert [g["weight_decay"] for g in opt.param_groups] == [OptimConfig().weight_decay, 0.0, 0.0]


def test_an_untied_embedding_trains_at_its_own_rate(tiny_model, tiny_model_config):
    def scales(model, **cfg):
        groups = build_optimizer(model, OptimConfig(learning_rate=1e-3, **cfg), torch.device("cpu")).param_groups
        names = {id(p): name for name, p in model.named_parameters()}
        return {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}

    assert scales(tiny_model)["embed.weight"] == EMBEDDING_LR_RATIO
    assert scales(tiny_model)["head.weight"] == scales(tiny_model)["norm.weight"] == 1.0
    assert scales(tiny_model, embedding_lr=2e-3)["embed.weight"] == pytest.approx(2.0)  # --embedding-lr
    assert scales(tiny_model, optimizer="adamw")["embed.weight"] == EMBEDDING_LR_RATIO
    # Tied, the embedding is also the output head: one rate, and no group of its own.
    tied = GPT(dataclasses.replace(tiny_model_config, tie_embeddings=True))
    assert scales(tied)["embed.weight"] == 1.0
    assert len(param_groups(tied, 0.0, embedding_scale=EMBEDDING_LR_RATIO)) == 2
    assert len(param_groups(tiny_model, 0.0, embedding_scale=EMBEDDING_LR_RATIO)) == 3
    assert len(param_groups(tiny_model, 0.0)) == 2


def with_grads(model, scale: float, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * scale
    return [p.grad.clone() for p in model.parameters()]


def test_clip_gradients_scales_large_gradients_like_torch(tiny_model):
    params = list(tiny_model.parameters())
    before = with_grads(tiny_model, 1.0)
    norm = clip_gradients(params, 0.5)
    ours = [p.grad.clone() for p in params]
    with_grads(tiny_model, 1.0)
    reference = torch.nn.utils.clip_grad_norm_(params, 0.5)
    assert float(norm) == pytest.approx(float(reference)) and float(norm) > 0.5
    assert all(torch.allclose(a, b) for a, b in zip(ours, (p.grad for p in params)))
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in ours]))
    assert float(total) == pytest.approx(0.5, rel=1e-4)
    assert not torch.equal(ours[0], before[0])


def test_clip_gradients_leaves_small_gradients_untouched(tiny_model):
    params = list(tiny_model.parameters())
    before = with_grads(tiny_model, 1e-4)
    norm = clip_gradients(params, 1.0)
    assert 0 < float(norm) < 1.0
    assert all(torch.equal(a, p.grad) for a, p in zip(before, params))


def scales_by_name(model: torch.nn.Module, groups: list[dict]) -> dict[str, float]:
    name_of = {id(p): name for name, p in model.named_parameters()}
    return {name_of[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}


def test_depth_runs_from_the_embeddings_to_the_top():
    assert [depth(n, 2) for n in ("embed.weight", "positions.weight", "blocks.0.attn.qkv.weight",
                                  "blocks.1.mlp_norm.weight", "norm.weight", "head.weight")] == [0, 0, 1, 2, 3, 3]


def test_layer_lr_decay_scales_each_depth(tiny_model):
    groups = param_groups(tiny_model, 0.1, layer_decay=0.5)  # 2 blocks: top = depth 3
    scales = scales_by_name(tiny_model, groups)
    assert scales["norm.weight"] == 1.0
    assert scales["blocks.1.mlp.gate_up.weight"] == scales["blocks.1.attn_norm.weight"] == 0.5
    assert scales["blocks.0.attn.qkv.weight"] == 0.25
    assert scales["embed.weight"] == 0.125
    assert [g["hidden"] for g in groups] == [True, True, False, False, False, False]  # matrices first
    assert all(g["weight_decay"] == (0.1 if g["hidden"] else 0.0) for g in groups)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in tiny_model.parameters())
    assert len(param_groups(tiny_model, 0.1)) == 2  # no decay: the two groups as ever


def test_muon_groups_combine_their_rate_with_the_layer_scale(tiny_model):
    cfg = OptimConfig(optimizer="muon", learning_rate=1e-3, muon_lr=0.04, layer_lr_decay=0.5)
    opt = build_optimizer(tiny_model, cfg, torch.device("cpu"))
    scales = scales_by_name(tiny_model, opt.param_groups)
    assert scales["blocks.1.mlp.gate_up.weight"] == pytest.approx(40 * 0.5)
    assert scales["blocks.0.mlp.gate_up.weight"] == pytest.approx(40 * 0.25)
    assert scales["embed.weight"] == 0.125 * EMBEDDING_LR_RATIO
    assert [g["muon"] for g in opt.param_groups] == [True, True, False, False, False, False]


def test_freeze_embeddings_and_lower_blocks(tiny_model, tiny_model_config):
    tied = GPT(dataclasses.replace(tiny_model_config, tie_embeddings=True))
    freeze(tied, embeddings=True, layers=0)
    assert tied.head.weight.requires_grad is False  # tied: the head is the embedding
    freeze(tiny_model, embeddings=True, layers=1)
    frozen = {n for n, p in tiny_model.named_parameters() if not p.requires_grad}
    assert "embed.weight" in frozen and tiny_model.head.weight.requires_grad  # an untied head trains
    assert {n for n in frozen if n.startswith("blocks.")} == {
        n for n, _ in tiny_model.named_parameters() if n.startswith("blocks.0.")}
    assert not any(n.startswith("blocks.1.") or n == "norm.weight" for n in frozen)
    grouped = {id(p) for g in param_groups(tiny_model, 0.1) for p in g["params"]}
    assert grouped == {id(p) for p in tiny_model.parameters() if p.requires_grad}
