"""Whether to train through `torch.compile`, decided once from what this machine has.

torch.compile (TorchInductor) fuses the many small elementwise operations of a small
transformer (norms, RoPE, activations, the loss) into a few generated kernels; that
makes a small model's training step markedly faster (measured in benchmarks/README.md). It needs
a C++ compiler on a CPU and Triton on CUDA; without them we train eagerly and say so,
instead of failing at the first step. The first compile of a model shape takes a while on a
small CPU; Inductor's on-disk cache makes later runs start in seconds.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compilation:
    enabled: bool
    note: str  # one line for the run summary

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: compiled, or the model itself. Both share
        parameters, so checkpoints and evaluation keep using the plain model."""
        return torch.compile(model) if self.enabled else model


def resolve_compile(requested: bool, device: torch.device, unsuitable: str | None = None) -> Compilation:
    """`unsuitable`: why this run should not compile (e.g. a setting that would recompile)."""
    if not requested:
        return Compilation(False, "off")
    if unsuitable:
        return Compilation(False, f"off: {unsuitable}")
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++", "cl")):
        return Compilation(False, "off: no C++ compiler found (torch.compile needs one on a CPU)")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return Compilation(False, "off: Triton is not installed (torch.compile needs it on CUDA)")
    if device.type not in ("cpu", "cuda"):
        return Compilation(False, f"off: torch.compile is not used on {device.type}")
    return Compilation(True, "torch.compile (the first run of a model shape compiles for up to "
                             "a minute; later runs reuse the cache)")
