"""Data fingerprints (data/fingerprint.py): what changed between the data a run trained on and now."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from fundamentallm.data.fingerprint import LISTED, changes, fingerprint, named, unrepresentable, with_tokens
from fundamentallm.tokenizers import CharTokenizer


def files(tmp_path: Path, **texts: str) -> list[Path]:
    made = []
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        made.append(tmp_path / name)
    return made


def record(train: list[Path], val_split: float | None = 0.1, tokens: int = 10) -> dict:
    return with_tokens(fingerprint(train, [], [], val_split), tokens, 2)


def test_the_same_content_anywhere_is_the_same_data(tmp_path):
    a = files(tmp_path, a="one", b="two")
    (tmp_path / "moved").mkdir()
    b = files(tmp_path / "moved", x="one", y="two")
    assert changes(record(a), record(b)) == []


def test_each_kind_of_change_is_named(tmp_path):
    a, b = files(tmp_path, a="one", b="two")
    before = record([a, b])
    c, = files(tmp_path, c="three")
    assert changes(before, record([a, b, c])) == [f"the training data changed: {c} is new"]
    assert changes(before, record([a])) == [f"the training data changed: {b} is gone"]
    assert changes(before, record([b, a])) == ["the training data changed: the same files in another order"]
    b.write_text("TWO", encoding="utf-8")
    assert changes(before, record([a, b])) == [f"the training data changed: {b} 3 → 3 bytes (other content)"]
    a.write_text("one more", encoding="utf-8")
    assert f"{a} 3 → 8 bytes" in changes(before, record([a, b]))[0]


def test_a_setting_that_reads_the_files_otherwise_is_caught_by_the_tokens(tmp_path):
    a = files(tmp_path, a="one")
    assert changes(record(a, tokens=10), record(a, tokens=12)) == [
        "the same files make other tokens (10 → 12 train tokens: a data setting such as --separator changed)"]
    assert changes(record(a, val_split=0.1), record(a, val_split=None)) == [
        "the validation split changed (--val-split 0.1 → validation files of its own)"]


def test_a_large_corpus_is_compared_as_a_whole(tmp_path):
    many = files(tmp_path, **{f"f{i:03d}": str(i) for i in range(LISTED + 5)})
    before = record(many)
    assert len(before["train"]["listed"]) == LISTED and before["train"]["files"] == LISTED + 5
    many[-1].write_text("changed", encoding="utf-8")
    found = changes(before, record(many))
    assert found and "105 file(s)" in found[0], found


def test_unrepresentable_characters_are_counted_and_named():
    tokenizer = CharTokenizer.train("abc ")
    missing = unrepresentable(tokenizer, ["abc é", "ça ☃☃"])
    assert missing == Counter({"☃": 2, "é": 1, "ç": 1})
    assert named(missing) == "4 characters it has no token for, read as <unk>: '☃' ×2, 'é' ×1, 'ç' ×1"
    assert named(Counter()) == ""


def test_a_large_files_digest_is_remembered_while_it_is_unchanged(tmp_path, monkeypatch):
    from fundamentallm.data import fingerprint as module

    monkeypatch.setattr(module, "REMEMBERED_BYTES", 10)
    big = tmp_path / "big.txt"
    big.write_text("x" * 100, encoding="utf-8")
    memo = tmp_path / "memo"
    first = module.remembered_digest(big, memo)
    assert first == module.file_digest(big) and len(list(memo.iterdir())) == 1
    calls = []
    monkeypatch.setattr(module, "file_digest", lambda path: calls.append(path) or "read again")
    assert module.remembered_digest(big, memo) == first and calls == []  # unchanged: not read
    before = big.stat().st_mtime_ns
    big.write_text("y" * 100, encoding="utf-8")  # same size, a new modification time
    os.utime(big, ns=(before, before + 1_000_000))  # (a clock coarser than the two writes could not tell them)
    assert module.remembered_digest(big, memo) == "read again" and calls == [big]
