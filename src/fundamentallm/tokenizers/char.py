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
        seen: set[str] = set()
        for text in [texts] if isinstance(texts, str) else texts:
            seen.update(text)
        return cls("".join(sorted(seen)), specials)

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
        # per character.
        if not hasattr(self, "_dense"):
            top = max(map(ord, self.chars), default=0) + 1
            self._dense = np.zeros(top + 1, dtype=np.int64)  # the last entry: beyond the vocabulary
            self._dense[[ord(c) for c in self.chars]] = np.arange(1, len(self.chars) + 1)
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return self._dense[np.minimum(points, len(self._dense) - 1)]

    def decode_text(self, ids: list[int]) -> str:
        return "".join(self._table[np.asarray(ids, dtype=np.int64)]) if len(ids) else ""
