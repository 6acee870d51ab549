"""Cleaning: exact per-rule counts, idempotence, streaming, and never overwriting the input."""

from __future__ import annotations

import os
import random
import unicodedata
from dataclasses import asdict

import pytest

from fundamentallm.corpus.cleaning import CONTROL_CHARACTERS, CleaningOptions, clean_file, clean_text
from fundamentallm.errors import UserError

SAMPLE = "Hello\tworld\x07\r\nsecond\u00a0line\r\nold mac\rcafe\u0301  end\n"


def test_default_rules_and_counts():
    cleaned, report = clean_text(SAMPLE)
    assert cleaned == "Hello\tworld\nsecond\u00a0line\nold mac\ncaf\u00e9  end\n"
    assert report.line_endings == 3
    assert report.control_characters == 1
    assert report.normalized_sequences == 1
    assert report.whitespace_runs == 0
    assert not report.final_newline_added
    assert (report.characters_before, report.characters_after) == (len(SAMPLE), len(cleaned))
    assert report.changed


def test_nfkc_and_whitespace_collapsing():
    cleaned, report = clean_text("\ufb01ne\u00a0 \tx\t y", CleaningOptions(form="nfkc", collapse_whitespace=True))
    assert cleaned == "fine x y\n"
    assert report.options.form == "NFKC"
    assert report.normalized_sequences == 2  # the "fi" ligature and the no-break space
    assert report.whitespace_runs == 2
    assert report.final_newline_added


def test_single_space_is_not_counted_as_collapsed():
    cleaned, report = clean_text("a b\tc\n", CleaningOptions(collapse_whitespace=True))
    assert cleaned == "a b c\n"
    assert report.whitespace_runs == 1


def test_removing_a_control_character_lets_the_accent_compose():
    cleaned, _ = clean_text("e\x07\u0301")
    assert cleaned == "\u00e9\n"


def test_clean_text_is_unchanged_and_reports_nothing_on_clean_input():
    cleaned, report = clean_text("plain text\n")
    assert cleaned == "plain text\n"
    assert not report.changed
    assert clean_text("") == ("", clean_text("")[1]) and not clean_text("")[1].changed


def test_final_newline_is_added_once():
    assert clean_text("abc")[0] == "abc\n" and clean_text("abc")[1].final_newline_added
    assert clean_text("abc\r")[0] == "abc\n" and not clean_text("abc\r")[1].final_newline_added


def test_dedupe_keeps_first_occurrences_and_blank_lines():
    cleaned, report = clean_text("b\na\n\nb\n  \n\na\nc\n  \n", CleaningOptions(dedupe=True))
    assert cleaned == "b\na\n\n  \n\nc\n  \n"
    assert report.duplicate_lines == 2


def test_length_limits_apply_to_non_empty_lines_only():
    cleaned, report = clean_text("a\nabc\n\nabcdef\n     \nabcd", CleaningOptions(min_length=2, max_length=4))
    assert cleaned == "abc\n\n     \nabcd\n"
    assert (report.short_lines, report.long_lines) == (1, 1)


@pytest.mark.parametrize(
    ("invalid", "expected", "controls"),
    [("repair", "a\u00e9bc\u00e2\u201ad\n", 1), ("replace", "a\ufffdb\ufffdc\ufffdd\n", 0), ("drop", "abcd\n", 0)],
)
def test_invalid_bytes(tmp_path, invalid, expected, controls):
    # 0xe9 is e-acute in cp1252; 0x81 is undefined there, so Latin-1's U+0081, a control
    # character that is then removed; e2 82 is one cut-off sequence, repaired byte by byte.
    source = tmp_path / "in.txt"
    source.write_bytes(b"a\xe9b\x81c\xe2\x82d\n")
    report = clean_file(source, tmp_path / "out.txt", CleaningOptions(invalid=invalid))
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == expected
    assert report.invalid_sequences == 3
    assert report.control_characters == controls


# Every text rule at once, with each line's fate worked out by hand.
CRAFTED = (
    b"\xef\xbb\xbf"  # a byte-order mark: skipped, counted
    b"caf\xe9 \x81ok\r\n"  # cp1252 e-acute and 0x81 (-> U+0081, a control): 2 invalid; CRLF. 10 chars
    b"cafe\xcc\x81  \tend\r"  # decomposed e-acute (NFC: 1), a blank run (1), a lone CR. 12 chars
    b"dup\x07 line\n"  # a bell. 10 chars
    b"dup line\n"  # duplicate (1). 9 chars
    b"\n"  # blank: kept
    b"  \n"  # blank: collapsed to one space (1), kept. 3 chars
    b"x\n"  # too short (min 2). 2 chars
    b"dup line\n"  # duplicate (2). 9 chars
    b"a\xef\xbb\xbfb is too long"  # a stray U+FEFF (1); 14 characters left: too long (max 12). 15 chars
)
CRAFTED_CLEAN = "caf\u00e9 ok\ncaf\u00e9 end\ndup line\n\n \n"


