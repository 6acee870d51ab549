"""Scoring a model on text: loss in nats per token, perplexity, bits per character and byte.

The whole text is scored as scoring.py scores (non-overlapping windows: every token after
the first is predicted exactly once; tokens the model cannot represent, `<unk>`, are
counted and not scored).

Loss per token depends on the tokenizer (a BPE token holds several characters), so models
with different tokenizers are compared per character or per byte of the scored text: the
same total information (nats) divided by the characters (bytes) it predicted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.scoring import total_loss
from fundamentallm.tokenizers import Tokenizer


@dataclass(kw_only=True)
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


def scored_text(tokenizer: Tokenizer, text: str, ids: list[int]) -> tuple[int, int]:
    """Characters and bytes of `text` that scoring predicts: all but the first token's and
    the unknown tokens' (a character tokenizer's `<unk>` stands for one character)."""
    skipped = tokenizer.decode(ids[:1])
    if tokenizer.unk_id is not None:
        skipped += "".join(c for c, i in zip(text, ids) if i == tokenizer.unk_id)
    return len(text) - len(skipped), len(text.encode("utf-8")) - len(skipped.encode("utf-8"))


def evaluate(model: GPT, tokenizer: Tokenizer, text: str, batch_size: int,
             progress: Callable[[int, int], None] = lambda done, total: None) -> Score:
    """Score every token of `text` (a whole file); `progress(windows scored, windows)`."""
    token_list = tokenizer.encode(text)
    ids = torch.tensor(token_list, dtype=torch.int32)
    if len(ids) < 2:
        raise UserError("text to evaluate must hold at least 2 tokens")
    nats, scored, skipped = total_loss(model, ids, batch_size, tokenizer.unk_id, progress=progress)
    if scored == 0:
        raise UserError("no token of the text is known to the model; nothing to score")
    chars, size = scored_text(tokenizer, text, token_list)
    loss, bits = nats / scored, nats / math.log(2)
    return Score(loss=loss, perplexity=math.exp(loss), bits_per_char=bits / chars, bits_per_byte=bits / size,
                 tokens=scored, characters=chars, bytes=size, unknown=skipped)
