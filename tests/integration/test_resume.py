"""Resuming: an interrupted-and-resumed run is the uninterrupted run, step for step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fundamentallm.checkpoint import seal

from integration_helpers import (
    ROOT, assert_same_weights, fundamentallm_command, load_pt, losses, metrics, process_env, run_cli, sample_text,
    summary, tiny_args, train,
)

# Exact resume needs a schedule that does not depend on the total step count (the 10-step
# and 20-step runs would decay differently); dropout makes the RNG state matter.
EXACT = {"lr_schedule": "constant", "dropout": 0.1, "log_interval": 1, "warmup_steps": 15}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus) -> Path:
    """The uninterrupted 20-step run."""
    return train(corpus, tmp_path_factory.mktemp("straight"), max_steps=20, **EXACT)


@pytest.fixture(scope="module")
def first_half(tmp_path_factory, corpus) -> Path:
    """The same run stopped after 10 steps (kept pristine: tests copy it)."""
    return train(corpus, tmp_path_factory.mktemp("half"), max_steps=10, **EXACT)


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_resume_continues_exactly(tmp_path, straight, first_half):
    out = copy_run(first_half, tmp_path / "run")
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "20", "--quiet") == 0
    expected, got = losses(straight), losses(out)
    assert sorted(got) == list(range(1, 21))  # one uninterrupted history in metrics.json
    for step in range(1, 21):
        assert got[step] == pytest.approx(expected[step], rel=0, abs=1e-6), step
    assert [r.get("val_loss") for r in metrics(out)] == pytest.approx(
        [r.get("val_loss") for r in metrics(straight)], abs=1e-6)
    assert_same_weights(out / "final.pt", straight / "final.pt")
    s, t = summary(out), summary(straight)
    assert (s["steps"], s["tokens"], s["stop_reason"]) == (t["steps"], t["tokens"], t["stop_reason"])
    assert s["best_val_loss"] == pytest.approx(t["best_val_loss"], abs=1e-6)


def test_resume_across_epochs_with_accumulation(tmp_path, tiny_text):
    # 600 characters, no validation: (599 // 16) // (4 * 2) = 4 steps an epoch, so the
    # resumed run starts mid-epoch and crosses two epoch boundaries (new shuffles).
    data = tmp_path / "short.txt"
    data.write_text(tiny_text[:600])
    flags = {**EXACT, "val_split": 0, "grad_accum_steps": 2}
    straight = train(data, tmp_path / "straight", max_steps=12, **flags)
    resumed = train(data, tmp_path / "resumed", max_steps=6, **flags)
    assert run_cli("train", "-o", resumed, "--resume", "--max-steps", "12", "--quiet") == 0
    assert summary(straight)["epochs"] == summary(resumed)["epochs"] == 3
    expected, got = losses(straight), losses(resumed)
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], rel=0, abs=1e-6), step
    assert_same_weights(resumed / "final.pt", straight / "final.pt")


def test_resume_from_explicit_path(tmp_path, straight, first_half):
    checkpoint = tmp_path / "saved.pt"
    checkpoint.write_bytes((first_half / "resume_checkpoint.pt").read_bytes())
    out = tmp_path / "elsewhere"
    assert run_cli("train", "--resume", checkpoint, "-o", out, "--max-steps", "20", "--quiet") == 0
    expected, got = losses(straight), losses(out)
    assert sorted(got) == list(range(11, 21))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=0, abs=1e-6), step
    assert_same_weights(out / "final.pt", straight / "final.pt")
    assert (first_half / "final.pt").exists() and summary(first_half)["steps"] == 10  # untouched


def test_resume_keeps_the_run_settings(tmp_path, first_half, capsys):
    # No data, no model flags: everything comes from the checkpoint's config.
    out = copy_run(first_half, tmp_path / "run")
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "12", "--json") == 0
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["resumed"].startswith("step 10 (")
    saved = load_pt(out / "final.pt")["config"]
    assert saved["model"]["model_dim"] == 32 and saved["model"]["dropout"] == 0.1
    assert saved["training"]["max_steps"] == 12


@pytest.mark.parametrize("name", ["final.pt", "best_model.pt"])
def test_resume_from_a_weights_only_checkpoint_starts_a_new_run_from_it(tmp_path, first_half, capsys, name):
    out = copy_run(first_half, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a learning rate of 1e-30: one step leaves the weights as they were (below float32's
    # resolution), so they are the ones the new run started from
    assert run_cli("train", "-o", out, "--resume", out / name, "--max-steps", "1", "--learning-rate", "1e-30",
                   "--quiet") == 0
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "holds model weights only" in note[0] and "fresh optimizer" in note[0]
    continued = tmp_path / "run-continued"
    assert str(continued) in note[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old run is untouched
    assert_same_weights(load_pt(continued / "final.pt")["model"], load_pt(out / name)["model"])
    assert summary(continued)["steps"] == 1  # step 0 onwards: a new run, not step 10 onwards
    # and it trains: with the run's own rate, the weights move (into the next free directory)
    assert run_cli("train", "-o", out, "--resume", out / name, "--max-steps", "3", "--quiet") == 0
    assert "run-continued-2" in capsys.readouterr().err
    assert not torch.equal(load_pt(tmp_path / "run-continued-2" / "final.pt")["model"]["embed.weight"],
                           load_pt(out / name)["model"]["embed.weight"])
    config = load_pt(tmp_path / "run-continued-2" / "final.pt")["config"]
    assert config["optim"]["lr_schedule"] == "constant"  # the run's other settings, kept


def test_resume_with_a_different_model_fails(tmp_path, first_half, capsys):
    out = copy_run(first_half, tmp_path / "run")
    before = (out / "metrics.json").read_bytes()
    assert run_cli("train", "-o", out, "--resume", "--model-dim", "64", "--num-heads", "4",
                   "--max-steps", "20") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert (out / "metrics.json").read_bytes() == before


def test_resume_without_a_checkpoint_fails(tmp_path, capsys):
    assert run_cli("train", "-o", tmp_path / "empty", "--resume") == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_resuming_a_finished_run_reports_its_last_loss(tmp_path, first_half, capsys):
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    out = copy_run(first_half, tmp_path / "run")
    assert run_cli("train", "-o", out, "--resume", "--quiet") == 0
    assert summary(out)["steps"] == 10
    text = (out / "summary.json").read_text()
    s = json.loads(text, parse_constant=reject)
    last = metrics(first_half)[-1]
    assert s["final_train_loss"] == last["train_loss"]
    assert s["final_val_loss"] == last["val_loss"]
    assert metrics(out) == metrics(first_half)  # no step taken, nothing logged twice
    # the same in --json output: strict JSON, the last loss of the finished run
    capsys.readouterr()
    assert run_cli("train", "-o", out, "--resume", "--json") == 0
    events = [json.loads(line, parse_constant=reject) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["start", "end"]
    assert events[-1]["final_train_loss"] == last["train_loss"] and events[-1]["steps"] == 10


def drop_stopping_reference(state: dict) -> None:
    del state["counters"]["stopping_reference"]  # as written before that counter existed


def replace_state(state: dict) -> str:
    return "oops"


@pytest.mark.parametrize("edit", [drop_stopping_reference, replace_state])
def test_resume_from_an_older_or_malformed_state_is_not_a_traceback(tmp_path, first_half, capsys,
                                                                    edit):
    out = copy_run(first_half, tmp_path / "run")
    payload = load_pt(out / "resume_checkpoint.pt")
    payload["train_state"] = edit(payload["train_state"]) or payload["train_state"]
    seal(payload)  # a well-formed file holding an older or malformed state, not a damaged one
    torch.save(payload, out / "resume_checkpoint.pt")
    rc = run_cli("train", "-o", out, "--resume", "--max-steps", "12", "--quiet")
    assert rc in (0, 2)  # continue (from a sensible default), or refuse in one line
    if rc == 2:
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    else:
        assert summary(out)["steps"] == 12


def test_fresh_run_will_not_mix_with_an_earlier_one(tmp_path, text_file, capsys):
    out = train(text_file, tmp_path / "run", max_steps=2)
    before = (out / "metrics.json").read_bytes()
    train(text_file, out, max_steps=3, expect=2)
    assert "error:" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    train(text_file, out, "--overwrite", max_steps=3)
    assert [r["step"] for r in metrics(out)] == [3]
    assert summary(out)["steps"] == 3


# ---------------------------------------------------------------- Ctrl-C and SIGTERM, in a real process
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_a_resumable_state(tmp_path, corpus, sig, status):
    """Ctrl-C, or the SIGTERM a cluster scheduler sends before it preempts a job."""
    out = tmp_path / "run"
    argv = fundamentallm_command("train", corpus, "-o", out, *tiny_args(
        max_steps=100_000, eval_interval=1000, log_interval=1, checkpoint_interval=100_000), "--quiet")
    # A shell may start background jobs with SIGINT ignored, which Python would inherit.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=process_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never wrote metrics.json"
            time.sleep(0.02)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr  # tells the user how to continue
    # acknowledged once, when it came (a thread that waits on signal.set_wakeup_fd's pipe, or the handler)
    assert stderr.count(f"{sig.name}: stopping after this step, with its state saved for --resume") == 1, stderr
    assert ("Ctrl-C again stops at once" in stderr) == (sig == signal.SIGINT)
    assert f"continue exactly where it stopped with: fundamentallm train {corpus} --output-dir {out} --resume" in stderr

    state = load_pt(out / "resume_checkpoint.pt")
    step = state["train_state"]["counters"]["step"]
    records = metrics(out)
    assert 0 < step < 100_000
    assert records[-1]["step"] == step
    assert summary(out)["stop_reason"] == "interrupted"
    assert summary(out)["signal"] == sig.name

    # ... and the run goes on from there.
    assert run_cli("train", "-o", out, "--resume", "--max-steps", str(step + 3), "--quiet") == 0
    assert summary(out)["steps"] == step + 3
    assert [r["step"] for r in metrics(out)] == list(range(1, step + 4))


def test_resume_auto_starts_afresh_then_continues(tmp_path, corpus):
    out = tmp_path / "job"
    for steps in (3, 6):  # the same command, run twice, as a restarted job would be
        assert run_cli("train", corpus, "-o", out, *tiny_args(max_steps=steps, log_interval=1),
                       "--resume", "auto", "--quiet") == 0
        assert summary(out)["steps"] == steps
    assert [r["step"] for r in metrics(out)] == list(range(1, 7))


def test_resume_errors_name_the_checkpoint_file(tmp_path, first_half, capsys):
    out = copy_run(first_half, tmp_path / "run")
    assert run_cli("train", "-o", out, "--resume", "--model-dim", "64", "--quiet") == 2
    assert capsys.readouterr().err.startswith(f"error: {out / 'resume_checkpoint.pt'}: a resumed run keeps")


# ---------------------------------------------------------------- a time budget across resumes
def test_more_time_for_a_finished_run(tmp_path, corpus, capsys):
    """`--max-time +S`: S more seconds for a run whose budget ran out; the start summary says
    what is left and what the learning rate does, and the rate re-warms instead of jumping."""
    out = train(corpus, tmp_path / "run", max_time=1.5, max_steps=None, log_interval=1, eval_interval=10_000,
                warmup_steps=5)
    first = summary(out)
    assert first["stop_reason"] == "max_time" and first["steps"] > 10
    before = [r["lr"] for r in metrics(out)]
    capsys.readouterr()

    assert run_cli("train", "-o", out, "--resume", "--json") == 0  # no time left: nothing to train
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "its --max-time 1.5 s is used: nothing to train (add time with --max-time +SECONDS)" in start["resumed"]
    assert summary(out)["steps"] == first["steps"]

    assert run_cli("train", "-o", out, "--resume", "--max-time", "+1.5", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    start = json.loads(lines[0])
    assert f"step {first['steps']:,} (" in start["resumed"] and "s of --max-time" in start["resumed"]
    assert "re-warms to" in start["resumed"] and "then cosine to" in start["resumed"]
    saved = yaml.safe_load((out / "config.yaml").read_text())["training"]["max_time"]
    last = metrics(out)[len(before) - 1]["elapsed_s"]  # the first run's clock at its last step
    assert saved == pytest.approx(last + 1.5, abs=0.05)  # made absolute, then saved
    after = [r["lr"] for r in metrics(out)][len(before):]
    assert summary(out)["steps"] > first["steps"] and summary(out)["stop_reason"] == "max_time"
    # from the decayed rate, a fifth of the way to the new plan (warmup 5), not at once
    assert before[-1] < after[0] < after[3] and after[0] < 0.5 * max(after)
    assert after[-1] == pytest.approx(min(after), rel=0.05)  # decayed again by the new end


def test_more_time_needs_a_run_to_add_it_to(tmp_path, corpus, capsys):
    assert run_cli("train", corpus, "-o", tmp_path / "new", "--max-time", "+30") == 2
    assert capsys.readouterr().err.startswith("error: --max-time +30 adds time to a run continued with --resume")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the data file open")
def test_a_stop_signal_while_the_data_loads_stops_at_once(tmp_path):
    """Before the first step there is nothing to save: Ctrl-C is said at once and ends the command."""
    data = tmp_path / "big.txt"
    data.write_text(sample_text(1_000_000) * 20, encoding="utf-8")  # 20 MB: seconds of reading and tokenizing
    argv = fundamentallm_command("train", data, "-o", tmp_path / "run", *tiny_args(), "--token-cache", "off")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=process_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        fds = Path(f"/proc/{proc.pid}/fd")
        while not any(str(data) == os.path.realpath(fd) for fd in fds.iterdir()):  # reading the data
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the data file was never opened"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "SIGINT: stopping now (nothing trained yet: no state to save)" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run" / "resume_checkpoint.pt").exists()


# ---------------------------------------------------------------- the data a run trained on
def test_resume_on_changed_data_is_refused_unless_new_data_and_then_names_what_changed(tmp_path, tiny_text, capsys):
    text = tmp_path / "train.txt"
    text.write_text(tiny_text, encoding="utf-8")
    out = train(text, tmp_path / "run", max_steps=4, checkpoint_interval=2)
    capsys.readouterr()
    with text.open("a", encoding="utf-8") as f:
        f.write("Ça été ☃ naïve ☃\n")  # characters the run's character tokenizer never saw
    before = (out / "resume_checkpoint.pt").read_bytes()
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "6", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was trained on other data" in err and "--new-data" in err, err
    size = len(tiny_text.encode())
    assert f"{text} {size:,} → {text.stat().st_size:,} bytes" in err, err
    assert (out / "resume_checkpoint.pt").read_bytes() == before  # nothing trained, nothing written

    assert run_cli("train", "-o", out, "--resume", "--max-steps", "6", "--new-data", "--json") == 0
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    change = start["data changed"]
    assert "training data changed" in change and "6 characters it has no token for" in change, change
    assert "'☃' ×2" in change and "'Ç' ×1" in change, change
    assert summary(out)["steps"] == 6
    # the run now holds the new data's fingerprint: resuming on it needs no flag
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "7", "--quiet") == 0


def test_resume_on_the_same_data_moved_elsewhere_goes_on(tmp_path, tiny_text, capsys):
    first = tmp_path / "a" / "train.txt"
    first.parent.mkdir()
    first.write_text(tiny_text, encoding="utf-8")
    out = train(first, tmp_path / "run", max_steps=3, checkpoint_interval=3)
    moved = tmp_path / "b" / "corpus.txt"
    moved.parent.mkdir()
    first.rename(moved)
    assert run_cli("train", moved, "-o", out, "--resume", "--max-steps", "5", "--quiet") == 0
    assert summary(out)["steps"] == 5


def test_resume_with_another_split_is_other_data(tmp_path, tiny_text, capsys):
    text = tmp_path / "train.txt"
    text.write_text(tiny_text, encoding="utf-8")
    out = train(text, tmp_path / "run", max_steps=3, checkpoint_interval=3)
    capsys.readouterr()
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "5", "--val-split", "0.2", "--quiet") == 2
    assert "the validation split changed (--val-split 0.1 → --val-split 0.2)" in capsys.readouterr().err


def test_new_data_without_resume_says_it_cannot_act(tmp_path, tiny_text, capsys):
    text = tmp_path / "train.txt"
    text.write_text(tiny_text, encoding="utf-8")
    train(text, tmp_path / "run", "--new-data", expect=2)
    assert "applies only with --resume" in capsys.readouterr().err


def test_a_run_saved_before_the_embedding_had_its_own_rate_resumes(tmp_path, corpus):
    """Checkpoints from before --embedding-lr trained an untied embedding at --learning-rate
    (one AdamW group for it and the rest); resumed, they keep that rate and that layout."""
    out = train(corpus, tmp_path / "old", max_steps=2, learning_rate=2e-3, embedding_lr=2e-3)
    payload = load_pt(out / "resume_checkpoint.pt")
    del payload["config"]["optim"]["embedding_lr"]
    seal(payload)
    torch.save(payload, out / "resume_checkpoint.pt")
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "4", "--quiet") == 0
    assert summary(out)["steps"] == 4
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["embedding_lr"] == 2e-3


def test_an_optimizer_state_with_other_parameter_groups_is_a_one_line_error(tmp_path, corpus, capsys):
    """A checkpoint whose optimizer grouped the parameters otherwise (an older version's layout)
    cannot be resumed: one line naming the way on (--init-from), exit 2, not torch's traceback."""
    out = train(corpus, tmp_path / "old", max_steps=2)
    payload = load_pt(out / "resume_checkpoint.pt")
    groups = payload["train_state"]["optimizer"]["param_groups"]
    groups[0]["params"] += groups.pop()["params"]  # two groups merged into one, as an older layout did
    seal(payload)
    torch.save(payload, out / "resume_checkpoint.pt")
    capsys.readouterr()
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "4", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different number of parameter groups" in err
    assert f"--init-from {out / 'resume_checkpoint.pt'}" in err
