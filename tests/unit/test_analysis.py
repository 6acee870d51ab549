"""Corpus analysis: exact figures on small texts and files whose counts are worked out by hand."""

from __future__ import annotations

import itertools
import json

import pytest

from rich.console import Console

from fundamentallm import textstream
from fundamentallm.corpus import counting
from fundamentallm.corpus.analysis import analyze_path, analyze_text, analyze_texts, visible_char
from fundamentallm.corpus.report import render_report, write_plot
from fundamentallm.errors import UserError

# 4 lines (one empty), CRLF endings, a tab, a bell, a no-break space.
SAMPLE = "Hello\tworld\x07\r\nsecond\u00a0line\r\n\r\nlast"


def test_sizes_lines_and_words():
    report = analyze_text(SAMPLE)
    assert report.files == 1
    assert report.characters == 33
    assert report.bytes == 34  # the no-break space takes two bytes in UTF-8
    assert report.lines == 4
    assert report.empty_lines == 1
    assert report.words == 5  # "world\x07" is one word; the no-break space splits
    assert report.distinct_characters == 18
    assert report.estimated_tokens == 33


def test_control_and_nonprintable_characters_are_listed_but_not_newline_or_tab():
    report = analyze_text(SAMPLE)
    assert [(c.shown, c.count) for c in report.control_characters] == [("'\\u0007'", 1), ("'\\r'", 3)]
    assert [(c.shown, c.count) for c in report.nonprintable_characters] == [("'\\u00a0'", 1)]
    assert report.control_count == 4
    assert report.nonprintable_count == 1


def test_frequency_tables_break_ties_by_character():
    report = analyze_text("aaabbc\n", top=2)
    assert [(c.char, c.count) for c in report.most_common] == [("a", 3), ("b", 2)]
    assert [(c.char, c.count) for c in report.least_common] == [("\n", 1), ("c", 1)]
    assert report.most_common[0].share == pytest.approx(3 / 7)


@pytest.mark.parametrize(
    ("char", "shown"),
    [(" ", "' '"), ("\t", "'\\t'"), ("\n", "'\\n'"), ("\u00a0", "'\\u00a0'"), ("\x07", "'\\u0007'"),
     ("a", "'a'"), ("é", "'é'"), ("'", "'\\''"), ("\u0301", "'\\u0301'"), ("\U000e0001", "'\\U000e0001'")],
)  # fmt: skip
def test_visible_char(char, shown):
    assert visible_char(char) == shown


def test_line_counting_ignores_a_final_line_break():
    assert analyze_text("a\nb\n").lines == 2
    assert analyze_text("a\nb").lines == 2
    assert analyze_text("a\n\n  \nb\r").lines == 4
    assert analyze_text("a\n\n  \nb\r").empty_lines == 2


def test_several_texts_add_up():
    report = analyze_texts(["ab\n", "cd"])
    assert (report.files, report.characters, report.lines, report.words) == (2, 5, 2, 2)


def test_report_is_json_serialisable_with_totals():
    data = json.loads(json.dumps(analyze_text(SAMPLE, top=1).to_dict()))
    assert data["control_count"] == 4
    assert data["most_common"] == [{"char": "l", "shown": "'l'", "count": 5, "share": 5 / 33}]
    for key in ("invalid_sequences", "invalid_offsets", "likely_encoding", "duplicate_lines", "duplicate_share",
                "line_length", "line_endings", "estimated_bpe_tokens", "recommendations"):  # fmt: skip
        assert key in data


# A file with everything at once. Each line's bytes, offsets and contents are listed so
# that every figure below can be checked by hand.
CRAFTED = (
    b"caf\xc3\xa9 cafe\xcc\x81\r\n"  # 0-13: composed and decomposed e-acute, CRLF; 10 chars + 2
    b"dup line\n"  # 14-22
    b"\xff bad\tbyte\r"  # 23-33: invalid 0xff at 23, a tab, a lone CR; 11 chars
    b"dup line\r\n"  # 34-43
    b"   \n"  # 44-47: whitespace only
    b"no\xc2\xa0break \xf0\x9f\x98\x80 emoji\n"  # 48-68: no-break space, an emoji; 17 chars
    b"\n"  # 69: empty
    b"dup line\n"  # 70-78
    b"bell\x07 \xe2\x82 end"  # 79-90: a bell at 83, a truncated 3-byte sequence at 85-86; no final newline
)
# Characters (each invalid sequence is one U+FFFD) and how often each occurs.
CRAFTED_COUNTS = {
    " ": 12, "e": 9, "\n": 7, "d": 5, "l": 5, "n": 5, "a": 4, "b": 4, "i": 4, "p": 3, "u": 3, "\r": 3,
    "c": 2, "f": 2, "o": 2, "\ufffd": 2, "\x07": 1, "\t": 1, "j": 1, "k": 1, "m": 1, "r": 1, "t": 1, "y": 1,
    "\u00a0": 1, "\u00e9": 1, "\u0301": 1, "\U0001f600": 1,
}  # fmt: skip


