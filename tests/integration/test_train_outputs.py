"""What a training run leaves behind, how its config is resolved, and the CLI's aliases."""

from __future__ import annotations

import json
import math
import re
import shlex

import pytest
import torch
import yaml

from fundamentallm.tokenizers import RESERVED
from helpers import figures
from integration_helpers import (
    ROOT, assert_same_weights, load_pt, losses, metrics, run_cli, run_process, same_weights, summary, tiny_args,
    train,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_writes_every_output(tmp_path, text_file):
    out = train(text_file, tmp_path / "run", max_steps=6, eval_interval=3, log_interval=2)
    names = {p.name for p in out.iterdir()}
    expected = {"final.pt", "best_model.pt", "resume_checkpoint.pt", "metrics.json",
                "loss_curve.png", "config.yaml", "summary.json"}
    assert expected <= names
    assert not [n for n in names if n.endswith(".tmp")], "atomic-write temporaries left behind"

    records = metrics(out)
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for r in records:
        assert math.isfinite(r["train_loss"]) and r["lr"] > 0
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]

    assert (out / "loss_curve.png").read_bytes().startswith(PNG_MAGIC)

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["model_dim"] == 32 and cfg["model"]["num_layers"] == 2
    text = text_file.read_text()
    trained_on = text[:int(len(text) * 0.9)]  # the default --val-split 0.1 holds out the end
    assert cfg["model"]["vocab_size"] == len(set(trained_on)) + 1 + len(RESERVED)  # characters, <unk>, special tokens
    assert cfg["training"]["max_steps"] == 6 and cfg["training"]["log_interval"] == 2
    assert cfg["checkpoint"]["output_dir"] == str(out)

    s = summary(out)
    assert s["steps"] == 6 and s["stop_reason"] == "max_steps"
    assert s["final_train_loss"] == records[-1]["train_loss"]
    assert s["best_val_loss"] == min(r["val_loss"] for r in records if "val_loss" in r)

    for name in ("final.pt", "best_model.pt", "resume_checkpoint.pt"):
        payload = load_pt(out / name)  # weights_only=True: no pickled code inside
        assert payload["format"] == "fundamentallm"
        assert payload["config"]["model"]["model_dim"] == 32
        assert ("train_state" in payload) == (name == "resume_checkpoint.pt")
    assert load_pt(out / "resume_checkpoint.pt")["train_state"]["counters"]["step"] == 6


def test_epoch_checkpoints_are_pruned_to_the_newest(tmp_path, tiny_text):
    data = tmp_path / "short.txt"
    data.write_text(tiny_text[:600])  # (599 // 16) // 4 = 9 steps per epoch
    out = train(data, tmp_path / "run", "--save-every", "1", "--keep-checkpoints", "2",
                max_steps=None, epochs=4, val_split=0)
    assert summary(out)["stop_reason"] == "epochs"
    assert summary(out)["steps"] == 4 * 9
    kept = sorted(p.name for p in out.glob("checkpoint_epoch_*.pt"))
    assert kept == ["checkpoint_epoch_3.pt", "checkpoint_epoch_4.pt"]
    for path in out.glob("checkpoint_epoch_*.pt"):
        assert "train_state" in load_pt(path)


def test_save_every_skips_epochs(tmp_path, tiny_text):
    data = tmp_path / "short.txt"
    data.write_text(tiny_text[:600])
    out = train(data, tmp_path / "run", "--save-every", "2", "--keep-checkpoints", "5",
                max_steps=None, epochs=4, val_split=0)
    kept = sorted(p.name for p in out.glob("checkpoint_epoch_*.pt"))
    assert kept == ["checkpoint_epoch_2.pt", "checkpoint_epoch_4.pt"]


def test_dry_run_prints_yaml_and_writes_nothing(tmp_path, text_file, capsys):
    out = tmp_path / "never"
    assert run_cli("train", text_file, "-o", out, *tiny_args(), "--dry-run") == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model_dim"] == 32
    assert cfg["data"]["train"] == [str(text_file)]
    assert cfg["checkpoint"]["output_dir"] == str(out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]


def test_config_file_applies_and_flags_override_it(tmp_path, text_file, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"model_dim": 48, "num_heads": 4, "dropout": 0.05},
        "optim": {"learning_rate": 0.01, "lr_schedule": "linear"},
        "training": {"batch_size": 8, "seed": 7},
    }))
    assert run_cli("train", text_file, "--config", config, "--batch-size", "2", "--dry-run") == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model_dim"] == 48 and cfg["model"]["num_heads"] == 4
    assert cfg["model"]["dropout"] == 0.05
    assert cfg["optim"]["learning_rate"] == 0.01 and cfg["optim"]["lr_schedule"] == "linear"
    assert cfg["training"]["seed"] == 7
    assert cfg["training"]["batch_size"] == 2  # the flag beats the file
    assert cfg["model"]["num_layers"] == 4  # a default the file does not set

    # A real run records the same resolution in config.yaml.
    out = train(text_file, tmp_path / "run", "--config", config, model_dim=None, num_heads=None,
                max_steps=2)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["model_dim"] == 48 and saved["training"]["batch_size"] == 4
    assert load_pt(out / "final.pt")["model"]["embed.weight"].shape[1] == 48


