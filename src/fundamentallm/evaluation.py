"""Scoring a model on text: loss in nats per token, perplexity, bits per character and byte.

The whole text is scored in non-overlapping windows, so every token after the first is
predicted exactly once (a token at the start of a window sees only that window as
context). Tokens the model cannot represent (`<unk>`) are not scored, and counted.

Loss per token depends on the tokenizer (a BPE token holds several characters), so models
with different tokenizers are compared per character or per byte of the scored text: the
same total information (nats) divided by the characters (bytes) it predicted.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from fundamentallm.data.batching import IGNORE_INDEX, make_batch, scoring_windows
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.tokenizers import Tokenizer


@dataclass
class Score:
    loss: float  # mean nats per scored token
    perplexity: float  # per token
    bits_per_char: float  # total bits / characters predicted: comparable across tokenizers
    bits_per_byte: float  # total bits / UTF-8 bytes predicted
    tokens: int  # scored tokens
    characters: int  # characters those tokens spell
    bytes: int  # their UTF-8 bytes
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


def bits_per_char(nats_per_token: float, chars_per_token: float) -> float:
    return nats_per_token / (math.log(2) * chars_per_token)


def scored_text(tokenizer: Tokenizer, text: str, ids: list[int]) -> tuple[int, int]:
    """Characters and bytes of `text` that scoring predicts: all but the first token's and
    the unknown tokens' (a character tokenizer's `<unk>` stands for one character)."""
    skipped = tokenizer.decode(ids[:1])
    if tokenizer.unk_id is not None:
        skipped += "".join(c for c, i in zip(text, ids) if i == tokenizer.unk_id)
    return len(text) - len(skipped), len(text.encode("utf-8")) - len(skipped.encode("utf-8"))


def evaluate(model: GPT, tokenizer: Tokenizer, text: str, batch_size: int) -> Score:
    """Score every token of `text` (a whole file)."""
    token_list = tokenizer.encode(text)
    ids = torch.tensor(token_list, dtype=torch.int32)
    if len(ids) < 2:
        raise UserError("text to evaluate must hold at least 2 tokens")
    nats, scored, skipped = total_loss(model, ids, batch_size, tokenizer.unk_id)
    if scored == 0:
        raise UserError("no token of the text is known to the model; nothing to score")
    chars, size = scored_text(tokenizer, text, token_list)
    loss, bits = nats / scored, nats / math.log(2)
    return Score(loss, math.exp(loss), bits / chars, bits / size, scored, chars, size, skipped)