@pytest.fixture
def crafted(tmp_path):
    path = tmp_path / "crafted.txt"
    path.write_bytes(CRAFTED)
    return path


def test_every_figure_of_a_crafted_file(crafted):
    report = analyze_path(crafted, top=3)
    assert sum(CRAFTED_COUNTS.values()) == 84 and len(CRAFTED) == 91
    assert (report.files, report.bytes, report.characters, report.estimated_tokens) == (1, 91, 84, 84)
    assert (report.lines, report.empty_lines, report.non_empty_lines) == (9, 2, 7)
    assert report.line_endings == {"lf": 5, "crlf": 2, "cr": 1}
    # "café", "cafe\u0301" | dup line | \ufffd bad byte | dup line | no break 😀 emoji (\xa0 is a space)
    # | dup line | bell\x07 \ufffd end
    assert report.words == 2 + 2 + 3 + 2 + 4 + 2 + 3
    assert (report.duplicate_lines, report.duplicate_share) == (2, pytest.approx(2 / 7))
    assert report.invalid_sequences == 2
    assert [(s.offset, s.bytes) for s in report.invalid_offsets] == [(23, "ff"), (85, "e2 82")]
    assert {s.file for s in report.invalid_offsets} == {str(crafted)}
    assert report.likely_encoding == "utf-8 with invalid bytes"  # 4 valid non-ASCII characters, 2 invalid
    assert report.distinct_characters == 28
    assert [(c.char, c.count) for c in report.most_common] == [(" ", 12), ("e", 9), ("\n", 7)]
    assert [(c.char, c.count) for c in report.least_common] == [("\x07", 1), ("\t", 1), ("j", 1)]
    assert report.most_common[0].share == pytest.approx(12 / 84)
    assert [(c.char, c.count) for c in report.control_characters] == [("\x07", 1), ("\r", 3)]
    assert [(c.shown, c.count) for c in report.nonprintable_characters] == [("'\\u00a0'", 1)]
    assert report.rare_characters == 22  # all but " ", e, \n, d, l, n
    # Line lengths: 10, 8, 10, 8, 3, 16, 0, 8, 11 -> sorted 0 3 8 8 8 10 10 11 16
    ll = report.line_length
    assert (ll.min, ll.median, ll.p90, ll.p99, ll.max) == (0, 8, 16, 16, 16)
    assert ll.mean == pytest.approx(74 / 9)
    assert [(b.start, b.stop, b.lines) for b in report.line_length_histogram if b.lines] == [
        (0, 1, 1), (3, 4, 1), (8, 9, 3), (10, 11, 2), (11, 12, 1), (16, 17, 1)
    ]  # fmt: skip
    assert len(report.line_length_histogram) == 17
    assert report.recommendations == [
        "28.6% of non-empty lines are duplicates: consider clean_data.py --dedupe",
        "1 control character(s) other than \\r: clean_data.py removes them",
        "invalid UTF-8 (2 sequences): clean_data.py --invalid repair|replace|drop",
        "2 \\r\\n and 1 \\r line endings: clean_data.py normalises them to \\n",
        "22 characters occur fewer than 5 times: consider clean_data.py --min-char-count 5",
        "file is 91 B (~84 char tokens): it supports models up to ~96 parameters"
        " (train --max-time sizes no larger); above that expect overfitting: use --dropout 0.1-0.2",
    ]


def test_character_counts_of_the_crafted_file(crafted):
    report = analyze_path(crafted, top=100)
    assert {c.char: c.count for c in report.most_common} == CRAFTED_COUNTS


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 16, 64])
def test_chunk_boundaries_change_nothing(crafted, chunk_bytes):
    whole = analyze_path(crafted, top=50, chunk_bytes=1 << 20).to_dict()
    assert analyze_path(crafted, top=50, chunk_bytes=chunk_bytes).to_dict() == whole


