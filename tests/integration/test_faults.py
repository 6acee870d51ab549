"""Faults a run must survive: damaged checkpoints, a disk that fills or turns read-only, a
loss that turns NaN or spikes, and memory that runs out. Nothing is lost, nothing damaged is
used, and every failure is one line. (Kills at random moments: test_crash_safety.py.)"""

from __future__ import annotations

import errno
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import load_checkpoint
from fundamentallm.model import GPT
from fundamentallm.training.runlock import LOCK_NAME
from integration_helpers import (
    ROOT, assert_same_weights, fundamentallm_command, load_pt, metrics, process_env, run_cli, summary,
    tiny_args, train,
)

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it trains on a full disk and in a directory turned read-only.
pytestmark = pytest.mark.slow

# Exact resume: a schedule that does not depend on the step count, dropout for the RNG state.
EXACT = {"lr_schedule": "constant", "dropout": 0.1, "log_interval": 1, "warmup_steps": 5,
         "checkpoint_interval": 4, "eval_interval": 100}


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # one bit flipped in the middle of the tensor data
        at = len(data) // 2
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x08]) + data[at + 1:])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus) -> Path:
    """The uninterrupted 12-step run."""
    return train(corpus, tmp_path_factory.mktemp("straight"), max_steps=12, **EXACT)


@pytest.fixture(scope="module")
def at_eight(tmp_path_factory, corpus) -> Path:
    """The same run after 8 steps: resume checkpoints at steps 8 and 4 (the previous)."""
    return train(corpus, tmp_path_factory.mktemp("eight"), max_steps=8, **EXACT)


@pytest.fixture
def run_dir(tmp_path, at_eight) -> Path:
    out = tmp_path / "run"
    shutil.copytree(at_eight, out)
    return out


# ---------------------------------------------------------------- integrity
def test_the_resume_checkpoint_before_the_latest_is_kept(at_eight):
    latest = load_checkpoint(at_eight / "resume_checkpoint.pt")["train_state"]["counters"]["step"]
    previous = load_checkpoint(at_eight / "resume_checkpoint.previous.pt")["train_state"]["counters"]["step"]
    assert (latest, previous) == (8, 4)


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped"])
def test_every_command_reports_a_damaged_file_in_one_line(run_dir, corpus, capsys, how):
    for name in ("final.pt", "resume_checkpoint.pt"):
        damage(run_dir / name, how)
    commands = {
        "evaluate": ["evaluate", run_dir / "final.pt", corpus],
        "generate": ["generate", run_dir / "final.pt", "--max-tokens", "3"],
        "init-from": ["train", corpus, "-o", run_dir.parent / "tuned", *tiny_args(), "--init-from",
                      run_dir / "final.pt"],
        "resume a path": ["train", "--resume", run_dir / "final.pt"],
    }
    for command, argv in commands.items():
        assert run_cli(*argv) == 2, command
        line = one_error_line(capsys)
        assert "final.pt: " in line and ("damaged checkpoint" in line or "not a readable checkpoint" in line), \
            (command, line)


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped"])
def test_resume_names_the_newest_intact_checkpoint_and_waits_to_be_asked(run_dir, capsys, how):
    damage(run_dir / "resume_checkpoint.pt", how)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert run_cli("train", "-o", run_dir, "--resume", "--max-steps", "12", "--quiet") == 2
    line = one_error_line(capsys)
    previous = run_dir / "resume_checkpoint.previous.pt"
    assert line.startswith(f"error: {run_dir / 'resume_checkpoint.pt'}: ")
    assert f"the newest intact checkpoint is {previous} (step 4)" in line
    assert f"--resume {previous}" in line and "--resume auto" in line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing touched


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint_and_says_so(run_dir, straight, capsys):
    damage(run_dir / "resume_checkpoint.pt", "flipped")
    assert run_cli("train", "-o", run_dir, "--resume", "auto", "--max-steps", "12") == 0
    err = capsys.readouterr().err
    assert "damaged checkpoint" in err and "continuing from resume_checkpoint.previous.pt (step 4)" in err
    assert summary(run_dir)["steps"] == 12
    assert_same_weights(run_dir / "final.pt", straight / "final.pt")  # steps 5 to 8 trained again, alike
    assert [r["step"] for r in metrics(run_dir) if "train_loss" in r] == list(range(1, 13))


