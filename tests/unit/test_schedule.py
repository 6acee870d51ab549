"""Learning-rate schedules: linear warmup, then cosine / linear / constant decay.

Step `step` (0-based) of `total` steps: warmup runs at peak * (step + 1) / warmup and reaches
the peak on its last step (warmup - 1); after it, progress is
(step + 1 - warmup) / (total - warmup), so the first decay step is already one step below the
peak (the peak is used once) and the last step taken (total - 1) runs exactly at min_lr.
"""

from __future__ import annotations

import math

import pytest

from fundamentallm.config import OptimConfig
from fundamentallm.training.schedule import DropoutSchedule, LRSchedule

PEAK, WARMUP, TOTAL = 1e-3, 10, 110
LAST = TOTAL - 1  # the last step a run of TOTAL steps takes
DECAY = TOTAL - WARMUP  # decay steps


def schedule(kind: str = "cosine", min_lr: float | None = None, warmup: int = WARMUP) -> LRSchedule:
    return LRSchedule(OptimConfig(learning_rate=PEAK, min_lr=min_lr, lr_schedule=kind,
                                  warmup_steps=warmup))


def cosine(progress: float, floor: float = PEAK / 10) -> float:
    return floor + (PEAK - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def linear(progress: float, floor: float = PEAK / 10) -> float:
    return PEAK - (PEAK - floor) * progress


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warmup_is_linear_and_reaches_the_peak_at_its_end(kind):
    s = schedule(kind)
    rates = [s(step, TOTAL) for step in range(WARMUP)]
    assert rates == pytest.approx([PEAK * (i + 1) / WARMUP for i in range(WARMUP)])
    assert rates[-1] == pytest.approx(PEAK)


@pytest.mark.parametrize("kind, expected", [
    ("cosine", cosine(1 / DECAY)),
    ("linear", linear(1 / DECAY)),
    ("constant", PEAK),
])
def test_decay_starts_one_step_below_the_peak(kind, expected):
    s = schedule(kind)
    assert s(WARMUP, TOTAL) == pytest.approx(expected, rel=1e-12)
    if kind != "constant":
        assert s(WARMUP, TOTAL) < PEAK


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_the_peak_is_used_on_one_step_only(kind):
    rates = [schedule(kind)(step, TOTAL) for step in range(TOTAL)]
    assert max(rates) == pytest.approx(PEAK)
    assert [i for i, r in enumerate(rates) if r == pytest.approx(PEAK, rel=1e-12)] == [WARMUP - 1]


def test_cosine_decays_monotonically_to_min_lr_which_defaults_to_a_tenth():
    s = schedule("cosine")
    rates = [s(step, TOTAL) for step in range(WARMUP - 1, TOTAL)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates == pytest.approx([cosine(k / DECAY) for k in range(DECAY + 1)], rel=1e-12)
    assert rates[-1] == pytest.approx(PEAK / 10, rel=1e-12)  # the last step runs at min_lr
    assert rates[-2] > PEAK / 10  # and only the last one
    assert s(TOTAL, TOTAL) == pytest.approx(PEAK / 10)  # past the budget: clamped
    assert s(TOTAL + 50, TOTAL) == pytest.approx(PEAK / 10)  # never below min_lr


def test_cosine_midpoint_is_halfway():
    s = schedule("cosine", min_lr=0.0)
    # progress 1/2 after DECAY / 2 decay steps, i.e. on step WARMUP + DECAY / 2 - 1
    assert s(WARMUP + DECAY // 2 - 1, TOTAL) == pytest.approx(PEAK / 2)
    assert s(WARMUP + DECAY // 2, TOTAL) < PEAK / 2


def test_explicit_min_lr_is_the_rate_of_the_last_step():
    assert schedule("cosine", min_lr=2e-5)(LAST, TOTAL) == pytest.approx(2e-5, rel=1e-12)
    assert schedule("linear", min_lr=2e-5)(LAST, TOTAL) == pytest.approx(2e-5, rel=1e-12)
    assert schedule("linear", min_lr=0.0)(LAST, TOTAL) == 0.0
    assert schedule("cosine", min_lr=0.0)(LAST, TOTAL) == pytest.approx(0.0, abs=1e-18)
    assert schedule("cosine", min_lr=2e-5)(LAST - 1, TOTAL) > 2e-5


def test_linear_schedule_drops_evenly_from_the_peak_to_min_lr():
    s = schedule("linear")
    rates = [s(step, TOTAL) for step in range(WARMUP - 1, TOTAL)]  # from the peak on
    drop = (PEAK - PEAK / 10) / DECAY
    assert [a - b for a, b in zip(rates, rates[1:])] == pytest.approx([drop] * DECAY, rel=1e-9)
    assert rates[-1] == pytest.approx(PEAK / 10, rel=1e-12)
    mid = WARMUP + DECAY // 2 - 1
    assert s(mid, TOTAL) == pytest.approx((PEAK + PEAK / 10) / 2)
    quarter = WARMUP + DECAY // 4 - 1
    assert s(quarter, TOTAL) == pytest.approx(PEAK - 0.25 * (PEAK - PEAK / 10))


def test_constant_stays_at_the_peak_after_warmup():
    s = schedule("constant")
    assert [s(step, TOTAL) for step in (WARMUP, 50, LAST, TOTAL, 10 * TOTAL)] == pytest.approx([PEAK] * 5)
    assert s(WARMUP, TOTAL, time_fraction=1.0) == pytest.approx(PEAK)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_time_fraction_drives_decay(kind):
    s = schedule(kind)
    # Right after warmup the step budget is barely used, but the time budget is spent.
    assert s(WARMUP, TOTAL, time_fraction=1.0) == pytest.approx(PEAK / 10)
    assert s(WARMUP, TOTAL, time_fraction=2.0) == pytest.approx(PEAK / 10)  # clamped
    # Half the time budget is the progress of step WARMUP + DECAY / 2 - 1.
    assert s(WARMUP, TOTAL, time_fraction=0.5) == pytest.approx(s(WARMUP + DECAY // 2 - 1, TOTAL))
    # The step budget still wins when it is further along than the clock.
    assert s(60, TOTAL, time_fraction=0.1) == pytest.approx(s(60, TOTAL))


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_time_fraction_does_not_touch_warmup(kind):
    s = schedule(kind)
    assert s(0, TOTAL, time_fraction=1.0) == pytest.approx(PEAK / WARMUP)


def test_no_warmup_starts_one_step_into_the_decay():
    s = schedule("cosine", warmup=0)
    assert s(0, TOTAL) == pytest.approx(cosine(1 / TOTAL), rel=1e-12)
    assert s(0, TOTAL) < PEAK
    assert s(LAST, TOTAL) == pytest.approx(PEAK / 10, rel=1e-12)
    assert schedule("linear", warmup=0)(0, TOTAL) == pytest.approx(linear(1 / TOTAL), rel=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_a_single_decay_step_runs_at_min_lr(kind):
    # total - warmup == 1: the one step after warmup is also the last one
    s = schedule(kind, warmup=3)
    assert [s(step, 4) for step in range(4)] == pytest.approx([PEAK / 3, 2 * PEAK / 3, PEAK, PEAK / 10])
    # and a one-step run without warmup runs its only step at min_lr
    assert schedule(kind, warmup=0)(0, 1) == pytest.approx(PEAK / 10)


def wsd(cooldown: float = 0.4, min_lr: float | None = None) -> LRSchedule:
    return LRSchedule(OptimConfig(learning_rate=PEAK, min_lr=min_lr, lr_schedule="wsd",
                                  warmup_steps=WARMUP, cooldown_fraction=cooldown))


def test_wsd_is_stable_then_cools_down_linearly_over_the_last_fraction():
    s = wsd(cooldown=0.4)
    rates = [s(step, TOTAL) for step in range(TOTAL)]
    assert rates[:WARMUP] == pytest.approx([PEAK * (i + 1) / WARMUP for i in range(WARMUP)])
    # progress p = (step + 1 - WARMUP) / DECAY; stable while p <= 0.6, i.e. steps up to 69
    stable_end = WARMUP + int(0.6 * DECAY) - 1
    assert rates[WARMUP:stable_end + 1] == pytest.approx([PEAK] * (stable_end + 1 - WARMUP))
    cooldown = rates[stable_end:]
    drop = (PEAK - PEAK / 10) / (0.4 * DECAY)
    assert [a - b for a, b in zip(cooldown, cooldown[1:])] == pytest.approx([drop] * (len(cooldown) - 1))
    assert rates[-1] == pytest.approx(PEAK / 10, rel=1e-12)


def test_wsd_follows_the_clock_in_a_time_bounded_run():
    s = wsd(cooldown=0.5, min_lr=0.0)
    assert s(WARMUP, 10**9, time_fraction=0.3) == pytest.approx(PEAK)
    assert s(WARMUP, 10**9, time_fraction=0.75) == pytest.approx(PEAK / 2)
    assert s(WARMUP, 10**9, time_fraction=1.0) == pytest.approx(0.0)


def test_wsd_with_zero_cooldown_stays_at_the_peak():
    s = wsd(cooldown=0.0)
    assert [s(step, TOTAL) for step in (WARMUP, LAST)] == pytest.approx([PEAK, PEAK])


def test_dropout_schedule_rises_linearly_from_start_to_end():
    schedule = DropoutSchedule(0.0, 0.2)
    assert [round(schedule(step, 5), 6) for step in range(5)] == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert schedule(1, 100, time_fraction=0.5) == pytest.approx(0.1)  # time budget further along
    assert schedule(99, 100, time_fraction=2.0) == pytest.approx(0.2)  # never past the end
