"""The optimizer: AdamW (Loshchilov & Hutter 2019) with weight decay on matrices only.

Decay pulls weights toward zero. For the matrices of linear layers that is a useful
regulariser; for norm gains, biases and the (tied) embedding it only fights the values
they need, so those get no decay (as in GPT-2, nanoGPT and most modern recipes).
"""

from __future__ import annotations

import torch

from fundamentallm.config.schema import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices of linear layers (decayed) and everything else (not decayed)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied weight appears once, as embed.weight
        if not p.requires_grad:
            continue
        is_embedding = name.startswith("embed.")
        (decay if p.dim() >= 2 and not is_embedding else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device
                    ) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        fused=device.type == "cuda",  # one kernel for all parameters on GPU
    )
