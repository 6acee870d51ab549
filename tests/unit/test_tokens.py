"""The token cache: streamed tokenisation into memory-mapped files that equal the in-memory path."""

from __future__ import annotations

import dataclasses
import json

from pathlib import Path

import numpy as np
import pytest
import torch

import fundamentallm.data.tokens as tokens_module
from fundamentallm.config import DataConfig
from fundamentallm.data.tokens import load_tokens, split_at
from fundamentallm.errors import UserError

SAMPLE = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "shakespeare_sample.txt"
TEXT = SAMPLE.read_text()[:40_000] + "\nnaïve 🙂 end\n"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def data_cfg(corpus, cache, **overrides) -> DataConfig:
    return dataclasses.replace(DataConfig(train=[str(corpus)], token_cache=str(cache)), **overrides)


def as_list(ids) -> list[int]:
    return np.asarray(ids).tolist() if isinstance(ids, np.ndarray) else ids.tolist()


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 6, 8])
def test_split_at_cuts_a_stream_of_pieces_at_a_character(cut):
    head, tail = split_at(iter(["abc", "def", "gh"]), cut)
    first = "".join(head)
    assert first == "abcdefgh"[:cut] and "".join(tail) == "abcdefgh"[cut:]



@pytest.mark.parametrize("alphabet, dtype", [(250, np.uint8), (251, np.uint16)])
def test_the_cache_stores_ids_as_narrow_as_the_vocabulary(tmp_path, alphabet, dtype):
    # alphabet + <unk> + 5 reserved special tokens: 256 ids fit a byte, 257 do not
    text = "".join(chr(0x100 + i) for i in range(alphabet)) * 40
    corpus = tmp_path / "wide.txt"
    corpus.write_text(text, encoding="utf-8")
    memory = load_tokens(data_cfg(corpus, "off"))
    cached = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    assert cached.train.dtype == dtype and cached.tokenizer.vocab_size == alphabet + 6
    assert as_list(cached.train) == as_list(memory.train) and max(as_list(cached.train)) == alphabet


def test_cached_tokens_equal_the_in_memory_ones_and_are_memory_mapped(corpus, tmp_path):
    memory = load_tokens(data_cfg(corpus, "off"))
    cached = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    assert memory.cache is None and cached.cache.startswith("built ")
    # how long each stage took, said and kept with the entry
    seconds = json.loads((Path(cached.cache.split()[1]) / "meta.json").read_text())["seconds"]
    assert list(seconds) == ["counting characters", "training the char tokenizer", "tokenizing"]
    assert f"in counting characters {seconds['counting characters']:.1f} s, training" in cached.cache
    assert isinstance(cached.train, np.memmap) and cached.train.dtype == np.uint8
    assert isinstance(memory.train, torch.Tensor)
    assert as_list(cached.train) == as_list(memory.train)
    assert as_list(cached.val) == as_list(memory.val)
    assert cached.tokenizer.to_dict() == memory.tokenizer.to_dict()
    assert cached.val_chars_per_token == memory.val_chars_per_token == 1.0
    assert cached.source == memory.source


def test_the_stages_are_said_with_the_tokenizing_rate():
    seconds = {"counting characters": 1.04, "training the bpe tokenizer": 150.0, "tokenizing": 80.0}
    assert tokens_module.said(seconds, 1_000_000_000) == (
        "counting characters 1.0 s, training the bpe tokenizer 150.0 s, tokenizing 80.0 s (12.5 M characters/s)")
    assert tokens_module.said({"tokenizing": 0.0}, 10) == "tokenizing 0.0 s"  # too quick to say a rate


def test_second_load_reuses_the_entry_and_new_content_gets_a_new_one(corpus, tmp_path, monkeypatch):
    first = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    monkeypatch.setattr(tokens_module, "build_entry", lambda *a: pytest.fail("rebuilt"))
    again = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    assert again.cache == "reused " + first.cache.split()[1]
    monkeypatch.undo()
    corpus.write_text(TEXT + "more")
    changed = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    assert changed.cache.startswith("built ") and changed.cache != first.cache
    other_split = load_tokens(data_cfg(corpus, tmp_path / "cache", val_split=0.2))
    assert other_split.cache.startswith("built ")
    assert len(list((tmp_path / "cache").iterdir())) == 3  # no leftover build directories


