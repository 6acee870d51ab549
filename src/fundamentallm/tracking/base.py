"""The tracker interface."""

from __future__ import annotations

from typing import Any


class Tracker:
    """Receives one metrics record per log step; does nothing by default (a null tracker)."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        """Make everything logged so far durable (the loop calls this at every checkpoint)."""

    def finish(self) -> None:
        pass


class MultiTracker(Tracker):
    """Several trackers behind one: the loop always talks to exactly one tracker."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, record: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log(record)

    def flush(self) -> None:
        for tracker in self.trackers:
            tracker.flush()

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
