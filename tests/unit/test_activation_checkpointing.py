"""Activation checkpointing: the same losses and gradients, far fewer saved activations,
and the same parameter names (so checkpoints are unchanged)."""

from __future__ import annotations

import dataclasses

import torch

from fundamentallm.model import GPT
from fundamentallm.training.activation_checkpointing import checkpoint_blocks, saved_bytes


def twins(cfg):
    """Two identical models with dropout (the recomputation must replay its masks)."""
    cfg = dataclasses.replace(cfg, dropout=0.2, num_layers=4)
    torch.manual_seed(0)
    plain = GPT(cfg)
    checkpointed = GPT(cfg)
    checkpointed.load_state_dict(plain.state_dict())
    checkpoint_blocks(checkpointed)
    return plain, checkpointed


def step(model, x, y):
    torch.manual_seed(1)
    loss = model(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_losses_and_gradients_are_those_without_it(tiny_model_config):
    plain, checkpointed = twins(tiny_model_config)
    x = torch.randint(0, tiny_model_config.vocab_size, (4, 16))
    y = torch.randint(0, tiny_model_config.vocab_size, (4, 16))
    loss_a, grads_a = step(plain, x, y)
    loss_b, grads_b = step(checkpointed, x, y)
    assert torch.equal(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-6, atol=1e-7, msg=name)


def test_far_fewer_activations_are_kept(tiny_model_config):
    plain, checkpointed = twins(tiny_model_config)
    x = torch.randint(0, tiny_model_config.vocab_size, (8, 16))
    kept, recomputed = saved_bytes(plain, x, x), saved_bytes(checkpointed, x, x)
    assert recomputed < 0.25 * kept, (recomputed, kept)


def test_parameter_names_are_unchanged(tiny_model_config):
    plain, checkpointed = twins(tiny_model_config)
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
