"""Muon: Newton–Schulz orthogonalisation, the update it makes, and its AdamW half."""

from __future__ import annotations

import io

import pytest
import torch

from fundamentallm.config import OptimConfig
import fundamentallm.training.muon as muon_module
from fundamentallm.training.muon import Muon, gram_iterations, orthogonalize, plain_iterations
from fundamentallm.training.optim import build_optimizer


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 48, 16), (2, 16, 48)])
def test_orthogonalize_sets_singular_values_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    g[0] *= 1000  # scale does not matter
    out = orthogonalize(g, steps=5, dtype=torch.float32)
    assert out.shape == g.shape
    singular = torch.linalg.svdvals(out)  # (n, min(rows, cols))
    # The quintic iteration trades exactness for speed: values land in about [0.7, 1.2].
    assert singular.min() > 0.6 and singular.max() < 1.25
    # ... and the directions are those of the exact U Vᵀ.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    exact = u @ vh
    cosine = (out * exact).sum(dim=(-2, -1)) / (out.norm(dim=(-2, -1)) * exact.norm(dim=(-2, -1)))
    assert (cosine > 0.95).all()


@pytest.mark.parametrize("shape", [(2, 16, 48), (3, 96, 24), (1, 8, 200)])
def test_the_gram_form_makes_the_plain_iterations_result(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    x = x.mT if shape[1] > shape[2] else x
    x = x / x.norm(dim=(-2, -1), keepdim=True)
    assert torch.allclose(gram_iterations(x, 5), plain_iterations(x, 5), atol=1e-5)
    assert torch.equal(gram_iterations(x, 0), x)


def test_the_gram_form_serves_wide_fp32_matrices_only(monkeypatch):
    taken = []
    monkeypatch.setattr(muon_module, "gram_iterations", lambda x, steps: taken.append("gram") or x)
    monkeypatch.setattr(muon_module, "plain_iterations", lambda x, steps: taken.append("plain") or x)
    orthogonalize(torch.randn(1, 16, 32), 5, torch.float32)  # 2x wider: the Gram form
    orthogonalize(torch.randn(1, 32, 16), 5, torch.float32)  # 2x taller: the same, transposed
    orthogonalize(torch.randn(1, 16, 16), 5, torch.float32)  # square: plain
    orthogonalize(torch.randn(1, 16, 32), 5, torch.bfloat16)  # bf16: plain
    assert taken == ["gram", "gram", "plain", "plain"]


def test_orthogonalize_keeps_the_input_dtype():
    g = torch.randn(1, 8, 8, dtype=torch.float64)
    assert orthogonalize(g, steps=2, dtype=torch.float32).dtype == torch.float64


def test_muon_step_is_lr_times_scaled_orthogonal_direction():
    w = torch.nn.Parameter(torch.zeros(32, 8))  # tall: scale sqrt(32 / 8) = 2
    w.grad = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    opt = Muon([{"params": [w], "muon": True}], lr=0.1, momentum=0.0)
    opt.step()
    expected = -0.1 * 2 * orthogonalize(w.grad[None], 5, torch.float32)[0]
    torch.testing.assert_close(w.detach(), expected)


def test_a_stacked_weight_is_orthogonalised_part_by_part():
    """q|k|v stacked in one (C + 2KD, C) weight: each part's update is its own orthogonal
    direction (times lr), not a slice of the stack's, which would differ."""
    g = torch.randn(24, 8, generator=torch.Generator().manual_seed(3))
    stacked, whole = torch.nn.Parameter(torch.zeros(24, 8)), torch.nn.Parameter(torch.zeros(24, 8))
    stacked.grad, whole.grad = g.clone(), g.clone()
    Muon([{"params": [stacked], "muon": True}], lr=0.1, momentum=0.0, stacked={stacked: (8, 8, 8)}).step()
    Muon([{"params": [whole], "muon": True}], lr=0.1, momentum=0.0).step()
    expected = -0.1 * orthogonalize(g.view(3, 8, 8), 5, torch.float32).reshape(24, 8)
    torch.testing.assert_close(stacked.detach(), expected)
    assert (stacked - whole).abs().max() > 1e-2


def test_muon_knows_the_models_stacked_weights():
    from fundamentallm.config import ModelConfig
    from fundamentallm.model import GPT

    model = GPT(ModelConfig(vocab_size=11, model_dim=16, num_layers=2, num_heads=4, num_kv_heads=2,
                            context_length=8))
    opt = build_optimizer(model, OptimConfig(optimizer="muon"), torch.device("cpu"))
    stacked = {name: opt.stacked[p] for name, p in model.named_parameters() if p in opt.stacked}
    hidden = 16 * 8 // 3
    assert stacked == {f"blocks.{i}.{part}": rows for i in range(2) for part, rows in
                       (("attn.qkv.weight", (16, 8, 8)), ("mlp.gate_up.weight", (hidden, hidden)))}


def test_muon_groups_reject_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        Muon([{"params": [torch.nn.Parameter(torch.zeros(4))], "muon": True}], lr=0.1)


def test_adamw_half_matches_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    ours = Muon([{"params": [a], "muon": False, "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.99))
    ref = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, eps=1e-8)
    for step in range(4):
        grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach())


def test_build_muon_puts_hidden_matrices_in_the_muon_group(tiny_model):
    opt = build_optimizer(tiny_model, OptimConfig(optimizer="muon", learning_rate=1e-3, muon_lr=0.04),
                          torch.device("cpu"))
    name_of = {id(p): n for n, p in tiny_model.named_parameters()}
    muon, embedding, rest = opt.param_groups
    assert muon["muon"] and not rest["muon"] and not embedding["muon"]
    assert [name_of[id(p)] for p in embedding["params"]] == ["embed.weight"]  # untied: a rate of its own
    assert {name_of[id(p)] for p in muon["params"]} == {
        n for n, p in tiny_model.named_parameters() if p.dim() == 2 and not n.startswith(("embed.", "head."))}
    assert "head.weight" in {name_of[id(p)] for p in rest["params"]}
    # One schedule drives both: lr = schedule * lr_scale.
    assert muon["lr_scale"] * 1e-3 == pytest.approx(0.04) and rest["lr_scale"] == 1.0


def test_muon_trains_a_tiny_model_faster_than_nothing(tiny_model, tiny_model_config):
    torch.manual_seed(0)
    idx = torch.randint(0, tiny_model_config.vocab_size, (8, 16))
    tiny_model.train()
    opt = build_optimizer(tiny_model, OptimConfig(optimizer="muon"), torch.device("cpu"))
    first = None
    for _ in range(30):
        loss = tiny_model(idx[:, :-1], idx[:, 1:])
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first - 1.0  # memorising one batch


def test_state_dict_round_trips_through_weights_only_load(tiny_model, tiny_model_config):
    opt = build_optimizer(tiny_model, OptimConfig(optimizer="muon"), torch.device("cpu"))
    idx = torch.randint(0, tiny_model_config.vocab_size, (2, 8))
    tiny_model(idx, idx).backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    restored = build_optimizer(tiny_model, OptimConfig(optimizer="muon"), torch.device("cpu"))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for p in tiny_model.parameters():
        for key, value in opt.state[p].items():
            torch.testing.assert_close(restored.state[p][key], value)