def test_an_explicit_intact_checkpoint_continues_after_the_latest_is_damaged(run_dir, straight):
    damage(run_dir / "resume_checkpoint.pt", "truncated")
    previous = run_dir / "resume_checkpoint.previous.pt"
    assert run_cli("train", "--resume", previous, "-o", run_dir, "--max-steps", "12", "--quiet") == 0
    assert_same_weights(run_dir / "final.pt", straight / "final.pt")


def test_with_nothing_intact_left_resume_says_so(run_dir, capsys):
    for name in ("resume_checkpoint.pt", "resume_checkpoint.previous.pt"):
        damage(run_dir / name, "flipped")
    for resume in ("--resume", "--resume=auto"):
        assert run_cli("train", "-o", run_dir, resume, "--quiet") == 2
        assert f"no intact checkpoint of this run is left to continue from in {run_dir}" in one_error_line(capsys)


def test_a_checkpoint_from_before_checksums_still_resumes(run_dir, straight):
    path = run_dir / "resume_checkpoint.pt"
    payload = load_pt(path)
    del payload["checksum"]
    payload["version"] = 4
    torch.save(payload, path)
    assert run_cli("train", "-o", run_dir, "--resume", "--max-steps", "12", "--quiet") == 0
    assert_same_weights(run_dir / "final.pt", straight / "final.pt")


def test_half_written_files_of_a_killed_run_are_removed_when_it_resumes(run_dir):
    leftover = run_dir / ".resume_checkpoint.pt.x1y2z3.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert run_cli("train", "-o", run_dir, "--resume", "--max-steps", "9", "--quiet") == 0
    assert not leftover.exists()
    assert [p.name for p in run_dir.glob(".*")] == [LOCK_NAME]  # only the run's lock (training/runlock.py)


# ---------------------------------------------------------------- disk faults, injected
class FailingWrites:
    """From the `after`-th write of a resume checkpoint on, every write fails with `code`."""

    def __init__(self, monkeypatch, code: int, after: int):
        import fundamentallm.checkpoint as checkpoint

        self.code, self.after, self.saves = code, after, 0
        real = checkpoint.torch.save

        def save(obj, f, *args, **kwargs):
            self.saves += "train_state" in obj
            if self.saves >= self.after:
                f.write(b"PK\x03\x04 the start of a zip")  # a partial file, as a full disk leaves
                raise OSError(self.code, {errno.ENOSPC: "No space left on device",
                                          errno.EROFS: "Read-only file system"}[self.code])
            return real(obj, f, *args, **kwargs)

        monkeypatch.setattr(checkpoint.torch, "save", save)


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_a_failed_checkpoint_write_stops_the_run_and_resume_continues(tmp_path, corpus, straight, capsys,
                                                                       monkeypatch, code, cause):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        FailingWrites(patch, code, after=3)  # saves 1 and 2: steps 4 and 8; the third fails
        train(corpus, out, max_steps=12, expect=2, **EXACT)
    line = one_error_line(capsys)
    assert line.startswith(f"error: {out / 'resume_checkpoint.pt'}: cannot write ({cause}")
    assert "at step 12" in line and f"the files already in {out} are intact" in line and "--resume" in line
    if code == errno.ENOSPC:
        assert "free, about" in line and "needed" in line
    assert load_checkpoint(out / "resume_checkpoint.pt")["train_state"]["counters"]["step"] == 8
    assert not list(out.glob(".*.tmp"))
    # space freed: the run goes on from step 8 and ends as the uninterrupted one
    assert run_cli("train", "-o", out, "--resume", "--max-steps", "12", "--quiet") == 0
    assert_same_weights(out / "final.pt", straight / "final.pt")


