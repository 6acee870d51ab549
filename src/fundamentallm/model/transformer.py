"""A decoder-only transformer language model, read top to bottom:
rotary position embedding → causal self-attention → MLP → block → model.

Design (GPT-2, Radford et al. 2019, with later refinements):
- pre-norm residual blocks with RMSNorm (Zhang & Sennrich 2019);
- rotary position embeddings, RoPE (Su et al. 2021): positions enter through the angle
  between query and key, so attention depends on relative position only;
- causal attention through `F.scaled_dot_product_attention`, which picks a fused kernel;
- input embedding and output projection share one matrix (Press & Wolf 2017).

Shapes: B batch, T sequence length, C model_dim, H heads, D = C / H head size, V vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fundamentallm.config.schema import ModelConfig
from fundamentallm.model.kv_cache import KVCache


class RotaryEmbedding(nn.Module):
    """Rotates each (i, i + D/2) pair of channels by an angle proportional to the position."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (max_len, D/2)
        # Derived from the config, so not saved in checkpoints (persistent=False).
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: (B, H, T, D) at positions start..start+T-1 → same shape, rotated."""
        T = x.shape[2]
        cos = self.cos[start:start + T].to(x.dtype)  # (T, D/2)
        sin = self.sin[start:start + T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # each (B, H, T, D/2)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.model_dim, 3 * cfg.model_dim, bias=False)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.proj_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding, cache: KVCache | None,
                layer: int) -> torch.Tensor:
        B, T, C = x.shape
        start = cache.length if cache is not None else 0
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, D)
        q, k = rope(q, start), rope(k, start)
        if cache is not None:
            # A multi-token chunk is only fed into an empty cache (the prompt), so the causal
            # mask below lines up; single tokens attend to everything cached.
            k, v = cache.update(layer, k, v)  # (B, H, start + T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=T > 1, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.model_dim, 4 * cfg.model_dim, bias=False)
        self.down = nn.Linear(4 * cfg.model_dim, cfg.model_dim, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))  # (B, T, C) → (B, T, 4C) → (B, T, C)


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)): the pre-norm residual block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.model_dim)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.model_dim)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding, cache: KVCache | None,
                layer: int) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rope = RotaryEmbedding(cfg.model_dim // cfg.num_heads, cfg.context_length)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.RMSNorm(cfg.model_dim)
        self.head = nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied input/output embedding
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2L), so
        # the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, reduction: str = "mean") -> torch.Tensor:
        """idx (B, T) token ids → logits (B, T, V); or, given targets (B, T), the
        cross-entropy loss (targets of -100 are not scored)."""
        start = cache.length if cache is not None else 0
        if start + idx.shape[1] > self.cfg.context_length:
            raise ValueError(f"{start + idx.shape[1]} positions exceed the context length "
                             f"{self.cfg.context_length}")
        x = self.dropout(self.embed(idx))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, self.rope, cache, layer)
        if cache is not None:
            cache.advance(idx.shape[1])
        logits = self.head(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), targets.view(-1), reduction=reduction
        )  # logits viewed (B*T, V), targets (B*T,)

    def new_cache(self, batch: int) -> KVCache:
        p = self.embed.weight
        head_dim = self.cfg.model_dim // self.cfg.num_heads
        return KVCache(self.cfg.num_layers, batch, self.cfg.num_heads, self.cfg.context_length,
                       head_dim, p.device, p.dtype)
