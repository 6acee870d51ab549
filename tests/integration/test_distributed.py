"""Data-parallel training with torchrun: two CPU processes (gloo) train as one process with
twice the batch, only rank 0 writes, and a two-process run resumes exactly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from integration_helpers import (
    ROOT, assert_one_line_error, fundamentallm_command, losses, metrics, process_env, run_process, summary,
    tiny_args, train,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on POSIX")

RUN = {"max_steps": 6, "log_interval": 1, "eval_interval": 6, "lr_schedule": "constant", "batch_size": 4}


def torchrun(*argv, processes: int = 2, expect_success: bool = True) -> subprocess.CompletedProcess[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = fundamentallm_command(*argv)[1:]  # torchrun starts the interpreters: `-m fundamentallm ...`
    result = subprocess.run([*launcher, *command], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=process_env())
    assert (result.returncode == 0) == expect_success, result.stderr[-3000:]
    return result


def test_two_processes_train_as_one_with_twice_the_batch(tmp_path, corpus):
    out = tmp_path / "ddp"
    torchrun("train", corpus, "-o", out, *tiny_args(**RUN), "--quiet")
    single = train(corpus, tmp_path / "single", **{**RUN, "batch_size": 8})
    assert sorted(losses(out)) == list(range(1, 7))  # one metrics.json, one record per step
    assert list(losses(out).values()) == pytest.approx(list(losses(single).values()), abs=1e-5)
    assert [r["tokens"] for r in metrics(out)] == [r["tokens"] for r in metrics(single)]
    assert summary(out)["steps"] == 6 and not list(out.glob("*.tmp"))


def test_a_two_process_run_resumes_exactly(tmp_path, corpus):
    flags = {**RUN, "dropout": 0.1}  # every process's dropout masks must continue exactly
    straight, half = tmp_path / "straight", tmp_path / "half"
    torchrun("train", corpus, "-o", straight, *tiny_args(**flags), "--quiet")
    torchrun("train", corpus, "-o", half, *tiny_args(**{**flags, "max_steps": 3}), "--quiet")
    torchrun("train", "-o", half, "--resume", "--max-steps", "6", "--quiet")
    assert list(losses(half).values()) == pytest.approx(list(losses(straight).values()), abs=1e-6)

    result = run_process("train", "-o", half, "--resume", "--max-steps", "8")  # one process now
    assert "this run trained on 2 process(es); resume it on as many" in assert_one_line_error(result)


def test_processes_agree_on_when_time_is_up(tmp_path, corpus):
    """Each process has its own clock; rank 0's decision to stop is everyone's (no hang)."""
    out = tmp_path / "timed"
    torchrun("train", corpus, "-o", out, *tiny_args(**{**RUN, "max_steps": None, "epochs": 1000}),
             "--max-time", "3", "--quiet")
    assert summary(out)["stop_reason"] == "max_time"
    assert metrics(out)[-1]["step"] == summary(out)["steps"]  # the last step was logged once, by rank 0


def test_an_error_on_rank_0_stops_every_process(tmp_path, corpus):
    out = train(corpus, tmp_path / "taken", max_steps=1)  # a run is already there
    result = torchrun("train", corpus, "-o", out, *tiny_args(), "--quiet", expect_success=False)
    assert result.stderr.count("already holds a run") == 2  # both processes, at once: no hang