def test_seven_byte_chunks_split_characters_line_endings_and_invalid_bytes(tmp_path):
    path = tmp_path / "boundaries.txt"
    content = (
        b"abcdef\xc3"  # bytes 0-6: the first chunk ends in the middle of an e-acute...
        b"\xa9 wxyz\r"  # 7-13: ...the second completes it, and ends with \r...
        b"\nlines\xff"  # 14-20: ...whose \n starts the third; an invalid byte ends it (20)
        b"\xfeok\xe2\x82\xac\xe2"  # 21-27: an invalid byte starts the fourth (21); a euro sign; a cut sequence...
        b"\x82\n"  # 28-29: ...that this newline leaves unfinished: one invalid sequence, e2 82 at 27
    )
    path.write_bytes(content)
    for chunk_bytes in (7, 1 << 20):
        report = analyze_path(path, top=100, chunk_bytes=chunk_bytes)
        assert report.invalid_sequences == 3
        assert [(s.offset, s.bytes) for s in report.invalid_offsets] == [(20, "ff"), (21, "fe"), (27, "e2 82")]
        assert report.line_endings == {"lf": 1, "crlf": 1, "cr": 0}
        assert report.lines == 2
        counts = {c.char: c.count for c in report.most_common}
        assert (counts["\u00e9"], counts["\u20ac"], counts["\ufffd"]) == (1, 1, 3)
        assert report.words == 3  # "abcdefé", "wxyz", "lines\ufffd\ufffdok€\ufffd"
        assert report.characters == 7 + 6 + 1 + 12
        assert (report.line_length.min, report.line_length.max) == (11, 12)


def test_the_real_four_megabyte_boundary(tmp_path):
    path = tmp_path / "big.txt"
    chunk = textstream.DEFAULT_CHUNK_BYTES
    # e-acute straddles the first chunk boundary; a \r ends the second chunk and its \n
    # starts the third, followed by an invalid byte.
    path.write_bytes(b"x" * (chunk - 1) + b"\xc3\xa9" + b"y" * (chunk - 2) + b"\r" + b"\n\xff z\n")
    report = analyze_path(path, bpe_vocab_size=None)
    assert report.lines == 2 and report.line_endings == {"lf": 1, "crlf": 1, "cr": 0}
    assert [(s.offset, s.bytes) for s in report.invalid_offsets] == [(2 * chunk + 1, "ff")]
    assert report.characters == (chunk - 1) + 1 + (chunk - 2) + 2 + 4
    assert report.words == 3 and report.line_length.max == 2 * chunk - 2


def test_long_lines_are_hashed_in_pieces_with_the_same_results(tmp_path, monkeypatch):
    path = tmp_path / "long.txt"
    line = "0123456789 abcdefghij"  # 21 characters
    path.write_text(f"{line}\n{line}\n{' ' * 30}\nshort\n{line}x\n{line}", encoding="utf-8")
    expected = analyze_path(path, top=50, chunk_bytes=4).to_dict()
    assert (expected["duplicate_lines"], expected["empty_lines"], expected["lines"]) == (2, 1, 6)
    monkeypatch.setattr(counting, "_LONG_LINE", 5)  # everything but "short" is now a "long" line
    for chunk_bytes in (3, 4, 7, 100):
        assert analyze_path(path, top=50, chunk_bytes=chunk_bytes).to_dict() == expected


@pytest.mark.parametrize(
    ("content", "encoding"),
    [(b"plain ascii\n", "ascii"), ("caf\u00e9\n".encode(), "utf-8"), (b"\xef\xbb\xbfhi\n", "utf-8 with BOM"),
     ("hi\n".encode("utf-16"), "utf-16 (BOM)"), (b"\xff\xfe abc", "utf-16 (BOM)"), (b"ab\x00cd", "binary"),
     ("caf\u00e9 na\u00efve\n".encode("cp1252"), "windows-1252 or latin-1"),
     (b"caf\xc3\xa9 na\xc3\xafve \xc3\xa9t\xc3\xa9 \xff\n", "utf-8 with invalid bytes")],  # 4 valid, 1 invalid
)  # fmt: skip
def test_likely_encoding(tmp_path, content, encoding):
    path = tmp_path / "file.txt"
    path.write_bytes(content)
    assert analyze_path(path).likely_encoding == encoding


