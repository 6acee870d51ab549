"""What is in a corpus before training on it: its size, its characters and its oddities.

A character-level model makes every distinct character a token, so a stray control
character, a no-break space or Windows line endings silently join the vocabulary. This
report makes them visible (and countable) so they can be cleaned out first. It reads
any file, valid UTF-8 or not, in chunks (see `fundamentallm.textstream` and `counting`), so a 1 GB file fits in memory:
characters are counted in one array, lines only as a Counter of lengths and one 64-bit
hash per non-empty line.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fundamentallm.corpus.cleaning import CONTROL_CHARACTERS
from fundamentallm.console import amount
from fundamentallm.corpus.counting import CorpusCounts
from fundamentallm.textstream import DEFAULT_CHUNK_BYTES, DecodedFile
from fundamentallm.data.capacity import supported_parameters
from fundamentallm.data.text import text_files
from fundamentallm.errors import UserError

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}
BPE_SAMPLE_CHARS = 2_000_000
RARE_BELOW = 5  # a character seen fewer times than this is "rare"
_HISTOGRAM_BINS = 50


def visible_char(char: str) -> str:
    """Quote one character so it can be seen and told apart, in the style of Python's repr.

    A space, a tab and a no-break space look identical on screen, and a combining accent
    sticks to its neighbour, so anything not plainly printable is shown as an escape:
    `' '`, `'\\t'`, `'\\u00a0'`.
    """
    if char in _ESCAPES:
        body = _ESCAPES[char]
    elif char == " " or (char.isprintable() and not unicodedata.combining(char)):
        body = char
    elif ord(char) <= 0xFFFF:
        body = f"\\u{ord(char):04x}"
    else:
        body = f"\\U{ord(char):08x}"
    return f"'{body}'"


@dataclass(frozen=True)
class CharCount:
    """One character with how often it occurs; `shown` is its visible form."""

    char: str
    shown: str
    count: int
    share: float  # fraction of all characters


@dataclass(frozen=True)
class InvalidSequence:
    """One invalid UTF-8 sequence: its file, its byte offset in that file and its bytes (hex)."""

    file: str
    offset: int
    bytes: str


@dataclass(frozen=True)
class LineLengths:
    """Line lengths in characters (line breaks not counted); percentiles are nearest-rank."""

    min: int = 0
    mean: float = 0.0
    median: float = 0.0  # the middle length, or the mean of the two middle ones
    p90: int = 0
    p99: int = 0
    max: int = 0


@dataclass(frozen=True)
class LengthBin:
    """How many lines have a length in [start, stop)."""

    start: int
    stop: int
    lines: int


@dataclass(frozen=True)
class TextReport:
    """Figures about a corpus; `control_characters` are what clean_data.py would remove."""

    files: int
    bytes: int  # as stored: byte-order marks and invalid bytes included
    characters: int  # each invalid UTF-8 sequence counts as one U+FFFD
    lines: int
    empty_lines: int  # lines with nothing but whitespace
    words: int  # whitespace-separated
    distinct_characters: int
    estimated_tokens: int  # with the character tokenizer: one token per character
    most_common: list[CharCount]
    least_common: list[CharCount]
    control_characters: list[CharCount]  # Unicode control characters other than \n and \t
    nonprintable_characters: list[CharCount]  # other invisible ones: odd spaces, format marks
    likely_encoding: str = "utf-8"  # see CorpusCounts.likely_encoding for the rules
    invalid_sequences: int = 0  # what errors="replace" would turn into one U+FFFD each
    invalid_offsets: list[InvalidSequence] = field(default_factory=list)  # the first few per file
    line_endings: dict[str, int] = field(default_factory=dict)  # "lf", "crlf", "cr"
    non_empty_lines: int = 0
    duplicate_lines: int = 0  # non-empty lines equal to an earlier non-empty line
    duplicate_share: float = 0.0  # of non-empty lines
    line_length: LineLengths = field(default_factory=LineLengths)
    line_length_histogram: list[LengthBin] = field(default_factory=list)
    rare_characters: int = 0  # distinct characters seen fewer than RARE_BELOW times
    estimated_bpe_tokens: int | None = None  # an extrapolation, see estimate_bpe_tokens
    bpe_vocab_size: int | None = None
    bpe_sample_characters: int = 0
    recommendations: list[str] = field(default_factory=list)

    @property
    def control_count(self) -> int:
        return sum(c.count for c in self.control_characters)

    @property
    def nonprintable_count(self) -> int:
        return sum(c.count for c in self.nonprintable_characters)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `--json`, totals included so consumers need not add them up."""
        data = asdict(self)
        data["control_count"] = self.control_count
        data["nonprintable_count"] = self.nonprintable_count
        return data


