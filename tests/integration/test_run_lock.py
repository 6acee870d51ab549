"""One writer per run directory (training/runlock.py), with real processes: a live run refuses a
second writer in one line naming it, whatever its flags (--resume auto, --overwrite); a run
killed with SIGKILL leaves a lock the next run takes over without a word; two runs started
together into one new directory leave one run in it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fundamentallm.training.runlock import LOCK_NAME, exclusive
from helpers import ROOT, fundamentallm_command, process_env
from integration_helpers import assert_one_line_error, run_process, sample_text, tiny_args

pytestmark = pytest.mark.skipif(os.name != "posix", reason="runs are locked with fcntl (POSIX)")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lock") / "text.txt"
    path.write_text(sample_text(20_000), encoding="utf-8")
    return path


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(fundamentallm_command("train", data, "--output-dir", out, *tiny_args(**{"max_steps": None}),
                                                  "--quiet", *extra),
                            cwd=ROOT, env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_live_run_refuses_a_second_writer_and_a_killed_one_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    live = start(data, out, "--max-time", "60", "--checkpoint-interval", "5")
    try:
        wait_for(lambda: (out / "resume_checkpoint.pt").exists())  # it holds the lock and has written
        holder = f"process {live.pid} on {socket.gethostname()}"
        for extra in (("--resume", "auto"), ("--overwrite",), ()):
            refused = run_process("train", data, "--output-dir", out, *tiny_args(), *extra)
            assert_one_line_error(refused, f"{out} is in use by another run ({holder})")
        assert (out / "resume_checkpoint.pt").exists()  # --overwrite removed nothing of the live run
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    resumed = run_process("train", data, "--output-dir", out, "--resume", "--max-time", "+2")
    assert resumed.returncode == 0, resumed.stderr
    assert "in use" not in resumed.stderr
    assert (out / LOCK_NAME).read_text().split()[0] != str(live.pid)  # the new holder wrote itself


def test_two_runs_racing_into_one_new_directory_leave_one_run(data, tmp_path):
    out = tmp_path / "new"
    runs = [start(data, out, "--max-steps", "40") for _ in range(2)]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "is in use by another run" in loser or "already holds a run" in loser, loser
    steps = [r["step"] for r in json.loads((out / "metrics.json").read_text())]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # the records of one run only


def test_an_export_target_has_one_writer_and_a_failed_run_leaves_no_directory(data, tmp_path):
    checkpoint = tmp_path / "run"
    assert run_process("train", data, "--output-dir", checkpoint, *tiny_args()).returncode == 0
    target = tmp_path / "exported"
    with exclusive(tmp_path, tmp_path / f".{target.name}.lock", "export"):
        assert_one_line_error(run_process("export", checkpoint / "final.pt", target),
                              f"{tmp_path} is in use by another export (process {os.getpid()}")
    assert run_process("export", checkpoint / "final.pt", target).returncode == 0
    assert not (tmp_path / f".{target.name}.lock").exists()  # an export leaves only what it exported
    missing = run_process("train", tmp_path / "absent.txt", "--output-dir", tmp_path / "never", *tiny_args())
    assert_one_line_error(missing, "no such file")
    assert not (tmp_path / "never").exists()
