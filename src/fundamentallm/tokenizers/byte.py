"""Byte tokenizer: the 256 possible bytes of UTF-8 text are the vocabulary.

Nothing to train and nothing unknown: any text is a sequence of bytes. Sequences are
longer than with characters for non-ASCII text (é is two tokens), which is the price of a
fixed, tiny vocabulary. Ids that do not form valid UTF-8 decode to U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import RESERVED, Tokenizer


def byte_characters() -> list[str]:
    """GPT-2's printable stand-in for each byte value (index = byte): printable Latin-1
    bytes stand for themselves, the others for the code points from 256 on, in order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


class ByteTokenizer(Tokenizer):
    kind = "byte"
    byte_level = True

    def __init__(self, specials: tuple[str, ...] = ()):
        self.set_specials(specials)

    @classmethod
    def train(cls, texts: Iterable[str] | str = (), vocab_size: int | None = None,
              specials: tuple[str, ...] = RESERVED) -> "ByteTokenizer":
        return cls(specials)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ByteTokenizer":
        if data.get("kind") != cls.kind:
            raise UserError("a malformed byte tokenizer")
        return cls(cls.read_specials(data))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.specials_dict()}

    @property
    def base_size(self) -> int:
        return 256

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_text_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def byte_table(self) -> list[bytes] | None:
        return [bytes([b]) for b in range(256)]

    def decode_text(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")
