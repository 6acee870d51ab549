"""The interface every tokenizer implements, and streaming decoding for all of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


class Tokenizer(ABC):
    """Maps text to token ids and back. Id `unk_id` stands for text it cannot represent
    (None: every text can be represented, as with byte-level tokenizers)."""

    kind: str  # registry name, stored in checkpoints
    unk_id: int | None = None
    byte_level = False  # tokens are bytes: one may hold part of a character (decoded alone: U+FFFD)

    @classmethod
    @abstractmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> "Tokenizer":
        """Build the vocabulary from training text, given as pieces (streamed, not joined)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        """Restore from `to_dict()` output."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain Python values only (strings, ints, lists), so checkpoints load with weights_only."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as a 1-D int64 array (tokenizers override this when they can do it faster)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_stream(self, pieces: Iterable[str]) -> Iterator[np.ndarray]:
        """Encode a text that arrives in pieces; the concatenated ids equal `encode` of the
        whole. Any cut is safe for a tokenizer whose tokens never span characters."""
        for piece in pieces:
            yield self.encode_array(piece)

    def describe(self) -> str:
        """One line for summaries: the type and the vocabulary size."""
        return f"{self.kind}, {self.vocab_size:,} tokens"


class StreamDecoder:
    """Turns a stream of token ids into text as it arrives.

    A byte-level token can hold part of a multi-byte UTF-8 character (an emoji split over
    two tokens), which decodes to U+FFFD on its own. Such tokens are held back until the
    character completes, so streamed text equals the text decoded at once. A character still
    incomplete when generation ends (its token budget spent mid-character) is left out: its
    bytes are no text yet, and U+FFFD in their place would be text the model never wrote.
    """

    MAX_HELD = 8  # a character is at most 4 bytes; give up waiting after this many tokens

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.held = tokenizer, []

    def push(self, token: int) -> str:
        self.held.append(token)
        text = self.tokenizer.decode(self.held)
        if self.tokenizer.byte_level and text.endswith("\ufffd") and len(self.held) < self.MAX_HELD:
            return ""
        self.held = []
        return text

    def decode(self, ids: list[int]) -> str:
        """`ids` decoded as streaming them would show them (an incomplete last character left out)."""
        return "".join(self.push(token) for token in ids) + self.flush()

    def flush(self) -> str:
        text, self.held = self.tokenizer.decode(self.held), []
        return text.rstrip("\ufffd") if self.tokenizer.byte_level else text