# ---------------------------------------------------------------- disk faults, for real
def user_namespaces_work() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not user_namespaces_work(), reason="cannot mount a tmpfs here "
                                 "(needs unprivileged user namespaces); the injected disk faults above still run")


def in_tmpfs(script: str, tmp_path: Path, size: str = "16m") -> subprocess.CompletedProcess[str]:
    """Run a bash `script` with $DISK a fresh tmpfs of `size`, in a user and mount namespace of
    its own (no root needed); `fl_train` runs `fundamentallm train`, $PY is this Python."""
    disk = tmp_path / "disk"
    disk.mkdir()
    command = " ".join(f"'{a}'" for a in fundamentallm_command("train"))
    body = (f"set -u; DISK='{disk}'; PY='{sys.executable}'; fl_train() {{ {command} \"$@\"; }}\n"
            f"mount -t tmpfs -o size={size} tmpfs \"$DISK\"\n{script}")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", body],
                          capture_output=True, text=True, cwd=ROOT, env=process_env(), timeout=300)


@needs_tmpfs
def test_a_disk_that_fills_while_saving(tmp_path, corpus, straight):
    """A real full disk: room for the first checkpoints, none for the next. The run stops in
    one line naming the directory and the space it needs; freed, it continues from its last
    save and ends as the uninterrupted run did."""
    flags = " ".join(tiny_args(max_steps=12, **EXACT))
    keep = tmp_path / "kept"
    script = f"""
        fl_train '{corpus}' -o "$DISK/run" {flags} --max-steps 4 --quiet || exit 10
        size=$(stat -c %s "$DISK/run/resume_checkpoint.pt")
        free=$(df --output=avail -B1 "$DISK" | tail -1)
        fallocate -l $(( free - size / 2 )) "$DISK/filler" || exit 11   # room for half a checkpoint
        fl_train -o "$DISK/run" --resume --max-steps 12 --quiet 2> "$DISK/../err"; echo "status $?" > "$DISK/../status"
        cp -r "$DISK/run" '{keep}-full'
        rm "$DISK/filler"
        fl_train -o "$DISK/run" --resume --max-steps 12 --quiet || exit 12
        cp -r "$DISK/run" '{keep}'
    """
    result = in_tmpfs(script, tmp_path)
    assert result.returncode == 0, result.stderr
    full = Path(f"{keep}-full")
    assert (tmp_path / "status").read_text().strip() == "status 2"
    err = (tmp_path / "err").read_text().strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "resume_checkpoint.pt: cannot write (No space left on device: " in err[0]
    assert "needed" in err[0] and "at step 8" in err[0] and "--resume" in err[0], err[0]
    assert load_checkpoint(full / "resume_checkpoint.pt")["train_state"]["counters"]["step"] == 4
    assert not list(full.glob(".*.tmp"))
    assert_same_weights(keep / "final.pt", straight / "final.pt")


@needs_tmpfs
def test_an_output_directory_that_turns_read_only_mid_run(tmp_path, corpus):
    flags = " ".join(tiny_args(**{**EXACT, "max_steps": 100_000, "checkpoint_interval": 20}))
    keep = tmp_path / "kept"
    script = f"""
        fl_train '{corpus}' -o "$DISK/run" {flags} --quiet 2> "$DISK/../err" &
        pid=$!
        for i in $(seq 1 3000); do [ -e "$DISK/run/resume_checkpoint.pt" ] && break; sleep 0.01; done
        for j in $(seq 1 100); do mount -o remount,ro "$DISK" 2>/dev/null && break; sleep 0.01; done
        touch "$DISK/probe" 2>/dev/null && exit 11   # still writable: the remount never took
        wait $pid; echo "status $?" > "$DISK/../status"
        mount -o remount,rw "$DISK"
        step=$("$PY" -c "import torch,sys; print(torch.load(sys.argv[1], weights_only=True)['train_state']['counters']['step'])" "$DISK/run/resume_checkpoint.pt")
        fl_train -o "$DISK/run" --resume --max-steps $(( step + 5 )) --quiet || exit 12
        cp -r "$DISK/run" '{keep}'
    """
    result = in_tmpfs(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "status").read_text().strip() == "status 2"
    err = (tmp_path / "err").read_text().strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0] and "--resume" in err[0], err
    done = summary(keep)
    assert done["stop_reason"] == "max_steps" and done["steps"] % 20 == 5


