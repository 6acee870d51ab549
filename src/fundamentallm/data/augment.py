"""Text augmentation for training windows: random token deletion and duplication.

Each token of a window is deleted with probability p, and each kept token is doubled with
probability p (random insertion and deletion, done on token ids so it works for every
tokenizer). The model sees slightly garbled variants of its text, which regularises a small
corpus the way noise does; validation text is never augmented.

The window keeps its length: it is cut from a longer stretch of text (deletion shortens
it by ~p on average, so `slack` spare tokens cover that with room to spare), and the random
numbers come from a generator the caller seeds per batch, so a resumed run sees the same
augmented batches.
"""

from __future__ import annotations

import math

import torch


def slack(length: int, p: float) -> int:
    """Spare tokens to read beyond a window so deletions rarely leave it short: the mean
    loss plus ten standard deviations (the expected length shrinks by a factor ~(1 - p^2))."""
    return 0 if p == 0 else 8 + math.ceil(length * p + 10 * math.sqrt(length * p))


def augment(windows: torch.Tensor, length: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """windows (B, length + slack) token ids → (B, length): each row with tokens deleted and
    doubled at random. A row that came out too short (about one in a billion) stays as it was."""
    drop = torch.rand(windows.shape, generator=generator) < p
    double = torch.rand(windows.shape, generator=generator) < p
    rows = []
    for row, dropped, doubled in zip(windows, drop, double):
        kept = ~dropped
        edited = torch.repeat_interleave(row[kept], 1 + doubled[kept].long())  # (kept + doubled,)
        rows.append(edited[:length] if len(edited) >= length else row[:length])
    return torch.stack(rows)  # (B, length)
