"""Token deletion/duplication augmentation: shape, order, rate, determinism."""

from __future__ import annotations

import torch

from fundamentallm.data.augment import augment, slack


def windows(batch: int, length: int) -> torch.Tensor:
    return torch.arange(batch * length).view(batch, length)  # every token distinct, increasing


def test_zero_probability_changes_nothing():
    w = windows(3, 20)
    assert slack(19, 0.0) == 0
    assert torch.equal(augment(w, 20, 0.0, torch.Generator().manual_seed(0)), w)


def test_rows_keep_their_length_and_their_order():
    length, p = 65, 0.1
    w = windows(8, length + slack(length, p))
    out = augment(w, length, p, torch.Generator().manual_seed(1))
    assert out.shape == (8, length)
    for row, source in zip(out, w):
        assert set(row.tolist()) <= set(source.tolist())
        assert bool((row[1:] >= row[:-1]).all())  # tokens keep their order
        assert max(row.tolist().count(t) for t in set(row.tolist())) <= 2  # doubled at most


def test_rate_of_deletions_and_doublings_is_about_p():
    length, p = 1000, 0.1
    w = windows(4, length + slack(length, p))
    out = augment(w, length, p, torch.Generator().manual_seed(2))
    for row, source in zip(out, w):
        tokens = row.tolist()
        span = source.tolist()[:source.tolist().index(tokens[-1]) + 1]  # what the row drew on
        deleted = len(set(span) - set(tokens)) / len(span)
        doubled = (len(tokens) - len(set(tokens))) / len(set(tokens))
        assert 0.06 < deleted < 0.14 and 0.06 < doubled < 0.14


def test_same_generator_seed_same_result():
    w = windows(4, 50)
    a = augment(w, 40, 0.1, torch.Generator().manual_seed(3))
    b = augment(w, 40, 0.1, torch.Generator().manual_seed(3))
    c = augment(w, 40, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
