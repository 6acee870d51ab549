"""Encoding a long text for byte-level BPE one distinct word at a time.

Profiled on 2 cores, the `tokenizers` library encodes a byte-level BPE at ~7 MB/s, and almost
all of it is pre-tokenization: splitting the text into words with the GPT-2 pattern builds an
aligned string object per word (the same split feeding a trivial model runs at the same
speed). A word's BPE never depends on its neighbours, and a corpus says the same words again
and again (5 MB of Shakespeare: 1.4 M words, 36 K distinct). So for a long text we

1. split it into words with Python's regex engine, using the GPT-2 pattern spelled with
   explicit character classes (below),
2. encode each word not seen before with the library itself (a batch: its threads, its
   merges, its byte mapping), remembering its ids,
3. gather every word's ids with one vectorised index.

The ids are exactly the library's (tests compare them on every known character in context
and on random text). It applies only where that can be known: a tokenizer whose JSON is a
plain byte-level BPE (no normalizer, no added tokens, the GPT-2 pattern), and text whose
characters all lie in the blocks whose classes are spelled out here; other pieces of text go
to the library whole, as before.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import groupby
from multiprocessing import current_process, get_context
from typing import Any

import numpy as np

# Blocks whose characters' classes (letter, number, whitespace, other) are written out below,
# each assigned long ago (Unicode 5.1 at the latest), so that Python's tables and the
# library's agree: Latin (ASCII, Latin-1, Extended-A/B, combining marks), Greek and Cyrillic,
# Latin Extended Additional (Vietnamese), General Punctuation (typographic quotes, dashes,
# spaces), letterlike symbols, arrows, mathematical operators, box drawing, shapes, and the
# replacement character. A code point unassigned in Python's tables is unknown.
KNOWN_BLOCKS = ((0x0000, 0x04FF), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x2100, 0x22FF), (0x2500, 0x25FF),
                (0xFFFD, 0xFFFD))
MAX_WORDS = 1 << 20  # distinct words remembered (~150 MB at most); then forgotten and begun anew
# A stream longer than this is encoded by worker processes, one per core: the regex split
# holds the interpreter's lock, so threads would not help. Starting them costs ~0.3 s.
PARALLEL_AFTER_CHARS = 16 << 20
MAX_WORKERS = 8


def known_characters() -> list[str]:
    return [chr(c) for first, last in KNOWN_BLOCKS for c in range(first, last + 1)
            if unicodedata.category(chr(c)) != "Cn"]


def _class(chars: list[str]) -> str:
    return "".join(re.escape(c) for c in chars)


def _pattern() -> tuple[re.Pattern, re.Pattern]:
    """The GPT-2 pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+,
    with \\p{L}, \\p{N} and \\s written as the known characters of each class. Python's \\s is
    not the library's: it counts the separators 0x1C-0x1F as space, Unicode does not."""
    known = known_characters()
    letters = _class([c for c in known if unicodedata.category(c).startswith("L")])
    numbers = _class([c for c in known if unicodedata.category(c).startswith("N")])
    spaces = _class([c for c in known if c.isspace() and not "\x1c" <= c <= "\x1f"])
    words = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^{spaces}{letters}{numbers}]+"
                       rf"|[{spaces}]+(?![^{spaces}])|[{spaces}]+")
    unknown = re.compile(f"[^{_class(known)}]")
    return words, unknown


