"""The byte and byte-level BPE tokenizers, streaming decoding, and the tokenizer registry."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch

import fundamentallm.tokenizers.bpe as bpe_module
from fundamentallm.config import DataConfig
from fundamentallm.errors import UserError
from fundamentallm.tokenizers import (
    TOKENIZERS,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    StreamDecoder,
    build_tokenizer,
    load_tokenizer_file,
    save_tokenizer,
    tokenizer_from_dict,
)

UNSEEN = "日本語 🙂 naïve\r\n\ttab"


@pytest.fixture(scope="module")
def corpus() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt").read_text()[:60_000]


@pytest.fixture(scope="module")
def bpe(corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus, vocab_size=400)


def test_byte_tokenizer_is_utf8():
    tok = ByteTokenizer()
    assert tok.vocab_size == 256 and tok.unk_id is None
    assert tok.encode("aé") == [97, 0xC3, 0xA9]
    assert tok.decode(tok.encode(UNSEEN)) == UNSEEN
    assert tok.decode([0xC3]) == "\ufffd"  # half a character
    assert isinstance(tokenizer_from_dict(tok.to_dict()), ByteTokenizer)


def test_bpe_has_the_asked_vocabulary_and_compresses_its_training_text(bpe, corpus):
    assert bpe.vocab_size == 400 and bpe.unk_id is None
    ids = bpe.encode(corpus)
    assert max(ids) < 400
    assert bpe.decode(ids) == corpus
    assert len(ids) < 0.6 * len(corpus.encode())  # merges: well under one token per byte


def test_bpe_represents_any_text_it_never_saw(bpe):
    assert bpe.decode(bpe.encode(UNSEEN)) == UNSEEN


def test_bpe_training_is_deterministic_and_streams(bpe, corpus):
    pieces = [corpus[i:i + 5000] for i in range(0, len(corpus), 5000)]
    assert BPETokenizer.train(corpus, vocab_size=400).serialized == bpe.serialized
    assert BPETokenizer.train(iter(pieces), vocab_size=400).vocab_size == 400


def test_bpe_long_text_is_encoded_in_pieces_exactly_as_at_once(bpe, corpus, monkeypatch):
    text = corpus[:20_000] + "\n\n\n  indented\r\n" + UNSEEN * 3
    whole = bpe.encode(text)
    monkeypatch.setattr(bpe_module, "ENCODE_PIECE_CHARS", 500)
    assert bpe.encode(text) == whole


def test_bpe_saves_as_plain_values_that_load_with_weights_only(bpe):
    data = bpe.to_dict()
    assert data["kind"] == "bpe" and isinstance(data["tokenizer"], str)
    buffer = io.BytesIO()
    torch.save({"tokenizer": data}, buffer)
    buffer.seek(0)
    restored = tokenizer_from_dict(torch.load(buffer, weights_only=True)["tokenizer"])
    assert restored.encode(UNSEEN) == bpe.encode(UNSEEN)


@pytest.mark.parametrize("data", [{"kind": "bpe"}, {"kind": "bpe", "tokenizer": "{not json"}])
def test_malformed_bpe_is_a_user_error(data):
    with pytest.raises(UserError, match="malformed BPE tokenizer"):
        tokenizer_from_dict(data)


def test_bpe_vocabulary_below_the_byte_alphabet_is_refused(corpus):
    with pytest.raises(UserError, match="at least 256"):
        BPETokenizer.train(corpus, vocab_size=100)


def test_stream_decoder_holds_back_partial_characters():
    tok = ByteTokenizer()
    text = "né 🙂!"
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in tok.encode(text)]
    assert "".join(pieces) + decoder.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[-1] == "!" and pieces.count("") == 4  # é waits 1 byte, 🙂 waits 3


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_stream_decoder_leaves_out_a_character_cut_off_at_the_end(cut):
    """A token budget spent mid-character: the complete text, and no U+FFFD for the rest."""
    tok = ByteTokenizer()
    ids = tok.encode("ab🙂")[:2 + cut]  # 1 to 3 of the emoji's 4 bytes
    decoder = StreamDecoder(tok)
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == "ab"
    assert StreamDecoder(tok).decode(ids) == "ab"
    assert tok.decode(ids).startswith("ab\ufffd")  # what decoding at once shows


def test_stream_decoder_keeps_invalid_bytes_visible():
    """Bytes that can never form a character (a continuation byte after ASCII) stay U+FFFD:
    held back text is only ever text that may still complete."""
    tok = ByteTokenizer()
    assert StreamDecoder(tok).decode([0x61, 0x80, 0x62]) == "a\ufffdb"


def test_stream_decoder_on_bpe_tokens_matches_decoding_at_once(corpus):
    tok = BPETokenizer.train(corpus + "naïve café 🙂 ünïcödé " * 20, vocab_size=300)
    ids = tok.encode("naïve café 🙂 ünïcödé")
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == tok.decode(ids) == "naïve café 🙂 ünïcödé"
    assert all("\ufffd" not in p for p in pieces)


def test_char_tokenizer_unknown_streams_at_once():
    """A character model's <unk> decodes to U+FFFD too, but is a whole token: not held back."""
    tok = CharTokenizer.train(["abc"])
    decoder = StreamDecoder(tok)
    assert decoder.push(tok.unk_id) == "\ufffd" and decoder.flush() == ""


def test_registry_matches_the_config_choices():
    choices = dataclasses.fields(DataConfig)
    tokenizer_field = next(f for f in choices if f.name == "tokenizer")
    assert set(tokenizer_field.metadata["choices"]) == set(TOKENIZERS) == {"char", "byte", "bpe"}
    with pytest.raises(UserError, match="unknown tokenizer 'wordpiece'"):
        build_tokenizer("wordpiece", "text")


def test_tokenizer_file_round_trip(tmp_path, bpe):
    path = tmp_path / "tok.json"
    save_tokenizer(bpe, path)
    assert json.loads(path.read_text())["kind"] == "bpe"
    assert load_tokenizer_file(path).encode(UNSEEN) == bpe.encode(UNSEEN)
    (tmp_path / "bad.json").write_text("nope")
    with pytest.raises(UserError, match="not a tokenizer file"):
        load_tokenizer_file(tmp_path / "bad.json")
    with pytest.raises(UserError, match="no such file"):
        load_tokenizer_file(tmp_path / "missing.json")
