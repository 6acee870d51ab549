"""The tracker interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Tracker:
    """Receives one metrics record per log step; does nothing by default (a null tracker)."""

    name = "none"

    def log(self, record: dict[str, Any]) -> None:
        pass

    def log_histograms(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        """Distributions of named tensors (weights, gradients) at `step`; most trackers
        cannot draw them and ignore them."""

    def save_model(self, path: Path) -> None:
        """The finished model's file, for trackers that keep a copy (W&B); most ignore it."""

    def flush(self) -> None:
        """Make everything logged so far durable (the loop calls this at every checkpoint)."""

    def finish(self) -> None:
        pass

    def describe(self) -> str:
        """Where the records go, in a few words, for the start-of-run summary."""
        return self.name


class MultiTracker(Tracker):
    """Several trackers behind one: the loop always talks to exactly one tracker."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, record: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log(record)

    def log_histograms(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        for tracker in self.trackers:
            tracker.log_histograms(step, tensors)

    def save_model(self, path: Path) -> None:
        for tracker in self.trackers:
            tracker.save_model(path)

    def flush(self) -> None:
        for tracker in self.trackers:
            tracker.flush()

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()

    def describe(self) -> str:
        return "; ".join(tracker.describe() for tracker in self.trackers)


def weights_and_gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`Weights/<name>` and `Gradients/<name>` for every trainable parameter (a gradient
    only where one exists: frozen or unused parameters have none), the tag names
    TensorBoard users know from the PyTorch examples."""
    tensors = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tensors[f"Weights/{name}"] = param.detach()
        if param.grad is not None:
            tensors[f"Gradients/{name}"] = param.grad.detach()
    return tensors