def analyze_text(text: str, top: int = 10, *, bpe_vocab_size: int | None = 4096) -> TextReport:
    """Report on one text; `top` is how many most and least common characters to list."""
    return analyze_texts([text], top, bpe_vocab_size=bpe_vocab_size)


def analyze_texts(texts: Iterable[str], top: int = 10, *, bpe_vocab_size: int | None = 4096) -> TextReport:
    """Report on several texts as one corpus, counting each file's lines on their own."""
    _check_options(top, bpe_vocab_size)
    corpus = CorpusCounts(BPE_SAMPLE_CHARS)
    for text in texts:
        corpus.add_text(text)
    return _report(corpus, top, bpe_vocab_size)


def analyze_path(
    path: str | Path,
    top: int = 10,
    *,
    bpe_vocab_size: int | None = 4096,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    bpe_sample_chars: int = BPE_SAMPLE_CHARS,
) -> TextReport:
    """Report on a file, or on every .txt and .md file below a directory taken together.

    Unlike training, this accepts files that are not UTF-8 or look binary: reporting
    that is its job. Invalid bytes count as one U+FFFD per invalid sequence.
    """
    _check_options(top, bpe_vocab_size)
    corpus = CorpusCounts(bpe_sample_chars)
    for file in text_files(path):
        corpus.add_file(DecodedFile(file, invalid="replace", chunk_bytes=chunk_bytes))
    return _report(corpus, top, bpe_vocab_size)


def _check_options(top: int, bpe_vocab_size: int | None) -> None:
    if top < 0:
        raise UserError(f"--top must be zero or more, not {top}")
    if bpe_vocab_size is not None and bpe_vocab_size < 257:
        raise UserError(f"--bpe-vocab-size must be above 256 (the byte alphabet), not {bpe_vocab_size}")


def _report(corpus: CorpusCounts, top: int, bpe_vocab_size: int | None) -> TextReport:
    codes = np.flatnonzero(corpus.char_counts)
    counts = dict(zip(map(chr, codes.tolist()), corpus.char_counts[codes].tolist()))
    total = sum(counts.values())

    def entries(items: Iterable[tuple[str, int]]) -> list[CharCount]:
        return [CharCount(ch, visible_char(ch), n, n / total if total else 0.0) for ch, n in items]

    by_frequency = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    by_rarity = sorted(counts.items(), key=lambda item: (item[1], item[0]))
    by_char = sorted(counts.items())
    # Sorted in place (np.unique would hold two more copies): equal neighbours are repeats.
    hashes = np.frombuffer(corpus.line_hashes, dtype=np.int64)
    hashes.sort()
    duplicates = int(np.count_nonzero(hashes[1:] == hashes[:-1]))
    bpe_tokens = None
    if bpe_vocab_size is not None and total:
        bpe_tokens = estimate_bpe_tokens("".join(corpus.sample), total, bpe_vocab_size)
    report = TextReport(
        files=corpus.files,
        bytes=corpus.bytes,
        characters=total,
        lines=corpus.lines,
        empty_lines=corpus.empty_lines,
        words=corpus.words,
        distinct_characters=len(counts),
        estimated_tokens=total,
        most_common=entries(by_frequency[:top]),
        least_common=entries(by_rarity[:top]),
        control_characters=entries((ch, n) for ch, n in by_char if CONTROL_CHARACTERS.fullmatch(ch)),
        nonprintable_characters=entries((ch, n) for ch, n in by_char if _is_invisible(ch)),
        likely_encoding=corpus.likely_encoding(),
        invalid_sequences=corpus.invalid_sequences,
        invalid_offsets=[InvalidSequence(file, at, raw.hex(" ")) for file, at, raw in corpus.invalid_offsets],
        line_endings=dict(corpus.endings),
        non_empty_lines=len(hashes),
        duplicate_lines=duplicates,
        duplicate_share=duplicates / len(hashes) if len(hashes) else 0.0,
        line_length=_line_lengths(corpus.line_lengths),
        line_length_histogram=_histogram(corpus.line_lengths),
        rare_characters=sum(1 for n in counts.values() if n < RARE_BELOW),
        estimated_bpe_tokens=bpe_tokens,
        bpe_vocab_size=bpe_vocab_size,
        bpe_sample_characters=min(total, sum(map(len, corpus.sample))),
    )
    return _with_recommendations(report)


