"""Corpus analysis: exact figures on small texts whose counts can be checked by hand."""

from __future__ import annotations

import json

import pytest

from fundamentallm.data.analysis import analyze_path, analyze_text, analyze_texts, visible_char
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


def test_directory_is_analysed_file_by_file(tmp_path):
    (tmp_path / "one.txt").write_text("x y\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.txt").write_text("zz", encoding="utf-8")
    (tmp_path / "skip.md").write_text("not counted", encoding="utf-8")
    report = analyze_path(tmp_path)
    assert (report.files, report.characters, report.words, report.lines) == (2, 6, 3, 2)


def test_report_is_json_serialisable_with_totals():
    data = json.loads(json.dumps(analyze_text(SAMPLE, top=1).to_dict()))
    assert data["control_count"] == 4
    assert data["most_common"] == [{"char": "l", "shown": "'l'", "count": 5, "share": 5 / 33}]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\xff\xfe abc", "not valid UTF-8"), (b"ab\x00cd", "binary")],
)
def test_unusable_files_raise_user_error(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        analyze_path(path)


def test_missing_file_and_negative_top_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        analyze_path(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="--top"):
        analyze_text("abc", top=-1)
