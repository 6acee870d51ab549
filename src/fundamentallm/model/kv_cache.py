"""Key/value cache for incremental decoding: past keys and values, so each new token costs
one position of attention work instead of recomputing the whole context."""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated keys and values for every layer, filled left to right.

    Shapes: keys/values (layers, batch, kv heads, max_len, head_dim). `length` is how many
    positions are filled; the model reads it as the position of the next token.
    """

    def __init__(self, num_layers: int, batch: int, num_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (num_layers, batch, num_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (batch, heads, new, head_dim) at `length`; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Called once per forward pass, after every layer has appended its n positions."""
        self.length += n

    def reset(self) -> None:
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the sequences `index` (B,) in that order (beam search picks the beams to extend)."""
        self.keys = self.keys.index_select(1, index)
        self.values = self.values.index_select(1, index)
