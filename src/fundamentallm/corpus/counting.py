"""Running counts over a corpus read in pieces, in bounded memory, for analysis and cleaning.

`CorpusCounts` keeps the totals that analysis needs, carrying words and lines across
chunk boundaries: characters are counted in one array indexed by code point, line lengths
in a Counter, and lines only as one 64-bit hash each (for duplicates). `SeenLines`
remembers lines for deduplication; `code_points_of`/`add_counts` count characters.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

from fundamentallm.textstream import DEFAULT_CHUNK_BYTES, MAX_RECORDED_OFFSETS, DecodedFile, keep_crlf_together

# str.split() splits at exactly the characters for which str.isspace() holds; all are below U+3001.
_SPACES = np.zeros(0x110000, dtype=bool)
_SPACES[[c for c in range(0x3001) if chr(c).isspace()]] = True
_SLICE = 1 << 19  # code points counted at a time
_LONG_LINE = 1 << 20  # characters; a longer line is hashed piece by piece instead of kept


def code_points_of(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def add_counts(counts: np.ndarray, code_points: np.ndarray) -> np.ndarray:
    """`counts` (indexed by code point, grown as needed) plus how often each code point occurs."""
    found = np.bincount(code_points)
    if len(found) > len(counts):
        counts = np.concatenate([counts, np.zeros(len(found) - len(counts), dtype=np.int64)])
    counts[: len(found)] += found
    return counts


def text_pieces(text: str, size: int = DEFAULT_CHUNK_BYTES) -> Iterator[str]:
    """A text already in memory, in pieces of `size` characters, so it can take the same path as a file."""
    for start in range(0, len(text), size):
        yield text[start : start + size]


class CorpusCounts:
    """Running totals over the files of a corpus, fed one file (a stream of chunks) at a time.

    Memory stays bounded whatever the corpus size: characters are counted in one array
    indexed by code point, line lengths in a Counter, and lines themselves are kept only
    as one 64-bit hash per non-empty line (for duplicates): memory grows 8 bytes per line.
    """

    def __init__(self, sample_chars: int):
        self.files = self.bytes = self.words = self.lines = self.empty_lines = 0
        self.char_counts = np.zeros(0, dtype=np.int64)  # indexed by code point
        self.line_lengths: Counter[int] = Counter()
        self.line_hashes = array("q")
        self.endings = {"lf": 0, "crlf": 0, "cr": 0}
        self.invalid_sequences = 0
        self.invalid_offsets: list[tuple[str, int, bytes]] = []  # (file, offset, bytes): the corpus's first few
        self.utf8_bom = self.utf16_bom = False
        self.sample: list[str] = []  # the start of the corpus, for estimates
        self.sample_room = sample_chars

    def add_text(self, text: str) -> None:
        self.add_chunks(text_pieces(text))
        self.bytes += len(text.encode("utf-8", "surrogatepass"))

    def add_file(self, decoded: DecodedFile) -> None:
        self.add_chunks(decoded)
        self.bytes += decoded.size
        self.invalid_sequences += decoded.invalid_sequences
        room = MAX_RECORDED_OFFSETS - len(self.invalid_offsets)
        self.invalid_offsets += [(str(decoded.path), at, raw) for at, raw in decoded.invalid_offsets[:room]]
        self.utf8_bom |= decoded.has_utf8_bom
        self.utf16_bom |= decoded.has_utf16_bom

    def add_chunks(self, chunks: Iterable[str]) -> None:
        """Count one file given as chunks; a file's end ends its last line and its last word."""
        self.files += 1
        after_space = True
        open_line: str | LongLine = ""
        for chunk in keep_crlf_together(chunks):
            if self.sample_room > 0:
                self.sample.append(chunk[: self.sample_room])
                self.sample_room -= len(self.sample[-1])
            # In slices: numpy turns code points into 8-byte indexes, 32 MB for a whole chunk.
            for piece in np.array_split(code_points_of(chunk), -(-len(chunk) // _SLICE)):
                self.char_counts = add_counts(self.char_counts, piece)
                # A word starts at a non-space that follows a space (or the start of the file).
                space = _SPACES[piece]
                self.words += int(np.count_nonzero(space[:-1] & ~space[1:])) + (after_space and not space[0])
                after_space = bool(space[-1])
            crlf = chunk.count("\r\n")  # never split: keep_crlf_together holds back a final \r
            self.endings["crlf"] += crlf
            self.endings["cr"] += chunk.count("\r") - crlf
            self.endings["lf"] += chunk.count("\n") - crlf
            parts = chunk.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            open_line = _extend(open_line, parts[0])
            if len(parts) > 1:
                self._add_line(open_line)
                self._add_lines(parts[1:-1])
                open_line = parts[-1]
        if open_line:  # a last line without a line break; a final break adds no line
            self._add_line(open_line)

    def likely_encoding(self) -> str:
        """A guess from the evidence gathered while reading, checked in this order.

        A UTF-16 byte-order mark says UTF-16. NUL bytes in more than 1% of the bytes say
        binary (text has none; UTF-16 without a mark looks like this too). Any invalid
        UTF-8 (necessarily bytes >= 0x80) says a single-byte encoding, Windows-1252 or
        Latin-1, unless valid non-ASCII characters outnumber the invalid sequences: then
        it is UTF-8 with some damage. Otherwise "utf-8 with BOM", "ascii" or "utf-8".
        """
        # Each invalid sequence was decoded as one U+FFFD, counted among the non-ASCII.
        non_ascii = int(self.char_counts[0x80:].sum()) - self.invalid_sequences
        if self.utf16_bom:
            return "utf-16 (BOM)"
        if len(self.char_counts) and self.char_counts[0] > 0.01 * self.bytes:
            return "binary"
        if self.invalid_sequences:
            return "utf-8 with invalid bytes" if non_ascii > self.invalid_sequences else "windows-1252 or latin-1"
        if self.utf8_bom:
            return "utf-8 with BOM"
        return "ascii" if non_ascii == 0 else "utf-8"

    def _add_lines(self, lines: list[str]) -> None:
        lengths = list(map(len, lines))
        self.lines += len(lines)
        self.line_lengths.update(lengths)
        non_empty = list(filter(str.strip, lines))
        self.empty_lines += len(lines) - len(non_empty)
        if lengths and max(lengths) > _LONG_LINE:  # rare: such lines get the key a LongLine would give them
            keys = (hash(line) if len(line) <= _LONG_LINE else LongLine(line).key() for line in non_empty)
            self.line_hashes.extend(keys)
        else:
            self.line_hashes.extend(map(hash, non_empty))

    def _add_line(self, line: str | LongLine) -> None:
        if isinstance(line, str):
            self._add_lines([line])
            return
        self.lines += 1
        self.line_lengths[line.length] += 1
        if line.blank:
            self.empty_lines += 1
        else:
            self.line_hashes.append(line.key())


class LongLine:
    """A line too long to keep: its length, whether it is blank, and a digest standing in for it."""

    def __init__(self, text: str):
        self.length, self.blank, self._digest = 0, True, hashlib.blake2b(digest_size=8)
        self.add(text)

    def add(self, piece: str) -> None:
        self.length += len(piece)
        self.blank = self.blank and not piece.strip()
        self._digest.update(piece.encode("utf-8", "surrogatepass"))

    def key(self) -> int:
        # Every line longer than _LONG_LINE gets this key, however the chunks cut it (the
        # digest does not depend on that); shorter lines get hash(), and cannot equal these.
        return int.from_bytes(self._digest.digest(), "little", signed=True)


def _extend(line: str | LongLine, piece: str) -> str | LongLine:
    if isinstance(line, LongLine):
        line.add(piece)
        return line
    line += piece
    return LongLine(line) if len(line) > _LONG_LINE else line


class SeenLines:
    """Which lines have been seen, in 8 bytes per distinct line: their sorted 64-bit hashes.

    Lines are compared by Python's hash(), so two different lines with the same hash
    would count as one: for 10^7 distinct lines the chance of that is about 3 in a million.
    """

    def __init__(self):
        self._sorted = np.empty(0, dtype=np.int64)

    def first_seen(self, hashes: np.ndarray) -> np.ndarray:
        """For each line hash, whether this is the line's first occurrence, counting earlier calls."""
        first = np.zeros(len(hashes), dtype=bool)
        first[np.unique(hashes, return_index=True)[1]] = True
        at = np.searchsorted(self._sorted, hashes)
        known = at < len(self._sorted)
        known[known] = self._sorted[at[known]] == hashes[known]
        first &= ~known
        new = np.sort(hashes[first])
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, new), new)
        return first
