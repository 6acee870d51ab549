"""Scoring a model on text: loss in nats per token, perplexity, bits per character.

The whole text is scored in non-overlapping windows, so every token after the first is
predicted exactly once (a token at the start of a window sees only that window as
context). Tokens the model cannot represent (`<unk>`) are not scored, and counted.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from fundamentallm.data.dataset import IGNORE_INDEX, make_batch, scoring_windows
from fundamentallm.errors import UserError
from fundamentallm.model import GPT


@dataclass
class Score:
    loss: float  # mean nats per scored token
    perplexity: float
    bits_per_char: float
    tokens: int  # scored tokens
    unknown: int  # tokens not scored because the model never saw them

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def total_loss(model: GPT, ids: torch.Tensor, batch_size: int, unk_id: int | None,
               max_windows: int | None = None, autocast=nullcontext) -> tuple[float, int, int]:
    """Sum of nats over the scored targets, how many were scored, and how many skipped."""
    context = model.cfg.context_length
    device = next(model.parameters()).device
    windows = scoring_windows(len(ids), context, max_windows)
    was_training = model.training
    model.eval()
    nats, scored, skipped = torch.zeros((), dtype=torch.float64, device=device), 0, 0
    # Windows of equal length are batched together (only the last one can be shorter).
    for length in sorted({w[1] for w in windows}, reverse=True):
        starts = torch.tensor([s for s, n in windows if n == length])
        for chunk in starts.split(batch_size):
            x, y = make_batch(ids, chunk, length, unk_id)
            n_ignored = int((y == IGNORE_INDEX).sum())
            skipped += n_ignored
            scored += y.numel() - n_ignored
            if y.numel() > n_ignored:
                with autocast():
                    nats += model(x.to(device), y.to(device), reduction="sum").double()
    model.train(was_training)
    return float(nats), scored, skipped


def evaluate(model: GPT, ids: torch.Tensor, batch_size: int, unk_id: int | None) -> Score:
    """Score every token of `ids` (a whole file)."""
    if len(ids) < 2:
        raise UserError("text to evaluate must hold at least 2 tokens")
    nats, scored, skipped = total_loss(model, ids, batch_size, unk_id)
    if scored == 0:
        raise UserError("no token of the text is known to the model; nothing to score")
    loss = nats / scored
    # Character tokenizer: one token is one character, so bits/char = nats/token / ln 2.
    return Score(loss, math.exp(loss), loss / math.log(2), scored, skipped)
