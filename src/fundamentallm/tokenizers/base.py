"""The interface every tokenizer implements, and streaming decoding for all of them."""

from __future__ import annotations

import codecs
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any

import numpy as np

from fundamentallm.errors import UserError
from fundamentallm.textstream import Found, split_on


# Special tokens: ids after the ordinary vocabulary, never produced by encoding text. Every new
# tokenizer reserves these (older checkpoints, which have none, load as they were).
EOS = "<|endoftext|>"  # ends a document: between documents in training, where generation stops
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}  # open a turn
END_OF_TURN = "<|end|>"  # closes a turn (chat/template.py)
RESERVED = (EOS, *ROLE_TOKENS.values(), END_OF_TURN)


class Tokenizer(ABC):
    """Maps text to token ids and back. Id `unk_id` stands for text it cannot represent
    (None: every text can be represented, as with byte-level tokenizers).

    Ids 0 .. base_size - 1 are the ordinary vocabulary; then come the special tokens
    (`specials`, in id order): the RESERVED ones, which no text ever encodes to, and any
    the user added (`--special-tokens`), whose text in the training data and in prompts does
    stand for them, as a tokenizer's added tokens do in Hugging Face's library."""

    kind: str  # registry name, stored in checkpoints
    unk_id: int | None = None
    byte_level = False  # tokens are bytes: one may hold part of a character (decoded alone: U+FFFD)
    specials: tuple[str, ...] = ()

    @classmethod
    @abstractmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None,
              specials: tuple[str, ...] = RESERVED) -> "Tokenizer":
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
    def base_size(self) -> int:
        """Tokens of ordinary text (the special tokens' ids start here)."""

    @abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """Ordinary text to ids (no special token)."""

    @abstractmethod
    def decode_text(self, ids: list[int]) -> str:
        """Ids below base_size to text."""

    # ---- special tokens ----
    def set_specials(self, specials: Iterable[str]) -> None:
        self.specials = tuple(dict.fromkeys(specials))  # in order, once each
        self._special_ids = {text: self.base_size + i for i, text in enumerate(self.specials)}
        self.user_specials = tuple(s for s in self.specials if s not in RESERVED)

    def specials_dict(self) -> dict[str, Any]:
        return {"specials": list(self.specials)} if self.specials else {}

    @staticmethod
    def read_specials(data: dict[str, Any]) -> tuple[str, ...]:
        specials = data.get("specials", [])
        if not isinstance(specials, list) or not all(isinstance(s, str) and s for s in specials):
            raise UserError("a malformed list of special tokens")
        return tuple(specials)

    def special_id(self, text: str) -> int | None:
        """The id of special token `text`, if this tokenizer has it."""
        return getattr(self, "_special_ids", {}).get(text)

    @property
    def eos_id(self) -> int | None:
        """The end-of-text token's id (None for a tokenizer saved before there was one)."""
        return self.special_id(EOS)

    @property
    def vocab_size(self) -> int:
        return self.base_size + len(self.specials)

    # ---- encoding and decoding ----
    def encode(self, text: str) -> list[int]:
        if not getattr(self, "user_specials", ()):
            return self.encode_text(text)
        ids: list[int] = []
        for special, run in groupby(split_on([text], self.user_specials), key=lambda p: isinstance(p, Found)):
            ids += [self._special_ids[p] for p in run] if special else self.encode_text("".join(run))
        return ids

    def encode_text_array(self, text: str) -> np.ndarray:
        """`encode_text` as a 1-D integer array (int64, or narrower where a tokenizer overrides this
        to do it faster)."""
        return np.asarray(self.encode_text(text), dtype=np.int64)

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as a 1-D integer array."""
        if not getattr(self, "user_specials", ()):
            return self.encode_text_array(text)
        return np.concatenate([np.zeros(0, np.int64), *self.encode_stream([text])])

    def encode_text_stream(self, pieces: Iterable[str]) -> Iterator[np.ndarray]:
        """Encode ordinary text that arrives in pieces; the concatenated ids equal
        `encode_text` of the whole. Any cut is safe for a tokenizer whose tokens never span
        characters."""
        for piece in pieces:
            yield self.encode_text_array(piece)

    def encode_stream(self, pieces: Iterable[str]) -> Iterator[np.ndarray]:
        """Encode a text that arrives in pieces (`encode` of the whole, in parts). A piece
        that is a `Special` is that token; the user's special tokens are found in the text."""
        pieces = split_on(pieces, getattr(self, "user_specials", ()))
        for special, run in groupby(pieces, key=lambda p: isinstance(p, Found)):
            if special:
                yield np.asarray([self.special_id(str(p)) for p in run], dtype=np.int64)
            else:
                yield from self.encode_text_stream(run)

    def decode(self, ids: list[int]) -> str:
        """Ids to text; a special token shows as its own text (`<|endoftext|>`)."""
        ids = list(ids)
        base = self.base_size
        if not self.specials or all(i < base for i in ids):
            return self.decode_text(ids)
        out = []
        for special, run in groupby(ids, key=lambda i: i >= base):
            run = list(run)
            out.append("".join(self.specials[i - base] if i - base < len(self.specials) else ""
                               for i in run) if special else self.decode_text(run))
        return "".join(out)

    def byte_table(self) -> list[bytes] | None:
        """Byte-level tokenizers: each ordinary token's bytes (for streaming decoding)."""
        return None

    def describe(self) -> str:
        """One line for summaries: the type and the vocabulary size."""
        return f"{self.kind}, {self.vocab_size:,} tokens"


class Special(Found):
    """A special token in a stream of text pieces (data/text.py puts EOS between documents):
    its text, told apart from text that merely spells it by its type."""


class StreamDecoder:
    """Turns a stream of token ids into text as it arrives.

    A byte-level token can hold part of a multi-byte UTF-8 character (an emoji split over
    two tokens), which decodes to U+FFFD on its own. The tokens' bytes go through an
    incremental UTF-8 decoder, which holds a character back until it completes, so streamed
    text equals the text decoded at once. A character still incomplete when generation ends
    (its token budget spent mid-character) is left out: its bytes are no text yet, and U+FFFD
    in their place would be text the model never wrote. Bytes that can never be valid UTF-8
    show as U+FFFD, as they do decoded at once.
    """

    MAX_HELD = 8  # without a byte table: a character is at most 4 bytes; give up waiting after this many tokens

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.held = tokenizer, []
        self.bytes = tokenizer.byte_table() if tokenizer.byte_level else None
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token: int) -> str:
        if self.bytes is not None:
            if token < len(self.bytes):
                return self.utf8.decode(self.bytes[token])
            self.utf8.reset()  # a special token: a character it interrupts is never completed
            return self.tokenizer.decode([token])
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
        self.utf8.reset()
        text, self.held = self.tokenizer.decode(self.held), []
        return text.rstrip("\ufffd") if self.tokenizer.byte_level else text
