"""Muon (Jordan et al. 2024): momentum, orthogonalised, for the hidden weight matrices.

For a weight matrix W the update is the momentum of its gradient with every singular value
set to 1 (the nearest semi-orthogonal matrix, U Vᵀ of the SVD). All directions then move at
the same rate, instead of the few dominant ones that plain SGD/Adam steps are made of; small
GPTs reach a given loss in markedly fewer steps (the modded-nanogpt speedrun records).

U Vᵀ is approximated by a few Newton–Schulz iterations, only matmuls. They run in bf16 on
CUDA and in a run trained in bf16, and in fp32 on a CPU trained in fp32, where bf16 matmuls
may be emulated (without AVX-512 BF16 or AMX) and many times slower. Embeddings, norm gains and anything not 2-D are trained by AdamW, in the same
optimizer object, so one state dict and one learning-rate schedule cover both.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adamw import adamw

# Quintic iteration coefficients from Jordan et al.: they push singular values into
# roughly [0.7, 1.2] in five steps, which trains as well as exact orthogonalisation.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# The Gram form pays where the matrix is at least this many times wider than tall (measured on
# a CPU in fp32: 2.1x faster at 128 x 682, 1.3x at 128 x 341, 0.7x for square ones).
GRAM_AFTER = 2


def orthogonalize(g: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """g (n, rows, cols), a stack of matrices → the same shape, singular values near 1."""
    x = g.to(dtype)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT  # (n, short, long): iterate on the smaller Gram matrix
    # Frobenius norm ≥ spectral norm, so this puts every singular value in (0, 1].
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    short, long = x.shape[-2:]
    iterate = gram_iterations if dtype == torch.float32 and long >= GRAM_AFTER * short else plain_iterations
    x = iterate(x, steps)
    return (x.mT if tall else x).to(g.dtype)


def plain_iterations(x: torch.Tensor, steps: int) -> torch.Tensor:
    """x (n, m, k), m ≤ k: each step x ← (a + b·G + c·G²) x with G = x xᵀ, 4m²k + 2m³ FLOPs."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT  # (n, m, m)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b·gram + c·gram²
        x = torch.baddbmm(x, poly, x, beta=a)  # a·x + poly·x
    return x


def gram_iterations(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The same iterations carried out on the (m, m) Gram matrix alone (fp32 only).

    Every step multiplies x on the left by P = a + b·G + c·G², a polynomial in G = x xᵀ, so
    x_k = Q x_0 with Q the product of the Ps, and the next Gram matrix is P G Pᵀ = G P² (P
    commutes with G). Each step is then three (m, m) products: 8m³ FLOPs against 4m²k + 2m³,
    and x is touched twice in all. In bf16 the recomputed G drifts further from x xᵀ with
    every step, so bf16 keeps the plain form."""
    a, b, c = NS_COEFFICIENTS
    gram = x @ x.mT  # (n, m, m)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    q = None
    for _ in range(steps):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c) + a * eye  # a + b·G + c·G²
        q = poly if q is None else poly @ q  # (n, m, m)
        gram = gram @ poly @ poly
    return q @ x if q is not None else x  # (n, m, k)


def as_whole(t: torch.Tensor) -> torch.Tensor:
    """The whole matrix of a sharded parameter's tensor (FSDP's DTensor: all-gathered), or `t`.
    Newton–Schulz needs whole matrices: every process orthogonalises every one (the same
    numbers everywhere) and keeps its own rows."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(param: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """`whole` laid out as `param` is: this process's shard of it, for a sharded parameter."""
    if not hasattr(param, "device_mesh"):
        return whole
    from torch.distributed.tensor import distribute_tensor  # loaded only for a sharded (FSDP) parameter

    return distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None)  # no communication


class Muon(torch.optim.Optimizer):
    """Param groups with `muon=True` get Muon; the others AdamW.

    Muon groups: lr, momentum, weight_decay (decoupled, like AdamW's). `stacked`: weights that
    are several matrices stacked by rows, with each part's rows; each part is orthogonalised
    on its own (measured: 0.005-0.028 nats lower after 1400 steps than the stack as one matrix;
    benchmarks/README.md 15g; modded-nanogpt and nanochat keep q, k and v apart for Muon too).
    AdamW groups: lr, betas, eps, weight_decay; updated by torch's own (fused) AdamW kernel.
    """

    def __init__(self, groups: list[dict], lr: float, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 ns_steps: int = 5, ns_dtype: torch.dtype = torch.float32, fused: bool = False,
                 stacked: dict[torch.Tensor, tuple[int, ...]] | None = None):
        defaults = dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=0.0, muon=False)
        super().__init__(groups, defaults)
        self.ns_steps, self.ns_dtype, self.fused = ns_steps, ns_dtype, fused  # how, not state
        self.stacked = stacked or {}  # weights stacked from parts (model/transformer.py stacked_matrices)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups hold 2-D weight matrices only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["muon"] else self._adamw_step)(params, group)
        return loss

    def _muon_step(self, params: list[torch.Tensor], group: dict) -> None:
        grads = [p.grad for p in params]
        for p in params:
            if not self.state[p]:
                self.state[p]["momentum"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum"] for p in params]
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])  # EMA of gradients
        nesterov = torch._foreach_lerp(grads, bufs, group["momentum"])  # look ahead along it
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])  # decoupled decay
        # A stacked weight (q|k|v, gate|up) is orthogonalised part by part, and same-shaped
        # matrices together: one batched matmul per iteration instead of one small one per part.
        parts: list[torch.Tensor] = []  # every matrix to orthogonalise, in order
        owner: list[int] = []  # the index in `params` of the weight each part belongs to
        for i, p in enumerate(params):
            whole = as_whole(nesterov[i])  # sharded (FSDP): each matrix gathered
            rows = self.stacked.get(p)
            pieces = whole.split(rows, dim=0) if rows else (whole,)
            parts.extend(pieces)
            owner.extend([i] * len(pieces))
        by_shape: dict[torch.Size, list[int]] = {}
        for j, part in enumerate(parts):
            by_shape.setdefault(part.shape, []).append(j)
        for shape, index in by_shape.items():
            directions = orthogonalize(torch.stack([parts[j] for j in index]), self.ns_steps, self.ns_dtype)
            # An orthogonal (rows, cols) matrix has RMS sqrt(1/max(rows, cols)); scale tall
            # matrices up so the per-entry step does not shrink with the fan-out.
            scale = math.sqrt(max(1.0, shape[0] / shape[1]))
            for j, direction in zip(index, directions.unbind(0)):
                parts[j] = direction * scale if scale != 1.0 else direction
        updates: list[list[torch.Tensor]] = [[] for _ in params]
        for part, i in zip(parts, owner):
            updates[i].append(part)
        torch._foreach_add_(params, [like(params[i], torch.cat(u) if len(u) > 1 else u[0])
                                     for i, u in enumerate(updates)], alpha=-group["lr"])

    def _adamw_step(self, params: list[torch.Tensor], group: dict) -> None:
        for p in params:
            if not self.state[p]:
                self.state[p].update(step=torch.zeros((), dtype=torch.float32, device=p.device),
                                     exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(params, [p.grad for p in params], [s["exp_avg"] for s in states],
              [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
              fused=self.fused, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
              weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
