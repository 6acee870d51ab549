"""Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"): trade compute for memory.

Backpropagation needs what each layer computed in the forward pass. Kept, those activations
take memory in proportion to batch x context x width x layers, which for a large model or a
long context dwarfs the weights. With `--activation-checkpointing` each transformer block
keeps only its input; its insides are computed again, block by block, during the backward
pass (`torch.utils.checkpoint`, non-reentrant). The cost is about one more forward pass per
step (~a third more compute); the saving is most of the activation memory
(`saved_bytes` measures it: the bytes autograd keeps; benchmarks/memory.py).

The random state is replayed for the recomputation, so dropout draws the same masks and
the losses are those of a run without it. Only the block's `forward` is replaced, on each
block object: the parameter names, and so the checkpoints, stay the same.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from fundamentallm.model import GPT


def checkpoint_blocks(model: GPT) -> None:
    """Recompute every block's activations in the backward pass instead of keeping them."""
    for block in model.blocks:
        plain = block.forward

        def recomputed(*args, _plain=plain, **kwargs) -> torch.Tensor:
            return checkpoint(_plain, *args, use_reentrant=False, **kwargs)

        block.forward = recomputed  # this block object only: Block itself is unchanged


def saved_bytes(model: GPT, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass during one forward of
    (x, y) (counted as they are saved: exact on any device), then runs that backward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x, y)
    loss.backward()
    return total