def test_config_file_can_name_the_training_data(tmp_path, text_file):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"train": [str(text_file)]}}))
    out = train([], tmp_path / "run", "--config", config, max_steps=2)
    assert summary(out)["steps"] == 2


def test_config_file_accepts_exponent_floats(tmp_path, text_file, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("optim:\n  learning_rate: 3e-4\n  min_lr: 1e-5\n")
    assert run_cli("train", text_file, "--config", config, "--dry-run") == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["learning_rate"] == 3e-4 and cfg["optim"]["min_lr"] == 1e-5


def test_config_with_an_empty_section(tmp_path, text_file, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  # model_dim: 64\ntraining:\n  batch_size: 8\n")
    assert run_cli("train", text_file, "--config", config, "--dry-run") == 0
    assert "batch_size: 8" in capsys.readouterr().out


@pytest.mark.parametrize("text, fragment", [
    ("model:\n  model_dimension: 32\n", "model.model_dimension"),
    ("modle:\n  model_dim: 32\n", "modle"),
    ("training:\n  batch_size: many\n", "training.batch_size"),
])
def test_bad_config_file_exits_2(tmp_path, text_file, capsys, text, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert run_cli("train", text_file, "--config", config, "--dry-run") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and fragment in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("preset", ["small", "medium", "default", "large"])
def test_shipped_presets_parse(preset, text_file, capsys, monkeypatch):
    path = ROOT / "configs" / f"{preset}.yaml"
    if not path.exists():
        pytest.skip(f"configs/{preset}.yaml is not shipped yet")
    assert run_cli("train", text_file, "--config", path, "--dry-run") == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model_dim"] % cfg["model"]["num_heads"] == 0
    file_values = yaml.safe_load(path.read_text())
    for section, values in file_values.items():
        for key, value in values.items():
            assert cfg[section][key] == value, f"{preset}: {section}.{key}"
    # `--config NAME` finds configs/NAME.yaml when run from the repository root.
    monkeypatch.chdir(ROOT)
    assert run_cli("train", text_file, "--config", preset, "--dry-run") == 0
    assert yaml.safe_load(capsys.readouterr().out) == cfg


def test_aliases(tmp_path, text_file, tiny_text, capsys):
    # -o, --max-seq-len, --lr and several training files
    second = tmp_path / "more.txt"
    second.write_text(tiny_text[:3000])
    out = tmp_path / "aliased"
    argv = tiny_args(context_length=None, learning_rate=None, max_steps=3)
    assert run_cli("train", text_file, second, "-o", out, *argv, "--max-seq-len", "24",
                   "--lr", "0.005", "--val-split", "0", "--json") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "start"
    assert events[0]["train tokens"] == len(tiny_text) + len("\n\n") + 3000
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["context_length"] == 24
    assert cfg["optim"]["learning_rate"] == 0.005
    assert cfg["data"]["train"] == [str(text_file), str(second)]

    # --resume-from PATH
    assert run_cli("train", "-o", out, "--resume-from", out / "resume_checkpoint.pt",
                   "--max-steps", "5", "--quiet") == 0
    assert summary(out)["steps"] == 5 and sorted(losses(out)) == [3, 5]

    # evaluate CKPT DATA (positional) is the same as --data DATA
    assert run_cli("evaluate", out / "final.pt", second, "--json") == 0
    positional = json.loads(capsys.readouterr().out)
    assert run_cli("evaluate", out / "final.pt", "--data", second, "--json") == 0
    assert figures(json.loads(capsys.readouterr().out)) == figures(positional)
    assert positional["tokens"] == 3000  # 2,999 after the first, and the end of the document (trained on two files)

    # generate --max-length is --max-tokens
    assert run_cli("generate", out / "final.pt", "--prompt", "A", "--max-length", "7",
                   "--seed", "3") == 0
    text = capsys.readouterr().out
    assert text.startswith("A") and len(text) == 1 + 7 + 1  # prompt, 7 tokens, newline


def test_training_data_directory(tmp_path, tiny_text):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(tiny_text[:4000])
    (corpus / "b.txt").write_text(tiny_text[4000:8000])
    (corpus / "ignored.csv").write_text("\x00 not read")
    out = train(corpus, tmp_path / "run", max_steps=2)
    assert summary(out)["steps"] == 2


def test_version(capsys):
    from fundamentallm import __version__

    assert run_cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"fundamentallm {__version__}"


def test_checkpoints_restore_the_trained_weights(tmp_path, text_file):
    out = train(text_file, tmp_path / "run", max_steps=3)
    final, resume = load_pt(out / "final.pt"), load_pt(out / "resume_checkpoint.pt")
    assert final["model"].keys() == resume["model"].keys()
    for name, tensor in final["model"].items():
        assert torch.equal(tensor, resume["model"][name]), name


def test_best_model_is_written_only_when_validation_improves(tmp_path, text_file, monkeypatch):
    """Validation improves until step 4, then gets worse: best_model.pt holds step 4's weights."""
    from fundamentallm.training import validator
    from fundamentallm.training.checkpointer import Checkpointer

    scripted = iter([3.0, 2.0, 2.5, 2.7])  # the validation losses at steps 2, 4, 6, 8
    monkeypatch.setattr(validator.Validator, "loss", lambda self: next(scripted))
    saved_at: list[int] = []
    real_save_best = Checkpointer.save_best
    monkeypatch.setattr(Checkpointer, "save_best",
                        lambda self, state: (saved_at.append(state.step), real_save_best(self, state)))
    flags = {"eval_interval": 2, "lr_schedule": "constant", "warmup_steps": 0}
    out = train(text_file, tmp_path / "run", max_steps=8, **flags)
    assert saved_at == [2, 4]
    assert [r["step"] for r in metrics(out) if r.get("best")] == [2, 4]
    assert summary(out)["best_val_loss"] == 2.0 and summary(out)["final_val_loss"] == 2.7
    # The same run stopped at step 4 (a constant rate: the same first four steps) ends with
    # the weights that best_model.pt kept, not those of step 8.
    monkeypatch.undo()
    short = train(text_file, tmp_path / "short", max_steps=4, **flags)
    assert_same_weights(out / "best_model.pt", short / "final.pt")
    assert not same_weights(out / "best_model.pt", out / "final.pt")


def test_output_to_a_file_is_plain_lines_and_ends_with_the_next_commands(tmp_path, text_file):
    """Not a terminal (a log file, a pipe): no bar, nothing padded to a width, a plain progress
    line, and the commands to run next with the run's real paths, which run as printed."""
    out = tmp_path / "run"
    result = run_process("train", text_file, "-o", out, *tiny_args(max_steps=4, eval_interval=2))
    assert result.returncode == 0, result.stderr
    stdout = result.stdout.splitlines()
    assert not [line for line in stdout + result.stderr.splitlines() if line != line.rstrip()]  # no padding
    assert "FundamentaLLM training" in stdout and "Training finished" in stdout
    assert "  stop_reason: max_steps" in stdout
    assert re.search(r"^train +\d+%  epoch 0\.\d\d  step 1  loss [\d.]+ .* time 0:00:\d\d$", result.stderr, re.M)
    commands = stdout[stdout.index("next:") + 1:]
    final = shlex.quote(str(out / "final.pt"))
    assert commands[:2] == [f"  fundamentallm generate {final} --max-tokens 300",
                            f"  fundamentallm evaluate {final} --data {shlex.quote(str(text_file))}"]
    resume = shlex.split(commands[2])
    assert resume == ["fundamentallm", "train", str(text_file), "--output-dir", str(out), "--resume",
                      "--max-steps", "8"]
    again = run_process(*resume[1:], "--quiet")
    assert again.returncode == 0, again.stderr
    assert summary(out)["steps"] == 8  # it continued the run to the doubled budget


def test_an_interrupted_run_names_the_exact_resume_command():
    from fundamentallm.config import Config
    from fundamentallm.training.loop import next_commands, resume_command

    cfg = Config()
    cfg.data.train = ["my notes/a.txt", "b.txt"]
    cfg.checkpoint.output_dir = "runs/x"
    assert resume_command(cfg) == "fundamentallm train 'my notes/a.txt' b.txt --output-dir runs/x --resume"
    cfg.training.max_time = 30.0
    assert next_commands(cfg, "max_time", 10)[-1].endswith("--resume --max-time +30")  # 30 s more
    assert len(next_commands(cfg, "early_stopping", 10)) == 2  # validation stopped it: no more of the same


def test_a_long_run_without_a_time_budget_says_so_a_few_steps_in(tmp_path, text_file, capsys, monkeypatch):
    from fundamentallm.training import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "LONG_RUN_S", 0.0)  # every run is "long"
    train(text_file, tmp_path / "long", max_steps=12)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: at this pace")]
    assert len(notes) == 1  # said once
    assert re.fullmatch(r"note: at this pace the run needs about \d+ min more \((\d+) steps\); --max-time SECONDS "
                        r"bounds it, and Ctrl-C stops it with its state saved for --resume", notes[0])
    assert int(re.search(r"\((\d+) steps\)", notes[0]).group(1)) == 12 - 6  # the pace from step 1 to step 6
    train(text_file, tmp_path / "bounded", max_steps=12, max_time=600)
    assert "at this pace" not in capsys.readouterr().err  # a time budget bounds it already
