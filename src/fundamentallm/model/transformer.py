"""A decoder-only transformer language model, read top to bottom:
norms → positions → causal self-attention → MLPs → block → model.

Design (GPT-2, Radford et al. 2019, with the refinements that train small models fastest,
as measured in benchmarks/README.md):
- pre-norm residual blocks, RMSNorm (Zhang & Sennrich 2019) or LayerNorm;
- rotary position embeddings, RoPE (Su et al. 2021): positions enter through the angle
  between query and key, so attention depends on relative position only; or GPT-2's
  learned position table;
- QK-norm (Henry et al. 2020; Dehghani et al. 2023): queries and keys are normalised per
  head, which bounds the attention logits and tolerates higher learning rates;
- causal attention through `F.scaled_dot_product_attention`, which picks a fused kernel
  (written out instead for bf16 on a CPU, where that is faster: `attend`);
- MLP with ReLU² (So et al. 2021, "Primer"), GELU, or a SwiGLU gate (Shazeer 2020);
- residual-writing projections start at zero (as in the modded-nanogpt speedrun), so every
  block starts as the identity; or GPT-2's scaled normal init;
- input embedding and output projection share one matrix (Press & Wolf 2017), or not;
- grouped-query attention (Ainslie et al. 2023): groups of query heads share one key/value
  head, which shrinks the KV cache (what small public models such as SmolLM use);
- optional DropConnect on the blocks' weight matrices (Wan et al. 2013).

This file and kv_cache.py import nothing but torch: an exported model that no standard
`transformers` architecture computes carries them as its modelling code (interop/remote).

Every variant is chosen once, in `__init__`; `forward` has no branches on the config.
Shapes: B batch, T sequence length, C model_dim, H heads, D = C / H head size, K key/value
heads (H by default), V vocab.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache

try:  # FlexAttention (torch 2.5+): document masks on CUDA
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - an older torch: the dense mask serves everywhere
    BlockMask = create_block_mask = flex_attention = None

try:  # for annotations only (see the module docstring: exported, this file runs without it)
    from fundamentallm.config.schema import ModelConfig
except ImportError:  # pragma: no cover - only inside an exported model directory
    ModelConfig = object

# ---- norms: (cfg, dim) → module; `norm_gain` learns a per-channel scale after normalising ----
class RMSNorm(nn.RMSNorm):
    """x / rms(x) · gain (Zhang & Sennrich 2019), torch's, with the gain cast to the input's
    dtype: under bf16 autocast the per-head query/key norms receive bf16, and a gain of
    another dtype sends torch to a slow composite kernel instead of the fused one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, gain, self.eps)


# RMSNorm's eps None is torch's default, the eps of the input's dtype.
NORMS = {
    "rmsnorm": lambda cfg, dim: RMSNorm(dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_gain),
    "layernorm": lambda cfg, dim: nn.LayerNorm(dim, eps=1e-5 if cfg.norm_eps is None else cfg.norm_eps,
                                               bias=False, elementwise_affine=cfg.norm_gain),
}


# ---- linear layers inside blocks: plain, or with DropConnect ----
class DropConnectLinear(nn.Linear):
    """DropConnect (Wan et al. 2013): during training each step drops random *weights*, not
    activations, scaled by 1/(1 - p) so the expected matrix is the full one; evaluation
    uses the full matrix."""

    def __init__(self, in_features: int, out_features: int, p: float):
        super().__init__(in_features, out_features, bias=False)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.dropout(self.weight, self.p, self.training))


def block_linear(cfg: ModelConfig, in_features: int, out_features: int) -> nn.Linear:
    if cfg.dropconnect > 0:
        return DropConnectLinear(in_features, out_features, cfg.dropconnect)
    return nn.Linear(in_features, out_features, bias=False)


