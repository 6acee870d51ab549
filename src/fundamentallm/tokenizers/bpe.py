"""Byte-level BPE (Sennrich et al. 2016; byte-level as in GPT-2), trained on your text.

Text is first split into bytes, so any input is representable and nothing is unknown; the
trainer then merges the most frequent adjacent pairs until the vocabulary has
`vocab_size` entries (256 bytes + merges). Common words become one token, so a model sees
several characters per position: more text per context window and per step.

Training and encoding use the Hugging Face `tokenizers` library (Rust, fast); the trained
tokenizer is stored in checkpoints as its JSON string, a plain value that loads with
`weights_only=True`. A model imported from Hugging Face brings its own `tokenizer.json`,
whatever its model, with the roles of its special tokens (`special`: eos_token → text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np

from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import EOS, RESERVED, Tokenizer
from fundamentallm.tokenizers.byte import byte_characters
from fundamentallm.tokenizers.words import WordEncoder, plain_byte_level

DEFAULT_VOCAB_SIZE = 2048
ENCODE_PIECE_CHARS = 1 << 20  # train on, and stream, long texts in ~1M-character pieces
# Long texts are cut into ~8K-character pieces: those with a character words.py does not know
# go to the library as one batch, which it encodes in parallel (on 2 cores, 8K pieces encode
# about 2.5x as fast as 1M ones).
ENCODE_BATCH_CHARS = 1 << 13
WORD_CACHE = 200_000  # words whose encoding the BPE model remembers (the library's default: 10,000)
# A safe place to cut: just before a newline that ends a word. Byte-level pre-tokens group
# runs of whitespace and look ahead past them, so a cut inside or after "\n\n" would change
# the tokens; a word or punctuation run ends at a newline whatever follows it.
_CUT = re.compile(r"(?<=\S)\n")
# An imported tokenizer may treat a piece's start apart (a prefix space added to every piece,
# punctuation grouped with the newline after it): its stream is cut only where encoding the
# text around the cut in one piece and in two gives the same ids. The candidates are _CUT's
# and the space before a word (a tokenizer that adds a prefix space adds none there).
_LOCAL_CANDIDATE = re.compile(r"(?<=\S)\n|(?<=\S) (?=\S)")
LOCAL_SEARCH_CHARS = 1 << 16  # the end of a piece searched for a cut that checks out
LOCAL_TRIES = 32  # candidates checked (from the end) before the last _CUT is taken unchecked
LOCAL_WINDOW = 256  # characters either side of a cut encoded to check it


def _library():
    try:
        import tokenizers  # a dependency, loaded by the BPE tokenizer only (and said if missing)
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise UserError("--tokenizer bpe needs the `tokenizers` package: pip install tokenizers") from None
    return tokenizers


def safe_pieces(text: str, size: int = ENCODE_PIECE_CHARS) -> Iterator[str]:
    """`text` in consecutive pieces of about `size` characters, each cut at a _CUT (or the end)."""
    start = 0
    while start < len(text):
        cut = _CUT.search(text, start + size) if len(text) - start > size else None
        end = cut.start() if cut else len(text)
        yield text[start:end]
        start = end


def last_cut(text: str, start: int) -> int | None:
    """Where the last _CUT in text[start:] is, or None: searched from the end (a megabyte holds
    tens of thousands of newlines)."""
    at = text.rfind("\n", start)
    while at > 0 and text[at - 1].isspace():  # (\S in _CUT: not str.isspace)
        at = text.rfind("\n", start, at)
    return at if at > 0 else None


class BPETokenizer(Tokenizer):
    kind = "bpe"
    byte_level = True

    def __init__(self, serialized: str, special: dict[str, str] | None = None, specials: tuple[str, ...] = ()):
        self.serialized = serialized  # the library's JSON: merges, vocabulary, pre-tokenizer
        self.special = dict(special or {})  # an imported tokenizer's: role (eos_token, ...) → token text
        try:
            self._tok = _library().Tokenizer.from_str(serialized)
        except Exception as exc:  # the library raises its own exception types
            raise UserError(f"malformed BPE tokenizer ({exc})") from None
        self.set_specials(specials)  # ours, after the library's vocabulary (its own added tokens included)
        resize = getattr(self._tok.model, "_resize_cache", None)  # (a BPE model's; an imported one may differ)
        if resize is not None:  # a corpus has more distinct words than the default remembers: ~20% faster
            resize(WORD_CACHE)
        # Long texts: each distinct word encoded once (words.py), where the JSON allows it.
        self._word_encoder = WordEncoder(self._tok, serialized) if plain_byte_level(serialized) else None

    @classmethod
    def train(cls, texts: Iterable[str] | str, vocab_size: int | None = None,
              specials: tuple[str, ...] = RESERVED) -> "BPETokenizer":
        lib = _library()
        vocab_size = vocab_size or DEFAULT_VOCAB_SIZE
        if vocab_size < 256:
            raise UserError(f"--vocab-size {vocab_size}: byte-level BPE needs at least 256 (one per byte)")
        tok = lib.Tokenizer(lib.models.BPE())
        tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = lib.decoders.ByteLevel()
        trainer = lib.trainers.BpeTrainer(  # the special tokens count in --vocab-size (256 bytes at least)
            vocab_size=max(256, vocab_size - len(specials)), min_frequency=2, show_progress=False,
            initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, always
        )
        # In pieces of about ENCODE_PIECE_CHARS, cut where no pre-token spans the cut: the same
        # word counts as the whole text, but the library's pre-tokenizer works on them in
        # parallel (given one string, it has one item to work on) and no piece is a corpus.
        pieces = (piece for text in ([texts] if isinstance(texts, str) else texts) for piece in safe_pieces(text))
        tok.train_from_iterator(pieces, trainer=trainer)
        return cls(tok.to_str(), specials=specials)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BPETokenizer":
        serialized, special = data.get("tokenizer"), data.get("special", {})
        if not isinstance(serialized, str) or not isinstance(special, dict):
            raise UserError("a malformed BPE tokenizer")
        return cls(serialized, special, cls.read_specials(data))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": self.serialized,
                **({"special": self.special} if self.special else {}), **self.specials_dict()}

    def role_id(self, role: str) -> int | None:
        """The id of an imported tokenizer's token with this role (e.g. "eos_token"), if it has one."""
        text = self.special.get(role)
        return self._tok.token_to_id(text) if text is not None else None

    def special_id(self, text: str) -> int | None:
        """Ours, or a special token of an imported tokenizer spelled the same (GPT-2's and
        Qwen's <|endoftext|> is ours)."""
        own = super().special_id(text)
        if own is not None:
            return own
        if not hasattr(self, "_added"):
            self._added = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        return self._added.get(text)

    @property
    def eos_id(self) -> int | None:
        """Our end-of-text token, or an imported tokenizer's own."""
        own = self.special_id(EOS)
        return own if own is not None else self.role_id("eos_token")

    @property
    def base_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode_text(self, text: str) -> list[int]:
        # add_special_tokens=False: an imported tokenizer may add a BOS to every encoding; our
        # texts are streams, cut into windows, not documents.
        if len(text) <= ENCODE_BATCH_CHARS:
            return self._tok.encode(text, add_special_tokens=False).ids
        return self.encode_text_array(text).tolist()

    def encode_text_array(self, text: str) -> np.ndarray:
        if len(text) <= ENCODE_BATCH_CHARS:
            return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        if self._word_encoder is None:  # an imported tokenizer may treat a piece's start apart
            return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        # Cut where no pre-token can span the cut; the result equals encoding the whole text.
        return self._word_encoder.encode(list(safe_pieces(text, ENCODE_BATCH_CHARS)))

    def encode_text_stream(self, pieces: Iterable[str]) -> Iterator[np.ndarray]:
        if self._word_encoder is None:
            yield from map(self.encode_text_array, self._safe_texts(pieces))
            return
        # A long stream: by words, in worker processes too (words.py)
        texts = (list(safe_pieces(text, ENCODE_BATCH_CHARS)) for text in self._safe_texts(pieces))
        yield from self._word_encoder.encode_all(texts)

    def _safe_texts(self, pieces: Iterable[str]) -> Iterator[str]:
        """The stream again, in texts cut where no pre-token spans the cut: the text after the
        last safe cut is carried into the next piece (see _CUT)."""
        find_cut = last_cut if self._word_encoder is not None else self._local_cut
        carry = ""
        for piece in pieces:
            text = carry + piece
            cut = find_cut(text, max(0, len(text) - ENCODE_PIECE_CHARS))
            if cut is None and len(text) < 4 * ENCODE_PIECE_CHARS:
                carry = text  # no safe cut yet; wait for more text (bounded below)
                continue
            end = len(text) if cut is None else cut
            carry = text[end:]
            yield text[:end]
        if carry:
            yield carry

    def _local_cut(self, text: str, start: int) -> int | None:
        """The last place in text[start:] where this tokenizer's ids do not depend on the cut
        (checked on the LOCAL_WINDOW characters either side), else the last _CUT: a tokenizer
        that changes every piece's start (one that prepends to each encoding) has no such place,
        and then a token or two may differ at each cut of a ~1M-character stream."""
        def ids(piece: str) -> list[int]:
            return self._tok.encode(piece, add_special_tokens=False).ids

        region = max(start, len(text) - LOCAL_SEARCH_CHARS)
        for match in islice(reversed(list(_LOCAL_CANDIDATE.finditer(text, region))), LOCAL_TRIES):
            at = match.start()
            left, right = text[max(0, at - LOCAL_WINDOW):at], text[at:at + LOCAL_WINDOW]
            if at > 0 and ids(left + right) == ids(left) + ids(right):
                return at
        return last_cut(text, start)

    def byte_table(self) -> list[bytes] | None:
        """Each token's bytes (GPT-2's byte-level alphabet read back), or None for an imported
        tokenizer whose tokens are not spelled in it; built once (a large vocabulary takes a
        moment, and every generated sample decodes through it)."""
        if not hasattr(self, "_byte_table"):
            byte_of = {c: b for b, c in enumerate(byte_characters())}
            table: list[bytes] | None = [b""] * self.base_size
            for token, i in self._tok.get_vocab(with_added_tokens=True).items():
                if i < self.base_size:
                    if any(c not in byte_of for c in token):
                        table = None
                        break
                    table[i] = bytes(byte_of[c] for c in token)
            self._byte_table = table
        return self._byte_table

    def decode_text(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))

    def token_texts(self, ids: list[int]) -> list[str]:
        """Each token's own text (for `tokenizer encode`), bytes shown as they decode."""
        return [self.decode([i]) for i in ids]
