"""The architecture and optimizer flags: each changes the model or the run as it says."""

from __future__ import annotations

import pytest

from fundamentallm.checkpoint import load_model
from integration_helpers import load_pt, losses, metrics, run_cli, train

BASE = {"max_steps": 4, "log_interval": 1, "warmup_steps": 0, "eval_interval": 4}


def run(corpus, out, **overrides):
    return train(corpus, out, **{**BASE, **overrides})


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, corpus):
    return run(corpus, tmp_path_factory.mktemp("baseline"))


def first_losses(out) -> list[float]:
    return [losses(out)[step] for step in sorted(losses(out))]


@pytest.mark.parametrize("flag, value, check", [
    ("norm", "layernorm", lambda m: type(m.norm).__name__ == "LayerNorm"),
    ("position", "learned", lambda m: "positions.table.weight" in m.state_dict()),
    ("activation", "gelu", lambda m: type(m.blocks[0].mlp).__name__ == "GeluMLP"),
    ("activation", "relu2", lambda m: type(m.blocks[0].mlp).__name__ == "ReluSquaredMLP"),
    ("qk_norm", False, lambda m: type(m.blocks[0].attn.q_norm).__name__ == "Identity"),
    ("norm_gain", False, lambda m: not any(name.endswith("norm.weight") for name in m.state_dict())),
    ("num_kv_heads", 1, lambda m: m.blocks[0].attn.num_kv_heads == 1 and m.new_cache(1).keys.shape[2] == 1),
    ("tie_embeddings", True, lambda m: m.head.weight is m.embed.weight),
    ("rope_theta", 500.0, lambda m: m.positions.cfg.rope_theta == 500.0),
    ("mlp_hidden", 48, lambda m: m.blocks[0].mlp.down.weight.shape[1] == 48),
    ("norm_eps", 0.01, lambda m: m.norm.eps == 0.01),
])
def test_architecture_flags_build_that_model(tmp_path, corpus, baseline, flag, value, check):
    out = run(corpus, tmp_path, max_steps=2, **{flag: value})
    model, _, cfg = load_model(out / "final.pt")
    assert getattr(cfg.model, flag) == value
    assert check(model)
    assert not check(load_model(baseline / "final.pt")[0])  # the default differs
    assert first_losses(out)[1] != first_losses(baseline)[1]


def test_zero_init_flag(tmp_path, corpus, baseline):
    # With zero-initialised projections every block starts as the identity; GPT-2's init
    # changes the first forward pass, so the first loss differs.
    out = run(corpus, tmp_path, zero_init=False, max_steps=1)
    assert first_losses(out)[0] != first_losses(baseline)[0]


def test_optimizer_flag(tmp_path, corpus, baseline):
    adamw = run(corpus, tmp_path / "adamw", optimizer="adamw")
    state = load_pt(adamw / "resume_checkpoint.pt")["train_state"]["optimizer"]
    assert all("exp_avg" in s for s in state["state"].values())
    muon_state = load_pt(baseline / "resume_checkpoint.pt")["train_state"]["optimizer"]
    assert any("momentum" in s for s in muon_state["state"].values())  # Muon's matrices
    a, b = first_losses(adamw), first_losses(baseline)
    assert a[0] == b[0] and a[1] != b[1]  # same start, different first update


def test_muon_lr_and_momentum(tmp_path, corpus, baseline):
    fast = run(corpus, tmp_path / "lr", muon_lr=0.2)
    assert first_losses(fast)[1] != first_losses(baseline)[1]
    momentum = run(corpus, tmp_path / "m", muon_momentum=0.5)
    assert first_losses(momentum)[2] != first_losses(baseline)[2]
    # The embedding's (AdamW) rate is what the lr column records; Muon's follows it in ratio.
    assert [r["lr"] for r in metrics(fast)] == [r["lr"] for r in metrics(baseline)]


def test_embedding_lr_moves_the_embedding_only(tmp_path, corpus, baseline):
    out = run(corpus, tmp_path / "e", embedding_lr=0.5, max_steps=1, lr_schedule="constant")
    one_step = run(corpus, tmp_path / "base", max_steps=1, lr_schedule="constant")
    fast, plain = load_pt(out / "final.pt")["model"], load_pt(one_step / "final.pt")["model"]
    assert [k for k in fast if not fast[k].equal(plain[k])] == ["embed.weight"]
    assert load_model(out / "final.pt")[2].optim.embedding_lr == 0.5
    assert first_losses(run(corpus, tmp_path / "e4", embedding_lr=0.5))[1] != first_losses(baseline)[1]