# ---- positions: each kind offers `embed` (at the input) and `rotate` (queries and keys) ----
class RotaryPositions(nn.Module):
    """Rotates each (i, i + D/2) pair of channels by an angle proportional to the position:
    channel pair i turns at rope_theta^(-2i/D) radians per position (the "rotate half"
    layout, as in Hugging Face's Llama)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # Derived from the config, so not saved in checkpoints (persistent=False).
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.reset_tables()

    def reset_tables(self) -> None:
        """(Re)compute the cos/sin tables, e.g. after the module was built on the meta device."""
        head_dim = self.cfg.model_dim // self.cfg.num_heads
        inv_freq = 1.0 / self.cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(self.cfg.context_length, dtype=torch.float32), inv_freq)  # (T_max, D/2)
        device = self.cos.device if self.cos.device.type != "meta" else None
        self.cos, self.sin = angles.cos().to(device), angles.sin().to(device)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x  # positions enter through `rotate` only

    def rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, H, T, D) at positions pos, (T,) or per sequence (B, T) → same shape, rotated."""
        cos = self.cos[pos].to(x.dtype).unsqueeze(-3)  # (1, T, D/2) or (B, 1, T, D/2)
        sin = self.sin[pos].to(x.dtype).unsqueeze(-3)
        x1, x2 = x.chunk(2, dim=-1)  # each (B, H, T, D/2)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class LearnedPositions(nn.Module):
    """GPT-2: a trained vector per position, added to the token embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.table = nn.Embedding(cfg.context_length, cfg.model_dim)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x + self.table.weight[pos]  # (B, T, C) + (T, C) or (B, T, C)

    def rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x


POSITIONS = {"rope": RotaryPositions, "learned": LearnedPositions}


# ---- attention ----
def kv_heads(cfg: ModelConfig) -> int:
    return cfg.num_kv_heads or cfg.num_heads


def written_out_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                          dropout: float, grouped: bool, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / √D + causal mask) v, step by step (Vaswani et al. 2017, eq. 1).

    q (B, H, T, D), k and v (B, K, S, D) → (B, H, T, D). The mask is aligned bottom-right:
    query i (of T) sees keys up to S - T + i, so a prompt fed after a cache lines up. A given
    `mask` (B, 1, T, S), True where a query may see a key, replaces the causal one."""
    if grouped:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (B, H, S, D)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)  # (B, H, S, D)
    T, S = q.shape[2], k.shape[2]
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif causal:
        visible = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)  # (T, S)
        scores = scores.masked_fill(~visible, float("-inf"))
    # Softmax in fp32: bf16's 8-bit mantissa would round small probabilities away.
    weights = F.dropout(torch.softmax(scores.float(), dim=-1), dropout).to(v.dtype)  # (B, H, T, S)
    return weights @ v  # (B, H, T, D)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, dropout: float,
           grouped: bool, mask: "torch.Tensor | BlockMask | None" = None) -> torch.Tensor:
    """Causal attention through the fastest kernel for the inputs' device and dtype.

    PyTorch's fused CPU kernel (flash attention for CPU) has a slow bf16 backward: measured
    2.2x slower than in fp32 at (16, 4, 128, 32) (benchmarks/README.md, "bf16 on a CPU");
    there the written-out form, whose softmax and mask torch.compile fuses, is 3x faster.
    Without gradients (scoring, generation) the fused forward wins again: evaluate scores
    1.6x the tokens/s with it. Everywhere else scaled_dot_product_attention picks a fused
    kernel (flash or memory-efficient attention on CUDA).

    A `mask` keeps attention inside documents (`document_mask`): a FlexAttention block mask,
    whose kernel skips the blocks nobody sees, or a dense boolean mask (B, 1, T, T)."""
    if BlockMask is not None and isinstance(mask, BlockMask):
        return compiled_flex_attention()(q, k, v, block_mask=mask, enable_gqa=grouped)
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
        return written_out_attention(q, k, v, causal, dropout, grouped, mask)
    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=grouped)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout, enable_gqa=grouped)


@functools.cache
def compiled_flex_attention():
    """FlexAttention compiled into one fused kernel (uncompiled it is a slow reference form)."""
    return torch.compile(flex_attention, dynamic=False)


