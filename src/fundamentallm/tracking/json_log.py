"""metrics.json (a JSON list of records, rewritten atomically as training runs) and
loss_curve.png (train and validation loss against step)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from fundamentallm.atomic import write_json
from fundamentallm.plots import new_figure, save_figure
from fundamentallm.tracking.base import Tracker


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records from a metrics.json; an absent or unreadable file gives none."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def plot_losses(records: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    fig, ax = new_figure(9, 5)
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)


class JsonTracker(Tracker):
    """Writes OUTPUT_DIR/metrics.json as records arrive and loss_curve.png at the end.

    Each write rewrites the whole file (it is one JSON list), so its cost grows with the run.
    A record is written at once unless the last write was recent, measured in multiples of
    what that write took (`WRITE_GAP`), so at most about 2% of a long run goes into
    metrics.json; `flush()` (at every checkpoint) and `finish()` write it regardless.

    When a run resumes at step S, records after S (from the part of the run that was lost)
    are dropped, so the file reads as one uninterrupted run.
    """

    name = "metrics.json"
    WRITE_GAP = 50  # wait at least this many times the last write's duration before the next

    def __init__(self, output_dir: str | Path, resume_step: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.dir = Path(output_dir)
        self.records: list[dict[str, Any]] = []
        self.clock = clock
        self.next_write = -math.inf
        self.pending = False  # records logged since the last write
        if resume_step is not None:
            old = read_metrics(self.dir / "metrics.json")
            self.records = [r for r in old if r.get("step", 0) <= resume_step]

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))
        self.pending = True
        if self.clock() >= self.next_write:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.pending = False
        start = self.clock()
        write_json(self.dir / "metrics.json", self.records)
        end = self.clock()
        self.next_write = end + self.WRITE_GAP * (end - start)

    def finish(self) -> None:
        self.flush()
        if self.records:
            plot_losses(self.records, self.dir / "loss_curve.png", title=str(self.dir))
