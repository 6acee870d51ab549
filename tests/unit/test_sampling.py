"""Each sampling control's effect, on hand-set logits or a tiny model; beam search; stop strings."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import sharpen

from fundamentallm.errors import UserError
from fundamentallm.generation import StopScanner, TextGenerator, beam_search, generate
from fundamentallm.sampling import (
    FrequencyPresencePenalty,
    MinP,
    RepetitionPenalty,
    SamplingOptions,
    logits_rules,
)
from fundamentallm.tokenizers import CharTokenizer

TEXT = "abcdefghij .\n"


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train(TEXT, specials=())  # the random models below were pinned on this vocabulary


@pytest.fixture
def model(tiny_model_config, tokenizer):
    import dataclasses

    from fundamentallm.model import GPT

    torch.manual_seed(3)  # the recipe pinned, as sharp_model's (conftest)
    return sharpen(GPT(dataclasses.replace(tiny_model_config, vocab_size=tokenizer.vocab_size,
                                           activation="relu2", tie_embeddings=True)).eval())


def tokens_of(model, prompt, **options) -> torch.Tensor:
    return torch.stack([t for t, *_ in generate(model, prompt, SamplingOptions(**options))], dim=1)


# ------------------------------------------------------------------ rules on hand-set logits
def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    counts = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    out = RepetitionPenalty(2.0)(logits, counts)
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]  # seen tokens lose, unseen keep


def test_frequency_and_presence_penalties_subtract_by_count_and_once():
    logits = torch.zeros(1, 3)
    counts = torch.tensor([[3.0, 1.0, 0.0]])
    out = FrequencyPresencePenalty(frequency=0.5, presence=1.0)(logits, counts)
    assert out.tolist() == [[-2.5, -1.5, 0.0]]


@pytest.mark.parametrize("p, kept", [(0.09, {0, 1, 2, 3}), (0.3, {0, 1, 2}), (0.6, {0, 1}), (1.0, {0})])
def test_min_p_keeps_tokens_at_least_p_times_the_top_probability(p, kept):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = MinP(p)(probs.log(), torch.zeros_like(probs))
    assert {i for i in range(4) if torch.isfinite(out[0, i])} == kept


def test_greedy_and_beam_use_only_penalties_and_bans():
    rules = logits_rules(SamplingOptions(greedy=True, top_k=3, top_p=0.5, repetition_penalty=1.2), [1])
    assert [type(r).__name__ for r in rules] == ["RepetitionPenalty", "BanTokens"]
    rules = logits_rules(SamplingOptions(top_k=3, frequency_penalty=0.1), [], sampling=False)
    assert [type(r).__name__ for r in rules] == ["FrequencyPresencePenalty"]
    rules = logits_rules(SamplingOptions(temperature=0.7, top_k=3, top_p=0.5, min_p=0.1), [])
    assert [type(r).__name__ for r in rules] == ["Temperature", "TopK", "TopP", "MinP"]


# ------------------------------------------------------------------ effects on generated text
def test_repetition_penalty_lowers_repeats(model, tokenizer):
    plain = tokens_of(model, [1, 2, 3], max_tokens=60, temperature=1.0, seed=0, num_samples=16)
    penalized = tokens_of(model, [1, 2, 3], max_tokens=60, temperature=1.0, seed=0, num_samples=16,
                          repetition_penalty=3.0)

    def repeats(rows: torch.Tensor) -> float:  # share of tokens equal to one of the last 5
        hits = [int(row[i]) in row[max(0, i - 5):i].tolist() for row in rows for i in range(1, len(row))]
        return sum(hits) / len(hits)

    assert repeats(penalized) < repeats(plain) - 0.05


def test_presence_penalty_spreads_greedy_text_over_more_tokens(model):
    plain = tokens_of(model, [1, 2, 3], max_tokens=30, greedy=True)
    spread = tokens_of(model, [1, 2, 3], max_tokens=30, greedy=True, presence_penalty=5.0)
    assert len(set(spread[0].tolist())) > len(set(plain[0].tolist()))


def test_min_p_only_samples_tokens_above_the_floor(model):
    with torch.no_grad():
        probs = model(torch.tensor([[1, 2, 3]]))[0, -1].softmax(-1)
    allowed = set((probs >= 0.2 * probs.max()).nonzero().flatten().tolist())
    first = tokens_of(model, [1, 2, 3], max_tokens=1, temperature=1.0, min_p=0.2, seed=1, num_samples=500)
    assert set(first[:, 0].tolist()) <= allowed and len(allowed) < probs.numel()


def test_logprobs_are_the_models_own(model):
    (token, logprob, _), = list(generate(model, [1, 2], SamplingOptions(max_tokens=1, temperature=0.3, seed=2)))
    with torch.no_grad():
        expected = model(torch.tensor([[1, 2]]))[0, -1].log_softmax(-1)[token[0]]
    assert float(logprob[0]) == pytest.approx(float(expected), abs=1e-5)


# ------------------------------------------------------------------ beam search
def test_beam_width_one_equals_greedy(model):
    greedy = tokens_of(model, [4, 5], max_tokens=20, greedy=True)[0].tolist()
    ids, total = beam_search(model, [4, 5], SamplingOptions(max_tokens=20, beam_width=1))
    assert ids == greedy


def test_wider_beams_find_text_at_least_as_likely(model):
    def total_logprob(ids: list[int]) -> float:
        text, total = [4, 5], 0.0
        with torch.no_grad():
            for i in ids:
                total += float(model(torch.tensor([text]))[0, -1].log_softmax(-1)[i])
                text.append(i)
        return total

    narrow, narrow_total = beam_search(model, [4, 5], SamplingOptions(max_tokens=8, beam_width=1))
    wide, wide_total = beam_search(model, [4, 5], SamplingOptions(max_tokens=8, beam_width=6))
    assert narrow_total == pytest.approx(total_logprob(narrow), abs=1e-4)
    assert wide_total == pytest.approx(total_logprob(wide), abs=1e-4)
    assert wide_total >= narrow_total - 1e-6


# ------------------------------------------------------------------ stop strings and bans (TextGenerator)
def test_stop_scanner_cuts_exactly_and_holds_back_partial_stops():
    scanner = StopScanner(["END", "\n\n"])
    assert scanner.feed("abc E") == "abc "  # "E" might start END
    assert scanner.feed("N") == ""
    assert scanner.feed("Dxyz") == "" and scanner.done  # cut right before END
    other = StopScanner(["END"])
    assert other.feed("aE") == "a" and other.feed("x") == "Ex" and not other.done
    assert other.flush() == ""


def test_stop_strings_end_the_output_exactly(model, tokenizer):
    sampler = TextGenerator(model, tokenizer)
    full = sampler.complete("ab", SamplingOptions(max_tokens=60, greedy=True))[0].text
    stop = full[10:12]
    cut = full.index(stop)
    done = sampler.complete("ab", SamplingOptions(max_tokens=60, greedy=True, stop=[stop]))[0]
    assert done.text == full[:cut] and done.stop_reason == "stop"
    streamed = "".join(e[1] for e in sampler.stream("ab", SamplingOptions(max_tokens=60, greedy=True,
                                                                           stop=[stop]))
                       if not isinstance(e, list))
    assert streamed == full[:cut]


def test_banned_text_never_appears(model, tokenizer):
    sampler = TextGenerator(model, tokenizer)
    out = sampler.complete("ab", SamplingOptions(max_tokens=200, temperature=1.5, seed=0, num_samples=4,
                                                 ban=["a", "e", "."]))
    assert all(not set("ae.") & set(c.text) for c in out)
    assert all(len(c.text) == 200 and c.tokens == 200 for c in out)
    with pytest.raises(UserError, match="neither one character nor one token"):
        sampler.banned_ids(["xyz"])


def test_completion_figures(model, tokenizer):
    out = TextGenerator(model, tokenizer).complete("ab", SamplingOptions(max_tokens=12, seed=1, num_samples=3))
    assert len(out) == 3 and all(c.tokens == 12 and c.stop_reason == "length" for c in out)
    assert all(c.mean_logprob < 0 and math.isfinite(c.mean_logprob) and c.tokens_per_s > 0 for c in out)
    assert len({c.text for c in out}) > 1


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("values, message", [
    ({"temperature": -1}, "--temperature must be 0 \\(greedy\\) or between 0.0001 and 10,000"),
    ({"min_p": 0}, "--min-p must be above 0"),
    ({"beam_width": 0}, "--beam-width must be greater than 0"),
    ({"colour": 1}, "unknown option 'colour'"),
    ({"top_k": "many"}, "--top-k: expected int"),
])
def test_updated_names_the_option_in_errors(values, message):
    with pytest.raises(UserError, match=message):
        SamplingOptions().updated(values)


def test_updated_from_a_request_names_the_source_and_rejects_beams_with_samples():
    with pytest.raises(UserError, match=r"request: temperature must be 0 \(greedy\) or between"):
        SamplingOptions().updated({"temperature": -1}, source="request")
    with pytest.raises(UserError, match="cannot be combined"):
        SamplingOptions().updated({"beam_width": 3, "num_samples": 2})
    assert SamplingOptions().updated({"max-tokens": 5, "stop": "x"}).stop == ["x"]


@pytest.mark.parametrize("stop_token", [2, 5, 6, 11])
def test_length_penalty_lets_longer_finished_beams_win(model, stop_token):
    """A beam ends when it writes `stop_token`. Ranked by total log-probability (penalty 0)
    short finished beams win; dividing by length^3 favours the long ones."""
    lengths = {}
    for penalty in (0.0, 3.0):
        ids, _ = beam_search(model, [1, 2, 3], SamplingOptions(max_tokens=12, beam_width=4, length_penalty=penalty),
                             stop_at=lambda ids: len(ids) if ids[-1] == stop_token else None)
        lengths[penalty] = len(ids)
    assert lengths[0.0] < lengths[3.0] == 12


def test_beam_wider_than_the_vocabulary_is_refused(model, tokenizer):
    with pytest.raises(UserError, match="more than the model's"):
        beam_search(model, [1], SamplingOptions(beam_width=tokenizer.vocab_size + 1))
