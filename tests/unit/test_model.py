"""The transformer: shapes, weight tying, initial loss, KV cache, causality and dropout."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fundamentallm.model import GPT


def tokens(vocab: int, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_shape(tiny_model, tiny_model_config):
    idx = tokens(tiny_model_config.vocab_size, 3, 11)
    assert tiny_model(idx).shape == (3, 11, tiny_model_config.vocab_size)


def test_embedding_is_tied_to_the_output_head(tiny_model):
    assert tiny_model.head.weight is tiny_model.embed.weight
    # Counted once: the tied matrix is a single parameter.
    names = [name for name, _ in tiny_model.named_parameters()]
    assert "embed.weight" in names and "head.weight" not in names


def test_loss_at_init_is_about_ln_vocab(tiny_model, tiny_model_config):
    vocab = tiny_model_config.vocab_size
    idx = tokens(vocab, 8, 16, seed=2)
    targets = tokens(vocab, 8, 16, seed=3)
    loss = tiny_model(idx, targets)
    assert loss.shape == ()
    assert abs(loss.item() - math.log(vocab)) < 0.2


def test_ignored_targets_are_not_scored(tiny_model, tiny_model_config):
    idx = tokens(tiny_model_config.vocab_size, 2, 8)
    targets = tokens(tiny_model_config.vocab_size, 2, 8, seed=4)
    masked = targets.clone()
    masked[:, ::2] = -100
    per_token = tiny_model(idx, targets, reduction="none").view(2, 8)
    expected = per_token[:, 1::2].mean()
    torch.testing.assert_close(tiny_model(idx, masked), expected)


def test_kv_cached_incremental_forward_equals_full_forward(tiny_model, tiny_model_config):
    T = tiny_model_config.context_length
    idx = tokens(tiny_model_config.vocab_size, 2, T)
    with torch.no_grad():
        full = tiny_model(idx)
        cache = tiny_model.new_cache(batch=2)
        prompt = 5
        steps = [tiny_model(idx[:, :prompt], cache=cache)]  # a chunk into the empty cache
        for t in range(prompt, T):
            steps.append(tiny_model(idx[:, t:t + 1], cache=cache))  # then one token at a time
    assert cache.length == T
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_cache_refuses_to_overflow(tiny_model, tiny_model_config):
    T = tiny_model_config.context_length
    cache = tiny_model.new_cache(batch=1)
    with torch.no_grad():
        tiny_model(tokens(tiny_model_config.vocab_size, 1, T), cache=cache)
        with pytest.raises(ValueError, match="KV cache"):
            tiny_model(tokens(tiny_model_config.vocab_size, 1, 1), cache=cache)


def test_causality_later_tokens_do_not_change_earlier_logits(tiny_model, tiny_model_config):
    V = tiny_model_config.vocab_size
    idx = tokens(V, 1, 12)
    changed = idx.clone()
    j = 7
    changed[0, j] = (idx[0, j] + 1) % V
    with torch.no_grad():
        a, b = tiny_model(idx), tiny_model(changed)
    torch.testing.assert_close(a[:, :j], b[:, :j], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, j:], b[:, j:])  # and the change is seen from position j on


def test_dropout_randomises_training_mode_only(tiny_model_config):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(tiny_model_config, dropout=0.5))
    idx = tokens(tiny_model_config.vocab_size, 2, 10)
    model.train()
    assert not torch.allclose(model(idx), model(idx))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), model(idx), atol=0, rtol=0)


def test_num_parameters_counts_tied_weights_once(tiny_model):
    assert tiny_model.num_parameters() == sum(p.numel() for p in set(tiny_model.parameters()))
