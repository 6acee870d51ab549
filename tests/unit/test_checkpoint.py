"""Checkpoints: safe to load (weights_only), restore the same model, and every bad file is a
UserError. Also atomic_write, which every checkpoint goes through."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch

from fundamentallm.atomic import WriteFailed, atomic_write, write_json, write_text
from fundamentallm.checkpoint import (
    FORMAT, VERSION, DamagedCheckpoint, content_digest, load_checkpoint, load_model, save_checkpoint, seal,
)
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyz .,\n"  # 30 characters: vocab 31


class Gadget:
    """Not an allowed type for weights_only loading: unpickling it would run our code."""

    def __init__(self):
        self.payload = [1, 2, 3]


@pytest.fixture
def saved(tmp_path, tiny_config):
    """(path, config, tokenizer, model) of a freshly saved tiny checkpoint."""
    tok = CharTokenizer.train(TEXT)
    tiny_config.model.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = GPT(tiny_config.model).eval()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, tiny_config, tok, model)
    return path, tiny_config, tok, model


def test_checkpoint_loads_with_weights_only(saved):
    path, cfg, tok, model = saved
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    assert payload["config"]["model"]["model_dim"] == cfg.model.model_dim
    assert payload["tokenizer"] == tok.to_dict()
    assert payload["model"].keys() == model.state_dict().keys()
    assert "train_state" not in payload


def test_train_state_is_stored_when_given(tmp_path, saved):
    _, cfg, tok, model = saved
    path = tmp_path / "resume.pt"
    save_checkpoint(path, cfg, tok, model, train_state={"counters": {"step": 7}})
    assert load_checkpoint(path)["train_state"] == {"counters": {"step": 7}}


def test_load_model_restores_identical_logits(saved):
    path, cfg, tok, model = saved
    loaded, loaded_tok, loaded_cfg = load_model(path)
    assert not loaded.training
    assert loaded_cfg == cfg
    assert loaded_tok.to_dict() == tok.to_dict()
    idx = torch.tensor([tok.encode("hello, world.")])
    with torch.no_grad():
        assert torch.equal(loaded(idx), model(idx))


def test_save_leaves_no_temporary_files(saved):
    path = saved[0]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def write_random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def write_foreign_dict(path: Path) -> None:
    torch.save({"a": 1}, path)


def write_custom_class(path: Path) -> None:
    torch.save(Gadget(), path)


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_text_file(path: Path) -> None:
    path.write_text("model_dim: 32\n")


@pytest.mark.parametrize(("write", "reason"), [
    (write_random_bytes, "not a readable checkpoint"),
    (write_foreign_dict, "not a FundamentaLLM checkpoint"),
    (write_custom_class, "not a readable checkpoint"),
    (write_empty, "not a readable checkpoint"),
    (write_text_file, "not a readable checkpoint"),
])
def test_bad_files_raise_user_error(tmp_path, write, reason):
    path = tmp_path / "bad.pt"
    write(path)
    with pytest.raises(UserError, match=f"bad.pt: {reason}"):
        load_model(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_any_random_bytes_raise_user_error(tmp_path):
    path = tmp_path / "bad.pt"
    leaked = []
    for seed in range(100):  # about 7% of random files leaked with torch 2.13
        path.write_bytes(random.Random(seed).randbytes(1024))
        try:
            load_checkpoint(path)
        except UserError:
            pass
        except Exception as exc:  # noqa: BLE001 - collecting what leaks is the point
            leaked.append((seed, type(exc).__name__))
    assert leaked == []


def test_truncated_checkpoint_raises_user_error(saved):
    path = saved[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(path)


def test_missing_path_and_directory_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_model(tmp_path / "absent.pt")
    with pytest.raises(UserError, match="a directory, but not a model directory"):
        load_model(tmp_path)


def tamper(path: Path, **changes) -> None:
    """Change entries and save the file again, resealed: a well-formed file with bad contents."""
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    seal(payload)
    torch.save(payload, path)


def test_other_version_raises_user_error(saved):
    tamper(saved[0], version=99)
    with pytest.raises(UserError, match="version 99"):
        load_model(saved[0])


def test_missing_entry_raises_user_error(saved):
    payload = torch.load(saved[0], weights_only=True)
    del payload["tokenizer"]
    seal(payload)
    torch.save(payload, saved[0])
    with pytest.raises(UserError, match=r"ckpt\.pt: checkpoint is missing or has malformed tokenizer$"):
        load_model(saved[0])


def test_every_missing_entry_is_named(saved):
    payload = torch.load(saved[0], weights_only=True)
    del payload["config"], payload["model"]
    seal(payload)
    torch.save(payload, saved[0])
    with pytest.raises(UserError, match="checkpoint is missing or has malformed config, model$"):
        load_model(saved[0])


def test_weights_not_matching_the_config_raise_user_error(saved):
    path, cfg, _, _ = saved
    config = torch.load(path, weights_only=True)["config"]
    config["model"]["model_dim"] = 64
    tamper(path, config=config)
    with pytest.raises(UserError, match="weights do not match"):
        load_model(path)


@pytest.mark.parametrize("entry, message", [
    pytest.param({"config": "oops"}, "checkpoint is missing or has malformed config$", id="config"),
    pytest.param({"tokenizer": ["a", "b"]}, "checkpoint is missing or has malformed tokenizer$",
                 id="tokenizer"),
    pytest.param({"tokenizer": {"kind": "wordpiece"}}, "unknown tokenizer type 'wordpiece'",
                 id="tokenizer of another kind"),
    pytest.param({"model": [1, 2]}, "checkpoint is missing or has malformed model$", id="model"),
    pytest.param({"model": None, "config": 3}, "checkpoint is missing or has malformed config, model$",
                 id="config and model"),
])
def test_malformed_entries_raise_user_error(saved, entry, message):
    tamper(saved[0], **entry)
    with pytest.raises(UserError, match=message):
        load_model(saved[0])


# ------------------------------------------------------------------ integrity: the checksum
def test_every_checkpoint_carries_a_checksum_of_its_contents(saved):
    payload = torch.load(saved[0], weights_only=True)
    assert payload["checksum"].startswith("blake2b-128:")
    assert payload["checksum"] == content_digest(payload)
    payload["model"]["embed.weight"][0, 0] += 1e-6  # one weight, a little
    assert payload["checksum"] != content_digest(payload)


def test_the_checksum_covers_every_kind_of_value(saved):
    """Tensors of any dtype (bf16 has no numpy twin), nested state, and plain values."""
    payload = torch.load(saved[0], weights_only=True)
    base = content_digest(payload)
    for change in (lambda p: p["config"]["model"].update(dropout=0.5),
                   lambda p: p["tokenizer"].update(kind="byte"),
                   lambda p: p.update(extra=torch.ones(3, dtype=torch.bfloat16)),
                   lambda p: p.update(train_state={"counters": {"step": 1}, "rng": [1, 2]})):
        changed = torch.load(saved[0], weights_only=True)
        change(changed)
        assert content_digest(changed) != base
    bf16 = {"w": torch.ones(2, 2, dtype=torch.bfloat16)}
    assert content_digest(bf16) != content_digest({"w": torch.ones(2, 2, dtype=torch.float16)})
    assert content_digest({"w": torch.ones(4)}) != content_digest({"w": torch.ones(2, 2)})  # shapes count


def test_a_flipped_bit_anywhere_is_never_loaded_as_good(saved):
    """Flip one bit at 200 places across the file: each load either fails as damaged (one
    line) or gives back exactly the contents saved (a bit the reader never looks at)."""
    path = saved[0]
    good = path.read_bytes()
    expected = content_digest(torch.load(path, weights_only=True))
    rng = random.Random(0)
    damaged = 0
    for _ in range(200):
        flipped = bytearray(good)
        at = rng.randrange(len(flipped))
        flipped[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        try:
            ckpt = load_checkpoint(path)
        except UserError:
            damaged += 1
            continue
        assert content_digest(ckpt) == expected, f"byte {at}: damaged contents loaded as good"
    assert damaged > 150  # most of the file is tensor data: most flips must be caught


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped"])
def test_damaged_files_are_reported_as_damaged(saved, damage):
    path = saved[0]
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "flipped": data[:-2000] + bytes([data[-2000] ^ 4]) + data[-1999:]}[damage])
    with pytest.raises(DamagedCheckpoint, match=r"^.*ckpt\.pt: (not a readable checkpoint|damaged checkpoint)"):
        load_checkpoint(path)


def test_a_current_file_without_its_checksum_is_damaged(saved):
    payload = torch.load(saved[0], weights_only=True)
    del payload["checksum"]
    torch.save(payload, saved[0])
    with pytest.raises(DamagedCheckpoint, match="do not match the checksum"):
        load_checkpoint(saved[0])


def test_version_4_checkpoints_without_a_checksum_still_load(saved):
    path, _, tok, model = saved
    payload = torch.load(path, weights_only=True)
    del payload["checksum"]
    payload["version"] = 4
    payload["model"]["embed.weight"][0, 0] = 0.25  # not checked: nothing to check against
    torch.save(payload, path)
    loaded, loaded_tok, _ = load_model(path)
    assert loaded_tok.to_dict() == tok.to_dict()
    assert loaded.state_dict()["embed.weight"][0, 0] == 0.25


# ------------------------------------------------------------------ atomic_write
def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    atomic_write(path, lambda f: f.write(b"one"))
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


def test_failed_write_leaves_the_old_file_and_no_temp_files(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", lambda f: (_ for _ in ()).throw(KeyboardInterrupt))
    assert list(tmp_path.iterdir()) == []


def test_write_text_and_json(tmp_path):
    write_text(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    write_json(tmp_path / "b.json", {"x": [1, 2]})
    assert (tmp_path / "b.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'


def test_json_writes_nan_and_infinity_as_null(tmp_path):
    write_json(tmp_path / "c.json", {"a": math.nan, "b": [math.inf, -math.inf, 1.5],
                                     "c": {"d": (math.nan, 2)}, "e": 0.0})
    text = (tmp_path / "c.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": [None, 2]}, "e": 0.0}


def test_version_1_checkpoints_load_as_the_model_they_were(saved, tiny_config):
    """Version 1 predates the architecture options: it was RMSNorm, RoPE, GELU, no QK-norm,
    GPT-2 init, AdamW. Such a file must still load as that model."""
    path = saved[0]
    payload = torch.load(path, weights_only=True)
    payload["version"] = 1
    for key in ("norm", "position", "activation", "qk_norm", "zero_init", "norm_gain"):
        payload["config"]["model"].pop(key)
    payload["config"]["optim"].pop("optimizer")
    old_cfg = dataclasses.replace(tiny_config.model, activation="gelu", qk_norm=False, zero_init=False)
    torch.manual_seed(0)
    payload["model"] = GPT(old_cfg).state_dict()
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded["version"] == VERSION
    assert loaded["config"]["optim"]["optimizer"] == "adamw"
    model, _, cfg = load_model(path)
    assert (cfg.model.activation, cfg.model.qk_norm, cfg.model.zero_init) == ("gelu", False, False)
    assert type(model.blocks[0].mlp).__name__ == "GeluMLP"


def test_version_2_checkpoints_load_with_norm_gains(saved, tiny_config):
    """Version 2 predates --norm-gain: every norm had a gain, whatever the new default."""
    path = saved[0]
    payload = torch.load(path, weights_only=True)
    payload["version"] = 2
    payload["config"]["model"].pop("norm_gain")
    payload["model"] = GPT(dataclasses.replace(tiny_config.model, norm_gain=True)).state_dict()
    torch.save(payload, path)
    model, _, cfg = load_model(path)
    assert cfg.model.norm_gain is True
    assert "blocks.0.attn_norm.weight" in model.state_dict()


def test_version_3_checkpoints_read_the_old_name_of_the_bpe_vocabulary_size(saved):
    """Version 3 called data.bpe_vocab_size `vocab_size`."""
    path = saved[0]
    payload = torch.load(path, weights_only=True)
    payload["version"] = 3
    payload["config"]["data"]["vocab_size"] = payload["config"]["data"].pop("bpe_vocab_size")
    payload["config"]["data"]["vocab_size"] = 512
    torch.save(payload, path)
    _, _, cfg = load_model(path)
    assert cfg.data.bpe_vocab_size == 512


class FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes, as on a full disk."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_full_disk_is_one_line_naming_the_file_and_the_space_needed(tmp_path, saved, monkeypatch):
    """torch.save reports a failed write as an unrelated RuntimeError of its own; the real
    cause (ENOSPC) must still be what the user reads, and the old file must stay whole."""
    path, cfg, tok, model = saved
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr("fundamentallm.atomic.os.fdopen",
                        lambda fd, mode: FullDisk(real_fdopen(fd, mode, buffering=0), room=3000))
    with pytest.raises(WriteFailed) as caught:
        save_checkpoint(path, cfg, tok, model)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot write (No space left on device: ")
    assert "free, about" in message and "needed)" in message and "\n" not in message
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no half-written temporary


def test_a_read_only_directory_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("fundamentallm.atomic.tempfile.mkstemp", refuse)
    with pytest.raises(WriteFailed, match=r"out\.json: cannot write \(Read-only file system\)$"):
        write_json(tmp_path / "out.json", {})


def test_errors_that_are_not_the_disks_pass_through(tmp_path):
    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write(tmp_path / "x", lambda f: (_ for _ in ()).throw(ValueError("not a disk problem")))
