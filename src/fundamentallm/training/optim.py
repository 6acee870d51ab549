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
from fundamentallm.model.lora import is_adapter
from fundamentallm.model.transformer import stacked_matrices
from fundamentallm.training.lookahead import Lookahead
from fundamentallm.training.muon import Muon


def is_hidden_matrix(name: str, p: torch.nn.Parameter) -> bool:
    """A weight matrix inside a block (not the embedding/head, not a norm gain). An untied
    output head is not one either: like the embedding it maps to or from the vocabulary, and
    Muon is for the hidden layers (Jordan et al. 2024 train both ends with AdamW). LoRA's
    adapter factors are not: they train with AdamW and no decay, as in Hu et al. and peft
    (an orthogonalised Muon step on an r-row factor has no such track record)."""
    return p.dim() == 2 and not name.startswith(("embed.", "positions.", "head.")) and not is_adapter(name)


def depth(name: str, num_layers: int) -> int:
    """How far from the input a parameter sits: 0 for the embeddings, i + 1 for block i,
    num_layers + 1 for the final norm (and an untied head)."""
    if name.startswith(("embed.", "positions.")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def num_blocks(model: torch.nn.Module) -> int:
    return len({name.split(".")[1] for name, _ in model.named_parameters() if name.startswith("blocks.")})


def freeze(model: torch.nn.Module, embeddings: bool, layers: int) -> None:
    """Keep the embeddings and/or the first `layers` blocks as they are: the lower layers of a
    pretrained model hold the most general features (discriminative fine-tuning, Howard &
    Ruder 2018). With tied weights, freezing the embedding freezes the output head too."""
    count = num_blocks(model)
    for name, p in model.named_parameters():
        d = depth(name, count)
        if (embeddings and d == 0) or 1 <= d <= layers:
            p.requires_grad_(False)


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 embedding_scale: float = 1.0) -> list[dict]:
    """Matrices of linear layers (decayed; `hidden`) and everything else (not decayed).

    With `layer_decay` < 1 (layer-wise learning-rate decay, as in ELECTRA and BEiT), each is
    split further by depth, and a group's `lr_scale` is layer_decay ** (steps below the
    top): 1 for the final norm, layer_decay for the last block, ... layer_decay ** (L + 1)
    for the embeddings. With `embedding_scale` != 1 an untied input embedding is a group of
    its own, its `lr_scale` times that. Matrices come first, then the rest, each from the
    input up; frozen parameters are left out.
    """
    count = num_blocks(model)
    names = {name for name, _ in model.named_parameters()}  # a tied weight appears once, as embed.weight
    own_rate = embedding_scale != 1.0 and "head.weight" in names
    groups: dict[tuple[bool, int, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            d = depth(name, count) if layer_decay != 1.0 else 0
            groups.setdefault((is_hidden_matrix(name, p), d, own_rate and name == "embed.weight"), []).append(p)
    return [
        {"params": groups[key], "weight_decay": weight_decay if key[0] else 0.0, "hidden": key[0],
         "lr_scale": (layer_decay ** (count + 1 - key[1]) if layer_decay != 1.0 else 1.0)
         * (embedding_scale if key[2] else 1.0)}
        for key in sorted(groups, key=lambda k: (not k[0], k[1], not k[2]))
    ]


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most `max_norm` (Pascanu et al.
    2013); return the norm before clipping.

    The result equals torch.nn.utils.clip_grad_norm_, which always multiplies (by a factor
    clamped to 1) so that a GPU never waits to learn the norm. On a CPU the norm is already
    known, so gradients are touched only when they are too large: most steps after the first
    few skip a pass over every gradient.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or grads[0].device.type != "cpu" or hasattr(grads[0], "device_mesh"):
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)  # a sharded (FSDP) norm: over all shards
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    norm = torch.nn.utils.get_total_norm(grads)
    if norm > max_norm:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


# An untied input embedding's peak rate over --learning-rate. Likely why it helps: a row
# moves only at the steps whose batch holds its token, by about the rate per entry (Adam), and
# it starts at std 0.02 while the blocks' outputs add to the residual stream at full scale, so
# at the common rate the token's own vector is soon a small part of the stream. (modded-nanogpt
# and nanochat train it tens of times faster than the output head.) Measured at 1400 steps on
# Shakespeare at 96 x 3: x5, x10 and x15 beat x1 by 0.011-0.038 nats on each of three seeds, x40
# lost (benchmarks/README.md section 15f). A tied embedding is also the output head: x1.
EMBEDDING_LR_RATIO = 10.0


def embedding_scale(cfg: OptimConfig) -> float:
    """The untied input embedding's rate over --learning-rate: --embedding-lr if given."""
    return EMBEDDING_LR_RATIO if cfg.embedding_lr is None else cfg.embedding_lr / cfg.learning_rate


def groups_for(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    return param_groups(model, cfg.weight_decay, cfg.layer_lr_decay, embedding_scale(cfg))


def build_adamw(model: torch.nn.Module, cfg: OptimConfig, device: torch.device,
                compute_dtype: torch.dtype | None = None) -> torch.optim.Optimizer:
    groups = [{**{k: v for k, v in g.items() if k != "hidden"}, "lr": cfg.learning_rate * g["lr_scale"]}
              for g in groups_for(model, cfg)]
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
        fused=device.type in ("cuda", "cpu"),  # one kernel for all parameters, not ~10 per tensor
    )


# Muon's peak rate over AdamW's: one --learning-rate moves every parameter group, and Muon's
# orthogonalised updates (every singular value 1) want a larger rate than Adam's per-element
# steps. Measured at 105 s on Shakespeare with the default model and --learning-rate 6e-3:
# Muon at 0.025 (this ratio) beat 0.05 on each of three seeds, 0.0125 was no better, 0.1 was
# worse (benchmarks/README.md, "One learning rate").
MUON_LR_RATIO = 0.025 / 6e-3


def build_muon(model: torch.nn.Module, cfg: OptimConfig, device: torch.device,
               compute_dtype: torch.dtype | None = None) -> torch.optim.Optimizer:
    groups = []
    for group in groups_for(model, cfg):
        if group.pop("hidden"):
            ratio = MUON_LR_RATIO if cfg.muon_lr is None else cfg.muon_lr / cfg.learning_rate
            group.update(muon=True, lr=cfg.learning_rate * ratio, lr_scale=group["lr_scale"] * ratio,
                         momentum=cfg.muon_momentum)
        else:
            group.update(muon=False, lr=cfg.learning_rate * group["lr_scale"])
        groups.append(group)
    # Newton–Schulz in bf16 on CUDA (as Jordan et al. do) and wherever the run trains in bf16
    # (a CPU with native bf16: there it is 4x faster, and 26% of the step at 6 x 384 in fp32);
    # in fp32 on a CPU training in fp32, where bf16 may be emulated.
    ns_dtype = torch.bfloat16 if device.type == "cuda" or compute_dtype == torch.bfloat16 else torch.float32
    return Muon(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), ns_dtype=ns_dtype,
                fused=device.type in ("cuda", "cpu"), stacked=stacked_matrices(model))


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": build_adamw,
    "muon": build_muon,
}


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device,
                    compute_dtype: torch.dtype | None = None) -> torch.optim.Optimizer | Lookahead:
    """`compute_dtype`: the autocast dtype of the run (None: fp32), for optimizers that do
    matmuls of their own (Muon's Newton–Schulz iteration)."""
    optimizer = OPTIMIZERS[cfg.optimizer](model, cfg, device, compute_dtype)
    if cfg.lookahead_steps:
        return Lookahead(optimizer, cfg.lookahead_steps, cfg.lookahead_alpha)
    return optimizer
