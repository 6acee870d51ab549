"""Will the run fit? The memory a training run needs, estimated from its settings alone.

Checked when the run is planned, before the data is read or a tensor allocated: a shape or
batch that cannot fit the device is one line giving the estimate and the limit, at once,
instead of minutes of tokenising followed by an out-of-memory kill.

The estimate is a lower bound, per process, in bytes: a run refused by it cannot fit, and
one it lets through may still need more (fp32 activations, allocator slack, compilation).

    weights, gradients         4 + 4 bytes per parameter (fp32 master weights)
    optimizer state            AdamW 8 bytes per parameter (two moments); Muon 4 (one momentum)
                               for the blocks' matrices, AdamW for the rest
    activations kept for the   34 bytes per token, layer and channel (Korthikanti et al. 2022,
    backward                   at 16 bits, with attention that keeps no T x T scores, as the
                               fused kernels do; fp32 needs about twice); with activation
                               checkpointing one block's worth plus each block's input
    logits                     2 x 4 bytes per token and vocabulary entry (the fp32 logits and
                               their gradient)

A run checks first with a cheap upper bound of its parameters (written out below); only a run
that bound does not clear is counted exactly, on the meta device (no memory) for one and two
blocks, the rest following (every block has the same size). The meta device costs a second
the first time (it imports torch's compiler stack), which a run that fits never pays.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fundamentallm.config import Config, ModelConfig
from fundamentallm.errors import UserError
from fundamentallm.model import GPT

ACTIVATION_BYTES = 34  # per token, layer and channel kept for the backward, at 16 bits
LOGIT_BYTES = 8  # per token and vocabulary entry
VOCABULARY_GUESS = {"char": 256, "byte": 259, "bpe": 2048}  # before the tokenizer exists: a lower bound


@dataclass(frozen=True)
class Estimate:
    parameters: int
    state_bytes: int  # weights, gradients, optimizer state
    activation_bytes: int  # activations and logits of one micro-batch

    @property
    def total(self) -> int:
        return self.state_bytes + self.activation_bytes


def parameters(model: ModelConfig) -> tuple[int, int]:
    """(all parameters, those of the blocks) of a model of this shape, without allocating it."""
    with torch.device("meta"):
        one, two = (GPT(dataclasses.replace(model, num_layers=n)).num_parameters() for n in (1, 2))
    per_block = two - one
    return one + (model.num_layers - 1) * per_block, model.num_layers * per_block


def parameter_bound(model: ModelConfig) -> tuple[int, int]:
    """At least (all parameters, those of the blocks), from the shape alone: per block the
    attention's four d x d matrices at most (fewer with grouped key/value heads), three MLP
    matrices of d x hidden at most (SwiGLU's; two for the others), and its norms; plus input
    and output embeddings, a position table and the final norm."""
    d, hidden = model.model_dim, model.mlp_hidden or 4 * model.model_dim
    block = 4 * d * d + 3 * d * hidden + 8 * d
    blocks = model.num_layers * block
    return blocks + 2 * model.vocab_size * d + model.context_length * d + d, blocks


def estimate(cfg: Config, vocab_size: int, exact: bool = True) -> Estimate:
    """The run's memory; `exact` False: from parameter_bound (more than the run needs)."""
    model, training = cfg.model, cfg.training
    total, blocks = (parameters if exact else parameter_bound)(dataclasses.replace(model, vocab_size=vocab_size))
    optimizer = 4 * blocks + 8 * (total - blocks) if cfg.optim.optimizer == "muon" else 8 * total
    if cfg.lora.rank:  # the weights frozen: no gradients or optimizer state for them (the adapters are small)
        state = 4 * total
    else:
        state = 8 * total + optimizer
    tokens = training.batch_size * model.context_length
    layers = 1 if training.activation_checkpointing else model.num_layers
    kept = tokens * model.model_dim * (ACTIVATION_BYTES * layers + 2 * model.num_layers)
    return Estimate(total, state, kept + LOGIT_BYTES * tokens * vocab_size)


def device_memory(device: torch.device) -> int | None:
    """Bytes the device has: a GPU's memory, or for the CPU the machine's (or its container's
    limit, if lower). None when unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return torch.mps.recommended_max_memory()
    try:
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:  # cgroup v2: the container's limit ("max": none)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return min(machine, int(limit)) if limit.isdigit() else machine
    except OSError:
        return machine


def size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def check_fits(cfg: Config, device: torch.device, processes: int = 1) -> Estimate:
    """The run's estimate; a UserError if it cannot fit the device's memory. `processes`:
    how many take part (a CPU run's share this machine's memory; --fsdp shards the state
    over them)."""
    vocab = max(cfg.model.vocab_size, cfg.data.bpe_vocab_size or VOCABULARY_GUESS[cfg.data.tokenizer])
    limit = device_memory(device)
    sharing = processes if device.type == "cpu" else 1

    def per_process(exact: bool) -> Estimate:
        found = estimate(cfg, vocab, exact)
        if cfg.training.fsdp and processes > 1:
            found = dataclasses.replace(found, state_bytes=found.state_bytes // processes)
        return found

    found = per_process(exact=False)
    if limit is None or found.total * sharing <= limit:
        return found  # even the bound fits
    found = per_process(exact=True)
    if found.total * sharing > limit:
        training, model = cfg.training, cfg.model
        each = f" in each of {sharing} processes" if sharing > 1 else ""
        raise UserError(
            f"this run needs at least {size(found.total)} of memory{each} ({found.parameters:,} parameters: "
            f"{size(found.state_bytes)} for weights, gradients and optimizer state; {size(found.activation_bytes)} "
            f"of activations for --batch-size {training.batch_size} x --context-length {model.context_length:,}) "
            f"and {device.type} has {size(limit)}: choose a smaller --model-dim, --num-layers or --context-length, "
            "or a smaller --batch-size (--grad-accum-steps keeps the effective batch)")
    return found