def crafted_expectations() -> dict:
    options = dict(form="NFC", collapse_whitespace=True, invalid="repair", dedupe=True, min_length=2,
                   max_length=12, min_char_count=None, rare_char_replacement=None)
    return dict(options=options, characters_before=10 + 12 + 10 + 9 + 1 + 3 + 2 + 9 + 15, characters_after=29,
                line_endings=2, control_characters=2, normalized_sequences=1, whitespace_runs=2,
                invalid_sequences=2, byte_order_marks=2, final_newline_added=False, duplicate_lines=2,
                short_lines=1, long_lines=1, rare_characters=0, rare_distinct=0, passes=1)  # fmt: skip


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 11, 1 << 20])
def test_every_count_on_a_crafted_file_whatever_the_chunk_size(tmp_path, chunk_bytes):
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_bytes(CRAFTED)
    options = CleaningOptions(collapse_whitespace=True, dedupe=True, min_length=2, max_length=12)
    report = clean_file(source, out, options, chunk_bytes=chunk_bytes)
    assert out.read_text(encoding="utf-8") == CRAFTED_CLEAN
    assert len(CRAFTED_CLEAN) == 29
    assert asdict(report) == crafted_expectations()


def test_summary_shows_every_rule_with_zeros_and_offs():
    _, report = clean_text("ok\n", CleaningOptions(dedupe=True))
    lines = report.summary_lines()
    assert len(lines) == 12
    labels = [line.split(":")[0] for line in lines]
    assert labels == ["invalid UTF-8 sequences repaired (cp1252)", "byte-order marks (U+FEFF) removed",
                      "line endings normalised (\\r\\n, \\r -> \\n)", "control characters removed",
                      "sequences changed by NFC", "space/tab runs collapsed", "duplicate lines removed",
                      "lines removed for length", "rare characters", "final newline added",
                      "passes", "characters"]  # fmt: skip
    values = [line.split(":", 1)[1].strip() for line in lines]
    assert values == ["0", "0", "0", "0", "0", "off", "0", "off", "off", "no", "1", "3 -> 3"]


def test_rare_characters_interact_with_dedupe_and_min_length():
    # Pass 1 finds Z and Q rare. Pass 2 drops them: line 2 becomes a duplicate of line 1
    # and "heQ" becomes "he", too short; losing line 2 leaves "w" once, so pass 3 drops it.
    text = "hello world\nhello worldZ\n\nold hero\nheQ\n"
    cleaned, report = clean_text(text, CleaningOptions(dedupe=True, min_length=3, min_char_count=2))
    assert cleaned == "hello orld\n\nold hero\n"
    assert (report.passes, report.rare_characters, report.rare_distinct) == (3, 3, 3)
    assert (report.duplicate_lines, report.short_lines) == (1, 1)
    again, second = clean_text(cleaned, CleaningOptions(dedupe=True, min_length=3, min_char_count=2))
    assert again == cleaned and not second.changed and second.passes == 1


def test_rare_character_replacement_is_never_rare_itself():
    # Z and Q become "?", making three equal lines; dedupe leaves a and b once each,
    # so they are replaced too. "?" stays although it is seen only once at first.
    options = CleaningOptions(dedupe=True, min_char_count=2, rare_char_replacement="?")
    cleaned, report = clean_text("abZ\nabQ\nab?\n", options)
    assert cleaned == "???\n"
    assert (report.passes, report.rare_characters, report.rare_distinct, report.duplicate_lines) == (3, 4, 4, 2)


def test_newline_is_never_rare():
    assert clean_text("aaa\nbbb", CleaningOptions(min_char_count=2))[0] == "aaa\nbbb\n"


ALL_OPTIONS = [
    dict(form="NFC", collapse_whitespace=True, dedupe=True, min_length=2, max_length=6, min_char_count=3),
    dict(form="NFKC", collapse_whitespace=True, dedupe=True, min_length=1, max_length=8, min_char_count=2,
         rare_char_replacement="?"),
    dict(form="NFC", dedupe=True, min_char_count=3, rare_char_replacement=" "),
    dict(form="NFKC", min_length=3, min_char_count=2),
    dict(form="NFC", collapse_whitespace=True),
    dict(),
]  # fmt: skip
ALPHABET = ["a", "b", "e", "Z", " ", " ", "\t", "\n", "\n", "\r", "\r\n", "\x07", "\x0b", "\x85", "\u0301",
            "\u0327", "\u00a0", "\u2003", "\ufb01", "\u1100", "\u1161", "\u00e9", "\u212b", "\ufeff", "ab\n", "ab\n"]