# ---------------------------------------------------------------- numerical faults
class LossInjection:
    """Training forward passes number `calls` (counted from 1) return their loss times `factor`
    (NaN, or a large number: a real spike, its gradients scaled alike)."""

    def __init__(self, monkeypatch, calls: set[int], factor: float):
        self.calls, self.factor, self.count = calls, factor, 0
        forward = GPT.forward

        def injected(model, idx, targets=None, *args, **kwargs):
            out = forward(model, idx, targets, *args, **kwargs)
            if model.training and targets is not None:
                self.count += 1
                if self.count in self.calls:
                    return out * self.factor
            return out

        monkeypatch.setattr(GPT, "forward", injected)


def test_a_nan_loss_stops_the_run_on_the_step_it_happens(tmp_path, corpus, capsys, monkeypatch):
    LossInjection(monkeypatch, {3}, math.nan)
    out = train(corpus, tmp_path / "run", expect=2, **{**EXACT, "log_interval": 10, "max_steps": 12})
    assert "loss became nan at step 3; --skip-nonfinite N skips" in one_error_line(capsys)
    weights = load_pt(out / "resume_checkpoint.pt")["model"] if (out / "resume_checkpoint.pt").exists() else {}
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_skip_nonfinite_skips_bad_steps_without_an_update(tmp_path, corpus, capsys, monkeypatch):
    LossInjection(monkeypatch, {3, 6}, math.nan)
    out = train(corpus, tmp_path / "run", "--skip-nonfinite", "2", **{**EXACT, "max_steps": 10, "dropout": 0})
    assert capsys.readouterr().err.count("update skipped") == 2
    events = [r for r in metrics(out) if r.get("event") == "nonfinite_loss"]
    assert [(e["step"], e["skipped_steps"]) for e in events] == [(3, 1), (6, 2)]
    assert summary(out)["steps"] == 10
    assert all(torch.isfinite(w).all() for w in load_pt(out / "final.pt")["model"].values())
    # ... a third is one too many
    monkeypatch.undo()
    LossInjection(monkeypatch, {2, 4, 5}, math.nan)
    train(corpus, tmp_path / "again", "--skip-nonfinite", "2", expect=2, **{**EXACT, "max_steps": 10})
    assert "loss became nan at step 5 (after skipping 2 such step(s)" in capsys.readouterr().err


def test_a_skipped_step_leaves_the_weights_as_they_were(tmp_path, corpus, monkeypatch):
    """No update at all: a run whose step 2 is skipped holds, after step 2, the weights
    the run had after step 1 (momentum, decay and all)."""
    flags = {**EXACT, "dropout": 0, "checkpoint_interval": 1}
    one = train(corpus, tmp_path / "one", max_steps=1, **flags)
    LossInjection(monkeypatch, {2}, math.inf)
    two = train(corpus, tmp_path / "two", "--skip-nonfinite", "1", max_steps=2, **flags)
    assert_same_weights(two / "final.pt", one / "final.pt")


