"""Regularisation flags: --dropconnect, --dropout-schedule, --augment; each changes the run
as it says, and a resumed run still continues exactly."""

from __future__ import annotations

import pytest

from integration_helpers import (
    assert_one_line_error, losses, metrics, run_cli, run_process, summary, tiny_args, train,
)

BASE = {"max_steps": 6, "log_interval": 1, "eval_interval": 6, "lr_schedule": "constant"}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, corpus):
    return train(corpus, tmp_path_factory.mktemp("baseline"), **BASE)


def loss_list(out):
    return [losses(out)[s] for s in sorted(losses(out))]


def test_dropconnect_changes_training_not_evaluation(tmp_path, corpus, baseline):
    out = train(corpus, tmp_path / "dc", **BASE, dropconnect=0.3)
    # Step 1 is the same: the zero-initialised projections make every block the identity.
    assert loss_list(out)[0] == loss_list(baseline)[0]
    assert loss_list(out)[2:] != loss_list(baseline)[2:]
    rc = run_cli("evaluate", out / "final.pt", "--data", corpus, "--json")
    assert rc == 0  # the checkpoint is an ordinary model


def test_linear_dropout_schedule_rises_to_the_final_rate(tmp_path, corpus, capsys):
    out = train(corpus, tmp_path / "sched", "--json", **BASE, dropout=0.3, dropout_schedule="linear",
                dropout_start=0.1, compile=True)
    assert [r["dropout"] for r in metrics(out)] == pytest.approx([0.1, 0.14, 0.18, 0.22, 0.26, 0.3])
    assert "--dropout-schedule changes the dropout rate" in capsys.readouterr().out  # trains eagerly
    start_rate = train(corpus, tmp_path / "at_start", **BASE, dropout=0.1)
    end_rate = train(corpus, tmp_path / "at_end", **BASE, dropout=0.3)
    assert loss_list(out)[0] == loss_list(start_rate)[0]  # step 1 ran at the start rate...
    assert loss_list(out)[0] != loss_list(end_rate)[0]  # ...not at the final one


def test_constant_dropout_is_not_scheduled(baseline):
    assert all("dropout" not in r for r in metrics(baseline))


def test_augmentation_changes_the_batches_and_resumes_exactly(tmp_path, corpus, baseline):
    straight = train(corpus, tmp_path / "straight", **BASE, augment=0.1)
    assert loss_list(straight) != loss_list(baseline)
    half = train(corpus, tmp_path / "half", **{**BASE, "max_steps": 3}, augment=0.1)
    assert run_cli("train", "-o", half, "--resume", "--max-steps", "6", "--quiet") == 0
    assert loss_list(half) == pytest.approx(loss_list(straight), abs=1e-6)
    assert summary(straight)["final_val_loss"] != summary(baseline)["final_val_loss"]


@pytest.mark.parametrize("flags, message", [
    (["--dropout-start", "0.1"], "--dropout-start applies only with --dropout-schedule linear"),
    (["--augment", "1.5"], "--augment must be at least 0 and below 1"),
    (["--dropconnect", "-0.1"], "--dropconnect must be at least 0 and below 1"),
])
def test_bad_regularisation_settings(tmp_path, corpus, flags, message):
    result = run_process("train", corpus, "-o", tmp_path / "run", *tiny_args(), *flags)
    assert message in assert_one_line_error(result)
