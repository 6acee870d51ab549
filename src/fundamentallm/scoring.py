"""Scoring a model on a stream of token ids: total nats over non-overlapping windows.

Every token after the first is predicted exactly once (a token at the start of a window
sees only that window as context), and tokens the model cannot represent (`<unk>`) are not
scored but counted. Training's validation and the `evaluate` command (evaluation.py) both
score this way, so their losses are the same number for the same text.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from fundamentallm.data.batching import IGNORE_INDEX, make_batch, scoring_windows
from fundamentallm.model import GPT


@dataclass(frozen=True)
class Shard:
    """This process's share of an evaluation: windows rank, rank + count, ...; `sum` adds a
    tensor over all the processes (an all-reduce), so every process gets the whole total."""

    rank: int
    count: int
    sum: Callable[[torch.Tensor], torch.Tensor]


def batches_of(windows: list[tuple[int, int]], batch_size: int) -> list[tuple[torch.Tensor, int]]:
    """(starts, length) batches: windows of equal length together (only the last can be shorter)."""
    batches = []
    for length in sorted({w[1] for w in windows}, reverse=True):
        starts = torch.tensor([s for s, n in windows if n == length])
        batches += [(chunk, length) for chunk in starts.split(batch_size)]
    return batches


@torch.no_grad()
def total_loss(model: GPT, ids: torch.Tensor, batch_size: int, unk_id: int | None,
               max_windows: int | None = None, autocast=nullcontext, shard: Shard | None = None,
               progress: Callable[[int, int], None] = lambda done, total: None,
               trained: np.ndarray | None = None) -> tuple[float, int, int]:
    """Sum of nats over the scored targets, how many were scored, and how many skipped;
    `progress(windows scored, windows)` after each forward pass. `trained` (a bool per id):
    only the targets it marks count (a conversation's assistant tokens).

    With a `shard`, this process scores only its share of the windows and the sums are
    added over all processes: each does 1/N of the work, and all get the same totals. Every
    process runs as many forward passes (one that is short repeats a batch and drops its
    result), since a sharded model (FSDP) gathers its weights with the others in each."""
    context = model.cfg.context_length
    device = next(model.parameters()).device
    windows = scoring_windows(len(ids), context, max_windows)
    rank, count = (shard.rank, shard.count) if shard else (0, 1)
    batches = batches_of(windows[rank::count], batch_size)
    passes = max(len(batches_of(windows[r::count], batch_size)) for r in range(count))
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # nats, scored, skipped
    done, mine = 0, sum(len(starts) for starts, _ in batches)  # this process's windows
    for i in range(passes):
        starts, length = batches[i] if i < len(batches) else batches_of(windows[:1], 1)[0]
        x, y = make_batch(ids, starts, length, unk_id, trained)
        n_ignored = int((y == IGNORE_INDEX).sum())
        with autocast():
            nats = model(x.to(device), y.to(device), reduction="sum").double()
        if i < len(batches):  # not a repeated pass (a batch with no target to score adds 0 nats)
            totals += torch.stack([nats, nats.new_tensor(y.numel() - n_ignored), nats.new_tensor(n_ignored)])
            done += len(starts)
            progress(done, mine)
    model.train(was_training)
    if shard:
        totals = shard.sum(totals)
    nats, scored, skipped = totals.tolist()
    return nats, int(scored), int(skipped)


def bits_per_char(nats_per_token: float, chars_per_token: float) -> float:
    return nats_per_token / (math.log(2) * chars_per_token)
