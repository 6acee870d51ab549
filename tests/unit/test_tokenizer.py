"""The character tokenizer: round trips, unknown characters, and saving to plain values."""

from __future__ import annotations

import pytest

from fundamentallm.errors import UserError
from fundamentallm.tokenizers import RESERVED, CharTokenizer, build_tokenizer, tokenizer_from_dict
from fundamentallm.tokenizers.char import UNK_TEXT

TEXT = "To be, or not to be: that is the question.\nÆsop's fables — ünïcödé 🙂"


@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer.train(TEXT)


def test_vocabulary_is_the_distinct_characters_plus_unk_and_the_special_tokens(tok):
    assert tok.vocab_size == len(set(TEXT)) + 1 + len(RESERVED)
    assert tok.base_size == len(set(TEXT)) + 1
    assert sorted(set(tok.encode(TEXT))) == list(range(1, tok.base_size))  # 0 is never used, nor a special token


def test_round_trip(tok):
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT)  # one token per character
    assert tok.decode(ids) == TEXT


def test_empty_text(tok):
    assert tok.encode("") == []
    assert tok.decode([]) == ""


def test_unknown_characters_map_to_unk_and_decode_to_replacement_char(tok):
    assert tok.unk_id == 0
    ids = tok.encode("tZo#")  # 'Z' and '#' are not in TEXT
    assert ids[1] == 0 and ids[3] == 0
    assert ids[0] != 0 and ids[2] != 0
    assert tok.decode(ids) == f"t{UNK_TEXT}o{UNK_TEXT}"
    assert UNK_TEXT == "\ufffd"


def test_to_dict_is_plain_values_and_round_trips(tok):
    data = tok.to_dict()
    assert data == {"kind": "char", "chars": tok.chars, "specials": list(RESERVED)}
    restored = tokenizer_from_dict(data)
    assert isinstance(restored, CharTokenizer)
    assert restored.vocab_size == tok.vocab_size
    assert restored.encode(TEXT + "Z") == tok.encode(TEXT + "Z")


def test_build_tokenizer_by_kind():
    assert build_tokenizer("char", "ba").encode("ab") == [1, 2]


@pytest.mark.parametrize("data", [{"kind": "wordpiece", "chars": "ab"}, {"chars": "ab"}, "char", None])
def test_tokenizer_from_dict_rejects_unknown_kind(data):
    with pytest.raises(UserError, match="unknown tokenizer type"):
        tokenizer_from_dict(data)


@pytest.mark.parametrize("chars", [None, 42, "abca"])
def test_malformed_vocabulary_is_rejected(chars):
    with pytest.raises(UserError, match="malformed"):
        tokenizer_from_dict({"kind": "char", "chars": chars})
