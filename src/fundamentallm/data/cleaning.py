"""Cleaning a corpus before training: one spelling for every character and every line end.

A character-level model gives each distinct character its own token, so invisible
differences become real ones: `é` as one code point or as `e` plus an accent, `\\r\\n`
versus `\\n`, a stray bell character. Cleaning removes those differences up front.

The rules run in a fixed order chosen so that cleaning is idempotent
(`clean_text(clean_text(x)) == clean_text(x)`): line endings first (so no `\\r` is left
for the control-character rule to half-handle), then control characters (removing one
can bring a base letter and its accent together), then Unicode normalisation (NFKC can
turn exotic spaces into plain ones), then the optional whitespace collapsing.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fundamentallm.data.text import read_text_file
from fundamentallm.errors import UserError

NORMAL_FORMS = ("NFC", "NFKC")

# Exactly Unicode category Cc (U+0000-U+001F, U+007F-U+009F) except "\t" and "\n",
# which are ordinary text. `analysis` reports these same characters as control characters.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_LINE_ENDING = re.compile(r"\r\n?")
# Two or more blanks, or a single tab: everything that is not already one plain space.
_BLANK_RUN = re.compile(r"[ \t]{2,}|\t")


@dataclass(frozen=True)
class CleaningReport:
    """What each cleaning rule changed, so a user can see whether cleaning mattered."""

    form: str
    characters_before: int
    characters_after: int
    line_endings: int
    control_characters: int
    normalized_sequences: int
    collapse_whitespace: bool
    whitespace_runs: int

    @property
    def changed(self) -> bool:
        """Whether any rule altered the text."""
        return any(
            (self.line_endings, self.control_characters, self.normalized_sequences, self.whitespace_runs)
        )

    def summary_lines(self) -> list[str]:
        """One line per rule, in the order the rules ran, for printing."""
        whitespace = f"{self.whitespace_runs:,}" if self.collapse_whitespace else "off"
        rows = [
            ("line endings normalised (\\r\\n, \\r -> \\n)", f"{self.line_endings:,}"),
            ("control characters removed", f"{self.control_characters:,}"),
            (f"sequences changed by {self.form}", f"{self.normalized_sequences:,}"),
            ("space/tab runs collapsed", whitespace),
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


def clean_text(text: str, form: str = "NFC", collapse_whitespace: bool = False) -> tuple[str, CleaningReport]:
    """Clean `text` and count what each rule changed; see the module docstring for the order."""
    form = check_form(form)
    cleaned, line_endings = _LINE_ENDING.subn("\n", text)
    cleaned, controls = CONTROL_CHARACTERS.subn("", cleaned)
    cleaned, normalized = _normalize(cleaned, form)
    blank_runs = 0
    if collapse_whitespace:
        cleaned, blank_runs = _BLANK_RUN.subn(" ", cleaned)
    report = CleaningReport(
        form=form,
        characters_before=len(text),
        characters_after=len(cleaned),
        line_endings=line_endings,
        control_characters=controls,
        normalized_sequences=normalized,
        collapse_whitespace=collapse_whitespace,
        whitespace_runs=blank_runs,
    )
    return cleaned, report


def clean_file(
    source: str | Path,
    destination: str | Path,
    form: str = "NFC",
    collapse_whitespace: bool = False,
) -> CleaningReport:
    """Clean one UTF-8 file into another, refusing to touch the original.

    Writing over the input would make a wrong flag (say NFKC where NFC was meant)
    impossible to undo, so the destination must be a different file.
    """
    source, destination = Path(source), Path(destination)
    form = check_form(form)
    if _same_file(source, destination):
        raise UserError(f"{destination}: is the input file; write the cleaned text to a new file")
    if destination.is_dir():
        raise UserError(f"{destination}: is a directory, expected an output file path")
    cleaned, report = clean_text(read_text_file(source), form, collapse_whitespace)
    if not cleaned.strip():
        raise UserError(f"{source}: nothing but control characters and whitespace; nothing written")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(cleaned, encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"{destination}: cannot write ({exc.strerror})") from None
    return report


def _same_file(first: Path, second: Path) -> bool:
    """True when both paths name one file, including through links (samefile sees those)."""
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


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
