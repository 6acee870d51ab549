"""Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step
back"): wraps any optimizer.

The inner optimizer moves the ("fast") weights for k steps; then a second, slow copy of the
weights moves a fraction alpha of the way towards them, and the fast weights restart from
the slow ones. The slow weights average out the inner optimizer's noisy excursions, which
makes training less sensitive to its learning rate. Costs one extra copy of the weights.
"""

from __future__ import annotations

from typing import Any

import torch


class Lookahead:
    """Behaves as the optimizer it wraps (same `param_groups`, so the schedule's learning
    rate reaches it) plus the slow weights, which `state_dict()` carries for exact resume."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if k < 1 or not 0 < alpha <= 1:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1 (got k={k}, alpha={alpha})")
        self.inner, self.k, self.alpha = inner, k, alpha
        self.param_groups = inner.param_groups  # the same list: setting a group's lr sets it here
        self.params = [p for group in self.param_groups for p in group["params"]]
        self.slow = [p.detach().clone() for p in self.params]  # the weights as they start
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for slow, fast in zip(self.slow, self.params):
                slow.lerp_(fast, self.alpha)  # slow += alpha * (fast - slow)
                fast.copy_(slow)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "slow": [s.clone() for s in self.slow],
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["slow"]) != len(self.slow):
            raise ValueError("Lookahead state for a different set of parameters")
        self.inner.load_state_dict(state["inner"])
        for slow, saved in zip(self.slow, state["slow"]):
            slow.copy_(saved)
        self.steps = int(state["steps"])
