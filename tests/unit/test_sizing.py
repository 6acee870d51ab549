"""The budget sizing rule (training/sizing.py): its ladder of shapes and what it picks."""

from __future__ import annotations

import pytest
import torch

from fundamentallm.config import ModelConfig
from fundamentallm.console import amount
from fundamentallm.corpus.analysis import analyze_text
from fundamentallm.data.capacity import TOKENS_PER_PARAMETER, supported_parameters
from fundamentallm.model import GPT
from fundamentallm.training import sizing
from fundamentallm.training.sizing import LADDER, cost, model_for, size_for_budget

CHARS = ModelConfig(vocab_size=65)  # Shakespeare's characters
SHAKESPEARE_TRAIN = 4_500_000  # tokens in the first 90% of shakespeare.txt
ZEN5_BF16, ZEN5_FP32 = 1000.0, 230.0  # GFLOP/s measured on the 2-core Zen 5 CPU


def test_ladder_shapes_are_valid_and_grow():
    sizes = [cost(shape, CHARS)[0] for shape in LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert all(shape.model_dim % shape.num_heads == 0 for shape in LADDER)
    first = LADDER[sizing.DEFAULT_RUNG]  # the default shape is a rung of the ladder
    default = ModelConfig()
    assert (first.model_dim, first.num_layers, first.num_heads, first.context_length) == (
        default.model_dim, default.num_layers, default.num_heads, default.context_length)


def test_cost_counts_what_the_real_model_has():
    shape = LADDER[2]
    real = GPT(model_for(shape, CHARS))
    assert cost(shape, CHARS) == (real.num_parameters(), real.flops_per_token())


# The rule's table: what it chooses for Shakespeare on the Zen 5 CPU (section 7 of
# benchmarks/README.md) and on a GPU of 700 TFLOP/s.
@pytest.mark.parametrize(("budget", "peak", "dtype", "width"), [
    (105, ZEN5_BF16, torch.bfloat16, 128),  # measured best: 1.4900, against 1.5304 for 160 x 5
    (300, ZEN5_BF16, torch.bfloat16, 160),
    (600, ZEN5_BF16, torch.bfloat16, 192),  # measured best: 1.3785, against 1.4035 and 1.4319
    (1800, ZEN5_BF16, torch.bfloat16, 256),
    # fp32: 128 x 4 would get 2.4 tokens/parameter; 96 x 3 was no worse (1.5391 against 1.5468 on
    # the Xeon VM, benchmarks/README.md section 7)
    (105, ZEN5_FP32, torch.float32, 96),
    (600, ZEN5_FP32, torch.float32, 160),
    # a GPU: far larger than a CPU's in the same time, up to what 4.5M tokens support (5.1M
    # parameters: a 320 x 6 would see Shakespeare 140 times)
    (60, 700_000.0, torch.bfloat16, 256),
])
def test_the_rules_table(budget, peak, dtype, width):
    assert size_for_budget(budget, peak, dtype, SHAKESPEARE_TRAIN, CHARS).shape.model_dim == width


def test_more_time_never_gives_a_smaller_model():
    widths = [size_for_budget(b, ZEN5_BF16, torch.bfloat16, SHAKESPEARE_TRAIN, CHARS).parameters
              for b in (30, 105, 300, 600, 1800, 3600, 36_000)]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_the_chosen_shape_gets_its_tokens_and_the_next_one_would_not():
    chosen = size_for_budget(1800, ZEN5_BF16, torch.bfloat16, SHAKESPEARE_TRAIN, CHARS)
    assert chosen.tokens >= TOKENS_PER_PARAMETER * chosen.parameters
    bigger = LADDER[LADDER.index(chosen.shape) + 1]
    params, per_token = cost(bigger, CHARS)
    assert chosen.tokens * cost(chosen.shape, CHARS)[1] / per_token < TOKENS_PER_PARAMETER * params
    assert "1800 s" in chosen.note and "would get" in chosen.note


def test_a_small_corpus_caps_the_model():
    roomy = size_for_budget(3600, 700_000.0, torch.bfloat16, SHAKESPEARE_TRAIN, CHARS)
    small = size_for_budget(3600, 700_000.0, torch.bfloat16, 1_000_000, CHARS)
    assert small.parameters < roomy.parameters
    assert small.parameters <= supported_parameters(1_000_000)
    assert "1.0M training tokens support" in small.note


@pytest.mark.parametrize("tokens", [30_000, 100_000, 300_000])
def test_a_few_kilobytes_of_text_get_a_model_below_the_default(tokens):
    """33 KB of text once got the 0.8M-parameter default; the cap now reaches below it, and
    agrees with analyze_data.py's advice for the same text (one rule)."""
    sized = size_for_budget(600, ZEN5_BF16, torch.bfloat16, tokens, CHARS)
    default = cost(LADDER[sizing.DEFAULT_RUNG], CHARS)[0]
    assert sized.parameters <= supported_parameters(tokens) < default
    advice = " ".join(analyze_text("x" * tokens).recommendations)
    assert f"up to ~{amount(supported_parameters(tokens))} parameters" in advice
    assert "K tokens in 600 s" in sized.note or "M tokens in 600 s" in sized.note  # never "~0.0M"


def test_text_too_small_for_any_shape_is_said():
    sized = size_for_budget(600, ZEN5_BF16, torch.bfloat16, 3_000, CHARS)
    assert sized.shape == LADDER[0]
    assert "3.0K training tokens support only ~3.4K parameters" in sized.note


def test_a_budget_too_small_for_any_shape_gets_the_smallest_and_says_so():
    tiny = size_for_budget(0.05, ZEN5_FP32, torch.float32, SHAKESPEARE_TRAIN, CHARS)
    assert tiny.shape == LADDER[0] and "the smallest shape there is" in tiny.note
    assert "support only" not in tiny.note  # the budget is short, not the text


def test_a_shape_sets_every_sized_setting():
    assert set(LADDER[0].settings()) == {*sizing.SHAPE_KEYS, sizing.LEARNING_RATE_KEY}


def test_the_template_keeps_its_architecture():
    template = ModelConfig(vocab_size=300, activation="relu2", num_kv_heads=2, mlp_hidden=77)
    sized = model_for(LADDER[3], template)
    assert sized.activation == "relu2" and sized.vocab_size == 300
    assert sized.num_kv_heads is None and sized.mlp_hidden is None  # sized with the shape


def test_sizing_probes_the_peak_in_a_small_fraction_of_the_full_probe(monkeypatch):
    from fundamentallm.training import profiling

    work = []
    monkeypatch.setattr(profiling, "matmul_gflops", lambda dtype, size, repeats: work.append(
        16 * size**3 * repeats) or 100.0)  # (4s x s) @ (s x 2s), `repeats` times
    full = profiling.peak_gflops(torch.float32, torch.device("cpu"))
    full_work, work[:] = sum(work), []
    quick = profiling.peak_gflops(torch.float32, torch.device("cpu"), quick=True)
    assert full[0] == quick[0] == 100.0
    assert sum(work) * 10 < full_work  # every second of it comes out of the training budget