def test_byte_order_mark_is_counted_in_bytes_but_is_not_a_character(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhi\n")
    report = analyze_path(path, chunk_bytes=1)
    assert (report.bytes, report.characters, report.distinct_characters) == (6, 3, 3)


def test_non_utf8_and_binary_files_are_reported_not_refused(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9 na\u00efve\n".encode("cp1252"))
    report = analyze_path(path)
    assert report.invalid_sequences == 2
    assert [(s.offset, s.bytes) for s in report.invalid_offsets] == [(3, "e9"), (7, "ef")]
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ab\x00cd")
    report = analyze_path(binary)
    assert report.control_count == 1
    assert "many NUL bytes: this looks like a binary file, not text" in report.recommendations


def test_only_the_first_ten_invalid_offsets_are_listed(tmp_path):
    path = tmp_path / "many.txt"
    path.write_bytes(b"a\xff" * 12)
    report = analyze_path(path, chunk_bytes=5)
    assert report.invalid_sequences == 12
    assert [s.offset for s in report.invalid_offsets] == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]


def test_directory_is_one_corpus_of_txt_and_md_files(tmp_path):
    (tmp_path / "one.txt").write_text("x y\nsame", encoding="utf-8")  # no final newline: still 2 lines
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.txt").write_bytes(b"same\nz\xff")
    (tmp_path / "notes.md").write_text("same\n", encoding="utf-8")
    (tmp_path / "skip.rst").write_text("not counted", encoding="utf-8")
    report = analyze_path(tmp_path)
    assert (report.files, report.lines, report.words) == (3, 5, 6)
    assert report.characters == 8 + 5 + 7
    assert report.duplicate_lines == 2  # "same" three times
    assert [(s.file, s.offset) for s in report.invalid_offsets] == [(str(tmp_path / "sub" / "two.txt"), 6)]
    assert any(r.startswith("corpus is 20 B (~20 char tokens)") for r in report.recommendations)


def test_recommendations_only_when_measured():
    unique = "".join("".join(letters) + "\n" for letters in itertools.product("ab", repeat=5))  # 32 lines
    assert analyze_text(unique).recommendations == [
        "file is 192 B (~192 char tokens): it supports models up to ~219 parameters"
        " (train --max-time sizes no larger); above that expect overfitting: use --dropout 0.1-0.2"
    ]
    lines = "".join(f"line {i}\n" for i in range(199)) + "line 0\n"  # 1 duplicate in 200: 0.5%
    assert not any("duplicates" in r for r in analyze_text(lines).recommendations)
    lines = "".join(f"line {i}\n" for i in range(99)) + "line 0\n"  # 1 in 100
    assert "1.0% of non-empty lines are duplicates: consider clean_data.py --dedupe" in analyze_text(
        lines
    ).recommendations
    assert "5 \\r line endings: clean_data.py normalises them to \\n" in analyze_text("ab\r" * 5).recommendations
    big = analyze_text("0123456789" * 4_000, bpe_vocab_size=None)
    assert big.recommendations == [
        "file is 40 KB (~40K char tokens): it supports models up to ~46K parameters"
        " (train --max-time sizes no larger); above that expect overfitting: use --dropout 0.1-0.2"
    ]


def test_bpe_estimate_extrapolates_the_sample_ratio(tmp_path):
    block = "".join(f"the quick brown fox {i % 7} jumps over the lazy dog\n" for i in range(300))
    once, twice = tmp_path / "once.txt", tmp_path / "twice.txt"
    once.write_text(block, encoding="utf-8")
    twice.write_text(block * 2, encoding="utf-8")
    exact = analyze_path(once, bpe_vocab_size=300).estimated_bpe_tokens
    assert 0 < exact < len(block) / 2  # a repetitive text compresses well
    # Trained on the first half only, the ratio of that half is scaled to the whole.
    estimate = analyze_path(twice, bpe_vocab_size=300, bpe_sample_chars=len(block))
    assert estimate.estimated_bpe_tokens == 2 * exact
    assert estimate.bpe_sample_characters == len(block)
    assert analyze_path(once, bpe_vocab_size=None).estimated_bpe_tokens is None


def test_rendered_tables_show_the_new_figures(crafted):
    console = Console(width=150, record=True, highlight=False)
    console.print(render_report(analyze_path(crafted, top=3)))
    shown = console.export_text()
    for fragment in ("likely encoding", "utf-8 with invalid bytes", "invalid UTF-8 sequences", "2 (28.6%)",
                     "5 / 2 / 1", "median", "8.2", "'\\u00a0'", "First invalid UTF-8 sequences (of 2)", "e2 82",
                     "estimated tokens (byte-level BPE, vocab 4096)", "is an estimate",
                     "- 22 characters occur fewer than 5 times"):  # fmt: skip
        assert fragment in shown, fragment


def test_plot_is_a_png(crafted, tmp_path):
    target = tmp_path / "plot.png"
    write_plot(analyze_path(crafted), target)
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_unusable_paths_raise_user_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="empty.txt: file is empty"):
        analyze_path(tmp_path / "empty.txt")
    with pytest.raises(UserError, match="no such file"):
        analyze_path(tmp_path / "missing.txt")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="holds no .txt or .md files"):
        analyze_path(tmp_path / "nothing")


def test_bad_options_raise_user_error():
    with pytest.raises(UserError, match="--top"):
        analyze_text("abc", top=-1)
    with pytest.raises(UserError, match="--bpe-vocab-size"):
        analyze_text("abc", bpe_vocab_size=100)
