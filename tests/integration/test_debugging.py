"""Debugging a run: gradient checks (--grad-check-interval) and --overfit-batches."""

from __future__ import annotations

import pytest

from integration_helpers import assert_one_line_error, losses, metrics, run_process, summary, tiny_args, train

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it profiles real runs.
pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_gradient_checks_land_in_metrics_plot_and_tensorboard(tmp_path, corpus):
    plain = train(corpus, tmp_path / "plain", max_steps=4, log_interval=3)
    out = train(corpus, tmp_path / "checked", "--tensorboard", max_steps=4, log_interval=3,
                grad_check_interval=2)
    assert losses(out)[4] == losses(plain)[4]  # a check only reads the gradients

    records = metrics(out)
    assert [r["step"] for r in records] == [2, 3, 4]  # a check step is a logged step
    assert [r["step"] for r in records if "gradients" in r] == [2, 4]
    from fundamentallm.checkpoint import load_checkpoint
    names = list(load_checkpoint(out / "final.pt")["model"])
    for record in records:
        if "gradients" in record:
            # every parameter, input to output
            assert list(record["gradients"]) == names
            assert all(g["grad_norm"] > 0 and g["weight_norm"] > 0 for g in record["gradients"].values())
    assert (out / "gradient_flow.png").read_bytes().startswith(PNG_MAGIC)
    assert not (plain / "gradient_flow.png").exists()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(out))
    tb.Reload()
    assert [e.step for e in tb.Scalars("GradNorm/embed.weight")] == [2, 4]
    assert [e.step for e in tb.Scalars("GradRatio/blocks.0.attn.qkv.weight")] == [2, 4]


def test_overfitting_one_batch_drives_the_loss_towards_zero(tmp_path, corpus):
    steps = {"max_steps": None, "epochs": 150, "eval_interval": 1000}
    one = summary(train(corpus, tmp_path / "one", overfit_batches=1, **steps))
    assert one["steps"] == 150  # one micro-batch: one step per epoch
    assert one["final_train_loss"] < 0.3
    assert one["final_val_loss"] > 3  # memorised, not learned
    normal = summary(train(corpus, tmp_path / "normal", max_steps=150, eval_interval=1000))
    assert normal["final_train_loss"] > 1.5  # the same steps over the whole text


def test_overfit_batches_must_fill_whole_steps(tmp_path, corpus):
    result = run_process("train", corpus, "-o", tmp_path / "run",
                         *tiny_args(overfit_batches=3, grad_accum_steps=2))
    assert "--overfit-batches 3 must be a multiple of --grad-accum-steps 2" in assert_one_line_error(result)


def test_a_diverging_run_keeps_what_it_logged(tmp_path, corpus):
    out = tmp_path / "diverged"
    # The decoupled decay multiplies each matrix by 1 - lr * wd = -999 a step: it overflows.
    result = run_process("train", corpus, "-o", out, *tiny_args(
        max_steps=40, learning_rate=1000, muon_lr=1000, gradient_clip=0, warmup_steps=0, log_interval=1,
        weight_decay=1), "--quiet")
    assert "loss became" in assert_one_line_error(result)
    steps = [r["step"] for r in metrics(out)]
    assert steps and steps == list(range(1, len(steps) + 1))  # every step before the blow-up
    assert (out / "loss_curve.png").read_bytes().startswith(PNG_MAGIC)


def test_profile_writes_a_trace_and_prints_where_the_time_goes(tmp_path, corpus, capsys):
    import json

    out = train(corpus, tmp_path / "run", "--profile", "--profile-steps", "2:4", max_steps=6)
    err = capsys.readouterr().err
    assert "profile of 2 steps" in err and "MFU" in err and "top operators by self time:" in err
    assert "peak memory" in err and "aten::" in err
    traces = list((out / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]  # Chrome trace format: Perfetto, TensorBoard
    names = {e.get("name") for e in events}
    assert {"data", "forward", "backward", "optimizer"} <= names
    summary = json.loads((out / "profile" / "summary.json").read_text())
    assert summary["steps"] == 2 and 0 < summary["mfu"] < 1 and summary["peak_gflops"] > 0
    assert sum(summary["phases"].values()) == pytest.approx(1.0, abs=0.01)
    assert summary["phases"]["backward"] > 0 and summary["phases"]["forward"] > 0


def test_profile_steps_are_checked(tmp_path, corpus):
    result = run_process("train", corpus, "-o", tmp_path / "bad", *tiny_args(), "--profile",
                         "--profile-steps", "5:3")
    assert_one_line_error(result, "--profile-steps '5:3': give START:END with 0 <= START < END")
    result = run_process("train", corpus, "-o", tmp_path / "warn", *tiny_args(max_steps=1), "--profile-steps", "1:2")
    assert result.returncode == 0 and "--profile-steps applies only with --profile" in result.stderr
    assert not (tmp_path / "warn" / "profile").exists()


def test_a_run_shorter_than_the_profile_window_says_so(tmp_path, corpus, capsys):
    out = train(corpus, tmp_path / "run", "--profile", "--profile-steps", "1:10", max_steps=3)
    assert "the run ended after 2 of the 9 profiled steps" in capsys.readouterr().err
    assert (out / "profile" / "summary.json").exists()