def test_bpe_tokens_are_cached_losslessly(corpus, tmp_path):
    data = load_tokens(data_cfg(corpus, tmp_path / "cache", tokenizer="bpe", bpe_vocab_size=300))
    tok = data.tokenizer
    assert tok.vocab_size == 300
    cut = int(len(TEXT) * 0.9)
    assert tok.decode(as_list(data.train)) == TEXT[:cut]
    assert tok.decode(as_list(data.val)) == TEXT[cut:]
    assert data.val_chars_per_token == pytest.approx((len(TEXT) - cut) / len(data.val))
    assert data.val_chars_per_token > 1.2


def test_validation_file_and_jsonl_documents(tmp_path):
    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"body": TEXT[i:i + 4000]}) + "\n" for i in range(0, 20_000, 4000)))
    val = tmp_path / "val.txt"
    val.write_text(TEXT[30_000:])
    settings = dict(text_field="body", validation_data=str(val), separator="\\n")
    memory = load_tokens(data_cfg(records, "off", **settings))
    cached = load_tokens(data_cfg(records, tmp_path / "cache", **settings))
    assert as_list(cached.train) == as_list(memory.train)
    assert len(cached.train) == 20_000 + 5  # five records, each ended by the end-of-text token
    assert as_list(cached.train).count(cached.tokenizer.eos_id) == 5
    assert as_list(cached.val) == as_list(memory.val) and cached.source == str(val)
    joined = load_tokens(data_cfg(records, "off", doc_boundary="none", **settings))
    assert len(joined.train) == 20_000 + 4  # --doc-boundary none: four separators between them
    assert joined.tokenizer.eos_id not in as_list(joined.train)


def test_resumed_run_tokenizes_with_its_own_tokenizer(corpus, tmp_path):
    from fundamentallm.tokenizers import CharTokenizer

    saved = CharTokenizer("abcdefghijklmnopqrstuvwxyz \n")  # fewer characters than the text has
    data = load_tokens(data_cfg(corpus, tmp_path / "cache"), tokenizer=saved)
    assert data.tokenizer is saved
    assert as_list(data.train)[:20] == saved.encode(TEXT[:20])


def test_a_damaged_entry_is_a_clear_error(corpus, tmp_path):
    data = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    entry = Path(data.cache.split()[1])
    (entry / "train.bin").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match="damaged token cache entry"):
        load_tokens(data_cfg(corpus, tmp_path / "cache"))


def test_auto_caches_only_large_corpora_in_the_cache_home(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDAMENTALLM_CACHE", str(tmp_path / "home"))
    assert load_tokens(data_cfg(corpus, "auto")).cache is None  # 40 KB: in memory
    monkeypatch.setattr(tokens_module, "AUTO_CACHE_BYTES", 1000)
    data = load_tokens(data_cfg(corpus, "auto"))
    assert data.cache.startswith(f"built {tmp_path / 'home' / 'tokens'}")


def test_an_entry_built_meanwhile_by_another_run_is_kept(corpus, tmp_path, monkeypatch):
    """Two runs build the same entry at once: the second rename finds the first's entry in
    place (the rename fails), and its copy is dropped; both runs read the same tokens."""
    first = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    entry = next((tmp_path / "cache").iterdir())
    real_exists = tokens_module.Path.exists

    def not_yet(path):  # the second run looks before the first has finished
        return False if path == entry / "meta.json" and not_yet.once else real_exists(path)

    not_yet.once = True
    monkeypatch.setattr(tokens_module.Path, "exists", not_yet)
    real_build = tokens_module.build_entry

    def build(*args):
        not_yet.once = False
        return real_build(*args)

    monkeypatch.setattr(tokens_module, "build_entry", build)
    second = load_tokens(data_cfg(corpus, tmp_path / "cache"))
    assert second.cache.startswith("built ")  # it did build, and then kept the other's entry
    assert as_list(second.train) == as_list(first.train)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # no leftover build


def test_other_failures_to_publish_an_entry_are_reported(corpus, tmp_path, monkeypatch):
    import errno
    import os

    def failing(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(tokens_module.os, "replace", failing)
    with pytest.raises(UserError, match="cannot write the token cache there .*(I/O|Input/output) error"):
        load_tokens(data_cfg(corpus, tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []  # the half-built copy is removed
