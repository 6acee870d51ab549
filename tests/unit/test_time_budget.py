"""--max-time: whether compiling pays within the budget, the stop that keeps room for the
closing validation, and the learning rate of a run resumed with more time."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fundamentallm.config import OptimConfig, TrainingConfig
from fundamentallm.training import compilation
from fundamentallm.training.compilation import CompileHistory, CompileJob, resolve_compile
from fundamentallm.training.distributed import Cluster
from fundamentallm.training.schedule import LRSchedule
from fundamentallm.training.stopping import Interrupt, StopCondition

CPU = torch.device("cpu")


@pytest.fixture
def compiler(monkeypatch):
    """A machine with a C++ compiler, whatever this one has."""
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)


def job(layers: int = 4, key: str = "k1") -> CompileJob:
    return CompileJob(key, "cpu", layers)


# ---------------------------------------------------------------- compile or not
def test_a_first_compile_is_expected_from_a_typical_rate_until_one_is_measured(tmp_path):
    history = CompileHistory(tmp_path / "times.json")
    seconds, why = history.expected(job(layers=4))
    assert seconds == 4 * compilation.SECONDS_PER_LAYER["cpu"] and "none measured here yet" in why
    history.note(job(layers=2, key="other"), 30.0)  # a slower machine: 15 s a layer, measured
    seconds, why = CompileHistory(tmp_path / "times.json").expected(job(layers=4))
    assert seconds == 60.0 and "measured here" in why


def test_a_shape_compiled_before_is_expected_from_the_cache(tmp_path):
    history = CompileHistory(tmp_path / "times.json")
    history.note(job(), 28.0)  # the first compile of this key
    seconds, why = history.expected(job())
    assert seconds == pytest.approx(28.0 * compilation.CACHED_SHARE) and "compiled here before in 28 s" in why
    history.note(job(), 2.5)  # the next run: from the cache, measured
    assert history.expected(job()) == (2.5, "this shape compiled here before (from the cache in 2 s)")
    records = json.loads((tmp_path / "times.json").read_text())
    assert records["k1"] == {"device": "cpu", "layers": 4, "first_s": 28.0, "cached_s": 2.5}


def test_an_unreadable_history_is_no_history(tmp_path):
    (tmp_path / "times.json").write_text("{not json")
    assert CompileHistory(tmp_path / "times.json").records == {}
    (tmp_path / "times.json").write_text("[1, 2]")
    assert CompileHistory(tmp_path / "times.json").records == {}


@pytest.mark.parametrize(("budget", "compiled"), [(20, False), (60, False), (111, False), (113, True), (600, True)])
def test_compile_only_when_it_pays_within_the_budget(tmp_path, compiler, budget, compiled):
    """A first compile of ~28 s (4 layers x 7 s) pays from 4 x 28 = 112 s (COMPILE_SHARE 0.25)."""
    choice = resolve_compile(True, CPU, budget_s=budget, job=job(), history=CompileHistory(tmp_path / "t.json"))
    assert choice.enabled == compiled
    assert choice.note.startswith("torch.compile: a first compile" if compiled else "eager: a first compile")
    assert f"of --max-time {budget} s" in choice.note
    if not compiled:
        assert "compiling pays from --max-time 112 s (--compile forces it)" in choice.note


def test_a_cached_compile_pays_in_a_short_budget(tmp_path, compiler):
    history = CompileHistory(tmp_path / "t.json")
    history.note(job(), 28.0)
    history.note(job(), 2.0)
    assert resolve_compile(True, CPU, budget_s=20, job=job(), history=history).enabled


def test_compile_asked_for_or_without_a_budget_is_not_weighed(tmp_path, compiler):
    history = CompileHistory(tmp_path / "t.json")
    assert resolve_compile(True, CPU, budget_s=20, forced=True, job=job(), history=history).enabled
    assert resolve_compile(True, CPU, budget_s=None, job=job(), history=history).enabled
    assert not resolve_compile(False, CPU, budget_s=600, job=job(), history=history).enabled


def test_the_first_step_of_a_compiled_run_is_kept(tmp_path, compiler):
    history = CompileHistory(tmp_path / "t.json")
    choice = resolve_compile(True, CPU, budget_s=600, job=job(), history=history)
    model = torch.nn.Linear(2, 2)
    choice.wrap(model)
    choice.after_step()
    choice.after_step()  # only the first step is the compile
    assert list(history.records) == ["k1"] and "cached_s" not in history.records["k1"]


def test_the_job_key_follows_what_is_compiled():
    a = CompileJob.of({"model": {"model_dim": 128}, "batch_size": 16}, CPU, 4)
    assert a == CompileJob.of({"batch_size": 16, "model": {"model_dim": 128}}, CPU, 4)
    assert a.key != CompileJob.of({"model": {"model_dim": 128}, "batch_size": 32}, CPU, 4).key


# ---------------------------------------------------------------- the stop keeps room for the closing validation
class Clock:
    """A TrainState stand-in: the step and the run's clock."""

    def __init__(self):
        self.step, self.elapsed, self.spent_budget = 0, 0.0, 0.0


