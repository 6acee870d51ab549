"""Character-level tokenizer: one token per Unicode character seen in the training text.

Characters the model never saw are not an error: they map to the `<unk>` token (id 0).
`<unk>` is never a training target, so evaluation does not score it (and reports how many
characters were unknown), and generation never produces it; it decodes to U+FFFD (�).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import RESERVED, Tokenizer

UNK_TEXT = "\ufffd"


class CharTokenizer(Tokenizer):
    kind = "char"
    unk_id = 0

    def __init__(self, chars: str, specials: tuple[str, ...] = ()):
        self.chars = chars  # vocabulary in id order, starting at id 1
        self._ids = {c: i + 1 for i, c in enumerate(chars)}
        self._table = np.array([UNK_TEXT, *chars], dtype=object)
        self.set_specials(specials)

    @classmethod
    def train(cls, texts: Iterable[str] | str, vocab_size: int | None = None,
              specials: tuple[str, ...] = RESERVED) -> "CharTokenizer":
        # Which code points occur, marked in one table (0x110000 flags) by a vectorised store
        # per piece: a pass at memory speed instead of a set update per character.
        present = np.zeros(0x110000, dtype=bool)
        for text in [texts] if isinstance(texts, str) else texts:
            try:
                present[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] = True
            except UnicodeEncodeError:  # a lone surrogate (text that was never valid UTF-8)
                present[[ord(c) for c in set(text)]] = True
        return cls("".join(map(chr, np.flatnonzero(present))), specials)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        chars = data.get("chars")
        if not isinstance(chars, str) or len(set(chars)) != len(chars):
            raise UserError("a malformed character vocabulary")
        return cls(chars, cls.read_specials(data))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars, **self.specials_dict()}

    @property
    def base_size(self) -> int:
        return len(self.chars) + 1

    def encode_text(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(c, 0) for c in text]

    def encode_text_array(self, text: str) -> np.ndarray:
        # A dense table from code point to id: one vectorised lookup instead of a dict lookup
        # per character. The ids are as narrow as the vocabulary allows (uint8 below 256
        # characters, uint16 below 65,536): an eighth of the memory traffic of int64, on a pass
        # over a whole corpus, and already the token cache's type.
        # Text that is all Latin-1 (English, most European text) is one byte per character in
        # CPython already, so its code points come out at memory speed; other text via UTF-32.
        if not hasattr(self, "_dense"):
            top = max(256, max(map(ord, self.chars), default=0) + 1)
            narrow = np.uint8 if len(self.chars) < 1 << 8 else np.uint16 if len(self.chars) < 1 << 16 else np.int32
            self._dense = np.zeros(top + 1, dtype=narrow)  # the last entry: beyond the vocabulary (<unk>)
            self._dense[[ord(c) for c in self.chars]] = np.arange(1, len(self.chars) + 1)
        try:
            return self._dense[np.frombuffer(text.encode("latin-1"), dtype=np.uint8)]
        except UnicodeEncodeError:
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            return self._dense[np.minimum(points, len(self._dense) - 1)]  # beyond the table: <unk>

    def decode_text(self, ids: list[int]) -> str:
        return "".join(self._table[np.asarray(ids, dtype=np.int64)]) if len(ids) else ""
