"""Lookahead: k fast steps, then the slow weights move alpha of the way; exact state round trip."""

from __future__ import annotations

import pytest
import torch

from fundamentallm.config import OptimConfig
from fundamentallm.training.lookahead import Lookahead
from fundamentallm.training.optim import build_optimizer


def sgd_setup(k=3, alpha=0.5):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    return w, Lookahead(torch.optim.SGD([w], lr=0.1), k=k, alpha=alpha)


def take_step(w, opt, grad):
    w.grad = torch.tensor(grad)
    opt.step()


def test_slow_weights_pull_back_every_k_steps():
    w, opt = sgd_setup(k=3, alpha=0.5)
    start = w.detach().clone()
    for _ in range(2):
        take_step(w, opt, [1.0, 1.0])
    torch.testing.assert_close(w.detach(), start - 0.2)  # plain SGD so far
    take_step(w, opt, [1.0, 1.0])  # third step: fast is start - 0.3; slow moves halfway
    torch.testing.assert_close(w.detach(), start - 0.15)
    torch.testing.assert_close(opt.slow[0], start - 0.15)
    take_step(w, opt, [1.0, 1.0])  # the fast weights go on from the slow ones
    torch.testing.assert_close(w.detach(), start - 0.25)


def test_alpha_one_is_the_inner_optimizer():
    w, opt = sgd_setup(k=2, alpha=1.0)
    ref = torch.nn.Parameter(w.detach().clone())
    sgd = torch.optim.SGD([ref], lr=0.1)
    for g in ([1.0, 0.5], [-2.0, 1.0], [0.3, 0.3], [1.0, 1.0]):
        take_step(w, opt, g)
        ref.grad = torch.tensor(g)
        sgd.step()
    torch.testing.assert_close(w.detach(), ref.detach())


def test_state_round_trip_continues_exactly():
    w, opt = sgd_setup(k=3)
    for g in ([1.0, 0.0], [0.5, 0.5]):
        take_step(w, opt, g)
    saved, weights = opt.state_dict(), w.detach().clone()
    take_step(w, opt, [0.2, 0.1])
    expected = w.detach().clone()

    w2, opt2 = sgd_setup(k=3)
    with torch.no_grad():
        w2.copy_(weights)
    opt2.load_state_dict(saved)
    take_step(w2, opt2, [0.2, 0.1])  # the sync at step 3 uses the saved slow weights
    torch.testing.assert_close(w2.detach(), expected)


def test_param_groups_are_shared_with_the_inner_optimizer():
    _, opt = sgd_setup()
    opt.param_groups[0]["lr"] = 0.5
    assert opt.inner.param_groups[0]["lr"] == 0.5


def test_bad_settings_and_foreign_state_are_refused():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError):
        Lookahead(torch.optim.SGD([w], lr=0.1), k=0)
    _, opt = sgd_setup()
    state = opt.state_dict()
    state["slow"].append(torch.zeros(1))
    with pytest.raises(ValueError, match="different set of parameters"):
        opt.load_state_dict(state)


def test_build_optimizer_wraps_when_asked(tiny_model):
    plain = build_optimizer(tiny_model, OptimConfig(), torch.device("cpu"))
    wrapped = build_optimizer(tiny_model, OptimConfig(lookahead_steps=4, lookahead_alpha=0.8), torch.device("cpu"))
    assert not isinstance(plain, Lookahead)
    assert isinstance(wrapped, Lookahead) and (wrapped.k, wrapped.alpha) == (4, 0.8)
    assert type(wrapped.inner) is type(plain)
