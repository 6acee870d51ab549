"""Reading text files in pieces, whatever bytes they hold; cutting pieces at line ends.

Shared by the training pipeline (data/) and the corpus tools (corpus/): both must cope
with files far larger than memory and with files that are not valid UTF-8, so neither
reads a file whole. `DecodedFile` reads raw chunks, decodes them with an incremental UTF-8
decoder (a multi-byte character split between two chunks is completed by the next one)
and handles every invalid byte sequence through one error handler that records where in
the file it was. The handler sees what Python's `errors="replace"` would replace with one
U+FFFD: one "maximal invalid subpart". Training reads with `invalid="error"`: a bad byte
is a one-line error naming its offset.

Line endings: `keep_crlf_together` moves a trailing "\\r" to the next piece (so "\\r\\n" is
never counted as two line breaks), `line_segments` cuts pieces at their last line break
(so line rules see whole lines), and `stream_lines` yields whole lines.
"""

from __future__ import annotations

import codecs
import re
import shlex
import contextvars
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from fundamentallm.errors import UserError

DEFAULT_CHUNK_BYTES = 4 << 20
INVALID_MODES = ("repair", "replace", "drop")
MAX_RECORDED_OFFSETS = 10

UTF8_BOM = codecs.BOM_UTF8
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

# One error handler is registered for the whole process (codecs has no way to remove
# one); it hands each error to the file being decoded right now, found in a context
# variable so that two files decoded in turn (or in threads) never mix up their records.
_ERROR_HANDLER = "fundamentallm-invalid-utf8"
_active_handler: contextvars.ContextVar[Callable[[UnicodeDecodeError], tuple[str, int]]] = (
    contextvars.ContextVar("_active_handler")
)
codecs.register_error(_ERROR_HANDLER, lambda exc: _active_handler.get()(exc))


def repair_bytes(raw: bytes) -> str:
    """Read invalid UTF-8 bytes as Windows-1252, the usual origin of such bytes.

    cp1252 leaves 0x81, 0x8D, 0x8F, 0x90 and 0x9D undefined; those are read as Latin-1
    (C1 control characters, which the cleaning rules then remove).
    """
    return "".join(bytes((b,)).decode("cp1252", errors="ignore") or chr(b) for b in raw)


