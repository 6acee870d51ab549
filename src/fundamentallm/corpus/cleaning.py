"""Cleaning a corpus before training: one spelling for every character and every line end.

A character-level model gives each distinct character its own token, so invisible
differences become real ones: `é` as one code point or as `e` plus an accent, `\\r\\n`
versus `\\n`, a stray bell character. Cleaning removes those differences up front.

Cleaning streams: the text goes through in line-aligned segments of a few MB, and every
rule works on a whole segment at once (regular expressions, `unicodedata.normalize`) or
on its list of lines, never character by character in Python. Text rules run in a fixed
order chosen so that they are idempotent: invalid bytes (while decoding), line endings
(so no `\\r` is left for the control rule to half-handle), control characters and stray
byte-order marks (removing one can bring a letter and its accent together), Unicode
normalisation (NFKC can turn exotic spaces into plain ones), then whitespace collapsing.
Line rules follow: duplicate lines, then line length. All of them act within a line, so
applying them again to their own output changes nothing. The output ends with a newline.

The rare-character rule needs counts over the cleaned output, so it runs as a further
pass, followed by all the other rules again: removing characters can create duplicates,
shorten lines below the minimum, or (through dedupe) make another character rare. Passes
repeat until no character is rare, so the result is a fixed point of a whole pass:
cleaning it again with the same options changes nothing (idempotence, tested).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import compress
from pathlib import Path

import numpy as np

from fundamentallm.atomic import TemporaryTextFile, same_file
from fundamentallm.corpus.counting import SeenLines, add_counts, code_points_of, text_pieces
from fundamentallm.data.text import looks_binary
from fundamentallm.textstream import DEFAULT_CHUNK_BYTES, INVALID_MODES, DecodedFile, line_segments
from fundamentallm.errors import UserError

NORMAL_FORMS = ("NFC", "NFKC")

# Exactly Unicode category Cc (U+0000-U+001F, U+007F-U+009F) except "\t" and "\n",
# which are ordinary text. `analysis` reports these same characters as control characters.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_LINE_ENDING = re.compile(r"\r\n?")
# Two or more blanks, or a single tab: everything that is not already one plain space.
_BLANK_RUN = re.compile(r"[ \t]{2,}|\t")
_HANGUL_JAMO = (("\u1100", "\u11ff"), ("\ua960", "\ua97f"), ("\ud7b0", "\ud7ff"))
_MAX_PASSES = 100  # each rare-character pass removes characters for good; this is a safety net


@dataclass(frozen=True)
class CleaningOptions:
    """What to clean; each field is the flag of the same name in scripts/clean_data.py."""

    form: str = "NFC"  # Unicode normal form: NFC or NFKC
    collapse_whitespace: bool = False
    invalid: str = "repair"  # undecodable bytes in a file: repair (cp1252), replace or drop
    dedupe: bool = False
    min_length: int | None = None
    max_length: int | None = None
    min_char_count: int | None = None
    rare_char_replacement: str | None = None  # None: rare characters are dropped

    @property
    def has_length_limits(self) -> bool:
        return self.min_length is not None or self.max_length is not None

    def checked(self) -> CleaningOptions:
        """These options with the form spelled canonically; a bad value is a one-line UserError."""
        form = check_form(self.form)
        if self.invalid not in INVALID_MODES:
            raise UserError(f"unknown --invalid mode {self.invalid!r}; choose one of {', '.join(INVALID_MODES)}")
        for name in ("min_length", "max_length", "min_char_count"):
            if (getattr(self, name) or 0) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be zero or more, not {getattr(self, name)}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise UserError(f"--min-length {self.min_length} is above --max-length {self.max_length}")
        char = self.rare_char_replacement
        if char is not None and self.min_char_count is None:
            raise UserError("--rare-char-replacement needs --min-char-count")
        # The replacement must come out of every rule unchanged and must not merge with its
        # neighbours (combining marks and Hangul jamo do), or passes could go on forever.
        if char is not None and not (
            len(char) == 1
            and char.isprintable()
            and not unicodedata.category(char).startswith("M")
            and not any(low <= char <= high for low, high in _HANGUL_JAMO)
            and unicodedata.normalize("NFKD", char) == char
        ):
            raise UserError(f"--rare-char-replacement must be one printable character that no rule changes, not {char!r}")
        return replace(self, form=form)


@dataclass
class CleaningReport:
    """The options, and what each rule changed (summed over passes), so a user sees whether cleaning mattered."""

    options: CleaningOptions = field(default_factory=CleaningOptions)
    characters_before: int = 0
    characters_after: int = 0
    line_endings: int = 0
    control_characters: int = 0
    normalized_sequences: int = 0
    whitespace_runs: int = 0
    invalid_sequences: int = 0
    byte_order_marks: int = 0
    final_newline_added: bool = False
    duplicate_lines: int = 0
    short_lines: int = 0
    long_lines: int = 0
    rare_characters: int = 0  # occurrences dropped or replaced
    rare_distinct: int = 0  # how many different characters that was
    passes: int = 1

    @property
    def changed(self) -> bool:
        """Whether any rule altered the text."""
        counts = (self.invalid_sequences, self.byte_order_marks, self.line_endings, self.control_characters,
                  self.normalized_sequences, self.whitespace_runs, self.duplicate_lines, self.short_lines,
                  self.long_lines, self.rare_characters)  # fmt: skip
        return any(counts) or self.final_newline_added

    def summary_lines(self) -> list[str]:
        """One line per rule, in the order the rules run, for printing; "off" for rules not asked for."""
        o = self.options
        verb = {"repair": "repaired (cp1252)", "replace": "replaced by U+FFFD", "drop": "dropped"}[o.invalid]
        limits = [f"{self.short_lines:,} shorter than {o.min_length}"] if o.min_length is not None else []
        limits += [f"{self.long_lines:,} longer than {o.max_length}"] if o.max_length is not None else []
        rare = ("rare characters", "off")
        if o.min_char_count is not None:
            action = "dropped" if o.rare_char_replacement is None else f"-> {o.rare_char_replacement!r}"
            rare = (f"characters seen < {o.min_char_count} times {action}",
                    f"{self.rare_characters:,} ({self.rare_distinct:,} distinct characters)")  # fmt: skip
        rows = [
            (f"invalid UTF-8 sequences {verb}", f"{self.invalid_sequences:,}"),
            ("byte-order marks (U+FEFF) removed", f"{self.byte_order_marks:,}"),
            ("line endings normalised (\\r\\n, \\r -> \\n)", f"{self.line_endings:,}"),
            ("control characters removed", f"{self.control_characters:,}"),
            (f"sequences changed by {o.form}", f"{self.normalized_sequences:,}"),
            ("space/tab runs collapsed", f"{self.whitespace_runs:,}" if o.collapse_whitespace else "off"),
            ("duplicate lines removed", f"{self.duplicate_lines:,}" if o.dedupe else "off"),
            ("lines removed for length", ", ".join(limits) or "off"),
            rare,
            ("final newline added", "yes" if self.final_newline_added else "no"),
            ("passes", f"{self.passes}"),
            ("characters", f"{self.characters_before:,} -> {self.characters_after:,}"),
        ]
        width = max(len(label) for label, _ in rows)
        return [f"{label + ':':<{width + 1}} {value}" for label, value in rows]


def check_form(form: str) -> str:
    """The normal form in canonical spelling; only NFC and NFKC keep text readable as text."""
    canonical = form.upper()
    if canonical not in NORMAL_FORMS:
        raise UserError(f"unknown normal form {form!r}; choose one of {', '.join(NORMAL_FORMS)}")
    return canonical


def clean_text(text: str, options: CleaningOptions | None = None, *,
               chunk_chars: int = DEFAULT_CHUNK_BYTES) -> tuple[str, CleaningReport]:
    """Clean `text` and count what each rule changed: exactly what `clean_file` writes for it."""
    report = CleaningReport((options or CleaningOptions()).checked())
    sink, _ = _run_passes(report, text_pieces(text, chunk_chars), _MemorySink)
    return "".join(sink.parts), report


def clean_file(source: str | Path, destination: str | Path, options: CleaningOptions | None = None,
               *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> CleaningReport:
    """Clean one text file into another, refusing to touch the original.

    Writing over the input would make a wrong flag (say NFKC where NFC was meant)
    impossible to undo, so the destination must be a different file. The output is
    written to a temporary file beside the destination and renamed into place, so an
    interrupted run never leaves half a file.
    """
    source, destination = Path(source), Path(destination)
    report = CleaningReport((options or CleaningOptions()).checked())
    if same_file(source, destination):
        raise UserError(f"{destination}: is the input file; write the cleaned text to a new file")
    if destination.is_dir():
        raise UserError(f"{destination}: is a directory, expected an output file path")
    _check_source(source)
    decoded = DecodedFile(source, invalid=report.options.invalid, chunk_bytes=chunk_bytes)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        sink, has_text = _run_passes(report, decoded, lambda: TemporaryTextFile(destination, chunk_bytes))
    except OSError as exc:
        raise UserError(f"{destination}: cannot write ({exc.strerror})") from None
    report.invalid_sequences = decoded.invalid_sequences
    report.byte_order_marks += decoded.has_utf8_bom
    if not has_text:
        sink.discard()
        raise UserError(f"{source}: nothing but control characters and whitespace; nothing written")
    sink.commit(destination)
    return report


def _check_source(source: Path) -> None:
    """The problems worth one clear message before any output is created."""
    if source.is_dir():
        raise UserError(f"{source}: is a directory, expected a text file")
    try:
        with source.open("rb") as f:
            head = f.read(65536)
    except FileNotFoundError:
        raise UserError(f"{source}: no such file") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror})") from None
    if not head:
        raise UserError(f"{source}: file is empty")
    if looks_binary(source):
        raise UserError(f"{source}: looks like a binary file (contains NUL bytes), expected text")


class _MemorySink:
    """Where a pass writes when cleaning a text in memory (TemporaryTextFile for a file)."""

    def __init__(self):
        self.parts: list[str] = []
        self.write = self.parts.append

    def read(self) -> Iterable[str]:
        return self.parts

    def discard(self) -> None:
        self.parts = []


_Sink = _MemorySink | TemporaryTextFile


def _run_passes(report: CleaningReport, source: Iterable[str], new_sink: Callable[[], _Sink]):
    """Clean `source` into a new sink, then again while rare characters remain.

    Returns the last sink and whether it holds anything but whitespace.
    """
    sink = new_sink()
    try:
        result = _clean_pass(report, source, sink.write, rare=None)
        report.characters_before = result.read
        while (rare := _rare_pattern(result.char_counts, report)) is not None:
            if report.passes >= _MAX_PASSES:
                raise UserError(f"cleaning did not settle after {_MAX_PASSES} passes; please report this")
            previous, sink = sink, new_sink()
            try:
                result = _clean_pass(report, previous.read(), sink.write, rare)
            finally:
                previous.discard()
            report.passes += 1
    except BaseException:
        sink.discard()
        raise
    report.characters_after = result.written
    return sink, result.has_text


@dataclass
class _Pass:
    """What one pass has read and written so far, and the lines it has seen."""

    read: int = 0
    written: int = 0
    has_text: bool = False
    last: str = ""
    char_counts: np.ndarray | None = None  # of the output, kept only for the rare-character rule
    seen: SeenLines = field(default_factory=SeenLines)  # for --dedupe


def _clean_pass(report: CleaningReport, chunks: Iterable[str], write: Callable[[str], object], rare) -> _Pass:
    state = _Pass(char_counts=None if report.options.min_char_count is None else np.zeros(0, dtype=np.int64))
    for segment in line_segments(chunks):
        state.read += len(segment)
        segment = _clean_segment(report, segment, rare, state)
        if segment:
            _emit(segment, write, state)
    if state.last not in ("", "\n"):
        report.final_newline_added = True
        _emit("\n", write, state)
    return state


def _emit(text: str, write: Callable[[str], object], state: _Pass) -> None:
    write(text)
    state.written += len(text)
    state.last = text[-1]
    state.has_text = state.has_text or not text.isspace()
    if state.char_counts is not None:
        state.char_counts = add_counts(state.char_counts, code_points_of(text))


def _clean_segment(report: CleaningReport, segment: str, rare: re.Pattern[str] | None, state: _Pass) -> str:
    """All rules on a line-aligned segment, in the order the module docstring gives."""
    if rare is not None:
        replacement = report.options.rare_char_replacement or ""
        segment, n = rare.subn(lambda _: replacement, segment)  # a function: no backslash escapes
        report.rare_characters += n
    segment, n = _LINE_ENDING.subn("\n", segment)
    report.line_endings += n
    segment, n = CONTROL_CHARACTERS.subn("", segment)
    report.control_characters += n
    if "\ufeff" in segment:  # a byte-order mark anywhere but at the start is a stray
        report.byte_order_marks += segment.count("\ufeff")
        segment = segment.replace("\ufeff", "")
    segment, n = _normalize(segment, report.options.form)
    report.normalized_sequences += n
    if report.options.collapse_whitespace:
        segment, n = _BLANK_RUN.subn(" ", segment)
        report.whitespace_runs += n
    if report.options.dedupe or report.options.has_length_limits:
        segment = _line_rules(report, segment, state)
    return segment


def _line_rules(report: CleaningReport, segment: str, state: _Pass) -> str:
    """Drop repeated non-empty lines, then non-empty lines outside the length limits.

    Blank (whitespace-only) lines are always kept: they separate paragraphs. The work is
    done on numpy arrays over the segment's lines rather than line by line.
    """
    ends = segment.endswith("\n")
    lines = segment.split("\n")
    if ends:
        lines.pop()
    count, options = len(lines), report.options
    non_blank = np.fromiter(map(bool, map(str.strip, lines)), dtype=bool, count=count)
    keep = np.ones(count, dtype=bool)
    if options.dedupe:
        where = np.flatnonzero(non_blank)
        first = state.seen.first_seen(np.fromiter(map(hash, lines), dtype=np.int64, count=count)[where])
        keep[where] = first
        report.duplicate_lines += len(where) - int(first.sum())
    if options.has_length_limits:
        lengths = np.fromiter(map(len, lines), dtype=np.int64, count=count)
        checked = keep & non_blank
        none = np.zeros_like(keep)
        short = checked & (lengths < options.min_length) if options.min_length is not None else none
        long = checked & (lengths > options.max_length) if options.max_length is not None else none
        report.short_lines += int(short.sum())
        report.long_lines += int(long.sum())
        keep &= ~(short | long)
    if keep.all():
        return segment
    kept = list(compress(lines, keep.tolist()))
    return "\n".join(kept) + ("\n" if ends and kept else "")


def _rare_pattern(char_counts: np.ndarray | None, report: CleaningReport) -> re.Pattern[str] | None:
    """A pattern matching the characters seen fewer than --min-char-count times, if any.

    "\\n" is never rare (it holds the lines apart), nor is the replacement character.
    """
    if char_counts is None or report.options.min_char_count is None:
        return None
    codes = np.flatnonzero((char_counts > 0) & (char_counts < report.options.min_char_count)).tolist()
    rare = [chr(c) for c in codes if chr(c) not in ("\n", report.options.rare_char_replacement)]
    if not rare:
        return None
    report.rare_distinct += len(rare)
    return re.compile("[" + "".join(map(re.escape, rare)) + "]")


def _normalize(text: str, form: str) -> tuple[str, int]:
    """Normalise `text` and count the character sequences that normalisation rewrote.

    The text is normalised as a whole (that is what makes the result correct); the count
    is worked out line by line, and only for lines that need it, because a per-character
    loop over a whole corpus would be slow. Normalisation never acts across a "\\n".
    """
    if unicodedata.is_normalized(form, text):
        return text, 0
    changed = 0
    for line in text.split("\n"):
        if not unicodedata.is_normalized(form, line):
            rewritten = sum(unicodedata.normalize(form, seq) != seq for seq in _sequences(line))
            # A few scripts compose across base characters (Hangul jamo), which the
            # per-sequence count misses; such a line still changed at least once.
            changed += max(rewritten, 1)
    return unicodedata.normalize(form, text), changed


def _sequences(line: str) -> Iterator[str]:
    """Split a line into base characters, each with the combining marks that follow it."""
    start = 0
    for index in range(1, len(line)):
        if not unicodedata.combining(line[index]):
            yield line[start:index]
            start = index
    if line:
        yield line[start:]
