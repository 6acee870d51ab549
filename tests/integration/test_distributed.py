"""Data-parallel training with torchrun: two CPU processes (gloo) train as one process with
twice the batch, only rank 0 writes, and a two-process run resumes exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from integration_helpers import (
    ROOT, assert_one_line_error, fundamentallm_command, load_pt, losses, metrics, process_env, run_process, summary,
    tiny_args, train,
)

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it starts groups of real processes (torchrun, gloo).
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on POSIX")]

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
    # validation is sharded (each process scores half the windows of the global batch's
    # evaluation, the sums all-reduced): the very figure one process gives
    def val(run):
        return [r["val_loss"] for r in metrics(run) if "val_loss" in r]

    assert len(val(out)) == 1 and val(out) == pytest.approx(val(single), rel=1e-6)


def test_a_two_process_run_resumes_exactly(tmp_path, corpus):
    flags = {**RUN, "dropout": 0.1}  # every process's dropout masks must continue exactly
    straight, half = tmp_path / "straight", tmp_path / "half"
    torchrun("train", corpus, "-o", straight, *tiny_args(**flags), "--quiet")
    torchrun("train", corpus, "-o", half, *tiny_args(**{**flags, "max_steps": 3}), "--quiet")
    torchrun("train", "-o", half, "--resume", "--max-steps", "6", "--quiet")
    assert list(losses(half).values()) == pytest.approx(list(losses(straight).values()), abs=1e-6)


def test_a_run_resumes_on_another_number_of_processes(tmp_path, corpus):
    """2 -> 1 and 1 -> 2 with the same global batch: the same data, step for step, so the
    losses of the uninterrupted run (no dropout: the random streams are per process)."""
    straight = train(corpus, tmp_path / "straight", **{**RUN, "batch_size": 8})  # 6 steps, 8 a step
    two = tmp_path / "two-then-one"
    torchrun("train", corpus, "-o", two, *tiny_args(**{**RUN, "max_steps": 3}), "--quiet")
    result = run_process("train", "-o", two, "--resume", "--batch-size", "8", "--max-steps", "6")
    assert result.returncode == 0, result.stderr
    assert ("note: resumed on 1 process(es), saved by 2: the same global batch (8 sequences a step), so the data "
            "position carries over exactly") in result.stderr
    assert list(losses(two).values()) == pytest.approx(list(losses(straight).values()), abs=1e-5)

    one = train(corpus, tmp_path / "one-then-two", **{**RUN, "batch_size": 8, "max_steps": 3})
    result = torchrun("train", "-o", one, "--resume", "--batch-size", "4", "--max-steps", "6", "--quiet")
    assert "resumed on 2 process(es), saved by 1" in result.stderr
    assert list(losses(one).values()) == pytest.approx(list(losses(straight).values()), abs=1e-5)


def test_another_global_batch_re_derives_the_data_position_and_says_so(tmp_path, corpus):
    out = train(corpus, tmp_path / "run", **{**RUN, "max_steps": 3})  # 4 a step
    result = run_process("train", "-o", out, "--resume", "--max-steps", "4", "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    assert ("the global batch changed from 4 to 8 sequences a step (--batch-size 4 keeps it): the data position "
            "is re-derived from the 12 windows this epoch has used") in result.stderr


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


# ---------------------------------------------------------------- fundamentallm train --nproc N
def test_nproc_launches_the_processes_itself(tmp_path, corpus):
    """`train --nproc 2` is torchrun with two processes, without typing torchrun."""
    out = tmp_path / "launched"
    result = run_process("train", corpus, "-o", out, *tiny_args(**RUN), "--nproc", "2", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    single = train(corpus, tmp_path / "single", **{**RUN, "batch_size": 8})
    assert list(losses(out).values()) == pytest.approx(list(losses(single).values()), abs=1e-5)
    assert "Traceback" not in result.stderr


def test_nproc_reports_a_workers_input_error_in_one_line(tmp_path, corpus):
    out = train(corpus, tmp_path / "taken", max_steps=1)  # a run is already there
    result = run_process("train", corpus, "-o", out, *tiny_args(), "--nproc", "2", "--quiet", timeout=300)
    line = assert_one_line_error(result)
    assert "already holds a run" in line


def test_killing_one_process_stops_the_others_with_a_clear_message(tmp_path, corpus):
    import os
    import signal
    import time

    out = tmp_path / "killed"
    argv = fundamentallm_command("train", corpus, "-o", out, *tiny_args(**{**RUN, "max_steps": 100_000}),
                                 "--nproc", "2", "--quiet")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=process_env())
    deadline = time.monotonic() + 120
    while not (out / "metrics.json").exists():  # training has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    children = [int(c) for task in os.listdir(f"/proc/{proc.pid}/task")
                for c in open(f"/proc/{proc.pid}/task/{task}/children").read().split()]
    workers = [c for c in children if "fundamentallm" in open(f"/proc/{c}/cmdline").read()]
    os.kill(workers[-1], signal.SIGKILL)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - started < 60, "the other process hung"
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "was killed by SIGKILL; the other processes were stopped; continue from the last save with --resume" \
        in stderr, stderr
    assert all(line.startswith("error:") for line in stderr.strip().splitlines()), stderr


# ---------------------------------------------------------------- FSDP
@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_fsdp_trains_as_one_process_with_the_combined_batch(tmp_path, corpus, optimizer):
    """Sharded parameters, gradients and optimizer state: the losses of one process with both
    processes' batches (Muon gathers each matrix for its Newton–Schulz step)."""
    flags = {**RUN, "optimizer": optimizer}
    out = tmp_path / "fsdp"
    result = torchrun("train", corpus, "-o", out, *tiny_args(**flags), "--fsdp", "--json")
    start = json.loads(result.stdout.splitlines()[0])
    assert start["compile"].startswith("off") and "--fsdp" in start["compile"] or start["compile"] == "off"
    single = train(corpus, tmp_path / "single", **{**flags, "batch_size": 8})
    assert list(losses(out).values()) == pytest.approx(list(losses(single).values()), abs=1e-5)
    val = [[r["val_loss"] for r in metrics(run) if "val_loss" in r] for run in (out, single)]
    assert val[0] == pytest.approx(val[1], rel=1e-5)
    # final.pt is one ordinary file: it loads and evaluates in one process, as the single run's does
    fsdp_weights, single_weights = load_pt(out / "final.pt")["model"], load_pt(tmp_path / "single" / "final.pt")["model"]
    assert fsdp_weights.keys() == single_weights.keys()
    assert all(torch.allclose(fsdp_weights[k], single_weights[k], atol=1e-5) for k in fsdp_weights)
    assert run_process("evaluate", out / "final.pt", corpus).returncode == 0


