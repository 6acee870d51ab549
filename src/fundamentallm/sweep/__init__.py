"""Hyperparameter search on Optuna: `fundamentallm sweep` (see study.py for how it runs,
space.py for the search space, report.py for what it leaves)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fundamentallm.errors import UserError
from fundamentallm.sweep.report import report_dict, trial_line, trials_table, write_best_yaml, write_plots
from fundamentallm.sweep.study import (
    SweepSettings,
    fail_orphans,
    load_study,
    open_study,
    prepare,
    queue_grid,
    run_trials,
    worker_main,
)

__all__ = ["SweepSettings", "report", "report_only", "sweep"]


def sweep(settings: SweepSettings, workers: int = 1, quiet: bool = False) -> int:
    """Run (or continue) the sweep, then report. Returns an exit status."""
    settings = prepare(settings)
    out = Path(settings.directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {out}: cannot create the directory ({exc.strerror})") from None
    study = open_study(settings, settings.space)
    err = Console(stderr=True, highlight=False)
    say = (lambda text: None) if quiet else (lambda text: err.print(text, soft_wrap=True))
    orphans = fail_orphans(study)
    if orphans:
        say(f"trial(s) {', '.join(map(str, orphans))} were running when an earlier sweep stopped: marked "
            "failed, and queued to run again")
    if settings.sampler == "grid":
        queue_grid(study, settings.space)
    done = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    if done:
        say(f"continuing the study in {settings.storage_url}: {len(done)} trial(s) finished before")
    total = settings.trials if settings.trials is not None else len(settings.space.grid_points())
    progress = TrialProgress(err, total, len(done), enabled=not quiet and err.is_terminal)

    def finished(trial) -> None:
        progress.advance()
        say(trial_line(trial, settings.objective))

    with progress:
        if workers == 1:
            ended = run_trials(settings, finished)
        else:
            ended = run_workers(settings, workers, study, done, finished)
    status = report(study, out, settings.objective, quiet=quiet)
    return 130 if ended == "interrupted" else status


def run_workers(settings: SweepSettings, workers: int, study, done: set[int], finished) -> str:
    """`workers` processes on one study; this one follows the storage and reports."""
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no torch threads forked
    portable = dataclasses.replace(settings, space=None)  # each worker reads the space file again
    processes = [context.Process(target=worker_main, args=(portable,)) for _ in range(workers)]
    for process in processes:
        process.start()
    try:
        while True:
            alive = any(p.is_alive() for p in processes)
            for trial in study.get_trials(deepcopy=False):
                if trial.state.is_finished() and trial.number not in done:
                    done.add(trial.number)
                    finished(trial)
            if not alive:
                break
            time.sleep(0.5)
    finally:
        for process in processes:
            process.join()
    codes = [p.exitcode for p in processes]
    if any(code not in (0, 130) for code in codes):
        raise UserError(f"a sweep worker failed (exit status {', '.join(map(str, codes))}); see its message above")
    return "interrupted" if 130 in codes else "done"


def report(study, out: Path, objective: str, quiet: bool = False, as_json: bool = False) -> int:
    """The table (or JSON), best.yaml and the plots."""
    data = report_dict(study)
    best = write_best_yaml(study, out)
    plots, skipped = write_plots(study, out)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    if quiet:
        return 0
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(trials_table(data["trials"], objective))
    if data["best"]:
        console.print(f"best: trial {data['best']['trial']}, {objective} {data['best']['value']:.4f}; "
                      f"retrain with: fundamentallm train --config {best} -o NEW_DIR")
    else:
        console.print("no trial has finished yet")
    for path in plots:
        console.print(f"plot: {path}")
    for reason in skipped:
        console.print(f"no plot: {reason}")
    return 0


def report_only(directory: str, storage: str | None, study_name: str, as_json: bool) -> int:
    """`fundamentallm sweep --report DIR`: the report of a sweep, finished or not."""
    out = Path(directory)
    url = storage or f"sqlite:///{out.resolve() / 'study.db'}"
    if storage is None and not (out / "study.db").is_file():
        raise UserError(f"{out}: no sweep here (no study.db); give --storage for another storage")
    study = load_study(url, study_name)
    return report(study, out, study.user_attrs.get("objective", "val_loss"), as_json=as_json)


class TrialProgress:
    """A progress bar over trials, on a terminal only (the lines per trial say the rest)."""

    def __init__(self, console: Console, total: int, completed: int, enabled: bool):
        self.console, self.total, self.completed, self.enabled = console, total, completed, enabled
        self.bar = None

    def __enter__(self) -> "TrialProgress":
        if self.enabled:
            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("trials", total=self.total, completed=self.completed)
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
