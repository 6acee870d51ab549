"""Byte tokenizer: the 256 possible bytes of UTF-8 text are the vocabulary.

Nothing to train and nothing unknown: any text is a sequence of bytes. Sequences are
longer than with characters for non-ASCII text (é is two tokens), which is the price of a
fixed, tiny vocabulary. Ids that do not form valid UTF-8 decode to U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import Tokenizer


class ByteTokenizer(Tokenizer):
    kind = "byte"
    byte_level = True

    @classmethod
    def train(cls, texts: Iterable[str] | str = (), vocab_size: int | None = None) -> "ByteTokenizer":
        return cls()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ByteTokenizer":
        if data.get("kind") != cls.kind:
            raise UserError("a malformed byte tokenizer")
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")
