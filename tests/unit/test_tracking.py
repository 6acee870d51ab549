"""Metrics trackers: metrics.json written as records arrive, trimmed on resume; the loss plot."""

from __future__ import annotations

import json

from fundamentallm.tracking import JsonTracker, MultiTracker, Tracker, read_metrics


class ListTracker(Tracker):
    def __init__(self):
        self.records, self.finished = [], False

    def log(self, record):
        self.records.append(record)

    def finish(self):
        self.finished = True


class FakeClock:
    """Each reading advances time by `tick` seconds: a write takes `tick` seconds."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def steps_on_disk(tmp_path) -> list[int]:
    return [r["step"] for r in read_metrics(tmp_path / "metrics.json")]


def test_records_are_written_as_they_arrive_when_writing_is_quick(tmp_path):
    tracker = JsonTracker(tmp_path)
    tracker.log({"step": 10, "train_loss": 3.0})
    assert json.loads((tmp_path / "metrics.json").read_text()) == [{"step": 10, "train_loss": 3.0}]
    tracker.clock = lambda: tracker.next_write  # the next record is due
    tracker.log({"step": 20, "train_loss": 2.5, "val_loss": 2.7})
    assert steps_on_disk(tmp_path) == [10, 20]


def test_writes_are_spaced_by_what_they_cost(tmp_path):
    """A long run's file is slow to rewrite: the next write waits 50x the last one's time,
    so rewriting metrics.json never takes more than ~2% of the run."""
    clock = FakeClock(tick=0.1)  # every write "takes" 0.1 s: the next is due 5 s later
    tracker = JsonTracker(tmp_path, clock=clock)
    tracker.log({"step": 1})
    for step in range(2, 20):  # 0.1 s apart: not yet due
        tracker.log({"step": step})
    assert steps_on_disk(tmp_path) == [1]
    clock.now += 5.0
    tracker.log({"step": 20})
    assert steps_on_disk(tmp_path) == list(range(1, 21))


def test_flush_and_finish_write_what_is_pending(tmp_path):
    tracker = JsonTracker(tmp_path, clock=FakeClock(tick=1.0))
    tracker.log({"step": 1, "train_loss": 3.0})
    tracker.log({"step": 2, "train_loss": 2.0})
    assert steps_on_disk(tmp_path) == [1]
    tracker.flush()
    assert steps_on_disk(tmp_path) == [1, 2]
    tracker.log({"step": 3, "train_loss": 1.0})
    tracker.finish()
    assert steps_on_disk(tmp_path) == [1, 2, 3]
    assert (tmp_path / "loss_curve.png").exists()


def test_logged_records_are_copied(tmp_path):
    tracker = JsonTracker(tmp_path)
    record = {"step": 1, "train_loss": 3.0}
    tracker.log(record)
    record["train_loss"] = 99.0  # the caller reuses its dict...
    tracker.log({"step": 2, "train_loss": 2.0})
    tracker.flush()  # ...and the file is rewritten
    assert read_metrics(tmp_path / "metrics.json")[0]["train_loss"] == 3.0


def test_resume_drops_records_after_the_resume_step(tmp_path):
    first = JsonTracker(tmp_path)
    for step in (10, 20, 30, 40):
        first.log({"step": step, "train_loss": 1.0})
    first.flush()
    resumed = JsonTracker(tmp_path, resume_step=20)  # steps 30 and 40 were lost with the run
    resumed.log({"step": 30, "train_loss": 0.5})
    assert [(r["step"], r["train_loss"]) for r in read_metrics(tmp_path / "metrics.json")] == [
        (10, 1.0), (20, 1.0), (30, 0.5)]


def test_fresh_run_starts_a_new_file(tmp_path):
    (tmp_path / "metrics.json").write_text('[{"step": 5}]')
    JsonTracker(tmp_path).log({"step": 1})
    assert read_metrics(tmp_path / "metrics.json") == [{"step": 1}]


def test_read_metrics_tolerates_missing_and_garbage_files(tmp_path):
    assert read_metrics(tmp_path / "absent.json") == []
    (tmp_path / "bad.json").write_text("{not json")
    assert read_metrics(tmp_path / "bad.json") == []
    (tmp_path / "obj.json").write_text('{"step": 1}')
    assert read_metrics(tmp_path / "obj.json") == []
    (tmp_path / "mixed.json").write_text('[{"step": 1}, 7, "x"]')
    assert read_metrics(tmp_path / "mixed.json") == [{"step": 1}]


def test_finish_writes_the_loss_curve(tmp_path):
    tracker = JsonTracker(tmp_path)
    tracker.log({"step": 1, "train_loss": 3.0})
    tracker.log({"step": 2, "train_loss": 2.0, "val_loss": 2.2})
    tracker.finish()
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finish_without_records_writes_no_plot(tmp_path):
    JsonTracker(tmp_path).finish()
    assert not (tmp_path / "loss_curve.png").exists()


def test_multi_tracker_fans_out():
    a, b = ListTracker(), ListTracker()
    multi = MultiTracker([a, b])
    multi.log({"step": 1})
    multi.finish()
    assert a.records == b.records == [{"step": 1}]
    assert a.finished and b.finished
