"""Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"): trade compute for memory.

Backpropagation needs what each layer computed in the forward pass. Kept, those activations
take memory in proportion to batch x context x width x layers, which for a large model or a
long context dwarfs the weights. With `--activation-checkpointing` each transformer block
keeps only its input; its insides are computed again, block by block, during the backward
pass (`torch.utils.checkpoint`, non-reentrant). The cost is about one more forward pass per
step (~a third more compute); the saving is most of the activation memory
(tests/unit/test_activation_checkpointing.py measures it as the bytes autograd saves).

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
