"""What a person (or a script) sees while training: a start summary, a progress bar,
validation lines and an end summary. Three modes: "rich" (people), "quiet" (only
warnings), "json" (one JSON object per line on stdout, for scripts); and "silent", for the
processes of a multi-process run other than the first (which speaks for all).

"rich" on something that is not a terminal (a log file, a pipe, a notebook cell's capture)
draws no bar and pads nothing: the summaries are `key: value` lines, and progress is one
plain line every PROGRESS_EVERY_S seconds."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fundamentallm.atomic import finite_or_none
from rich.console import Console as RichConsole
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

MODES = ("rich", "quiet", "json", "silent")
PROGRESS_EVERY_S = 30.0  # a progress line this often when stderr is not a terminal


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


class RateColumn(ProgressColumn):
    """Items per second, from rich's running estimate."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f} {self.unit}/s" if task.speed else f"– {self.unit}/s")


@contextmanager
def unit_progress(description: str, unit: str, enabled: bool = True,
                  console: RichConsole | None = None) -> Iterator[Callable[[int, int], None]]:
    """A bar over items, with their rate, on a terminal (stderr); yields `progress(done, total)`."""
    err = console or RichConsole(stderr=True, highlight=False)
    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), RateColumn(unit),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


class TrainingConsole:
    def __init__(self, mode: str = "rich"):
        self.mode = mode
        self.out = RichConsole(highlight=False)
        self.err = RichConsole(stderr=True, highlight=False)
        self.progress: Progress | None = None
        self.task = None
        self.last_line = float("-inf")  # when the last plain progress line was printed

    def _table(self, title: str, info: dict[str, Any]) -> None:
        rows = [(key, _fmt(value)) for key, value in info.items() if value is not None]
        if not self.out.is_terminal:  # a file or a pipe: plain lines, no padding to a width
            self.out.file.write(title + "\n" + "".join(f"  {key}: {value}\n" for key, value in rows))
            self.out.file.flush()
            return
        table = Table(title=title, show_header=False, title_justify="left", box=None)
        for key, value in rows:
            table.add_row(f"[bold]{key}[/]", value)
        self.out.print(table)

    def _json(self, event: str, data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(finite_or_none({"event": event, **data})) + "\n")
        sys.stdout.flush()

    def start(self, info: dict[str, Any]) -> None:
        if self.mode == "rich":
            self._table("FundamentaLLM training", info)
            if not self.err.is_terminal:
                return  # update() prints plain lines instead
            self.progress = Progress(  # the run's own clock is in the info ("time"), as in the summary
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.fields[info]}"), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.err, transient=False,
            )
            self.task = self.progress.add_task("train", total=1000, info="starting")
            self.progress.start()
        elif self.mode == "json":
            self._json("start", info)

    @contextmanager
    def stage(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A preparation step before training (tokenizing a large corpus): a progress bar in
        rich mode; yields `advance(n)`."""
        if self.mode != "rich" or not self.err.is_terminal:  # a log file gets no bar
            yield lambda n: None
            return
        with Progress(TextColumn(f"[bold]{description}"), BarColumn(), TextColumn("{task.completed:,.0f}"),
                      TimeElapsedColumn(), console=self.err, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    def update(self, progress: float, fields: dict[str, Any]) -> None:
        """progress in [0, 1]; fields shown beside the bar (epoch, step, loss, lr, tok/s)."""
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
        if self.progress is not None:
            self.progress.update(self.task, completed=1000 * progress, info=info)
        elif self.mode == "rich" and time.monotonic() - self.last_line >= PROGRESS_EVERY_S:
            self.last_line = time.monotonic()
            self.err.file.write(f"train {100 * progress:3.0f}%  {info}\n")
            self.err.file.flush()

    def record(self, record: dict[str, Any]) -> None:
        if self.mode == "json":
            self._json("metrics", record)
        elif self.mode == "rich" and "val_loss" in record:
            (self.progress.console if self.progress else self.err).print(
                f"step {record['step']:>6}  train {record['train_loss']:.4f}  "
                f"val {record['val_loss']:.4f}" + ("  (best)" if record.get("best") else "")
            )

    def message(self, text: str) -> None:
        """Warnings and notes: shown in every mode but "silent", on stderr."""
        if self.mode != "silent":
            console = self.progress.console if self.progress else self.err
            console.print(text, soft_wrap=True, markup=False, highlight=False)  # one line, as written

    def end(self, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.mode == "rich":
            self._table("Training finished", summary)
        elif self.mode == "json":
            self._json("end", summary)

    def next_commands(self, title: str, commands: list[str]) -> None:
        """What to run next, with the run's real paths (rich mode: a person is reading)."""
        if self.mode == "rich":
            self.out.file.write(f"{title}\n" + "".join(f"  {command}\n" for command in commands))
            self.out.file.flush()


def amount(n: int, unit: str = "") -> str:
    """With a decimal prefix: 512 -> "512", 40_960 -> "41K", 1_500_000 -> "1.5M"; a unit follows the prefix."""
    for factor, prefix in ((10**9, "G"), (10**6, "M"), (10**3, "K")):
        if n >= factor:
            value = n / factor
            number = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
            return f"{number}{unit[:1]}{prefix}{unit[1:]}"
    return f"{n}{unit}"