class DecodedFile:
    """One file as a stream of decoded text chunks, with a record of its invalid bytes.

    `invalid` says what an invalid sequence becomes: "replace" (U+FFFD, what analysis
    shows), "repair" (see `repair_bytes`) or "drop"; "error" (reading training text) stops
    with a UserError naming the byte and its offset. A leading UTF-8 byte-order mark is
    not part of the text and is skipped. The figures are complete once iteration ends.
    """

    def __init__(self, path: str | Path, invalid: str = "replace", chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if invalid not in (*INVALID_MODES, "error"):
            raise UserError(f"unknown --invalid mode {invalid!r}; choose one of {', '.join(INVALID_MODES)}")
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.path = Path(path)
        self.invalid = invalid
        self.chunk_bytes = chunk_bytes
        self.size = 0  # bytes read so far
        self.head = b""  # the first 4 bytes, for byte-order marks
        self.invalid_sequences = 0
        self.invalid_offsets: list[tuple[int, bytes]] = []  # (offset in the file, the bytes): the first few
        self._data_start = 0  # file offset of the first byte the decoder is working on

    @property
    def has_utf8_bom(self) -> bool:
        return self.head.startswith(UTF8_BOM)

    @property
    def has_utf16_bom(self) -> bool:
        return self.head.startswith(UTF16_BOMS)

    def __iter__(self) -> Iterator[str]:
        at_start = True
        try:
            with self.path.open("rb") as source:
                self.head = source.read(4)
                source.seek(0)
                # A UTF-16 file says so with its byte-order mark (Windows tools write one): read it
                # as such, its mark consumed by the codec; everything else is UTF-8.
                encoding = "utf-16" if self.has_utf16_bom else "utf-8"
                decoder = codecs.getincrementaldecoder(encoding)(errors=_ERROR_HANDLER)
                while True:
                    raw = source.read(self.chunk_bytes)
                    final = not raw
                    # The decoder's error `.object` is the bytes it kept back from the last
                    # call followed by this chunk, so offsets count from the first of those.
                    self._data_start = self.size - len(decoder.getstate()[0])
                    self.size += len(raw)
                    token = _active_handler.set(self._on_invalid)
                    try:
                        text = decoder.decode(raw, final)
                    finally:
                        _active_handler.reset(token)
                    if at_start and text:
                        at_start = False
                        if self.has_utf8_bom:
                            text = text[1:]  # (a UTF-16 decoder has consumed its own mark)
                    if text:
                        yield text
                    if final:
                        break
        except FileNotFoundError:
            raise UserError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise UserError(f"{self.path}: is a directory, expected a text file") from None
        except OSError as exc:
            raise UserError(f"{self.path}: cannot read ({exc.strerror})") from None
        if self.size == 0:
            raise UserError(f"{self.path}: file is empty")

    def _on_invalid(self, exc: UnicodeDecodeError) -> tuple[str, int]:
        raw = exc.object[exc.start : exc.end]
        if self.invalid == "error":
            raise UserError(f"{self.path}: not valid UTF-8 (bad byte 0x{raw[0]:02x} at offset "
                            f"{self._data_start + exc.start}); if it is Latin-1, convert it with "
                            f"`iconv -f latin1 -t utf-8 {shlex.quote(str(self.path))} > converted.txt`, or repair "
                            f"it with `python scripts/clean_data.py {shlex.quote(str(self.path))} cleaned.txt`")
        self.invalid_sequences += 1
        if len(self.invalid_offsets) < MAX_RECORDED_OFFSETS:
            self.invalid_offsets.append((self._data_start + exc.start, bytes(raw)))
        if self.invalid == "replace":
            return "\ufffd", exc.end
        if self.invalid == "repair":
            return repair_bytes(raw), exc.end
        return "", exc.end


def keep_crlf_together(chunks: Iterable[str]) -> Iterator[str]:
    """The same text, re-cut so that no piece ends with "\\r" unless the text does."""
    pending = ""
    for chunk in chunks:
        chunk = pending + chunk
        pending = ""
        if chunk.endswith("\r"):
            chunk, pending = chunk[:-1], "\r"
        if chunk:
            yield chunk
    if pending:
        yield pending


def line_segments(chunks: Iterable[str]) -> Iterator[str]:
    """The same text, re-cut after the last line break of each piece (only the last may end mid-line).

    A line longer than a piece is carried whole into the next one, so memory grows with
    the longest line; text has short lines, and analysis does not use this for that reason.
    """
    carry = ""
    for chunk in keep_crlf_together(chunks):
        chunk = carry + chunk
        cut = max(chunk.rfind("\n"), chunk.rfind("\r")) + 1
        carry = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if carry:
        yield carry


def stream_lines(pieces: Iterable[str]) -> Iterator[str]:
    """Whole lines (with their "\\n") from text arriving in pieces."""
    carry = ""
    for piece in pieces:
        lines = (carry + piece).split("\n")
        carry = lines.pop()
        for line in lines:
            yield line + "\n"
    if carry:
        yield carry


class Found(str):
    """One occurrence of a searched-for string, as `split_on` yields it (a str subclass, so
    code that only joins text sees its text; code that cares tells it apart)."""


def split_on(pieces: Iterable[str], needles: Iterable[str]) -> Iterator[str]:
    """The text of `pieces` with every occurrence of a `needles` string yielded on its own,
    as `Found`, even when it straddles two pieces; the other text as plain strings (in
    pieces, not joined). Leftmost match first; at one place, the longest needle. A piece that
    is already a `Found` passes through as it is (text on either side is not joined across it)."""
    needles = sorted({n for n in needles if n}, key=len, reverse=True)
    if not needles:
        yield from pieces
        return
    pattern = re.compile("|".join(map(re.escape, needles)))  # longest first: the alternation prefers it
    longest = len(needles[0])
    carry = ""
    for piece in pieces:
        if isinstance(piece, Found):
            yield from _split_whole(carry, pattern)
            yield piece
            carry = ""
            continue
        text = carry + piece
        # A match that starts where every needle is fully visible is final; later ones may
        # still grow (or appear) with the next piece, so that tail waits.
        safe, end = len(text) - longest + 1, 0
        for match in pattern.finditer(text):
            if match.start() >= safe:
                break
            if match.start() > end:
                yield text[end:match.start()]
            yield Found(match.group())
            end = match.end()
        cut = max(end, safe)
        if cut > end:
            yield text[end:cut]
        carry = text[cut:]
    yield from _split_whole(carry, pattern)


def _split_whole(text: str, pattern: re.Pattern) -> Iterator[str]:
    end = 0
    for match in pattern.finditer(text):
        if match.start() > end:
            yield text[end:match.start()]
        yield Found(match.group())
        end = match.end()
    if end < len(text):
        yield text[end:]