@pytest.mark.parametrize("options", ALL_OPTIONS)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_cleaning_is_idempotent_on_random_texts(options, seed):
    rng = random.Random(seed)
    for _ in range(150):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        once, _ = clean_text(text, CleaningOptions(**options))
        twice, second_report = clean_text(once, CleaningOptions(**options))
        assert twice == once, repr(text)
        assert not second_report.changed, repr(text)
        form = options.get("form", "NFC")
        assert unicodedata.is_normalized(form, once)
        assert "\r" not in once and "\ufeff" not in once and not CONTROL_CHARACTERS.search(once)
        assert once == "" or once.endswith("\n")


@pytest.mark.parametrize("options", ALL_OPTIONS[:3])
def test_cleaning_is_idempotent_on_the_crafted_traps(options):
    for text in ("hello world\nhello worldZ\n\nold hero\nheQ\n", "abZ\nabQ\nab?\n", CRAFTED.decode("latin-1")):
        once, _ = clean_text(text, CleaningOptions(**options))
        assert clean_text(once, CleaningOptions(**options))[0] == once


def test_files_and_texts_clean_alike_whatever_the_chunk_size(tmp_path):
    rng = random.Random(7)
    pieces = [b"a", b"b", b" ", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"e\xcc\x81", b"\xff", b"\xe2\x82",
              b"\xf0\x9f\x98\x80", b"\x07", b"ab\n", b"\t\t"]
    options = dict(collapse_whitespace=True, dedupe=True, min_length=2, min_char_count=2)
    for attempt in range(30):
        source = tmp_path / f"in{attempt}.txt"
        source.write_bytes(b"x" + b"".join(rng.choice(pieces) for _ in range(60)))
        results = set()
        for chunk_bytes in (1, 3, 8, 1 << 20):
            report = clean_file(source, tmp_path / "out.txt", CleaningOptions(invalid="replace", **options),
                                chunk_bytes=chunk_bytes)
            results.add(((tmp_path / "out.txt").read_bytes(), repr(asdict(report))))
        assert len(results) == 1
        text = source.read_bytes().decode("utf-8", errors="replace")
        assert clean_text(text, CleaningOptions(**options))[0].encode() == results.pop()[0]


def test_control_pattern_is_unicode_cc_without_newline_and_tab():
    expected = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"} - {"\n", "\t"}
    matched = {chr(c) for c in range(0x200) if CONTROL_CHARACTERS.fullmatch(chr(c))}
    assert matched == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [(dict(form="NFD"), "NFD"), (dict(min_length=-1), "--min-length"), (dict(min_length=5, max_length=4), "above"),
     (dict(rare_char_replacement="?"), "needs --min-char-count"),
     (dict(min_char_count=2, rare_char_replacement="??"), "one printable character"),
     (dict(min_char_count=2, rare_char_replacement="\u0301"), "one printable character"),
     (dict(min_char_count=2, rare_char_replacement="\t"), "one printable character"),
     (dict(min_char_count=2, rare_char_replacement="\u212b"), "one printable character"),
     (dict(min_char_count=2, rare_char_replacement="\u1161"), "one printable character")],
)  # fmt: skip
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        clean_text("x", CleaningOptions(**options))


def test_clean_file_writes_a_new_file_and_creates_its_directory(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"one\r\ntwo\r\n")
    destination = tmp_path / "new" / "dir" / "out.txt"
    report = clean_file(source, destination)
    assert destination.read_bytes() == b"one\ntwo\n"
    assert source.read_bytes() == b"one\r\ntwo\r\n"
    assert report.line_endings == 2
    assert os.listdir(destination.parent) == ["out.txt"]  # no temporary file left behind


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


def test_clean_file_rejects_unusable_input_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out" / "out.txt"
    with pytest.raises(UserError, match="no such file"):
        clean_file(tmp_path / "missing.txt", out)
    for name, content, message in [("empty.txt", b"", "file is empty"), ("bin.txt", b"ab\x00cd", "binary"),
                                   ("bells.txt", b"\x07\x07\n", "nothing written"),
                                   ("rare.txt", b"abc\n", "nothing written")]:  # fmt: skip
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=message):
            clean_file(tmp_path / name, out, CleaningOptions(min_char_count=2))
    assert not out.exists()
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_a_failed_clean_keeps_an_existing_output(tmp_path):
    (tmp_path / "bells.txt").write_bytes(b"\x07\n")
    (tmp_path / "out.txt").write_bytes(b"previous\n")
    with pytest.raises(UserError, match="nothing written"):
        clean_file(tmp_path / "bells.txt", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_bytes() == b"previous\n"
    assert sorted(os.listdir(tmp_path)) == ["bells.txt", "out.txt"]