def plain_byte_level(serialized: str) -> bool:
    """Whether a `tokenizers` JSON is a byte-level BPE that splits text only by the GPT-2
    pattern: nothing else may see the text before the words are cut."""
    try:
        data: Any = json.loads(serialized)
        pre, model = data["pre_tokenizer"], data["model"]
        return (data.get("normalizer") is None and not data.get("added_tokens")
                and isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
                and not pre.get("add_prefix_space") and model.get("type") == "BPE" and model.get("dropout") is None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


class WordEncoder:
    """Encodes texts (cut into pieces at places no word spans) as the library does, each
    distinct word once. Thread-safe: a server may encode two long prompts at once."""

    def __init__(self, library_tokenizer: Any, serialized: str):
        self._tok, self._serialized = library_tokenizer, serialized
        self._words, self._unknown = _pattern()
        self._lock = threading.Lock()
        self._forget()

    def _forget(self) -> None:
        self._index: dict[str, int] = {}  # word → its row in the tables
        self._ids = np.zeros(0, np.int32)  # every remembered word's ids, one after another
        self._first = np.zeros(0, np.int64)  # where each word's ids begin in _ids
        self._count = np.zeros(0, np.int64)  # and how many there are

    def encode(self, pieces: list[str]) -> np.ndarray:
        """The ids of the pieces, one after another (int32)."""
        with self._lock:
            parts = list(self._parts(pieces))
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def encode_all(self, texts: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """`encode` of each list of pieces, in order. Once PARALLEL_AFTER_CHARS have passed,
        by worker processes (a few lists in flight each); here again if they cannot start or
        one dies."""
        texts, seen = iter(texts), 0
        for pieces in texts:
            yield self.encode(pieces)
            seen += sum(map(len, pieces))
            if seen >= PARALLEL_AFTER_CHARS:
                break
        workers = start_workers(self._serialized)
        if workers is None:
            yield from map(self.encode, texts)
            return
        pending: deque[tuple[list[str], Future | None]] = deque()

        def result(pieces: list[str], job: Future | None) -> np.ndarray:
            try:
                if job is not None:
                    return job.result()
            except BrokenProcessPool:  # a worker was killed (out of memory?): the rest here
                pass
            return self.encode(pieces)

        try:
            for pieces in texts:
                try:
                    job = workers.submit(_encode_in_worker, pieces)
                except BrokenProcessPool:
                    job = None
                pending.append((pieces, job))
                if len(pending) > 2 * workers._max_workers:
                    yield result(*pending.popleft())
            while pending:
                yield result(*pending.popleft())
        finally:
            workers.shutdown(wait=True, cancel_futures=True)

    def _parts(self, pieces: list[str]) -> Iterator[np.ndarray]:
        for fast, run in groupby(pieces, key=self._known):
            if fast:
                yield self._by_words("".join(run))
            else:
                encodings = self._tok.encode_batch_fast(list(run), add_special_tokens=False)
                yield from (np.asarray(e.ids, dtype=np.int32) for e in encodings)

    def _known(self, piece: str) -> bool:
        return piece.isascii() or self._unknown.search(piece) is None

    def _by_words(self, text: str) -> np.ndarray:
        words = self._words.findall(text)
        new = [w for w in dict.fromkeys(words) if w not in self._index]
        if len(self._index) + len(new) > MAX_WORDS:  # (a text's own words are always learned)
            self._forget()
            new = list(dict.fromkeys(words))
        self._learn(new)
        rows = np.fromiter(map(self._index.__getitem__, words), dtype=np.int64, count=len(words))
        # Gather: word k's ids are _ids[_first[k] : _first[k] + _count[k]]; output position p of
        # word k holds _ids[_first[k] + (p - where word k's output begins)].
        count = self._count[rows]  # (words,)
        ends = np.cumsum(count)  # (words,) where each word's output ends
        position = np.repeat(self._first[rows] - (ends - count), count)  # (tokens,)
        position += np.arange(len(position))
        return self._ids[position]

    def _learn(self, new: list[str]) -> None:
        if not new:
            return
        ids = [e.ids for e in self._tok.encode_batch_fast(new, add_special_tokens=False)]
        count = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self._first = np.concatenate([self._first, len(self._ids) + np.cumsum(count) - count])
        self._count = np.concatenate([self._count, count])
        self._ids = np.concatenate([self._ids, np.fromiter((i for word in ids for i in word), dtype=np.int32)])
        start = len(self._index)
        self._index.update(zip(new, range(start, start + len(new))))


def start_workers(serialized: str) -> ProcessPoolExecutor | None:
    """One process per core (spawned: no torch threads forked), or None where that gains
    nothing or cannot be done (one core; a daemonic process, which may not have children)."""
    cores = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                MAX_WORKERS)
    if cores < 2 or current_process().daemon:
        return None
    try:
        return ProcessPoolExecutor(cores, mp_context=get_context("spawn"), initializer=_start_worker,
                                   initargs=(serialized,))
    except (OSError, AssertionError, ValueError):
        return None


_WORKER: WordEncoder | None = None  # a worker process's own encoder and remembered words


def _start_worker(serialized: str) -> None:
    global _WORKER
    # One worker per core already: the library's own threads (for new words) would crowd them.
    os.environ["RAYON_NUM_THREADS"] = "1"
    import tokenizers  # (in the worker; its thread pool reads the variable above when first used)

    _WORKER = WordEncoder(tokenizers.Tokenizer.from_str(serialized), serialized)


def _encode_in_worker(pieces: list[str]) -> np.ndarray:
    assert _WORKER is not None, "a worker process starts with _start_worker"
    return _WORKER.encode(pieces)
