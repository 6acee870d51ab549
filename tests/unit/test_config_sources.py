"""Where a run's settings come from: defaults <- checkpoint <- file <- flags, and what a run
started from a checkpoint keeps (the `start=` policy of each field)."""

from __future__ import annotations

import re

import pytest

from fundamentallm.config import Config, ConfigSources, config_to_dict
from fundamentallm.config.loading import fields
from fundamentallm.errors import UserError


def saved_config(**model) -> dict:
    cfg = Config()
    cfg.model.model_dim, cfg.model.dropout, cfg.optim.muon_lr = 64, 0.2, 0.03
    cfg.checkpoint.output_dir = "runs/old"
    for name, value in model.items():
        setattr(cfg.model, name, value)
    return config_to_dict(cfg)


def test_flags_beat_the_file_which_beats_the_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {model_dim: 96, num_layers: 3}\noptim: {learning_rate: 0.001}\n")
    cfg = ConfigSources(str(path), {"model.model_dim": 48}, ["a.txt"]).resolve()
    assert (cfg.model.model_dim, cfg.model.num_layers, cfg.optim.learning_rate) == (48, 3, 0.001)
    assert cfg.model.num_heads == Config().model.num_heads and cfg.data.train == ["a.txt"]


def test_a_resumed_run_continues_the_whole_saved_config():
    cfg = ConfigSources(flags={"training.max_steps": 9, "model.dropout": 0.0}).resolve(saved_config())
    assert (cfg.model.model_dim, cfg.optim.muon_lr, cfg.checkpoint.output_dir) == (64, 0.03, "runs/old")
    assert cfg.training.max_steps == 9 and cfg.model.dropout == 0.0  # a rate may change


def test_a_fine_tuned_run_takes_only_what_its_weights_need():
    cfg = ConfigSources().resolve(saved_config(), resumed=False)
    assert cfg.model.model_dim == 64 and cfg.model.dropout == 0.2  # the shape, and the rate as default
    assert cfg.optim.muon_lr == Config().optim.muon_lr  # the rest starts afresh
    assert cfg.checkpoint.output_dir == Config().checkpoint.output_dir


@pytest.mark.parametrize("resumed, flags, message", [
    (True, {"model.model_dim": 32}, "a resumed run keeps its model shape; --model-dim 32 (checkpoint: 64)"),
    (False, {"model.activation": "gelu"}, "a fine-tuned run keeps its model shape; --activation gelu"),
    (True, {"data.tokenizer": "byte"}, "a resumed run keeps its tokenizer; --tokenizer byte (checkpoint: char)"),
    (True, {"optim.optimizer": "adamw"}, "a resumed run keeps its optimizer; --optimizer adamw"),
    (True, {"data.bpe_vocab_size": 512}, "a resumed run keeps its tokenizer; --vocab-size 512"),
])
def test_what_a_started_run_keeps_is_an_error_to_change(resumed, flags, message):
    with pytest.raises(UserError, match="^" + re.escape(f"ckpt.pt: {message}")):
        ConfigSources(flags=flags).resolve(saved_config(), resumed=resumed, source="ckpt.pt")


def test_a_fine_tuned_run_may_change_its_optimizer():
    cfg = ConfigSources(flags={"optim.optimizer": "adamw"}).resolve(saved_config(), resumed=False)
    assert cfg.optim.optimizer == "adamw"


def test_every_field_declares_a_known_policy():
    for info in fields():
        policy = info.meta["start"]
        assert policy.resumed in ("take", "keep") and policy.fine_tuned in ("take", "keep", "fresh")
        assert (policy.part != "") == ("keep" in (policy.resumed, policy.fine_tuned)), info.key


def test_a_config_as_sources_resolves_to_itself():
    cfg = Config()
    cfg.model.model_dim, cfg.data.train, cfg.training.max_time = 40, ["x.txt"], 5.0
    assert ConfigSources.of(cfg).resolve() == cfg
