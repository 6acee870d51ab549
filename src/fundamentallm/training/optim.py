"""Optimizers: AdamW (Loshchilov & Hutter 2019), or Muon for the hidden matrices with AdamW
for the rest (see muon.py). Weight decay applies to matrices only.

Decay pulls weights toward zero. For the matrices of linear layers that is a useful
regulariser; for norm gains, biases and the (tied) embedding it only fights the values
they need, so those get no decay (as in GPT-2, nanoGPT and most modern recipes).

Every param group carries `lr_scale`: the loop sets `lr = schedule(step) * lr_scale`, so one
schedule drives groups with different peak rates.
"""

from __future__ import annotations

from typing import Callable

import torch

from fundamentallm.config.schema import OptimConfig
from fundamentallm.training.muon import Muon


def is_hidden_matrix(name: str, p: torch.nn.Parameter) -> bool:
    """A weight matrix inside a block (not the embedding/head, not a norm gain)."""
    return p.dim() == 2 and not name.startswith(("embed.", "positions."))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices of linear layers (decayed) and everything else (not decayed)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied weight appears once, as embed.weight
        if p.requires_grad:
            (decay if is_hidden_matrix(name, p) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most `max_norm` (Pascanu et al.
    2013); return the norm before clipping.

    The result equals torch.nn.utils.clip_grad_norm_, which always multiplies (by a factor
    clamped to 1) so that a GPU never waits to learn the norm. On a CPU the norm is already
    known, so gradients are touched only when they are too large: most steps after the first
    few skip a pass over every gradient (~0.3 ms of a 21 ms baby-GPT step).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or grads[0].device.type != "cpu":
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    norm = torch.nn.utils.get_total_norm(grads)
    if norm > max_norm:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def build_adamw(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = [dict(g, lr_scale=1.0) for g in param_groups(model, cfg.weight_decay)]
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
        fused=device.type in ("cuda", "cpu"),  # one kernel for all parameters, not ~10 per tensor
    )


def build_muon(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    hidden, rest = param_groups(model, cfg.weight_decay)
    groups = [
        dict(hidden, muon=True, lr=cfg.muon_lr, lr_scale=cfg.muon_lr / cfg.learning_rate,
             momentum=cfg.muon_momentum),
        dict(rest, muon=False, lr=cfg.learning_rate, lr_scale=1.0),
    ]
    # bf16 Newton–Schulz only where bf16 matmuls are fast (CUDA); fp32 on CPU.
    ns_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return Muon(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), ns_dtype=ns_dtype,
                fused=device.type in ("cuda", "cpu"))


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": build_adamw,
    "muon": build_muon,
}


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device
                    ) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](model, cfg, device)
