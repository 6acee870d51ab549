"""How a corpus report is shown: rich tables for the terminal and a PNG of its distributions."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.console import Group
from rich.table import Column, Table
from rich.text import Text

from fundamentallm.corpus.analysis import RARE_BELOW, CharCount, TextReport
from fundamentallm.plots import new_figure, save_figure


def render_report(report: TextReport) -> Group:
    """The report as rich tables: a summary, the character tables, oddities and advice."""
    summary = Table("figure", Column("value", justify="right"), title="Corpus", show_header=False)
    bpe = "-" if report.estimated_bpe_tokens is None else f"~{report.estimated_bpe_tokens:,}"
    endings = report.line_endings
    for label, value in (
        ("files", f"{report.files:,}"),
        ("bytes", f"{report.bytes:,}"),
        ("likely encoding", report.likely_encoding),
        ("invalid UTF-8 sequences", f"{report.invalid_sequences:,}"),
        ("characters", f"{report.characters:,}"),
        ("lines", f"{report.lines:,}"),
        ("empty lines (whitespace only)", f"{report.empty_lines:,}"),
        ("duplicate non-empty lines", f"{report.duplicate_lines:,} ({report.duplicate_share:.1%})"),
        ("line endings \\n / \\r\\n / \\r", f"{endings['lf']:,} / {endings['crlf']:,} / {endings['cr']:,}"),
        ("words", f"{report.words:,}"),
        ("distinct characters", f"{report.distinct_characters:,}"),
        (f"characters seen fewer than {RARE_BELOW} times", f"{report.rare_characters:,}"),
        ("control characters", f"{report.control_count:,}"),
        ("other non-printable characters", f"{report.nonprintable_count:,}"),
        ("tokens (char tokenizer)", f"{report.estimated_tokens:,}"),
        (f"estimated tokens (byte-level BPE, vocab {report.bpe_vocab_size})", bpe),
    ):
        summary.add_row(label, value)
    lengths = Table(*(Column(name, justify="right") for name in asdict(report.line_length)),
                    title="Line length (characters)")  # fmt: skip
    lengths.add_row(*(f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" for v in asdict(report.line_length).values()))
    parts: list[Table | Text] = [summary, lengths]
    parts.append(_char_table(f"{len(report.most_common)} most common characters", report.most_common))
    parts.append(_char_table(f"{len(report.least_common)} least common characters", report.least_common))
    if report.control_characters:
        title = "Control characters (clean_data.py removes these)"
        parts.append(_char_table(title, report.control_characters))
    if report.nonprintable_characters:
        parts.append(_char_table("Other non-printable characters", report.nonprintable_characters))
    if not report.control_characters and not report.nonprintable_characters:
        parts.append(Text("No control or non-printable characters (besides \\n and \\t)."))
    if report.invalid_offsets:
        title = f"First invalid UTF-8 sequences (of {report.invalid_sequences:,})"
        invalid = Table("file", "byte offset", "bytes", title=title)
        for seq in report.invalid_offsets:
            invalid.add_row(Text(seq.file), f"{seq.offset:,}", seq.bytes)
        parts.append(invalid)
    if report.estimated_bpe_tokens is not None:
        parts.append(Text(f"The BPE token count is an estimate: a BPE trained on the first "
                          f"{report.bpe_sample_characters:,} characters, its ratio scaled to the whole."))
    parts.extend(Text(f"- {line}") for line in report.recommendations)
    return Group(*parts)


def write_plot(report: TextReport, path: str | Path) -> None:
    """A PNG with the line-length histogram and the most common characters."""
    figure, (lengths, chars) = new_figure(12, 4.5, columns=2)
    bins, top = report.line_length_histogram, report.most_common
    lengths.bar([b.start for b in bins], [b.lines for b in bins], [b.stop - b.start for b in bins], align="edge")
    lengths.set(title="Line lengths", xlabel="characters", ylabel="lines")
    chars.bar(range(len(top)), [c.count for c in top])
    chars.set_xticks(range(len(top)), [c.shown for c in top], rotation=90)
    chars.set(title=f"{len(top)} most common characters", ylabel="count")
    save_figure(figure, path)


def _char_table(title: str, rows: list[CharCount]) -> Table:
    table = Table(title=title, min_width=len(title))
    for name in ("char", "code point", "count", "share"):
        table.add_column(name, justify="right" if name in ("count", "share") else "left")
    for row in rows:
        # Text(), not a str: rich would read a shown "'['" as markup.
        table.add_row(Text(row.shown), f"U+{ord(row.char):04X}", f"{row.count:,}", f"{row.share:.2%}")
    return table
