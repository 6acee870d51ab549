"""Sampling: the logits rules, seeding, and cached generation against an uncached reference."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fundamentallm.errors import UserError
from fundamentallm.generation import generate
from fundamentallm.model import GPT
from fundamentallm.sampling import BanTokens, SamplingOptions, Temperature, TopK, TopP

PROMPT = [3, 1, 4]


def run(model: GPT, prompt: list[int] = PROMPT, banned: list[int] | None = None,
        **options) -> torch.Tensor:
    """All generated tokens, (num_samples, max_tokens)."""
    steps = [token for token, *_ in generate(model, prompt, SamplingOptions(**options), banned)]
    return torch.stack(steps, dim=1) if steps else torch.empty(0)


def greedy_reference(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache: the whole (cropped) text is recomputed every step."""
    context = model.cfg.context_length
    text = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([text[-context:]]))[0, -1]
            text.append(int(logits.argmax()))
    return text[len(prompt):]


# ------------------------------------------------------------------ logits rules
def test_top_k_keeps_exactly_k_finite_logits():
    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(0))
    kept = TopK(5)(logits.clone(), torch.zeros_like(logits))
    assert (torch.isfinite(kept).sum(dim=-1) == 5).all()
    top = logits.topk(5, dim=-1).indices
    assert torch.equal(kept.gather(-1, top), logits.gather(-1, top))  # the 5 largest, unchanged


def test_top_k_larger_than_vocab_keeps_everything():
    logits = torch.randn(2, 4)
    assert torch.equal(TopK(10)(logits.clone(), torch.zeros_like(logits)), logits)


@pytest.mark.parametrize(("p", "kept"), [(0.3, {0}), (0.5, {0}), (0.7, {0, 1}),
                                         (0.85, {0, 1, 2}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    perm = torch.tensor([2, 0, 3, 1])  # shuffled, so the rule must sort and scatter back
    logits = probs.log()[perm][None]
    out = TopP(p)(logits.clone(), torch.zeros_like(logits))
    finite = {int(perm[i]) for i in torch.isfinite(out[0]).nonzero().flatten()}
    assert finite == kept
    assert torch.equal(out[torch.isfinite(out)], logits[torch.isfinite(out)])


def test_ban_tokens_and_temperature():
    logits = torch.zeros(2, 6)
    banned = BanTokens([1, 4])(logits.clone(), torch.zeros_like(logits))
    assert torch.isinf(banned[:, [1, 4]]).all() and torch.isfinite(banned[:, [0, 2, 3, 5]]).all()
    assert torch.equal(Temperature(0.5)(torch.ones(1, 3), torch.zeros(1, 3)), torch.full((1, 3), 2.0))


# ------------------------------------------------------------------ generate
def test_banned_tokens_are_never_sampled(tiny_model, tiny_model_config):
    banned = list(range(0, tiny_model_config.vocab_size, 2))  # half the vocabulary
    tokens = run(tiny_model, banned=banned, max_tokens=40, temperature=1.0, seed=0, num_samples=4)
    assert tokens.shape == (4, 40)
    assert not torch.isin(tokens, torch.tensor(banned)).any()


def test_banning_the_greedy_choice_changes_it(tiny_model):
    first = int(run(tiny_model, max_tokens=1, temperature=0)[0, 0])
    assert int(run(tiny_model, banned=[first], max_tokens=1, temperature=0)[0, 0]) != first


def test_temperature_zero_is_greedy(sharp_model):
    tokens = run(sharp_model, max_tokens=10, temperature=0)
    assert len(set(tokens[0].tolist())) > 3  # the check below is not about one repeated token
    assert tokens[0].tolist() == greedy_reference(sharp_model, PROMPT, 10)
    # top-k 1 is greedy too, whatever the temperature
    assert torch.equal(run(sharp_model, max_tokens=10, temperature=1.0, top_k=1, seed=3), tokens)


def test_same_seed_same_tokens_different_seeds_differ(tiny_model):
    a = run(tiny_model, max_tokens=30, temperature=1.0, seed=11)
    b = run(tiny_model, max_tokens=30, temperature=1.0, seed=11)
    c = run(tiny_model, max_tokens=30, temperature=1.0, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generation_beyond_the_context_length(sharp_model, tiny_model_config):
    context, vocab = tiny_model_config.context_length, tiny_model_config.vocab_size
    tokens = run(sharp_model, prompt=[5], max_tokens=3 * context, temperature=0)
    assert tokens.shape == (1, 3 * context)
    assert ((tokens >= 0) & (tokens < vocab)).all()
    # While the text fits the context, the cache must change nothing.
    assert tokens[0, :context].tolist() == greedy_reference(sharp_model, [5], context)


def test_cache_restart_keeps_the_most_recent_half(sharp_model, tiny_model_config):
    """Past the context, the model sees what the documented policy says: when the cache is
    full it restarts from the last context // 2 tokens, then grows one token per step."""
    context = tiny_model_config.context_length
    prompt, n = [5, 9, 2], 3 * context
    tokens = run(sharp_model, prompt=prompt, max_tokens=n, temperature=0)[0].tolist()
    assert len(set(tokens[context:])) > 3
    text, visible, expected = list(prompt), len(prompt), []
    with torch.no_grad():
        for _ in range(n):
            expected.append(int(sharp_model(torch.tensor([text[-visible:]]))[0, -1].argmax()))
            text.append(expected[-1])
            visible = context // 2 if visible == context else visible + 1
    assert tokens == expected


def test_prompt_longer_than_the_context(sharp_model, tiny_model_config):
    prompt = [i % tiny_model_config.vocab_size for i in range(2 * tiny_model_config.context_length)]
    tokens = run(sharp_model, prompt=prompt, max_tokens=5, temperature=0)
    assert tokens[0, 0].item() == greedy_reference(sharp_model, prompt, 1)[0]
    assert tokens.shape == (1, 5)


def test_context_length_one_can_generate(tiny_model_config):
    model = GPT(dataclasses.replace(tiny_model_config, context_length=1)).eval()
    assert run(model, prompt=[1], max_tokens=4, temperature=0).shape == (1, 4)


def test_num_samples_gives_that_many_rows(tiny_model):
    steps = list(generate(tiny_model, PROMPT, SamplingOptions(max_tokens=7, num_samples=3, seed=0)))
    assert len(steps) == 7
    vocab = tiny_model.cfg.vocab_size
    assert all(token.shape == (3,) and logprob.shape == (3,) and dist.shape == (3, vocab)
               for token, logprob, dist in steps)
    # the chosen token's log-probability is its entry in the whole distribution
    assert all(torch.equal(dist.gather(1, token[:, None]).squeeze(1), logprob) for token, logprob, dist in steps)


def test_zero_tokens_yields_nothing(tiny_model):
    assert list(generate(tiny_model, PROMPT, SamplingOptions(max_tokens=0))) == []


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("max_tokens", -1, "--max-tokens"),
    ("temperature", -0.5, "--temperature"),
    ("top_k", 0, "--top-k"),
    ("top_p", 0.0, "--top-p"),
    ("top_p", 1.5, "--top-p"),
    ("num_samples", 0, "--num-samples"),
])
def test_sampling_options_check_rejects_bad_values(field, value, flag):
    with pytest.raises(UserError, match=flag):
        SamplingOptions(**{field: value}).check()


def test_good_options_pass_and_empty_prompt_is_rejected(tiny_model):
    SamplingOptions(max_tokens=0, temperature=0, top_k=1, top_p=1.0).check()
    with pytest.raises(UserError, match="prompt"):
        list(generate(tiny_model, [], SamplingOptions()))


def test_sampling_follows_the_model_distribution(tiny_model):
    """With temperature 1 and no filters, token frequencies match softmax(logits)."""
    with torch.no_grad():
        probs = tiny_model(torch.tensor([PROMPT]))[0, -1].softmax(-1)
    first = run(tiny_model, max_tokens=1, temperature=1.0, seed=0, num_samples=4000)[:, 0]
    freq = torch.bincount(first, minlength=probs.numel()).float() / first.numel()
    # 4000 draws: standard error of each frequency is below sqrt(0.25 / 4000) = 0.008.
    assert (freq - probs).abs().max() < 5 * math.sqrt(0.25 / 4000)


def test_cached_and_uncached_generation_give_the_same_tokens(tiny_model, tiny_model_config):
    # Within the context both see the same text, so with one seed they sample the same tokens.
    fits = tiny_model_config.context_length - 3
    runs = [torch.stack([t for t, *_ in generate(tiny_model, [1, 2, 3], SamplingOptions(
        max_tokens=fits, temperature=1.0, seed=5, num_samples=2, use_cache=use_cache))], dim=1)
        for use_cache in (True, False)]
    assert runs[0].shape == (2, fits)
    assert torch.equal(runs[0], runs[1])
