"""Scoring a model on text: loss in nats per token, perplexity, bits per character and byte.

The whole text is scored as scoring.py scores (non-overlapping windows: every token after
the first is predicted exactly once; tokens the model cannot represent, `<unk>`, are
counted and not scored).

Loss per token depends on the tokenizer (a BPE token holds several characters), so models
with different tokenizers are compared per character or per byte of the scored text: the
same total information (nats) divided by the characters (bytes) it predicted.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from fundamentallm.config.schema import DataConfig
from fundamentallm.data.batching import encode
from fundamentallm.data.chat import Conversations, conversation_tokens
from fundamentallm.data.text import data_files
from fundamentallm.data.tokens import load_tokens, scoring_text
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.model.documents import DocumentMasked
from fundamentallm.scoring import total_loss
from fundamentallm.tokenizers import Special, Tokenizer
from fundamentallm.training.precision import resolve_precision


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
    precision: str  # the forward's arithmetic: fp32, or bf16 autocast (the fourth decimal may differ)
    seconds: float  # scoring time (the forward passes), without reading and tokenizing the text

    def to_dict(self) -> dict:
        return asdict(self)


def scored_text(tokenizer: Tokenizer, text: str, ids: list[int]) -> tuple[int, int]:
    """Characters and bytes of `text` that scoring predicts: all but the first token's and
    the unknown tokens' (a character tokenizer's `<unk>` stands for one character; an
    end-of-text token, predicted and scored, stands for none)."""
    skipped = tokenizer.decode(ids[:1]) if ids[0] < tokenizer.base_size else ""
    if tokenizer.unk_id is not None:  # one id per character, the special tokens aside
        text_ids = (i for i in ids if i < tokenizer.base_size)
        skipped += "".join(c for c, i in zip(text, text_ids) if i == tokenizer.unk_id)
    return len(text) - len(skipped), len(text.encode("utf-8")) - len(skipped.encode("utf-8"))


def evaluate(model: GPT, tokenizer: Tokenizer, text: str | list[str], batch_size: int,
             progress: Callable[[int, int], None] = lambda done, total: None, precision: str = "auto",
             doc_mask: bool = False) -> Score:
    """Score every token of `text` (a whole file, or documents and the end-of-text tokens
    between them, data/tokens.py `scoring_text`); `progress(windows scored, windows)`;
    `doc_mask`: each document on its own, as a --doc-mask run trained.

    Forward passes only, in inference mode and, with `precision` "auto", in bf16 where this
    device computes it faster (the same choice as training's --precision auto): on a CPU with
    native bf16 that scores about 4x the tokens/s of a training step (benchmarks/evaluate.py)."""
    ids = encode(tokenizer, text if isinstance(text, str) else list(text))
    token_list = ids.tolist()
    text = text if isinstance(text, str) else "".join(p for p in text if not isinstance(p, Special))
    if len(ids) < 2:
        raise UserError("text to evaluate must hold at least 2 tokens")
    chars, size = scored_text(tokenizer, text, token_list)
    return score_ids(model, tokenizer, ids, chars, size, batch_size, progress, precision, doc_mask)


def evaluate_data(model: GPT, tokenizer: Tokenizer, cfg: DataConfig, data: str | list[str], batch_size: int,
                  progress: Callable[[int, int], None] = lambda done, total: None, precision: str = "auto") -> Score:
    """Score the files `data` as the model's training run read its own (`cfg`, the checkpoint's
    data settings): a chat model on conversations, its replies; any other on documents, joined
    or ended as they were in training."""
    if cfg.format == "chat":
        chats = conversation_tokens(dataclasses.replace(cfg, val_split=0), data_files(data, cfg.glob), [], tokenizer)
        return evaluate_conversations(model, tokenizer, chats, batch_size, progress, precision, cfg.doc_mask)
    return evaluate(model, tokenizer, scoring_text(cfg, data, tokenizer), batch_size, progress, precision,
                    doc_mask=cfg.doc_mask)


def evaluate_split(model: GPT, tokenizer: Tokenizer, cfg: DataConfig, batch_size: int,
                   progress: Callable[[int, int], None] = lambda done, total: None, precision: str = "auto"
                   ) -> Score:
    """Score the whole validation split of the model's training run (`cfg`, the checkpoint's
    data settings), every token once: the figure the run's validation estimates from a sample.
    The tokens come as training made them (from the token cache, for a large corpus);
    characters and bytes per token are the split's own, as the run's bits/char were."""
    if cfg.format == "chat":
        raise UserError("--split validation scores a run on text; for a chat model give its conversations with --data")
    data = load_tokens(cfg, tokenizer)
    if data.val is None or len(data.val) < 2:
        raise UserError("--split validation: the run had no validation text (--val-split 0 and no --validation-data)")
    ids = data.val
    scored = len(ids) - 1  # every token but the first is predicted
    chars = round(data.val_chars_per_token * scored)
    size = round((data.val_bytes or 0) / len(ids) * scored)
    return score_ids(model, tokenizer, ids, chars, max(1, size), batch_size, progress, precision, cfg.doc_mask)


def evaluate_conversations(model: GPT, tokenizer: Tokenizer, conversations: Conversations, batch_size: int,
                           progress: Callable[[int, int], None] = lambda done, total: None,
                           precision: str = "auto", doc_mask: bool = False) -> Score:
    """Score a chat model on conversations (data/chat.py), as its training validated: only the
    targets trained on (the assistant's replies, with --train-on assistant); characters and
    bytes are those of the replies."""
    chars, size = conversations.scored_text
    return score_ids(model, tokenizer, conversations.train, chars, size, batch_size, progress, precision, doc_mask,
                     trained=conversations.train_mask)


def score_ids(model: GPT, tokenizer: Tokenizer, ids: torch.Tensor, chars: int, size: int, batch_size: int,
              progress: Callable[[int, int], None], precision: str, doc_mask: bool,
              trained: np.ndarray | None = None) -> Score:
    """The score of token ids whose scored targets spell `chars` characters (`size` bytes)."""
    if doc_mask and tokenizer.eos_id is not None:
        model = DocumentMasked(model, tokenizer.eos_id)
    arithmetic = resolve_precision(precision, next(model.parameters()).device)
    began = time.perf_counter()
    with torch.inference_mode():
        nats, scored, skipped = total_loss(model, ids, batch_size, tokenizer.unk_id, autocast=arithmetic.autocast,
                                           progress=progress, trained=trained)
    if trained is not None:  # what the mask leaves out is context, not unknown text
        skipped = int((ids[1:] == tokenizer.unk_id).sum()) if tokenizer.unk_id is not None else 0
    if scored == 0:
        raise UserError("no token of the text is known to the model; nothing to score")
    loss, bits = nats / scored, nats / math.log(2)
    return Score(loss=loss, perplexity=math.exp(loss), bits_per_char=bits / chars, bits_per_byte=bits / size,
                 tokens=scored, characters=chars, bytes=size, unknown=skipped, precision=arithmetic.name,
                 seconds=round(time.perf_counter() - began, 3))