def document_mask(documents: torch.Tensor) -> "torch.Tensor | BlockMask":
    """documents (B, T), each token's document number → what `attend` needs so that a token
    sees only the earlier tokens of its own document (block-causal attention). On CUDA a
    FlexAttention block mask (Dong et al. 2024); elsewhere FlexAttention has no backward
    pass, and the dense mask (B, 1, T, T) is used."""
    B, T = documents.shape
    if BlockMask is not None and documents.is_cuda:
        def same_document(b, h, q_index, kv_index):
            return (q_index >= kv_index) & (documents[b, q_index] == documents[b, kv_index])
        return create_block_mask(same_document, B, None, T, T, device=documents.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=documents.device).tril()  # (T, T)
    return ((documents[:, :, None] == documents[:, None, :]) & causal).unsqueeze(1)  # (B, 1, T, T)


def document_positions(documents: torch.Tensor) -> torch.Tensor:
    """documents (B, T) → each token's position within its document (B, T): positions
    restart at 0 where a document starts."""
    T = documents.shape[1]
    index = torch.arange(T, device=documents.device).expand_as(documents)  # (B, T)
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    return index - torch.where(starts, index, 0).cummax(dim=1).values  # (B, T)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_heads, kv_heads(cfg)
        self.dropout = cfg.dropout
        self.head_dim = head_dim = cfg.model_dim // cfg.num_heads
        # Queries, then keys, then values, stacked into one matrix for one matmul: C + 2 K D output channels.
        self.qkv_rows = (cfg.model_dim, self.num_kv_heads * head_dim, self.num_kv_heads * head_dim)
        self.qkv = block_linear(cfg, cfg.model_dim, sum(self.qkv_rows))
        # Each key/value head serves H / K query heads (SDPA repeats them when asked to).
        self.grouped = self.num_kv_heads != self.num_heads
        self.q_norm = NORMS[cfg.norm](cfg, head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = NORMS[cfg.norm](cfg, head_dim) if cfg.qk_norm else nn.Identity()
        self.proj = block_linear(cfg, cfg.model_dim, cfg.model_dim)
        self.proj_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, positions: nn.Module, pos: torch.Tensor, cache: KVCache | None,
                layer: int, mask: "torch.Tensor | BlockMask | None") -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.qkv_rows, dim=2)  # (B, T, C), (B, T, KD), (B, T, KD)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        q = positions.rotate(self.q_norm(q), pos)
        k = positions.rotate(self.k_norm(k), pos)
        if cache is not None:
            # A multi-token chunk is only fed into an empty cache (the prompt), so the causal
            # mask below lines up; single tokens attend to everything cached.
            k, v = cache.update(layer, k, v)  # (B, K, start + T, D)
        y = attend(q, k, v, causal=T > 1, dropout=self.dropout if self.training else 0.0,
                   grouped=self.grouped, mask=mask)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj_dropout(self.proj(y))


