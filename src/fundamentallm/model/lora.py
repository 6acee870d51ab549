"""LoRA: fine-tuning a trained model through low-rank adapters (Hu et al. 2021).

A fine-tune changes a weight matrix W (out × in) by a small amount. LoRA learns that change
as a product of two thin matrices, ΔW = (α / r) · B A with A (r × in) and B (out × r), and
keeps W itself frozen:

    y = x Wᵀ + (α / r) · (x Aᵀ) Bᵀ

Only A and B train: r · (in + out) numbers per matrix instead of in · out, so the gradients
and the optimizer's state shrink by the same factor (AdamW keeps two numbers per trained
weight, which for a full fine-tune is twice the model). B starts at zero, so the adapted
model starts as the base model exactly; A starts as nn.Linear's weights do (Kaiming
uniform), as in the paper and peft. α / r scales the update so that a larger rank does not
need a smaller learning rate.

`LoRALinear` is an nn.Linear that holds the *same* weight Parameter as the layer it adapts,
plus `lora_a` and `lora_b`: the weight keeps its name (`blocks.0.attn.qkv.weight`), so
everything that reads our weights by name (checkpoints, the Hugging Face and GGUF export
mappings, the optimizer's groups) reads a LoRA model unchanged. (peft, the library for this,
wraps each layer and renames its weight to `...qkv.base_layer.weight`, which every one of
those would have to learn; the arithmetic is these few lines.)

`merge_lora` folds each adapter into its weight, W + (α / r) B A, and puts plain nn.Linear
layers back: the model the adapters describe, with no LoRA left in it (for export).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fundamentallm.config.schema import LORA_TARGETS

# The layers of a block each target names (config/schema.py's LORA_TARGETS).
LAYER_NAMES = dict(zip(LORA_TARGETS, (("qkv",), ("proj",), ("up", "gate_up"), ("down",))))


class LoRALinear(nn.Linear):
    """x Wᵀ + (α / r) · (x Aᵀ) Bᵀ, with W the adapted layer's own (frozen) weight."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: its name and its tensor stay
        self.register_parameter("bias", None)
        p = linear.weight
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=p.device, dtype=p.dtype))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=p.device, dtype=p.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's own weights
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(x, self.lora_a)  # (..., in) -> (..., r)
        return F.linear(x, self.weight) + F.linear(low, self.lora_b) * self.scale  # (..., out)

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.scale * (self.lora_b @ self.lora_a)  # (out, r) @ (r, in) -> (out, in)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_a.shape[0]}, scale={self.scale:g}"


def is_adapter(name: str) -> bool:
    """A LoRA parameter's name (`...qkv.lora_a`): what a LoRA checkpoint stores."""
    return name.endswith((".lora_a", ".lora_b"))


def add_adapters(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...]) -> int:
    """Freeze every parameter of `model` and put an adapter of `rank` on each block layer
    named in `targets` (LORA_TARGETS); return how many. The adapters are drawn from torch's
    random state, so a seeded run draws the same ones."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = {layer for target in targets for layer in LAYER_NAMES[target]}
    adapted = [(parent, child) for parent in model.modules() for child, module in parent.named_children()
               if child in names and type(module) is nn.Linear]
    for parent, child in adapted:
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return len(adapted)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight and put plain layers back (in place; returned)."""
    for parent in list(model.modules()):
        for child, module in list(parent.named_children()):
            if isinstance(module, LoRALinear):
                plain = nn.Linear(module.in_features, module.out_features, bias=False,
                                  device=module.weight.device, dtype=module.weight.dtype)
                with torch.no_grad():
                    plain.weight.copy_(module.merged_weight())
                setattr(parent, child, plain)
    return model