def test_wsd_schedule_and_cooldown_fraction(tmp_path, corpus):
    peak = 0.006
    rates = [r["lr"] for r in metrics(run(corpus, tmp_path / "a", lr_schedule="wsd",
                                          cooldown_fraction=0.5, max_steps=8, learning_rate=peak))]
    # Progress k/8 for step k: stable through 4/8, then linear to --min-lr (0) at 8/8.
    expected = [peak] * 4 + [peak - peak * (k / 8 - 0.5) / 0.5 for k in range(5, 9)]
    assert rates == pytest.approx(expected, rel=1e-9)


def test_resume_keeps_the_optimizer(tmp_path, corpus):
    out = run(corpus, tmp_path / "run", max_steps=2)
    assert train(corpus, out, "--resume", max_steps=3, optimizer="adamw", expect=2)
    assert train(corpus, out, "--resume", max_steps=3)  # the saved optimizer (muon) continues
    assert 3 in losses(out)


def test_lookahead_pulls_back_every_k_steps(tmp_path, corpus, baseline):
    out = run(corpus, tmp_path / "la", lookahead_steps=2, lookahead_alpha=0.5)
    la, plain = first_losses(out), first_losses(baseline)
    assert la[:2] == plain[:2]  # steps 1-2 are the inner optimizer's; the pull-back follows step 2
    assert la[2] != plain[2]
    assert "slow" in load_pt(out / "resume_checkpoint.pt")["train_state"]["optimizer"]


def test_lookahead_resumes_exactly(tmp_path, corpus):
    flags = {"lookahead_steps": 3, "lr_schedule": "constant", "max_steps": 7}
    straight = run(corpus, tmp_path / "straight", **flags)
    half = run(corpus, tmp_path / "half", **{**flags, "max_steps": 4})
    assert run_cli("train", "-o", half, "--resume", "--max-steps", "7", "--quiet") == 0
    assert first_losses(half) == pytest.approx(first_losses(straight), abs=1e-6)


def test_the_learning_rate_moves_the_hidden_matrices_too(tmp_path, corpus):
    """--learning-rate is the peak of the whole run: with Muon, a hidden matrix's first step
    scales with it (the orthogonalised update times the rate), as do the embedding's and the
    norm gains'. (The output projection: at zero initialisation the gradient reaches it first.)"""
    from fundamentallm.config import Config

    flags = {**BASE, "max_steps": 1, "lr_schedule": "constant", "gradient_clip": 0}
    start = load_pt(run(corpus, tmp_path / "start", **{**flags, "learning_rate": 1e-12}) / "final.pt")["model"]
    moved = {}
    for lr in (1e-3, 2e-3):
        weights = load_pt(run(corpus, tmp_path / f"lr{lr}", **flags, learning_rate=lr) / "final.pt")["model"]
        moved[lr] = {k: (weights[k] - start[k]).abs().sum().item() for k in weights}
    hidden = "blocks.0.attn.proj.weight"
    assert moved[1e-3][hidden] > 0
    assert moved[2e-3][hidden] == pytest.approx(2 * moved[1e-3][hidden], rel=1e-3)
    # The ratio is fixed: Muon's rate is MUON_LR_RATIO x --learning-rate, unless --muon-lr says.
    from fundamentallm.training.optim import MUON_LR_RATIO, build_optimizer

    assert Config().optim.muon_lr is None
    cfg = Config().optim
    cfg.learning_rate = 1e-3
    model = load_model(tmp_path / "start" / "final.pt")[0]
    rates = {g["muon"]: g["lr"] for g in build_optimizer(model, cfg, model.embed.weight.device).param_groups}
    assert rates == {True: pytest.approx(1e-3 * MUON_LR_RATIO), False: 1e-3}


def test_activation_checkpointing_trains_to_the_same_losses(tmp_path, corpus, baseline):
    """Recomputing each block in the backward (with dropout: its masks replayed) changes the
    memory, not the run: the same losses step for step, the same weights to float precision."""
    flags = {"dropout": 0.1, "max_steps": 4}
    plain = run(corpus, tmp_path / "plain", **flags)
    recomputed = run(corpus, tmp_path / "recomputed", activation_checkpointing=True, **flags)
    assert first_losses(recomputed) == pytest.approx(first_losses(plain), rel=1e-6)
    a, b = load_pt(plain / "final.pt")["model"], load_pt(recomputed / "final.pt")["model"]
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    assert load_pt(recomputed / "final.pt")["config"]["training"]["activation_checkpointing"] is True