def test_a_loss_spike_rolls_back_to_a_checkpoint_from_before_it(tmp_path, corpus, capsys, monkeypatch):
    # steps 31 to 36 spike once (a real one: the gradients are 30x too); the replay does not
    LossInjection(monkeypatch, set(range(31, 37)), 30.0)
    flags = {**EXACT, "max_steps": 45, "checkpoint_interval": 5, "learning_rate": 3e-3}
    out = train(corpus, tmp_path / "run", "--spike-rollbacks", "1", **flags)
    err = capsys.readouterr().err
    assert "loss spike from step 31" in err and "rolled back to step 30" in err, err
    (event,) = [r for r in metrics(out) if r.get("event") == "loss_spike"]
    assert (event["step"], event["began"], event["rolled_back_to"], event["lr_factor"]) == (34, 31, 30, 0.5)
    assert summary(out)["steps"] == 45
    after = [r for r in metrics(out) if r.get("step", 0) > 30 and "lr" in r][-1]
    assert after["lr"] == pytest.approx(3e-3 * 0.5)  # the lowered rate holds from the rollback on
    assert load_pt(out / "resume_checkpoint.pt")["train_state"]["counters"]["rollbacks"] == 1


def test_spikes_beyond_the_rollbacks_allowed_stop_the_run(tmp_path, corpus, capsys, monkeypatch):
    LossInjection(monkeypatch, set(range(31, 37)) | set(range(41, 47)), 30.0)
    flags = {**EXACT, "max_steps": 60, "checkpoint_interval": 5}
    train(corpus, tmp_path / "run", "--spike-rollbacks", "1", expect=2, **flags)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: the loss spiked at step") and "after 1 rollback(s)" in line, line


def test_no_spike_test_without_spike_rollbacks(tmp_path, corpus, monkeypatch):
    LossInjection(monkeypatch, set(range(31, 37)), 30.0)
    out = train(corpus, tmp_path / "run", **{**EXACT, "max_steps": 40, "checkpoint_interval": 5})
    assert not [r for r in metrics(out) if "event" in r]
    assert summary(out)["steps"] == 40


# ---------------------------------------------------------------- resource faults
@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError(),
    RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB, other allocations: 1.00 GB)"),
], ids=["cuda", "cpu", "mps"])
def test_running_out_of_memory_is_one_line_suggesting_a_smaller_batch(tmp_path, corpus, capsys, monkeypatch,
                                                                     error):
    forward = GPT.forward

    def exhausted(model, *args, **kwargs):
        if model.training:
            raise error
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", exhausted)
    train(corpus, tmp_path / "run", expect=2)
    line = one_error_line(capsys)
    assert line.startswith("error: out of memory on cpu at step 1 (--batch-size 4")
    assert "smaller --batch-size" in line and "--grad-accum-steps" in line


def test_the_spike_settings_each_change_what_counts_as_a_spike(tmp_path, corpus, capsys, monkeypatch):
    """--spike-factor: a 30x loss is no spike against a threshold of 100x; --spike-steps 2: the
    rollback comes after two high steps, not four; --spike-window 10: a spike at step 15 is seen
    (the default window needs 20 losses first); --spike-lr-factor: the rate it leaves."""
    flags = {**EXACT, "max_steps": 40, "checkpoint_interval": 5}

    def events(out):
        return [r for r in metrics(out) if r.get("event") == "loss_spike"]

    LossInjection(monkeypatch, set(range(31, 37)), 30.0)
    assert events(train(corpus, tmp_path / "a", "--spike-rollbacks", "1", "--spike-factor", "100", **flags)) == []
    LossInjection(monkeypatch, {31, 32}, 30.0)  # each injection counts from its own start; two high steps
    (event,) = events(train(corpus, tmp_path / "b", "--spike-rollbacks", "1", "--spike-steps", "2",
                            "--spike-lr-factor", "0.25", **flags))
    assert (event["step"], event["began"], event["rolled_back_to"], event["lr_factor"]) == (32, 31, 30, 0.25)
    LossInjection(monkeypatch, set(range(15, 21)), 30.0)
    assert events(train(corpus, tmp_path / "c", "--spike-rollbacks", "1", **flags)) == []  # too early to judge
    LossInjection(monkeypatch, set(range(15, 21)), 30.0)
    (event,) = events(train(corpus, tmp_path / "d", "--spike-rollbacks", "1", "--spike-window", "10", **flags))
    assert (event["began"], event["rolled_back_to"]) == (15, 10)