def test_fsdp_with_accumulation_and_resume_into_ddp_and_one_process(tmp_path, corpus):
    straight = train(corpus, tmp_path / "straight", **{**RUN, "batch_size": 8})  # 6 steps of 8
    flags = {**RUN, "batch_size": 2, "grad_accum_steps": 2, "max_steps": 3}  # 2 x 2 x 2 processes = 8
    fsdp = tmp_path / "fsdp-then-ddp"
    torchrun("train", corpus, "-o", fsdp, *tiny_args(**flags), "--fsdp", "--quiet")
    assert list(losses(fsdp).values()) == pytest.approx(list(losses(straight).values())[:3], abs=1e-5)
    torchrun("train", "-o", fsdp, "--resume", "--no-fsdp", "--batch-size", "4", "--grad-accum-steps", "1",
             "--max-steps", "6", "--quiet")  # DDP now, 4 x 1 x 2 processes: the same 8 a step
    assert list(losses(fsdp).values()) == pytest.approx(list(losses(straight).values()), abs=1e-5)

    again = tmp_path / "fsdp-then-one"
    torchrun("train", corpus, "-o", again, *tiny_args(**flags), "--fsdp", "--quiet")
    result = run_process("train", "-o", again, "--resume", "--batch-size", "8", "--grad-accum-steps", "1",
                         "--max-steps", "6", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "--fsdp shards a model over several processes" in result.stderr  # one process: said, not ignored
    assert list(losses(again).values()) == pytest.approx(list(losses(straight).values()), abs=1e-5)


def test_fsdp_refuses_what_it_cannot_shard_yet(tmp_path, corpus):
    result = torchrun("train", corpus, "-o", tmp_path / "x", *tiny_args(), "--fsdp", "--precision", "fp16",
                      "--quiet", expect_success=False)
    assert result.stderr.count("error: --fsdp does not work with --precision fp16") >= 1


def test_fsdp_with_activation_checkpointing_and_bf16(tmp_path, corpus):
    """Recomputed blocks inside sharded ones keep the losses; bf16 goes through FSDP's mixed
    precision (said in the start summary), close to fp32's."""
    single = train(corpus, tmp_path / "single", **{**RUN, "batch_size": 8})
    recomputed = tmp_path / "recomputed"
    torchrun("train", corpus, "-o", recomputed, *tiny_args(**RUN), "--fsdp", "--activation-checkpointing", "--quiet")
    assert list(losses(recomputed).values()) == pytest.approx(list(losses(single).values()), abs=1e-5)
    mixed = tmp_path / "bf16"
    result = torchrun("train", corpus, "-o", mixed, *tiny_args(**{**RUN, "precision": "bf16"}), "--fsdp", "--json")
    start = json.loads(result.stdout.splitlines()[0])
    assert start["precision"].startswith("bf16 through FSDP's mixed precision"), start["precision"]
    assert list(losses(mixed).values()) == pytest.approx(list(losses(single).values()), abs=0.05)


# ---------------------------------------------------------------- sharded resume state (torch.distributed.checkpoint)
def test_a_sharded_resume_state_continues_on_any_layout(tmp_path, corpus):
    """--sharded-resume: every process writes its own shards (nothing gathered on rank 0); the
    run continues from them exactly, on FSDP, DDP or one process (DCP reshards on loading)."""
    straight = train(corpus, tmp_path / "straight", **{**RUN, "batch_size": 8})
    flags = {**RUN, "max_steps": 3, "checkpoint_interval": 3}
    for name, resume in {"fsdp": ["--fsdp"], "ddp": ["--no-fsdp"], "one": None}.items():
        out = tmp_path / name
        torchrun("train", corpus, "-o", out, *tiny_args(**flags), "--fsdp", "--sharded-resume", "--quiet")
        saved = load_pt(out / "resume_checkpoint.pt")
        assert saved["model"] == {} and saved["train_state"]["sharded"]["dir"] == "resume_checkpoint.dcp/step_00000003"
        shards = sorted(p.name for p in (out / "resume_checkpoint.dcp" / "step_00000003").iterdir())
        assert ".metadata" in shards and sum(p.endswith(".distcp") for p in shards) == 2  # one per process
        if resume is None:
            result = run_process("train", "-o", out, "--resume", "--batch-size", "8", "--max-steps", "6", "--quiet")
            assert result.returncode == 0, result.stderr
        else:
            torchrun("train", "-o", out, "--resume", *resume, "--max-steps", "6", "--quiet")
        assert list(losses(out).values()) == pytest.approx(list(losses(straight).values()), abs=1e-5), name


def test_a_damaged_shard_is_reported_in_one_line(tmp_path, corpus):
    out = tmp_path / "run"
    torchrun("train", corpus, "-o", out, *tiny_args(**{**RUN, "max_steps": 3, "checkpoint_interval": 3}), "--fsdp",
             "--sharded-resume", "--quiet")
    shard = next((out / "resume_checkpoint.dcp" / "step_00000003").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    result = run_process("train", "-o", out, "--resume", "--batch-size", "8", "--max-steps", "6")
    line = assert_one_line_error(result)
    assert f"{shard.name}: damaged (its checksum does not match" in line
    result = run_process("evaluate", out / "resume_checkpoint.pt", corpus)
    assert "holds a sharded training state" in assert_one_line_error(result)
