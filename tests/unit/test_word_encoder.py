"""Long texts are encoded for byte-level BPE one distinct word at a time (tokenizers/words.py):
the ids must be exactly the `tokenizers` library's, whatever the text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fundamentallm.tokenizers.words as words_module
from fundamentallm.tokenizers.bpe import _CUT, BPETokenizer, last_cut, safe_pieces
from fundamentallm.tokenizers.byte import byte_characters
from fundamentallm.tokenizers.words import WordEncoder, known_characters, plain_byte_level

KNOWN = known_characters()


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    text = (Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt").read_text()[:60_000]
    # a few known non-ASCII characters join the merges, so their words are more than bytes
    return BPETokenizer.train(text + " naïve café — “quoted” ½ ¹ 1½ 2²\xa0x\u2003y " * 20, vocab_size=500)


def library_ids(bpe: BPETokenizer, text: str) -> list[int]:
    return bpe._tok.encode(text, add_special_tokens=False).ids


def by_words(bpe: BPETokenizer, text: str, piece: int = 64) -> list[int]:
    return WordEncoder(bpe._tok, bpe.serialized).encode(list(safe_pieces(text, piece))).tolist()


def test_every_known_character_is_split_as_the_library_splits_it(bpe):
    # each character between letters, digits, spaces, newlines, after an apostrophe and
    # doubled: its class (letter, number, space, other) decides every one of these cuts
    text = "".join(f"a{c}b {c}{c}x 1{c}2 {c} \n{c}\n'{c}s {c}'s  {c}\n\n" for c in KNOWN)
    spelled = byte_characters()  # the library shows a word's bytes in GPT-2's alphabet
    words, _ = words_module._pattern()
    ours = ["".join(spelled[b] for b in word.encode()) for word in words.findall(text)]
    assert ours == [word for word, _ in bpe._tok.pre_tokenizer.pre_tokenize_str(text)]
    assert by_words(bpe, text) == library_ids(bpe, text)


MIXED = KNOWN[:160] + list("  \n\n\t'’—½²ąжΩ∑ế│\u0301") + ["日", "🙂", "\u0378", "\u3000"]  # the last: unknown


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(MIXED), max_size=400),
       st.integers(1, 100))
def test_random_text_cut_anywhere_safe_gets_the_library_ids(bpe, text, piece):
    # (characters outside the known blocks send their piece to the library whole)
    assert by_words(bpe, text, piece) == library_ids(bpe, text)


def test_long_texts_take_the_word_path_and_agree_with_the_library(bpe, monkeypatch):
    text = (Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt").read_text()[:40_000]
    text += "\n\n\n  indented\r\n 日本語 🙂 naïve\tx\n" * 50
    calls = []
    original = WordEncoder._by_words
    monkeypatch.setattr(WordEncoder, "_by_words", lambda self, t: calls.append(len(t)) or original(self, t))
    assert bpe.encode(text) == library_ids(bpe, text)
    assert sum(calls) > len(text) / 2  # most of it by words, the pieces with CJK by the library
    assert np.asarray(bpe.encode_text_array(text)).tolist() == library_ids(bpe, text)


def test_forgetting_the_remembered_words_changes_nothing(bpe, monkeypatch):
    text = (Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt").read_text()[:20_000]
    monkeypatch.setattr(words_module, "MAX_WORDS", 300)
    encoder, sizes = WordEncoder(bpe._tok, bpe.serialized), []
    ids = []
    for piece in safe_pieces(text, 1_000):  # as a stream: one encode per piece
        ids += encoder.encode([piece]).tolist()
        sizes.append(len(encoder._index))
    assert ids == library_ids(bpe, text)
    assert max(sizes) <= 300 and min(sizes[1:]) < max(sizes)  # forgotten, and begun anew


def test_only_a_plain_byte_level_bpe_is_split_by_words(bpe):
    plain = json.loads(bpe.serialized)
    assert plain_byte_level(bpe.serialized)
    for change in ({"normalizer": {"type": "NFC"}}, {"added_tokens": [{"id": 0, "content": "<s>"}]},
                   {"pre_tokenizer": {"type": "Whitespace"}},
                   {"pre_tokenizer": {**plain["pre_tokenizer"], "add_prefix_space": True}},
                   {"model": {**plain["model"], "dropout": 0.1}}):
        assert not plain_byte_level(json.dumps({**plain, **change})), change
    assert not plain_byte_level("{not json")
    prefixed = json.dumps({**plain, "pre_tokenizer": {**plain["pre_tokenizer"], "add_prefix_space": True}})
    other = BPETokenizer(prefixed)
    text = "to be, or not to be\n" * 1000
    assert other._word_encoder is None and other.encode(text) == library_ids(other, text)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab \n\t\x1c\x85"), max_size=14), st.data())
def test_the_last_safe_cut_is_the_patterns_last_match(text, data):
    start = data.draw(st.integers(0, len(text)))
    matches = list(_CUT.finditer(text, start))
    assert last_cut(text, start) == (matches[-1].start() if matches else None)


def stream_text() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt").read_text()[:50_000]
    return [text[i:i + 3_000] for i in range(0, len(text), 3_000)] + ["日本語 🙂\n"] * 3


def test_a_long_stream_is_encoded_by_worker_processes_exactly(bpe, monkeypatch):
    pieces = stream_text()
    started = []
    real_start = words_module.start_workers
    monkeypatch.setattr(words_module, "start_workers", lambda s: started.append(real_start(s)) or started[-1])
    monkeypatch.setattr(words_module, "PARALLEL_AFTER_CHARS", 5_000)  # after the first two pieces
    ids = np.concatenate(list(bpe.encode_text_stream(pieces))).tolist()
    assert ids == library_ids(bpe, "".join(pieces))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no worker processes to compare")
    assert started and started[0] is not None


def test_a_worker_that_dies_leaves_the_rest_to_this_process(bpe, monkeypatch):
    real_start = words_module.start_workers

    def broken(serialized):
        workers = real_start(serialized)
        if workers is not None:
            workers.submit(os._exit, 1).exception()  # a worker killed: the pool is broken
        return workers

    monkeypatch.setattr(words_module, "start_workers", broken)
    monkeypatch.setattr(words_module, "PARALLEL_AFTER_CHARS", 5_000)
    pieces = stream_text()
    assert np.concatenate(list(bpe.encode_text_stream(pieces))).tolist() == library_ids(bpe, "".join(pieces))


def test_without_workers_the_stream_is_encoded_here(bpe, monkeypatch):
    monkeypatch.setattr(words_module, "start_workers", lambda serialized: None)
    monkeypatch.setattr(words_module, "PARALLEL_AFTER_CHARS", 5_000)
    pieces = stream_text()
    assert np.concatenate(list(bpe.encode_text_stream(pieces))).tolist() == library_ids(bpe, "".join(pieces))


def test_a_daemonic_process_encodes_here(monkeypatch, bpe):
    # (a daemonic process may not start children: no workers are asked for)
    monkeypatch.setattr(words_module.current_process(), "daemon", True, raising=False)
    assert words_module.start_workers(bpe.serialized) is None
