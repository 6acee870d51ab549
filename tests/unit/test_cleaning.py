"""Cleaning: per-rule counts, idempotence, and never overwriting the input."""

from __future__ import annotations

import os
import random
import unicodedata

import pytest

from fundamentallm.data.cleaning import CONTROL_CHARACTERS, clean_file, clean_text
from fundamentallm.errors import UserError

SAMPLE = "Hello\tworld\x07\r\nsecond\u00a0line\r\nold mac\rcafe\u0301  end\n"


def test_default_rules_and_counts():
    cleaned, report = clean_text(SAMPLE)
    assert cleaned == "Hello\tworld\nsecond\u00a0line\nold mac\ncaf\u00e9  end\n"
    assert report.line_endings == 3
    assert report.control_characters == 1
    assert report.normalized_sequences == 1
    assert report.whitespace_runs == 0
    assert (report.characters_before, report.characters_after) == (len(SAMPLE), len(cleaned))
    assert report.changed


def test_nfkc_and_whitespace_collapsing():
    cleaned, report = clean_text("\ufb01ne\u00a0 \tx\t y", form="nfkc", collapse_whitespace=True)
    assert cleaned == "fine x y"
    assert report.form == "NFKC"
    assert report.normalized_sequences == 2  # the "fi" ligature and the no-break space
    assert report.whitespace_runs == 2


def test_single_space_is_not_counted_as_collapsed():
    cleaned, report = clean_text("a b\tc", collapse_whitespace=True)
    assert cleaned == "a b c"
    assert report.whitespace_runs == 1


def test_removing_a_control_character_lets_the_accent_compose():
    cleaned, _ = clean_text("e\x07\u0301")
    assert cleaned == "\u00e9"


def test_clean_text_is_unchanged_and_reports_nothing_on_clean_input():
    cleaned, report = clean_text("plain text\n")
    assert cleaned == "plain text\n"
    assert not report.changed


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
@pytest.mark.parametrize("collapse", [False, True])
def test_cleaning_is_idempotent(form, collapse):
    alphabet = ["a", "e", " ", "\t", "\n", "\r", "\x07", "\x0b", "\x85", "\u0301", "\u0327", "\u00a0",
                "\u2003", "\ufb01", "\u1100", "\u1161", "\u00e9", "\u212b"]  # fmt: skip
    rng = random.Random(1234)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        once, _ = clean_text(text, form, collapse)
        twice, second_report = clean_text(once, form, collapse)
        assert twice == once, repr(text)
        assert not second_report.changed
        assert unicodedata.is_normalized(form, once)
        assert "\r" not in once and not CONTROL_CHARACTERS.search(once)


def test_control_pattern_is_unicode_cc_without_newline_and_tab():
    expected = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"} - {"\n", "\t"}
    matched = {chr(c) for c in range(0x200) if CONTROL_CHARACTERS.fullmatch(chr(c))}
    assert matched == expected


def test_unknown_form_is_a_user_error():
    with pytest.raises(UserError, match="NFD"):
        clean_text("x", form="NFD")


def test_clean_file_writes_a_new_file_and_creates_its_directory(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"one\r\ntwo\r\n")
    destination = tmp_path / "new" / "dir" / "out.txt"
    report = clean_file(source, destination)
    assert destination.read_bytes() == b"one\ntwo\n"
    assert source.read_bytes() == b"one\r\ntwo\r\n"
    assert report.line_endings == 2


def test_clean_file_refuses_to_overwrite_its_input(tmp_path, monkeypatch):
    source = tmp_path / "in.txt"
    source.write_bytes(b"keep\r\n")
    monkeypatch.chdir(tmp_path)
    for same in (source, tmp_path / "sub" / ".." / "in.txt", "in.txt"):
        with pytest.raises(UserError, match="is the input file"):
            clean_file(source, same)
    if hasattr(os, "link"):
        os.link(source, tmp_path / "hardlink.txt")
        with pytest.raises(UserError, match="is the input file"):
            clean_file(source, tmp_path / "hardlink.txt")
    assert source.read_bytes() == b"keep\r\n"


def test_clean_file_rejects_unusable_input(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        clean_file(tmp_path / "missing.txt", tmp_path / "out.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe abc")
    with pytest.raises(UserError, match="not valid UTF-8"):
        clean_file(bad, tmp_path / "out.txt")
    bells = tmp_path / "bells.txt"
    bells.write_bytes(b"\x07\x07\n")
    with pytest.raises(UserError, match="nothing written"):
        clean_file(bells, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()