def stop_condition(max_time: float, closing_s) -> StopCondition:
    single = Cluster()
    return StopCondition(TrainingConfig(max_time=max_time), 10_000, single, Interrupt(), closing_s=closing_s)


def test_the_run_stops_when_the_closing_validation_would_not_fit():
    stop, state = stop_condition(10.0, lambda step_s: 20 * 0.5 * step_s), Clock()  # 1 s for 0.1 s steps
    assert stop.before_start(state) is None
    reasons = []
    while not reasons or reasons[-1] is None:
        state.step, state.elapsed = state.step + 1, state.elapsed + 0.1  # steps of 0.1 s
        reasons.append(stop.after_step(state))
    # room for 20 batches at half a step each (1 s): it stops at 9 s, not 10
    assert reasons[-1] == "max_time" and state.elapsed == pytest.approx(9.0, abs=0.11)


def test_the_first_steps_do_not_set_the_pace():
    """The first steps warm up (and compile): their length does not count until three are seen."""
    stop, state = stop_condition(10.0, lambda step_s: 100 * step_s), Clock()
    stop.before_start(state)
    state.step, state.elapsed = 1, 5.0  # a 5 s first step (compiling)
    assert stop.after_step(state) is None


def test_a_resumed_run_with_its_time_used_trains_nothing():
    stop, state = stop_condition(30.0, lambda step_s: 0.0), Clock()
    state.step, state.elapsed = 500, 30.4
    assert stop.before_start(state) == "max_time"
    # stopped a little early for its closing validation: still used up, unless given more
    state.elapsed, state.spent_budget = 29.6, 30.0
    assert stop.before_start(state) == "max_time"
    assert stop_condition(40.0, lambda step_s: 0.0).before_start(state) is None


def test_stopping_for_the_budget_is_remembered():
    stop, state = stop_condition(1.0, lambda step_s: 0.0), Clock()
    stop.before_start(state)
    state.step, state.elapsed = 1, 1.2
    assert stop.after_step(state) == "max_time" and state.spent_budget == 1.0


# ---------------------------------------------------------------- more time for a resumed run
def schedule(kind: str = "cosine", warmup: int = 10) -> LRSchedule:
    return LRSchedule(OptimConfig(lr_schedule=kind, learning_rate=1e-2, warmup_steps=warmup))


def test_a_finished_run_given_more_time_rewarms_to_the_longer_plan():
    lr = schedule()
    step = 400  # a run that used its 30 s: decayed to the minimum
    before, after = (10_000, 30.4 / 30), (10_000, 30.4 / 60.4)
    origin = lr.rewarm_from(step, before, after)
    assert origin == pytest.approx(lr.minimum)
    rates = [lr(s, after[0], after[1], (step, origin)) for s in range(step, step + 12)]
    planned = lr.planned(step, *after)
    assert rates[0] == pytest.approx(origin + (planned - origin) / 10)  # no jump: a tenth of the way
    assert rates[9] == pytest.approx(planned) and rates[0] < rates[4] < rates[9]  # linear, over warmup_steps
    assert lr(step + 11, after[0], 1.0, (step, origin)) == pytest.approx(lr.minimum)  # the new end: the minimum


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_an_unchanged_plan_does_not_rewarm(kind):
    lr = schedule(kind)
    assert lr.rewarm_from(400, (10_000, 0.5), (10_000, 0.5)) is None
    assert lr.rewarm_from(5, (10, 0.0), (20, 0.0)) is None  # still warming up: the budget does not matter
    if kind == "constant":
        assert lr.rewarm_from(400, (1_000, 0.0), (2_000, 0.0)) is None


def test_wsd_goes_back_to_its_stable_rate_and_cools_down_at_the_new_end():
    lr = schedule("wsd")
    origin = lr.rewarm_from(400, (10_000, 1.0), (10_000, 0.5))
    assert origin == pytest.approx(lr.minimum) and lr.planned(400, 10_000, 0.5) == lr.peak
    assert lr(409, 10_000, 0.5, (400, origin)) == pytest.approx(lr.peak)
    assert "cooling down" in lr.describe(origin, lr.peak, True) and "re-warms" in lr.describe(origin, lr.peak, True)
    assert not math.isnan(origin)
