"""Training batches and scoring windows.

Most tests use `ids = arange(N)`: every token is its own position, so a window's first
input token tells where the window starts.
"""

from __future__ import annotations

import pytest
import torch

from fundamentallm.data.batching import (
    IGNORE_INDEX,
    EpochSampler,
    encode,
    make_batch,
    scoring_windows,
)
from fundamentallm.errors import UserError
from fundamentallm.tokenizers import CharTokenizer

CONTEXT = 16
SMALL = {"context_length": 16, "batch_size": 4}  # windows and batch of the option tests


def positions(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int32)


def sampler(n: int = 1000, batch: int = 4, accum: int = 1, seed: int = 0,
            ids: torch.Tensor | None = None, unk_id: int | None = None) -> EpochSampler:
    ids = positions(n) if ids is None else ids
    return EpochSampler(ids, context_length=CONTEXT, batch_size=batch, grad_accum_steps=accum, seed=seed,
                        unk_id=unk_id)


def epoch_starts(s: EpochSampler, epoch: int) -> list[int]:
    """The start position of every window of one epoch, in the order they are visited."""
    return [int(v) for i in range(s.micro_per_epoch) for v in s.batch_at(epoch, i)[0][:, 0]]


def test_encode_gives_int32_ids():
    tok = CharTokenizer.train("abc")
    ids = encode(tok, "cab")
    assert ids.dtype == torch.int32
    assert ids.tolist() == [3, 1, 2]


def test_batch_shapes_and_dtype():
    x, y = sampler().batch_at(0, 0)
    assert x.shape == y.shape == (4, CONTEXT)
    assert x.dtype == y.dtype == torch.int64


def test_targets_are_inputs_shifted_by_one():
    s = sampler()
    x, y = s.batch_at(0, 1)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # ids are positions: the next token follows
    assert torch.equal(x, x[:, :1] + torch.arange(CONTEXT))  # contiguous windows


def test_sampler_is_deterministic_for_seed_and_epoch():
    a, b = sampler(seed=3), sampler(seed=3)
    b.batch_at(5, 0)  # visiting other epochs first changes nothing
    for epoch in (0, 1, 2):
        assert epoch_starts(a, epoch) == epoch_starts(b, epoch)


def test_order_differs_across_epochs_and_seeds():
    s = sampler(seed=3)
    assert epoch_starts(s, 0) != epoch_starts(s, 1)
    assert epoch_starts(s, 0) != epoch_starts(sampler(seed=4), 0)


@pytest.mark.parametrize("epoch", range(4))
def test_windows_of_one_epoch_do_not_overlap(epoch):
    # 1000 tokens: 62 windows of 16 leave slack, so the random shift never costs a window.
    starts = sorted(epoch_starts(sampler(n=1000, batch=4, accum=2, seed=1), epoch))
    assert len(starts) == 56  # 7 optimizer steps x 2 micro-batches x 4 windows
    assert all(b - a >= CONTEXT for a, b in zip(starts, starts[1:]))
    assert starts[-1] + CONTEXT <= 999  # the last target token exists


def test_windows_do_not_repeat_when_the_data_fits_exactly():
    # 129 tokens = 8 windows of 16 (+1 target) = 2 steps of 4: nothing is short.
    s = sampler(n=129, batch=4, seed=0)
    for epoch in range(5):
        starts = epoch_starts(s, epoch)
        assert len(set(starts)) == len(starts), (epoch, sorted(starts))


@pytest.mark.parametrize("spare", [0, 1, 5, 15, 16, 40])
@pytest.mark.parametrize(("batch", "accum"), [(4, 1), (2, 2)])
def test_the_shift_never_costs_a_window(spare, batch, accum):
    # 8 windows' worth of tokens (+1 target) and `spare` more: every epoch visits 8 distinct,
    # non-overlapping windows inside the data, whatever its random shift.
    n = 8 * CONTEXT + 1 + spare
    s = sampler(n=n, batch=batch, accum=accum, seed=2)
    assert s.micro_per_epoch * batch == 8
    shifts = set()
    for epoch in range(12):
        starts = sorted(epoch_starts(s, epoch))
        assert len(starts) == 8
        assert all(b - a >= CONTEXT for a, b in zip(starts, starts[1:])), (epoch, starts)
        assert starts[0] >= 0 and starts[-1] + CONTEXT <= n - 1, (epoch, starts)
        shifts.add(starts[0] % CONTEXT)
    assert max(shifts) <= min(spare, CONTEXT - 1)
    if spare >= 5:
        assert len(shifts) > 1  # the cut points still move from epoch to epoch


@pytest.mark.parametrize(("n", "batch", "accum"), [(1000, 4, 1), (1000, 4, 2), (1000, 3, 5),
                                                  (161, 2, 1), (17, 8, 1)])
