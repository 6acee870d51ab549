"""`train --nproc`'s one line for a failed run (training/launcher.py report_failure), on
failures as the elastic agent records them, including the race in which it records another
rank's input error before rank 0's (whose line is on the console already)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from fundamentallm.errors import ERROR_DIR_VARIABLE, error_file
from fundamentallm.training.launcher import report_failure

LINE = "error: runs/x already holds a run; continue it with --resume"


def failed(**exitcodes: int) -> SimpleNamespace:
    """A ChildFailedError's view: failures by rank, the first in time first."""
    failures = {int(rank.removeprefix("rank")): SimpleNamespace(exitcode=code) for rank, code in exitcodes.items()}
    return SimpleNamespace(failures=failures, get_first_failure=lambda: next(iter(failures.items())))


def test_an_input_error_rank_0_has_shown_is_not_repeated(tmp_path, capsys):
    """Rank 1's exit was recorded and rank 0's not yet, but rank 0 printed the line."""
    error_file(tmp_path, 0).write_text(LINE)
    error_file(tmp_path, 1).write_text(LINE)
    assert report_failure(failed(rank1=2), tmp_path, 2) == 2
    assert capsys.readouterr().err == ""


def test_an_input_error_only_another_rank_printed_is_shown_once(tmp_path, capsys):
    error_file(tmp_path, 1).write_text(LINE)
    assert report_failure(failed(rank1=2), tmp_path, 2) == 2
    assert capsys.readouterr().err == LINE + "\n"


def test_an_input_error_without_its_line_says_which_process(tmp_path, capsys):
    assert report_failure(failed(rank1=2), tmp_path, 2) == 2
    assert capsys.readouterr().err == "error: process 1 of 2 stopped with an input error\n"


def test_a_killed_process_is_named_with_how_it_ended(tmp_path, capsys):
    assert report_failure(failed(rank1=-9), tmp_path, 2) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: process 1 of 2 was killed by SIGKILL") and "--resume" in err


def test_a_worker_leaves_its_error_line_where_the_launcher_looks(tmp_path):
    """A real process: with the launcher's variable set, the line printed is also in
    error-RANK.txt; without it, nothing is written."""
    command = [sys.executable, "-m", "fundamentallm", "train", str(tmp_path / "missing.txt")]
    env = {**os.environ, ERROR_DIR_VARIABLE: str(tmp_path), "RANK": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert error_file(tmp_path, 1).read_text() == done.stderr.strip()
    env.pop(ERROR_DIR_VARIABLE)
    subprocess.run(command, env={**env, "RANK": "3"}, capture_output=True, text=True, timeout=120)
    assert not error_file(tmp_path, 3).exists()
