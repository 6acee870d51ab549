"""Special tokens: the end-of-text and chat turn tokens reserved in every tokenizer, never
produced by encoding text, saved with the tokenizer; the user's own (--special-tokens),
which their text in the data does stand for; tokenizers saved before any of this load as
they were."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundamentallm.errors import UserError
from fundamentallm.textstream import Found, split_on
from fundamentallm.tokenizers import (END_OF_TURN, EOS, RESERVED, ROLE_TOKENS, Special, build_tokenizer,
                                      tokenizer_from_dict)

TEXT = ("First Citizen: speak, speak.\nAll: Resolved. <|endoftext|> is only text here, and so is <|user|>.\n"
        * 30)
KINDS = ("char", "byte", "bpe")


@pytest.fixture(scope="module", params=KINDS)
def tok(request):
    return build_tokenizer(request.param, TEXT, 300, added=["[TOOL]"])


def test_every_kind_reserves_the_end_of_text_and_turn_tokens_after_its_vocabulary(tok):
    assert tok.specials == (*RESERVED, "[TOOL]")
    assert [tok.special_id(text) for text in tok.specials] == list(range(tok.base_size, tok.vocab_size))
    assert tok.eos_id == tok.special_id(EOS)
    assert {ROLE_TOKENS["user"], END_OF_TURN} <= set(tok.specials)


def test_text_that_spells_a_reserved_token_is_encoded_as_text(tok):
    ids = tok.encode(TEXT)
    assert not set(ids) & {tok.special_id(text) for text in RESERVED}
    assert tok.decode(ids) == TEXT


def test_the_users_own_tokens_stand_for_their_text(tok):
    ids = tok.encode("All: [TOOL] speak")
    assert ids.count(tok.special_id("[TOOL]")) == 1
    assert tok.decode(ids) == "All: [TOOL] speak"
    assert tok.encode_array("All: [TOOL] speak").tolist() == ids


def test_special_tokens_decode_to_their_text(tok):
    assert tok.decode([tok.eos_id, *tok.encode("Al"), tok.special_id(END_OF_TURN)]) == f"{EOS}Al{END_OF_TURN}"


def test_saved_and_restored_with_the_same_ids(tok):
    restored = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # as a checkpoint holds it
    assert restored.specials == tok.specials and restored.vocab_size == tok.vocab_size
    assert restored.encode(TEXT + "[TOOL]") == tok.encode(TEXT + "[TOOL]")


def test_a_tokenizer_saved_before_special_tokens_loads_unchanged(tok):
    old = {k: v for k, v in tok.to_dict().items() if k != "specials"}  # what older checkpoints hold
    restored = tokenizer_from_dict(old)
    assert restored.specials == () and restored.eos_id is None
    assert restored.vocab_size == tok.base_size
    assert restored.encode(TEXT) == tok.encode(TEXT)


def test_the_bpe_vocabulary_size_counts_the_special_tokens():
    bpe = build_tokenizer("bpe", TEXT * 20, 280)
    assert bpe.vocab_size <= 280 and bpe.base_size == bpe.vocab_size - len(RESERVED)


def test_streamed_encoding_takes_special_pieces_and_finds_the_users_tokens_across_cuts(tok):
    pieces = ["speak [TO", "OL] here", Special(EOS), "All: ", "[TOOL]", Special(EOS)]
    ids = np.concatenate(list(tok.encode_stream(pieces))).tolist()
    expected = tok.encode("speak [TOOL] here") + [tok.eos_id] + tok.encode("All: [TOOL]") + [tok.eos_id]
    assert ids == expected


def test_a_malformed_list_of_special_tokens_is_refused():
    with pytest.raises(UserError, match="malformed list of special tokens"):
        tokenizer_from_dict({"kind": "byte", "specials": [3]})


@given(st.lists(st.sampled_from(["a", "<", "|", ">", "<|e", "nd|>", "<|end|>", "<|endoftext|>", "x"]), max_size=12),
       st.randoms())
def test_split_on_finds_every_needle_whatever_the_cuts(words, rng: random.Random):
    text = "".join(words)
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 3)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    needles = ["<|end|>", "<|endoftext|>", "<|e"]
    split, whole = list(split_on(pieces, needles)), list(split_on([text], needles))
    assert "".join(split) == text
    assert [p for p in split if isinstance(p, Found)] == [p for p in whole if isinstance(p, Found)]
