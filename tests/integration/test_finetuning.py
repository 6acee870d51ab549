"""Fine-tuning: --init-from, freezing (--freeze-embeddings, --freeze-layers) and layer-wise
learning-rate decay (--layer-lr-decay)."""

from __future__ import annotations

import pytest
import torch
import yaml

from integration_helpers import (
    assert_one_line_error, load_pt, losses, run_cli, run_process, summary, tiny_args, train,
)

SHAPE = ("model_dim", "num_layers", "num_heads", "context_length")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus):
    return train(corpus, tmp_path_factory.mktemp("base"), max_steps=60) / "final.pt"


@pytest.fixture(scope="module")
def new_text(tmp_path_factory, tiny_text):
    path = tmp_path_factory.mktemp("new") / "new.txt"
    path.write_text(tiny_text[::-1][:8000], encoding="utf-8")  # same characters, other text
    return path


def finetune(new_text, out, pretrained, *flags, **overrides):
    # No shape flags: the shape comes from the checkpoint.
    return train(new_text, out, "--init-from", str(pretrained), *flags,
                 **{**{k: None for k in SHAPE}, "max_steps": 3, "log_interval": 1, **overrides})


def test_init_from_starts_at_the_checkpoints_weights(tmp_path, corpus, pretrained, new_text):
    out = finetune(new_text, tmp_path / "ft", pretrained)
    fresh = train(new_text, tmp_path / "fresh", max_steps=3, log_interval=1)
    assert losses(out)[1] < losses(fresh)[1] - 0.5  # it starts from what was learned
    base = load_pt(pretrained)
    tuned = load_pt(out / "final.pt")
    assert tuned["tokenizer"] == base["tokenizer"]
    assert {k: tuned["config"]["model"][k] for k in SHAPE} == {k: base["config"]["model"][k] for k in SHAPE}
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["training"]["init_from"] == str(pretrained)
    assert cfg["optim"]["embedding_lr"] == cfg["optim"]["learning_rate"]  # a trained embedding: the common rate
    assert summary(out)["steps"] == 3  # a new run: fresh counters, optimizer and schedule


def test_frozen_parameters_keep_the_checkpoints_values(tmp_path, pretrained, new_text):
    out = finetune(new_text, tmp_path / "ft", pretrained, "--freeze-embeddings", freeze_layers=1)
    before, after = load_pt(pretrained)["model"], load_pt(out / "final.pt")["model"]
    for name in before:
        frozen = name.startswith(("embed.", "blocks.0."))  # an untied head trains (--tie-embeddings: frozen too)
        assert torch.equal(before[name], after[name]) == frozen, name


def test_layer_lr_decay_slows_the_lower_layers(tmp_path, pretrained, new_text):
    flat = finetune(new_text, tmp_path / "flat", pretrained, optimizer="adamw")
    decayed = finetune(new_text, tmp_path / "decayed", pretrained, optimizer="adamw", layer_lr_decay=0.1)
    before = load_pt(pretrained)["model"]

    def moved(out, name):
        return (load_pt(out / "final.pt")["model"][name] - before[name]).abs().max().item()

    # The embedding trains at 0.1 ** 3 of the rate, the last block at 0.1, the final norm at 1.
    assert moved(decayed, "embed.weight") < 0.01 * moved(flat, "embed.weight")
    assert moved(decayed, "blocks.1.mlp.gate_up.weight") < 0.2 * moved(flat, "blocks.1.mlp.gate_up.weight")
    assert moved(decayed, "norm.weight") == pytest.approx(moved(flat, "norm.weight"), rel=0.5)


@pytest.mark.parametrize("flags, message", [
    (["--model-dim", "64"], "a fine-tuned run keeps its model shape; --model-dim 64 (checkpoint: 32)"),
    (["--tokenizer", "byte"], "a fine-tuned run keeps its tokenizer; --tokenizer byte (checkpoint: char)"),
    (["--freeze-layers", "3"], "--freeze-layers 3 is more than the model's 2 layers"),
    (["--freeze-embeddings", "--freeze-layers", "2", "--no-norm-gain"], None),
])
def test_bad_fine_tuning_settings_are_one_line_errors(tmp_path, pretrained, new_text, flags, message):
    argv = tiny_args(**{k: None for k in SHAPE})
    if message is None:  # --no-norm-gain changes the shape: the error says so first
        message = "keeps its model shape; --norm-gain False (checkpoint: True)"
    result = run_process("train", new_text, "-o", tmp_path / "run", "--init-from", pretrained, *argv, *flags)
    assert message in assert_one_line_error(result)


def test_freezing_everything_is_an_error(tmp_path, corpus):
    frozen = ("--no-norm-gain", "--freeze-embeddings", "--freeze-layers", "2")
    result = run_process("train", corpus, "-o", tmp_path / "run", *tiny_args(), *frozen, "--tie-embeddings")
    assert "every parameter is frozen" in assert_one_line_error(result)
    # An untied output head is not an embedding: it still trains.
    assert train(corpus, tmp_path / "head", *frozen, max_steps=1)


def test_a_resumed_run_keeps_its_frozen_layers(tmp_path, corpus, capsys):
    out = train(corpus, tmp_path / "run", max_steps=2, freeze_layers=1)
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "4", "--freeze-layers", "0", "--quiet") == 2
    assert "a resumed run keeps its optimizer; --freeze-layers 0 (checkpoint: 1)" in capsys.readouterr().err
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "4", "--quiet") == 0
    assert summary(out)["steps"] == 4
