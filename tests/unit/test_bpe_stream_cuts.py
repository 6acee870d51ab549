"""A long stream is encoded in ~1M-character pieces. For an imported tokenizer that treats a
piece's start apart (GPT-2 style with a prefix space, SentencePiece-style Metaspace, Llama-3's
split that groups punctuation with the newline after it), the pieces must be cut where that
changes no id: the stream's ids are exactly the whole text's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

import fundamentallm.tokenizers.bpe as bpe_module
from fundamentallm.tokenizers.bpe import BPETokenizer

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def sample() -> str:
    return (Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt").read_text()[:40_000]


def imported(kind: str) -> BPETokenizer:
    """A small tokenizer of the kind, trained here (nothing is downloaded)."""
    tok = Tokenizer(models.BPE())
    if kind == "prefix-space":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    elif kind == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    else:  # "prepend": Llama 2's normalizer puts "▁" before every encoding, wherever it is cut
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    alphabet = pre_tokenizers.ByteLevel.alphabet() if kind in ("prefix-space", "llama3") else []
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator([sample()], trainer=trainer)
    tok.decoder = decoders.ByteLevel() if alphabet else decoders.Metaspace()
    return BPETokenizer(tok.to_str())


def stream_ids(tok: BPETokenizer, text: str, monkeypatch, piece: int) -> list[int]:
    monkeypatch.setattr(bpe_module, "ENCODE_PIECE_CHARS", piece)
    pieces = [text[i:i + 1_000] for i in range(0, len(text), 1_000)]
    return np.concatenate(list(tok.encode_text_stream(pieces))).tolist()


@pytest.mark.parametrize("kind", ["prefix-space", "llama3", "metaspace"])
def test_a_stream_cut_into_pieces_gets_the_whole_texts_ids(kind, monkeypatch):
    tok = imported(kind)
    assert tok._word_encoder is None  # these take the library's path, piece by piece
    text = sample().replace("\n\n", ".\n") + "end"  # punctuation before newlines: Llama-3 groups them
    whole = tok._tok.encode(text, add_special_tokens=False).ids
    assert stream_ids(tok, text, monkeypatch, piece=3_000) == whole
    # what cutting at the plain tokenizer's places would do to these (the test can fail)
    monkeypatch.setattr(BPETokenizer, "_local_cut", lambda self, t, start: bpe_module.last_cut(t, start))
    assert stream_ids(tok, text, monkeypatch, piece=3_000) != whole


def test_a_tokenizer_that_changes_every_start_is_cut_at_the_usual_places(monkeypatch):
    # no cut checks out for it: a token or two differ at each cut of a long stream, nothing worse
    tok = imported("prepend")
    text = sample()
    whole = tok._tok.encode(text, add_special_tokens=False).ids
    ids = stream_ids(tok, text, monkeypatch, piece=3_000)
    cuts = len(text) // 1_000  # (each 1,000-character piece of the stream ends near a cut)
    assert ids != whole and abs(len(ids) - len(whole)) <= 3 * cuts
