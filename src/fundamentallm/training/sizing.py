"""A model sized to the time it is given: `train --max-time S` with no shape set.

In a fixed compute budget the loss a model reaches depends on its size: a small model
saturates, a large one sees too few tokens to learn what it could. Compute-optimal training
gives each parameter a roughly fixed number of tokens (Kaplan et al. 2020; Hoffmann et al.
2022, "Chinchilla"), whatever the budget, so the best size grows with the square root of
the compute: training costs 6·N FLOPs per token for N parameters, and tokens = R·N gives
N = sqrt(C / 6R) for C FLOPs.

The rule, fitted to the measurements in benchmarks/README.md ("A model sized to its
budget"; raw results in benchmarks/results/):

    tokens(shape) = budget · USABLE_FRACTION · peak GFLOP/s · EFFICIENCY / FLOPs per token
    the largest shape of LADDER with tokens(shape) >= TOKENS_PER_PARAMETER · parameters
                   and parameters <= supported_parameters(training tokens)

The peak is this machine's, measured in the run's precision by a short form of the probe
`train --profile` uses (training/profiling.py; 0.2 s against 4 s on 2 AVX2 cores, both out
of the budget). The second condition keeps a small corpus
from getting a model that would memorise it: the rule of data/capacity.py, which
analyze_data.py's advice also states. Below the default shape the ladder goes down to models
of a few tens of thousands of parameters, for a few kilobytes of text or a few seconds.

A `--max-steps` budget fixes the tokens, not the compute: at a fixed number of tokens a larger
model is always better, only slower, so steps alone do not size a model (say --max-time for
that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fundamentallm.config.schema import ModelConfig
from fundamentallm.console import amount
from fundamentallm.data.capacity import TOKENS_PER_PARAMETER, supported_parameters
from fundamentallm.model import GPT

# Training's share of the budget: the rest goes to compiling a new shape, evaluation and
# checkpoints (measured: 12-18% of a 105-s run on a 2-core CPU).
USABLE_FRACTION = 0.8
# Model FLOPs per second over the matmul peak (MFU) that training reaches, by autocast dtype
# (benchmarks/throughput.py on a Zen 5 CPU: fp32 0.59-0.67, bf16 0.32-0.54).
EFFICIENCY = {torch.float32: 0.55, torch.bfloat16: 0.4, torch.float16: 0.4}

SHAPE_KEYS = ("model.model_dim", "model.num_layers", "model.num_heads", "model.num_kv_heads",
              "model.context_length", "model.mlp_hidden", "training.batch_size")
LEARNING_RATE_KEY = "optim.learning_rate"


@dataclass(frozen=True)
class Shape:
    model_dim: int
    num_layers: int
    num_heads: int
    context_length: int
    batch_size: int
    learning_rate: float

    def settings(self) -> dict[str, object]:
        """The config values this shape sets, by SHAPE_KEYS and LEARNING_RATE_KEY (a sized
        model has no separate key/value heads or MLP width: they follow the shape)."""
        return {"model.model_dim": self.model_dim, "model.num_layers": self.num_layers,
                "model.num_heads": self.num_heads, "model.num_kv_heads": None,
                "model.context_length": self.context_length, "model.mlp_hidden": None,
                "training.batch_size": self.batch_size, LEARNING_RATE_KEY: self.learning_rate}

    def describe(self) -> str:
        return (f"{self.model_dim} wide x {self.num_layers} layers x {self.num_heads} heads, "
                f"context {self.context_length}, batch {self.batch_size}")


# Each shape about 1.6-2.5x the parameters of the one before. 128 x 4 is the default (the
# best after 105 s on a CPU); 384 x 6 at context 256 is nanoGPT's Shakespeare model. The four
# below it are for corpora of a few kilobytes (and budgets of a few seconds).
DEFAULT_RUNG = 4
LADDER = (
    Shape(32, 2, 2, 64, 16, 6e-3),
    Shape(48, 2, 2, 64, 16, 6e-3),
    Shape(64, 3, 2, 128, 16, 6e-3),
    Shape(96, 3, 3, 128, 16, 6e-3),
    Shape(128, 4, 4, 128, 16, 6e-3),
    Shape(160, 5, 5, 128, 16, 6e-3),
    Shape(192, 6, 6, 256, 16, 6e-3),
    Shape(256, 6, 4, 256, 16, 6e-3),
    Shape(320, 6, 5, 256, 16, 6e-3),
    Shape(384, 6, 6, 256, 32, 6e-3),
    Shape(512, 8, 8, 256, 32, 6e-3),
    Shape(640, 10, 10, 512, 32, 6e-3),
    Shape(768, 12, 12, 512, 32, 6e-3),
    Shape(1024, 16, 16, 1024, 32, 6e-3),
)


@dataclass(frozen=True)
class Sizing:
    shape: Shape
    parameters: int
    tokens: float  # what it can train on in the budget
    note: str  # one line: the choice and the reason


def model_for(shape: Shape, template: ModelConfig) -> ModelConfig:
    """`template` (vocabulary, architecture) with `shape`'s size."""
    return dataclasses.replace(template, model_dim=shape.model_dim, num_layers=shape.num_layers,
                               num_heads=shape.num_heads, num_kv_heads=None,
                               context_length=shape.context_length, mlp_hidden=None)


def cost(shape: Shape, template: ModelConfig) -> tuple[int, int]:
    """(parameters, training FLOPs per token) of `shape`, counted on the meta device (no memory)."""
    with torch.device("meta"):
        model = GPT(model_for(shape, template))
    return model.num_parameters(), model.flops_per_token()


def size_for_budget(budget_s: float, peak_gflops: float, dtype: torch.dtype, train_tokens: int,
                    template: ModelConfig) -> Sizing:
    """The shape for `budget_s` seconds on a machine of `peak_gflops` (all processes together)
    in autocast `dtype`, for a corpus of `train_tokens`."""
    flops = budget_s * USABLE_FRACTION * peak_gflops * 1e9 * EFFICIENCY[dtype]
    supported = supported_parameters(train_tokens)
    rows = []
    for shape in LADDER:
        parameters, per_token = cost(shape, template)
        rows.append((shape, parameters, flops / per_token))
    fits = [r for r in rows if r[2] >= TOKENS_PER_PARAMETER * r[1] and r[1] <= supported]
    shape, parameters, tokens = fits[-1] if fits else rows[0]
    if fits and fits[-1] is not rows[-1]:
        bigger = rows[rows.index(fits[-1]) + 1]
        why = (f"a {bigger[0].model_dim} x {bigger[0].num_layers} would get "
               f"{bigger[2] / bigger[1]:.1f} tokens/parameter" if bigger[2] < TOKENS_PER_PARAMETER * bigger[1]
               else f"a {bigger[0].model_dim} x {bigger[0].num_layers} ({amount(bigger[1])}) is more than "
                    f"{amount(train_tokens)} training tokens support, ~{amount(supported)} parameters")
    elif fits:
        why = "the largest shape there is"
    elif rows[0][1] > supported:
        why = (f"the smallest shape there is; {amount(train_tokens)} training tokens support only "
               f"~{amount(supported)} parameters, so expect it to memorise them: more text helps most")
    else:
        why = "the smallest shape there is"
    note = (f"{shape.describe()}, lr {shape.learning_rate:g}: {amount(parameters)} parameters for "
            f"~{amount(int(tokens))} tokens in {budget_s:g} s ({tokens / parameters:.1f} per parameter; "
            f"{why}; sizing aims at {TOKENS_PER_PARAMETER:g})")
    return Sizing(shape, parameters, tokens, note)
