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
                   and parameters <= PARAMETERS_PER_TRAIN_TOKEN · training tokens

The peak is this machine's, measured by the same probe as `train --profile`
(training/profiling.py), in the run's precision. The second condition keeps a small corpus
from getting a model that would memorise it. A `--max-steps` budget fixes the tokens, not
the compute: at a fixed number of tokens a larger model is always better, only slower, so
steps alone do not size a model (say --max-time for that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fundamentallm.config.schema import ModelConfig
from fundamentallm.model import GPT

# Training's share of the budget: the rest goes to compiling a new shape, evaluation and
# checkpoints (measured: 12-18% of a 105-s run on a 2-core CPU).
USABLE_FRACTION = 0.8
# Model FLOPs per second over the matmul peak (MFU) that training reaches, by autocast dtype
# (benchmarks/throughput.py on a Zen 5 CPU: fp32 0.59-0.67, bf16 0.32-0.54).
EFFICIENCY = {torch.float32: 0.55, torch.bfloat16: 0.4, torch.float16: 0.4}
# Tokens each parameter sees at the best shape for a budget. Fitted on Shakespeare (bf16, Zen 5,
# benchmarks/README.md section 7): after 105 s the best shape saw 5.3-7.3 tokens/parameter and the
# next one up, worse, 1.3; after 600 s the best (192 x 6, 1.3785) saw 3.8 and beat 160 x 5
# (1.4035, 12) and 128 x 4 (1.4319, 35). Far below Chinchilla's ~20: at a budget this short,
# size pays more than tokens.
TOKENS_PER_PARAMETER = 3.5
# At most this many parameters per training token (beyond it a model memorises its corpus).
PARAMETERS_PER_TRAIN_TOKEN = 2.0

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


# Each shape about 1.6-2.5x the parameters of the one before. The first is the default (the
# best after 105 s on a CPU); 384 x 6 at context 256 is nanoGPT's Shakespeare model.
LADDER = (
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
    rows = []
    for shape in LADDER:
        parameters, per_token = cost(shape, template)
        rows.append((shape, parameters, flops / per_token))
    fits = [r for r in rows if r[2] >= TOKENS_PER_PARAMETER * r[1]
            and r[1] <= PARAMETERS_PER_TRAIN_TOKEN * train_tokens]
    shape, parameters, tokens = fits[-1] if fits else rows[0]
    if fits and fits[-1] is not rows[-1]:
        bigger = rows[rows.index(fits[-1]) + 1]
        why = (f"a {bigger[0].model_dim} x {bigger[0].num_layers} would get "
               f"{bigger[2] / bigger[1]:.1f} tokens/parameter" if bigger[2] < TOKENS_PER_PARAMETER * bigger[1]
               else f"a {bigger[0].model_dim} x {bigger[0].num_layers} would have more than "
                    f"{PARAMETERS_PER_TRAIN_TOKEN:g} parameters per training token ({train_tokens:,})")
    elif fits:
        why = "the largest shape there is"
    else:
        why = "the smallest shape there is"
    note = (f"{shape.describe()}, lr {shape.learning_rate:g}: {parameters / 1e6:.1f}M parameters for "
            f"~{tokens / 1e6:.1f}M tokens in {budget_s:g} s ({tokens / parameters:.1f} per parameter; "
            f"{why}; sizing aims at {TOKENS_PER_PARAMETER:g})")
    return Sizing(shape, parameters, tokens, note)