def test_steps_per_epoch(n, batch, accum):
    s = sampler(n=n, batch=batch, accum=accum)
    windows = (n - 1) // CONTEXT
    assert s.steps_per_epoch == max(1, windows // (batch * accum))
    assert s.micro_per_epoch == s.steps_per_epoch * accum


def test_short_data_still_gives_one_full_step():
    s = sampler(n=CONTEXT + 1, batch=8)  # one window only
    x, y = s.batch_at(0, 0)
    assert x.shape == (8, CONTEXT)
    assert (x[:, 0] == 0).all()


def test_too_short_data_raises_user_error():
    with pytest.raises(UserError, match=r"16 tokens.*--context-length 16.*at least 17"):
        sampler(n=CONTEXT)


@pytest.mark.parametrize("n", [2, 3, 16, 17, 18, 33, 100, 161])
def test_scoring_windows_cover_every_target_once(n):
    windows = scoring_windows(n, CONTEXT)
    assert sum(length for _, length in windows) == n - 1
    targets = [t for s, length in windows for t in range(s + 1, s + length + 1)]
    assert sorted(targets) == list(range(1, n))
    assert all(0 < length <= CONTEXT for _, length in windows)


def test_scoring_windows_subset_is_full_and_spread():
    windows = scoring_windows(1001, CONTEXT, max_windows=5)
    assert len(windows) == 5
    assert all(length == CONTEXT for _, length in windows)
    starts = [s for s, _ in windows]
    assert starts == sorted(set(starts)) and starts[0] == 0 and starts[-1] > 500


def test_unknown_targets_become_ignore_index():
    ids = torch.tensor([5, 0, 6, 7, 0, 8, 9], dtype=torch.int32)  # 0 is <unk>
    x, y = make_batch(ids, torch.tensor([0, 2]), 4, unk_id=0)
    assert x.tolist() == [[5, 0, 6, 7], [6, 7, 0, 8]]  # inputs keep unk
    assert y.tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX], [7, IGNORE_INDEX, 8, 9]]
    _, y_kept = make_batch(ids, torch.tensor([0]), 4, unk_id=None)
    assert y_kept.tolist() == [[0, 6, 7, 0]]


def test_sampler_masks_unknown_targets():
    ids = torch.arange(200, dtype=torch.int32) % 7  # token 0 every 7th position
    s = sampler(ids=ids, batch=2, unk_id=0)
    x, y = s.batch_at(0, 0)
    assert (y != 0).all()
    assert ((y == IGNORE_INDEX) == (torch.roll(x, -1, dims=1) == 0))[:, :-1].all()


def test_overfit_batches_repeat_the_same_windows_every_epoch():
    ids = torch.arange(5000, dtype=torch.int32)
    sampler = EpochSampler(ids, **SMALL, grad_accum_steps=2, seed=0, unk_id=None, overfit_batches=4)
    assert (sampler.micro_per_epoch, sampler.steps_per_epoch) == (4, 2)
    first = [sampler.batch_at(0, i)[0] for i in range(4)]
    assert len({tuple(x[:, 0].tolist()) for x in first}) == 4  # four different batches...
    for epoch in (1, 7):
        for i in range(4):  # ...and the same four in every epoch
            assert torch.equal(sampler.batch_at(epoch, i)[0], first[i])
    normal = EpochSampler(ids, **SMALL, grad_accum_steps=2, seed=0, unk_id=None)
    assert not torch.equal(normal.batch_at(1, 0)[0], normal.batch_at(0, 0)[0])


def test_overfit_batches_with_augmentation_keep_the_same_edited_batches_every_epoch():
    ids = torch.arange(5000, dtype=torch.int32)
    sampler = EpochSampler(ids, **SMALL, grad_accum_steps=1, seed=0, unk_id=None, overfit_batches=2,
                           augment_p=0.2)
    first = [sampler.batch_at(0, i) for i in range(2)]
    plain = EpochSampler(ids, **SMALL, grad_accum_steps=1, seed=0, unk_id=None, overfit_batches=2)
    assert not torch.equal(first[0][0], plain.batch_at(0, 0)[0])  # the windows are edited...
    for epoch in (1, 5):
        for i in range(2):  # ...and edited the same way in every epoch
            x, y = sampler.batch_at(epoch, i)
            assert torch.equal(x, first[i][0]) and torch.equal(y, first[i][1])
    normal = EpochSampler(ids, **SMALL, grad_accum_steps=1, seed=0, unk_id=None, augment_p=0.2)
    assert not torch.equal(normal.batch_at(1, 0)[0], normal.batch_at(0, 0)[0])
