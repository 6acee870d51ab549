"""Tokenizers: text <-> token ids, saved inside checkpoints as plain Python values.

A tokenizer type is one class registered in `TOKENIZERS`; `build_tokenizer` trains one
on text and `tokenizer_from_dict` restores one from a checkpoint.
"""

from __future__ import annotations

from typing import Any

from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import Tokenizer
from fundamentallm.tokenizers.char import CharTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {CharTokenizer.kind: CharTokenizer}


def build_tokenizer(kind: str, text: str) -> Tokenizer:
    """Train a tokenizer of type `kind` on `text`."""
    return TOKENIZERS[kind].train(text)


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in TOKENIZERS:
        raise UserError(f"unknown tokenizer type {kind!r} in checkpoint")
    return TOKENIZERS[kind].from_dict(data)


__all__ = ["CharTokenizer", "TOKENIZERS", "Tokenizer", "build_tokenizer", "tokenizer_from_dict"]
