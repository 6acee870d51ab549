"""The transformer: shapes, weight tying, initial loss, KV cache, causality and dropout."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fundamentallm.model import GPT, KVCache


def tokens(vocab: int, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_shape(tiny_model, tiny_model_config):
    idx = tokens(tiny_model_config.vocab_size, 3, 11)
    assert tiny_model(idx).shape == (3, 11, tiny_model_config.vocab_size)


def test_tie_embeddings_makes_the_embedding_the_output_head(tiny_model_config):
    tied = variant(tiny_model_config, tie_embeddings=True)
    assert tied.head.weight is tied.embed.weight
    # Counted once: the tied matrix is a single parameter.
    names = [name for name, _ in tied.named_parameters()]
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


def test_cache_refuses_to_overflow():
    cache = KVCache(num_layers=1, batch=1, num_heads=2, max_len=4, head_dim=8,
                    device=torch.device("cpu"), dtype=torch.float32)
    k = torch.ones(1, 2, 3, 8)
    keys, values = cache.update(0, k, 2 * k)
    assert keys.shape == (1, 2, 3, 8) and torch.equal(values, 2 * k)
    cache.advance(3)
    with pytest.raises(ValueError, match="KV cache holds 4 positions"):
        cache.update(0, k[:, :, :2], k[:, :, :2])
    cache.reset()
    assert cache.length == 0


def test_positions_beyond_the_context_length_are_refused(tiny_model, tiny_model_config):
    T, V = tiny_model_config.context_length, tiny_model_config.vocab_size
    assert tiny_model(tokens(V, 2, T)).shape == (2, T, V)  # a full context is fine
    with pytest.raises(ValueError, match=f"^{T + 1} positions exceed the context length {T}$"):
        tiny_model(tokens(V, 2, T + 1))
    with pytest.raises(ValueError, match=f"{T + 1} positions exceed the context length {T}"):
        tiny_model(tokens(V, 2, T + 1), tokens(V, 2, T + 1, seed=2))  # with targets too
    # with a cache, the cached positions count: a full cache takes no further token
    with torch.no_grad():
        cache = tiny_model.new_cache(batch=2)
        tiny_model(tokens(V, 2, T - 1), cache=cache)
        tiny_model(tokens(V, 2, 1), cache=cache)
        assert cache.length == T
        with pytest.raises(ValueError, match=f"^{T + 1} positions exceed the context length {T}$"):
            tiny_model(tokens(V, 2, 1), cache=cache)
        assert cache.length == T  # the refused token left the cache as it was
        fresh = tiny_model.new_cache(batch=2)
        tiny_model(tokens(V, 2, 3), cache=fresh)
        with pytest.raises(ValueError, match=f"^{T + 2} positions exceed the context length {T}$"):
            tiny_model(tokens(V, 2, T - 1), cache=fresh)


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


def test_num_parameters_counts_tied_weights_once(tiny_model_config):
    tied = variant(tiny_model_config, tie_embeddings=True)
    assert tied.num_parameters() == sum(p.numel() for p in set(tied.parameters())) < variant(
        tiny_model_config).num_parameters()


VARIANTS = [
    {},  # the defaults
    {"norm": "layernorm", "position": "learned", "activation": "gelu", "qk_norm": False,
     "zero_init": False, "tie_embeddings": True},  # the classic GPT-2 recipe
    {"activation": "swiglu"},
    {"qk_norm": False},
    {"num_kv_heads": 1, "tie_embeddings": True, "rope_theta": 500.0, "mlp_hidden": 48, "norm_eps": 1e-5},
]


def variant(cfg, **changes):
    torch.manual_seed(0)
    return GPT(dataclasses.replace(cfg, **changes)).eval()


@pytest.mark.parametrize("changes", VARIANTS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_every_variant_caches_exactly_and_starts_near_ln_vocab(tiny_model_config, changes):
    model = variant(tiny_model_config, **changes)
    T, V = tiny_model_config.context_length, tiny_model_config.vocab_size
    idx = tokens(V, 2, T)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(batch=2)
        steps = [model(idx[:, :4], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(4, T)]
        loss = model(idx, tokens(V, 2, T, seed=9))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert abs(loss.item() - math.log(V)) < 0.2


def test_variant_modules_are_the_ones_asked_for(tiny_model_config):
    classic = variant(tiny_model_config, **VARIANTS[1])
    assert isinstance(classic.norm, torch.nn.LayerNorm)
    assert isinstance(classic.blocks[0].attn.q_norm, torch.nn.Identity)
    assert type(classic.blocks[0].mlp).__name__ == "GeluMLP"
    assert classic.positions.table.weight.shape == (tiny_model_config.context_length, tiny_model_config.model_dim)
    modern = variant(tiny_model_config)
    assert isinstance(modern.norm, torch.nn.RMSNorm)
    assert isinstance(modern.blocks[0].attn.q_norm, torch.nn.RMSNorm)
    assert type(modern.blocks[0].mlp).__name__ == "SwiGLU"
    assert not list(modern.positions.parameters())  # RoPE has nothing to learn


def test_relu_squared_mlp_computes_relu_squared(tiny_model_config):
    mlp = variant(tiny_model_config, activation="relu2", zero_init=False).blocks[0].mlp
    x = torch.randn(2, 3, tiny_model_config.model_dim)
    expected = mlp.down(torch.relu(mlp.up(x)) ** 2)
    torch.testing.assert_close(mlp(x), expected)


def test_zero_init_starts_every_block_as_the_identity(tiny_model_config):
    model = variant(tiny_model_config, zero_init=True)
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.mlp.down.weight.any()
    x = torch.randn(2, 5, tiny_model_config.model_dim)
    positions = model.positions
    torch.testing.assert_close(model.blocks[0](x, positions, torch.arange(x.shape[1]), None, 0), x)
    gpt2 = variant(tiny_model_config, zero_init=False)
    assert gpt2.blocks[0].attn.proj.weight.std() > 0


def test_positions_matter_with_learned_positions_and_rope(tiny_model_config):
    # Without position information, attention is blind to the order of the earlier tokens:
    # the last token would see "1 2" and "2 1" alike.
    for position in ("rope", "learned"):
        model = variant(tiny_model_config, position=position, zero_init=False)
        logits = model(torch.tensor([[1, 2, 3], [2, 1, 3]]))[:, -1]  # (2, V)
        assert not torch.allclose(logits[0], logits[1], atol=1e-4), position


def test_flops_per_token_counts_matrices_and_attention(tiny_model_config):
    c = tiny_model_config
    model = variant(c, activation="relu2")
    matrices = c.vocab_size * c.model_dim + c.num_layers * 12 * c.model_dim ** 2  # embed + qkv/proj/up/down
    assert model.flops_per_token() == 6 * matrices + 12 * c.num_layers * c.model_dim * c.context_length
    learned = variant(c, activation="relu2", position="learned")  # the position table is a lookup: same FLOPs
    assert learned.flops_per_token() == model.flops_per_token()


def test_dropconnect_drops_weights_in_training_only(tiny_model_config):
    cfg = dataclasses.replace(tiny_model_config, dropconnect=0.5)
    torch.manual_seed(0)
    model = GPT(cfg)
    torch.manual_seed(0)
    plain = GPT(tiny_model_config)
    assert model.state_dict().keys() == plain.state_dict().keys()  # same weights, same checkpoint
    model.load_state_dict(plain.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 8))
    model.eval(), plain.eval()
    torch.testing.assert_close(model(idx)[0], plain(idx)[0])  # evaluation: the full matrices
    model.train()
    layer = model.blocks[0].mlp.gate_up
    x = torch.randn(4, cfg.model_dim)
    a, b = layer(x), layer(x)
    assert not torch.allclose(a, b)  # a new mask each call
    torch.manual_seed(1)
    dropped = layer(x)
    torch.manual_seed(1)
    mask = torch.nn.functional.dropout(torch.ones_like(layer.weight), 0.5, True)  # 0 or 2
    torch.testing.assert_close(dropped, x @ (layer.weight * mask).T)
    assert 0.4 < (mask == 0).float().mean() < 0.6


def test_set_dropout_reaches_every_dropout(tiny_model_config):
    model = GPT(dataclasses.replace(tiny_model_config, dropout=0.1))
    model.set_dropout(0.3)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and all(p == 0.3 for p in rates)
    assert all(block.attn.dropout == 0.3 for block in model.blocks)


def test_grouped_query_attention_shares_key_value_heads(tiny_model_config):
    c = tiny_model_config  # 2 heads of 16 channels
    model = variant(c, num_kv_heads=1, zero_init=False)
    attn = model.blocks[0].attn
    assert attn.qkv.weight.shape == (c.model_dim + 2 * 16, c.model_dim)  # q: 2 heads, k and v: 1 each
    assert model.new_cache(batch=1).keys.shape[2] == 1  # the cache holds the shared heads only
    # The same as full attention whose two heads carry identical keys and values.
    full = variant(c, zero_init=False)
    with torch.no_grad():
        for grouped, plain in zip(model.blocks, full.blocks):
            q, k, v = grouped.attn.qkv.weight.split([c.model_dim, 16, 16])
            plain.attn.qkv.weight.copy_(torch.cat([q, k, k, v, v]))
            for name in ("proj", "q_norm", "k_norm"):
                getattr(plain.attn, name).load_state_dict(getattr(grouped.attn, name).state_dict())
            plain.mlp.load_state_dict(grouped.mlp.state_dict())
            plain.attn_norm.load_state_dict(grouped.attn_norm.state_dict())
            plain.mlp_norm.load_state_dict(grouped.mlp_norm.state_dict())
        full.embed.weight.copy_(model.embed.weight)
        full.head.weight.copy_(model.head.weight)
        full.norm.load_state_dict(model.norm.state_dict())
    idx = tokens(c.vocab_size, 2, c.context_length)
    torch.testing.assert_close(model(idx), full(idx), atol=1e-5, rtol=0)


def test_num_kv_heads_must_divide_num_heads(tiny_config):
    from fundamentallm.config import validate
    from fundamentallm.errors import UserError

    tiny_config.model.num_heads, tiny_config.model.num_kv_heads = 4, 3
    with pytest.raises(UserError, match="--num-kv-heads 3 does not divide --num-heads 4"):
        validate(tiny_config)


def test_by_default_the_embedding_and_the_head_are_two_matrices(tiny_model_config):
    model = variant(tiny_model_config)
    assert model.head.weight is not model.embed.weight
    tied = variant(tiny_model_config, tie_embeddings=True)
    extra = tiny_model_config.vocab_size * tiny_model_config.model_dim
    assert model.num_parameters() == tied.num_parameters() + extra
    # the input embedding is a lookup: the FLOPs are those of the tied model
    assert model.flops_per_token() == tied.flops_per_token()


def test_rope_theta_sets_the_rotation_frequencies(tiny_model_config):
    slow = variant(tiny_model_config, rope_theta=1e6)
    head_dim = tiny_model_config.model_dim // tiny_model_config.num_heads
    # channel pair 1 turns at theta^(-2/D) radians per position
    torch.testing.assert_close(slow.positions.cos[1, 1], torch.tensor(math.cos(1e6 ** (-2 / head_dim))))
    idx = tokens(tiny_model_config.vocab_size, 1, 8)
    assert not torch.allclose(variant(tiny_model_config, rope_theta=1e6, zero_init=False)(idx),
                              variant(tiny_model_config, zero_init=False)(idx), atol=1e-4)


def test_mlp_hidden_and_norm_eps_are_used(tiny_model_config):
    model = variant(tiny_model_config, mlp_hidden=40, activation="swiglu", norm_eps=0.25)
    assert model.blocks[0].mlp.down.weight.shape == (tiny_model_config.model_dim, 40)
    assert model.blocks[0].mlp.gate_up.weight.shape == (80, tiny_model_config.model_dim)
    assert model.norm.eps == 0.25 and model.blocks[0].attn.q_norm.eps == 0.25
    assert variant(tiny_model_config, norm="layernorm").norm.eps == 1e-5  # torch's LayerNorm default