# ---- MLPs: (B, T, C) → (B, T, hidden) → (B, T, C); `down` writes into the residual stream ----
def mlp_hidden(cfg: ModelConfig) -> int:
    """The hidden width: given, or 4C (8C/3 for SwiGLU: three matrices with the parameters of two)."""
    return cfg.mlp_hidden or (8 * cfg.model_dim // 3 if cfg.activation == "swiglu" else 4 * cfg.model_dim)


class GeluMLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = block_linear(cfg, cfg.model_dim, mlp_hidden(cfg))
        self.down = block_linear(cfg, mlp_hidden(cfg), cfg.model_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class ReluSquaredMLP(GeluMLP):
    """Primer's ReLU²: cheaper than GELU and, for small GPTs, learns faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.relu(self.up(x)).square()))


class SwiGLU(nn.Module):
    """silu(x W_gate) * (x W_up), then down."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = mlp_hidden(cfg)
        self.gate_up_rows = (hidden, hidden)  # W_gate and W_up stacked: one matmul
        self.gate_up = block_linear(cfg, cfg.model_dim, 2 * hidden)
        self.down = block_linear(cfg, hidden, cfg.model_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # each (B, T, hidden)
        return self.dropout(self.down(F.silu(gate) * up))


MLPS = {"gelu": GeluMLP, "relu2": ReluSquaredMLP, "swiglu": SwiGLU}


def stacked_matrices(model: nn.Module) -> dict[nn.Parameter, tuple[int, ...]]:
    """The weights that are several matrices stacked by rows (attention's q|k|v, SwiGLU's
    gate|up), each with its parts' row counts. An optimizer that shapes a weight's update as one
    matrix (Muon) does so part by part: they are separate maps that only share a matmul."""
    stacked: dict[nn.Parameter, tuple[int, ...]] = {}
    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            stacked[module.qkv.weight] = module.qkv_rows
        elif isinstance(module, SwiGLU):
            stacked[module.gate_up.weight] = module.gate_up_rows
    return stacked


# ---- block and model ----
class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)): the pre-norm residual block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = NORMS[cfg.norm](cfg, cfg.model_dim)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = NORMS[cfg.norm](cfg, cfg.model_dim)
        self.mlp = MLPS[cfg.activation](cfg)

    def forward(self, x: torch.Tensor, positions: nn.Module, pos: torch.Tensor, cache: KVCache | None,
                layer: int, mask: "torch.Tensor | BlockMask | None" = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), positions, pos, cache, layer, mask)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.positions = POSITIONS[cfg.position](cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = NORMS[cfg.norm](cfg, cfg.model_dim)
        self.head = nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight  # one matrix reads tokens in and writes them out
        self.apply(self._init_weights)
        # The projections that write into the residual stream: zero (each block starts as the
        # identity), or GPT-2's std 0.02/sqrt(2L) so the stream's variance does not grow with depth.
        # Drawn either way, so both variants consume the same random numbers.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.num_layers))
                if cfg.zero_init:
                    nn.init.zeros_(p)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def set_dropout(self, p: float) -> None:
        """Every dropout rate at once (residual, MLP, embedding and attention; not
        DropConnect): for a dropout schedule."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, CausalSelfAttention):
                module.dropout = p

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward, Kaplan et al. 2020 / PaLM appendix B):
        6 per weight-matrix entry (2 forward, 4 backward), plus 12·L·C·T for the attention
        scores and mixing. Norm gains, a learned position table and an untied input embedding
        (a lookup) do no matmul work."""
        cfg = self.cfg
        lookups = [*self.positions.parameters(), *([] if cfg.tie_embeddings else [self.embed.weight])]
        matmul_params = sum(p.numel() for p in self.parameters() if p.dim() == 2) - sum(
            p.numel() for p in lookups)
        return 6 * matmul_params + 12 * cfg.num_layers * cfg.model_dim * cfg.context_length

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, reduction: str = "mean",
                documents: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) token ids → logits (B, T, V); or, given targets (B, T), the
        cross-entropy loss (targets of -100 are not scored). `documents` (B, T), each
        token's document number, keeps attention inside documents, positions restarting at
        each (document-masked packing; training and scoring only, without a cache)."""
        start = cache.length if cache is not None else 0
        if start + idx.shape[1] > self.cfg.context_length:
            raise ValueError(f"{start + idx.shape[1]} positions exceed the context length "
                             f"{self.cfg.context_length}")
        if documents is None:
            pos, mask = torch.arange(start, start + idx.shape[1], device=idx.device), None  # (T,)
        else:
            pos, mask = document_positions(documents), document_mask(documents)  # (B, T), mask
        x = self.dropout(self.positions.embed(self.embed(idx), pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, self.positions, pos, cache, layer, mask)
        if cache is not None:
            cache.advance(idx.shape[1])
        logits = self.head(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction
        )  # logits viewed (B*T, V), targets (B*T,)

    def new_cache(self, batch: int) -> KVCache:
        p = self.embed.weight
        head_dim = self.cfg.model_dim // self.cfg.num_heads
        return KVCache(self.cfg.num_layers, batch, kv_heads(self.cfg), self.cfg.context_length,
                       head_dim, p.device, p.dtype)
