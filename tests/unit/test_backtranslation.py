"""The parts of back-translation that need no model: units, the seeded draw, length bounds,
the cache file, the output's layout and the validation filter of --augment-file."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import given, settings, strategies as st
from rich.console import Console

from fundamentallm.console import unit_progress
from fundamentallm.corpus.backtranslation import TranslationCache, bounded, chosen_units
from fundamentallm.data.paraphrases import PAIRS_FORMAT, assemble, segments, training_paraphrases, unit_texts


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .!?\n\r\t'\"é"), max_size=80), st.sampled_from(["lines", "sentences"]))
def test_segments_put_together_are_the_text(text, by):
    segs = segments(text, by)
    assert "".join(s.text for s in segs) == text
    assert all(s.unit == any(c.isalpha() for c in s.text) for s in segs)
    assert all("\n" not in s.text and "\r" not in s.text for s in segs if s.unit)


def test_sentences_and_lines():
    text = 'He said "Go." Then he left! Why?\n\n  ---\nDone'
    assert [s.core for s in segments(text, "sentences") if s.unit] == ['He said "Go."', "Then he left!", "Why?",
                                                                       "Done"]
    assert [s.core for s in segments(text, "lines") if s.unit] == ['He said "Go." Then he left! Why?', "Done"]
    assert list(unit_texts(["He said", ' "Go." Then\nDo', "ne"], "sentences")) == ['He said "Go."', "Then", "Done"]


def test_the_draw_is_seeded_and_exact():
    assert chosen_units(1000, 0.25, 7) == chosen_units(1000, 0.25, 7)
    assert chosen_units(1000, 0.25, 7) != chosen_units(1000, 0.25, 8)
    assert len(chosen_units(1000, 0.25, 7)) == 250 and chosen_units(1000, 0.25, 7) == sorted(
        chosen_units(1000, 0.25, 7))
    assert chosen_units(10, 0.0, 1) == [] and chosen_units(10, 1.0, 1) == list(range(10))


def words(text: str) -> int:  # a tokenizer stand-in: one token per word, and the end token
    return len(text.split()) + 1


def test_bounded_pieces_fit_and_lose_nothing():
    text = ("First sentence here, with a clause; and more words. " * 6 + "Tail without end").strip()
    for limit in (4, 6, 9, 30):
        pieces = bounded(text, words, limit)
        assert all(words(p) <= limit for p in pieces)
        assert " ".join(pieces) == " ".join(text.split())
    assert bounded("short one.", words, 8) == ["short one."]
    first = bounded("One. Two three four. Five six.", words, 5)
    assert first == ["One. Two three four.", "Five six."]  # sentence ends are preferred


def test_a_word_longer_than_the_limit_is_cut_by_characters():
    pieces = bounded("x" * 40, lambda t: len(t) // 4 + 1, 4)
    assert all(len(p) // 4 + 1 <= 4 for p in pieces) and "".join(pieces) == "x" * 40


def test_the_cache_survives_a_cut_off_line(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    cache = TranslationCache(path)
    cache.add({"a": ("pa", "A"), "b": (None, None)})
    with path.open("a") as file:
        file.write('{"key": "torn')  # a kill in the middle of a write
    cache = TranslationCache(path)
    assert cache.get("a") == ("pa", "A") and cache.get("b") == (None, None) and cache.get("c") is None
    cache.add({"c": ("pc", "C")})
    assert TranslationCache(path).get("c") == ("pc", "C")  # not glued to the torn line


def test_assemble_layouts():
    segs = segments("one\ntwo\n\nthree", "lines")
    changed = {0: "ONE", 5: "THREE"}  # segments: one, \n, two, \n, \n, three
    assert assemble(segs, changed, "append", "lines") == ("one\ntwo\n\nthree\nONE\nTHREE\n", 5)
    assert assemble(segs, changed, "interleave", "lines") == ("one\nONE\ntwo\n\nthree\nTHREE", 5)
    assert assemble(segs, changed, "replace", "lines") == ("ONE\ntwo\n\nTHREE", 3)
    assert assemble(segs, {}, "append", "lines") == ("one\ntwo\n\nthree", 3)
    sentences = segments("A b. C d.\n", "sentences")
    assert assemble(sentences, {0: "X y."}, "interleave", "sentences") == ("A b. X y. C d.\n", 3)


def test_paraphrases_of_validation_units_are_left_out(tmp_path: Path):
    out = tmp_path / "aug.txt"
    records = [("kept in training", "P1"), ("also in validation", "P2"), ("a line cut by the split", "P3"),
               ("another one", "P4")]
    out.with_name("aug.txt.pairs.jsonl").write_text("\n".join(
        [json.dumps({"format": PAIRS_FORMAT, "by": "lines"})]
        + [json.dumps({"source": s, "paraphrase": p}) for s, p in records]) + "\n")
    validation = ["cut by the split\nsomething else\nalso in ", "validation\n"]
    got = training_paraphrases(out, validation)
    assert (got.text, got.used, got.left_out) == ("P1\nP4\n", 2, 2)
    assert training_paraphrases(out, None).used == 4  # no validation text: all of them


def test_the_progress_bar_shows_units_per_second():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with unit_progress("back-translating", "lines", console=console) as progress:
        for done in range(1, 4):
            progress(done, 3)
    assert "lines/s" in buffer.getvalue() and "back-translating" in buffer.getvalue()
    quiet = io.StringIO()
    with unit_progress("x", "lines", console=Console(file=quiet, force_terminal=False)) as progress:
        progress(1, 1)
    assert quiet.getvalue() == ""  # not a terminal: no bar
