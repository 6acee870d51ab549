"""What is in a corpus before training on it: its size, its characters and its oddities.

A character-level model makes every distinct character a token, so a stray control
character, a no-break space or Windows line endings silently join the vocabulary. This
report makes them visible (and countable) so they can be cleaned out first.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fundamentallm.data.cleaning import CONTROL_CHARACTERS
from fundamentallm.data.text import read_text_file, text_files
from fundamentallm.errors import UserError

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
class TextReport:
    """Figures about a corpus; `control_characters` are what clean_data.py would remove."""

    files: int
    bytes: int  # of the UTF-8 text (a leading byte-order mark is not counted)
    characters: int
    lines: int
    empty_lines: int  # lines with nothing but whitespace
    words: int  # whitespace-separated
    distinct_characters: int
    estimated_tokens: int  # with the character tokenizer: one token per character
    most_common: list[CharCount]
    least_common: list[CharCount]
    control_characters: list[CharCount]  # Unicode control characters other than \n and \t
    nonprintable_characters: list[CharCount]  # other invisible ones: odd spaces, format marks

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


def analyze_text(text: str, top: int = 10) -> TextReport:
    """Report on one text; `top` is how many most and least common characters to list."""
    return analyze_texts([text], top)


def analyze_path(path: str | Path, top: int = 10) -> TextReport:
    """Report on a file, or on every .txt file below a directory taken together."""
    return analyze_texts((read_text_file(f) for f in text_files(path)), top)


def analyze_texts(texts: Iterable[str], top: int = 10) -> TextReport:
    """Report on several texts as one corpus, counting each file's lines on their own."""
    if top < 0:
        raise UserError(f"--top must be zero or more, not {top}")
    counts: Counter[str] = Counter()
    files = size = lines = empty = words = 0
    for text in texts:
        files += 1
        counts.update(text)
        size += len(text.encode("utf-8"))
        words += len(text.split())
        text_lines = _split_lines(text)
        lines += len(text_lines)
        empty += sum(1 for line in text_lines if not line.strip())
    total = sum(counts.values())

    def entries(items: Iterable[tuple[str, int]]) -> list[CharCount]:
        return [CharCount(ch, visible_char(ch), n, n / total if total else 0.0) for ch, n in items]

    by_frequency = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    by_rarity = sorted(counts.items(), key=lambda item: (item[1], item[0]))
    by_char = sorted(counts.items())
    return TextReport(
        files=files,
        bytes=size,
        characters=total,
        lines=lines,
        empty_lines=empty,
        words=words,
        distinct_characters=len(counts),
        estimated_tokens=total,
        most_common=entries(by_frequency[:top]),
        least_common=entries(by_rarity[:top]),
        control_characters=entries((ch, n) for ch, n in by_char if CONTROL_CHARACTERS.fullmatch(ch)),
        nonprintable_characters=entries((ch, n) for ch, n in by_char if _is_invisible(ch)),
    )


def render_report(report: TextReport) -> Group:
    """The report as rich tables: a summary, the character tables and any oddities."""
    summary = Table(title="Corpus", show_header=False)
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for label, value in (
        ("files", report.files),
        ("bytes (UTF-8)", report.bytes),
        ("characters", report.characters),
        ("lines", report.lines),
        ("empty lines", report.empty_lines),
        ("words", report.words),
        ("distinct characters", report.distinct_characters),
        ("estimated tokens (char tokenizer)", report.estimated_tokens),
        ("control characters", report.control_count),
        ("other non-printable characters", report.nonprintable_count),
    ):
        summary.add_row(label, f"{value:,}")
    parts: list[Table | Text] = [summary]
    parts.append(_char_table(f"{len(report.most_common)} most common characters", report.most_common))
    parts.append(_char_table(f"{len(report.least_common)} least common characters", report.least_common))
    if report.control_characters:
        title = "Control characters (clean_data.py removes these)"
        parts.append(_char_table(title, report.control_characters))
    if report.nonprintable_characters:
        parts.append(_char_table("Other non-printable characters", report.nonprintable_characters))
    if not report.control_characters and not report.nonprintable_characters:
        parts.append(Text("No control or non-printable characters (besides \\n and \\t)."))
    return Group(*parts)


def _char_table(title: str, rows: list[CharCount]) -> Table:
    table = Table(title=title, min_width=len(title))
    table.add_column("char")
    table.add_column("code point")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for row in rows:
        # Text(), not a str: rich would read a shown "'['" as markup.
        table.add_row(Text(row.shown), f"U+{ord(row.char):04X}", f"{row.count:,}", f"{row.share:.2%}")
    return table


def _is_invisible(char: str) -> bool:
    """Not printable and not a control character: odd spaces, zero-width and format marks."""
    return not char.isprintable() and unicodedata.category(char) != "Cc"


def _split_lines(text: str) -> list[str]:
    """Lines as an editor shows them: any of \\r\\n, \\r, \\n ends one; a final break adds none."""
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines
