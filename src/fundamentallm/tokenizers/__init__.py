"""Tokenizers: text <-> token ids, saved inside checkpoints as plain Python values.

A tokenizer type is one class registered in `TOKENIZERS`; `build_tokenizer` trains one
on text and `tokenizer_from_dict` restores one from a checkpoint or a tokenizer file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fundamentallm.atomic import write_text
from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import (END_OF_TURN, EOS, RESERVED, ROLE_TOKENS, Special, StreamDecoder,
                                           Tokenizer)
from fundamentallm.tokenizers.bpe import BPETokenizer
from fundamentallm.tokenizers.byte import ByteTokenizer
from fundamentallm.tokenizers.char import CharTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    cls.kind: cls for cls in (CharTokenizer, ByteTokenizer, BPETokenizer)
}


def build_tokenizer(kind: str, texts: Iterable[str] | str, vocab_size: int | None = None,
                    added: Iterable[str] = ()) -> Tokenizer:
    """Train a tokenizer of type `kind` on `texts` (one string, or pieces of one text; a
    `Special` piece is left out), with the RESERVED special tokens and the user's `added` ones."""
    if kind not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")
    if not isinstance(texts, str):
        texts = (piece for piece in texts if not isinstance(piece, Special))
    return TOKENIZERS[kind].train(texts, vocab_size, specials=(*RESERVED, *added))


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in TOKENIZERS:
        raise UserError(f"unknown tokenizer type {kind!r}")
    return TOKENIZERS[kind].from_dict(data)


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    write_text(Path(path), json.dumps(tokenizer.to_dict()))


def load_tokenizer_file(path: str | Path) -> Tokenizer:
    """A tokenizer saved by `save_tokenizer` (`fundamentallm tokenizer train`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: not a tokenizer file (expected the JSON that `tokenizer train` writes)") from None
    try:
        return tokenizer_from_dict(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


__all__ = ["BPETokenizer", "ByteTokenizer", "CharTokenizer", "END_OF_TURN", "EOS", "RESERVED", "ROLE_TOKENS",
           "Special", "StreamDecoder", "TOKENIZERS", "Tokenizer",
           "build_tokenizer", "load_tokenizer_file", "save_tokenizer", "tokenizer_from_dict"]