def _line_lengths(lengths: Counter[int]) -> LineLengths:
    """Exact statistics from the Counter of lengths, without listing every line."""
    if not lengths:
        return LineLengths()
    values, counts = np.array(sorted(lengths.items()), dtype=np.int64).T
    ends = np.cumsum(counts)  # the k-th smallest length (from 1) is values[searchsorted(ends, k)]
    n = int(ends[-1])
    ranks = ((n + 1) // 2, n // 2 + 1, -(-9 * n // 10), -(-99 * n // 100))  # two middles, ceil(0.9n), ceil(0.99n)
    kth = [int(values[np.searchsorted(ends, k)]) for k in ranks]
    mean = float((values * counts).sum() / n)
    return LineLengths(int(values[0]), mean, (kth[0] + kth[1]) / 2, kth[2], kth[3], int(values[-1]))


def _histogram(lengths: Counter[int]) -> list[LengthBin]:
    """At most _HISTOGRAM_BINS equal-width bins from 0 to the longest line."""
    if not lengths:
        return []
    width = -(-(max(lengths) + 1) // _HISTOGRAM_BINS)
    bins = np.bincount([length // width for length in lengths], weights=list(lengths.values())).astype(int)
    return [LengthBin(b * width, (b + 1) * width, int(n)) for b, n in enumerate(bins)]


def estimate_bpe_tokens(sample: str, total_characters: int, vocab_size: int = 4096) -> int:
    """Tokens a byte-level BPE would make of the corpus: an estimate, not a count.

    A BPE with `vocab_size` tokens is trained on `sample` (the start of the corpus) with
    Hugging Face `tokenizers`, and its tokens per character on that sample are scaled up
    to `total_characters`; when the sample is the whole corpus it is an exact count.
    """
    if not sample:
        return 0
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    pieces = sample.splitlines(keepends=True)
    tokenizer.train_from_iterator(pieces, trainer)
    # Encoded a few thousand lines at a time: one batch of everything costs ~200 MB more.
    batches = (tokenizer.encode_batch(pieces[i : i + 2000]) for i in range(0, len(pieces), 2000))
    tokens = sum(len(encoding.ids) for batch in batches for encoding in batch)
    return round(tokens * total_characters / len(sample))


# The size advice is the budget sizing's own cap (data/capacity.py), with T in characters.
_SIZE_ADVICE_BELOW = 500_000_000  # characters; above this the project's models are too small to overfit


def _with_recommendations(report: TextReport) -> TextReport:
    """The report with one-line advice, each line triggered by a figure measured above."""
    advice = []
    if report.duplicate_lines and report.duplicate_share >= 0.01:
        share = f"{report.duplicate_share:.1%}"
        advice.append(f"{share} of non-empty lines are duplicates: consider clean_data.py --dedupe")
    controls = sum(c.count for c in report.control_characters if c.char != "\r")  # \r is a line ending
    if controls:
        advice.append(f"{controls:,} control character(s) other than \\r: clean_data.py removes them")
    if report.invalid_sequences:
        advice.append(
            f"invalid UTF-8 ({report.invalid_sequences:,} sequences): clean_data.py --invalid repair|replace|drop"
        )
    if report.likely_encoding == "utf-16 (BOM)":
        advice.append("UTF-16 text (it has the byte-order mark): train and clean_data.py read it as it is; "
                      "iconv -f utf-16 -t utf-8 converts it")
    elif report.likely_encoding == "binary":
        advice.append("many NUL bytes: this looks like a binary file, not text")
    endings = [(report.line_endings.get(key, 0), shown) for key, shown in (("crlf", "\\r\\n"), ("cr", "\\r"))]
    if any(n for n, _ in endings):
        foreign = " and ".join(f"{n:,} {shown}" for n, shown in endings if n)
        advice.append(f"{foreign} line endings: clean_data.py normalises them to \\n")
    if report.rare_characters:
        advice.append(
            f"{report.rare_characters:,} characters occur fewer than {RARE_BELOW} times: "
            f"consider clean_data.py --min-char-count {RARE_BELOW}"
        )
    if 0 < report.characters < _SIZE_ADVICE_BELOW:
        what = "file" if report.files == 1 else "corpus"
        limit = supported_parameters(report.characters)
        advice.append(
            f"{what} is {amount(report.bytes, ' B')} (~{amount(report.characters)} char tokens): it supports "
            f"models up to ~{amount(limit)} parameters (train --max-time sizes no larger); above that expect "
            "overfitting: use --dropout 0.1-0.2"
        )
    return replace(report, recommendations=advice)


def _is_invisible(char: str) -> bool:
    """Not printable and not a control character: odd spaces, zero-width and format marks."""
    return not char.isprintable() and unicodedata.category(char) != "Cc"
