"""`--tensorboard`, `--wandb` and `--histogram-interval` from the command line, with the
real packages (W&B offline: these machines have no API key and no network)."""

from __future__ import annotations

import pytest

from integration_helpers import assert_one_line_error, losses, run_process, tiny_args, train


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: W&B logs offline
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def events(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_tensorboard_and_wandb_receive_every_record(tmp_path, corpus, no_wandb_login):
    plain = train(corpus, tmp_path / "plain", max_steps=4, log_interval=1)
    out = train(corpus, tmp_path / "tracked", "--tensorboard", "--wandb", "--wandb-log-model",
                max_steps=4, log_interval=1, histogram_interval=2)
    assert losses(out) == losses(plain)  # watching a run does not change it

    tb = events(out)
    train_loss = {e.step: e.value for e in tb.Scalars("Loss/train")}
    assert train_loss.keys() == losses(out).keys() == {1, 2, 3, 4}
    assert list(train_loss.values()) == pytest.approx(list(losses(out).values()), abs=1e-6)
    assert [e.step for e in tb.Scalars("Loss/val")] == [4]
    hist = tb.Tags()["histograms"]
    assert "Weights/embed.weight" in hist and "Gradients/blocks.1.mlp.down.weight" in hist
    assert [h.step for h in tb.Histograms("Gradients/embed.weight")] == [2, 4]
    assert all(h.histogram_value.max > 0 for h in tb.Histograms("Gradients/blocks.0.attn.qkv.weight"))

    [run_file] = (out / "wandb").glob("offline-run-*/run-*.wandb")
    logged = run_file.read_bytes()
    for key in (b"train_loss", b"val_loss", b"learning_rate", b"Gradients/embed.weight", b"model_dim"):
        assert key in logged, key
    run_id = run_file.stem.removeprefix("run-")
    assert f"model-{run_id}".encode() in logged and b"final.pt" in logged  # --wandb-log-model


def test_resumed_run_continues_the_tensorboard_log(tmp_path, corpus):
    out = train(corpus, tmp_path / "run", "--tensorboard", max_steps=3, log_interval=1)
    train(corpus, out, "--resume", max_steps=6, log_interval=1)  # the saved config keeps --tensorboard
    assert [e.step for e in events(out).Scalars("Loss/train")] == [1, 2, 3, 4, 5, 6]


def test_overwrite_starts_a_fresh_tensorboard_log(tmp_path, corpus):
    out = train(corpus, tmp_path / "run", "--tensorboard", max_steps=2, log_interval=1)
    train(corpus, out, "--tensorboard", "--overwrite", max_steps=3, log_interval=1)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in events(out).Scalars("Loss/train")] == [1, 2, 3]


@pytest.mark.parametrize("flags, message", [
    (["--histogram-interval", "5"], "--histogram-interval 5 needs --tensorboard or --wandb"),
    (["--wandb-log-model"], "--wandb-log-model needs --wandb"),
    (["--histogram-interval", "-1"], "--histogram-interval must be 0 or more"),
    (["--wandb", "--wandb-project", " "], "--wandb-project must not be empty"),
])
def test_settings_that_need_a_tracker(tmp_path, corpus, flags, message):
    result = run_process("train", corpus, "-o", tmp_path / "run", *tiny_args(), *flags)
    assert message in assert_one_line_error(result)
