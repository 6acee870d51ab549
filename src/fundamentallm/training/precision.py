"""Choosing the device and the arithmetic precision from what the hardware really does.

bf16 autocast halves the memory traffic of matmuls and is fast where the hardware has
native bf16 units (CUDA Ampere+, CPUs with AVX-512 BF16 or AMX). On a CPU without them,
PyTorch emulates bf16 and training gets many times slower, so we train in fp32 and say so.
fp16 needs a GradScaler (its small exponent range underflows gradients); bf16 does not.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from fundamentallm.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[name]:
        raise UserError(f"--device {name}: not available on this machine")
    return torch.device(name)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic units (AVX-512 BF16 or AMX), per /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def matmul_gflops(dtype: torch.dtype, size: int = 512, repeats: int = 8) -> float:
    """Measured matmul throughput of this CPU in `dtype` (a quarter-second probe)."""
    a = torch.randn(size * 4, size, dtype=dtype)
    b = torch.randn(size, size * 2, dtype=dtype)
    a @ b  # warm-up: first call pays for kernel selection
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * a.shape[0] * size * b.shape[1] / (time.perf_counter() - start) / 1e9


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """bf16 over fp32 matmul throughput, measured. A bf16 flag in /proc/cpuinfo is not
    enough: on some virtual machines bf16 kernels still run slower than fp32."""
    return matmul_gflops(torch.bfloat16) / matmul_gflops(torch.float32)


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None  # autocast dtype; None means plain fp32
    note: str  # one line for the run summary, saying what was chosen and why

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(mixed: bool, device: torch.device, cpu_bf16: bool | None = None) -> Precision:
    """What `--mixed-precision` means on `device`: the fastest precision that is safe.

    `cpu_bf16` overrides CPU detection and measurement (tests)."""
    kind = device.type
    if not mixed:
        return Precision(kind, None, "fp32")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(kind, torch.bfloat16, "bf16 autocast (CUDA)")
        return Precision(kind, torch.float16, "fp16 autocast with gradient scaling (CUDA without bf16)")
    if kind == "cpu":
        native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
        if not native:
            return Precision(kind, None, "fp32: this CPU has no native bf16 (AVX-512 BF16/AMX), "
                                         "where bf16 is emulated and slow")
        speedup = cpu_bf16_speedup() if cpu_bf16 is None else 2.0
        if speedup < 1.2:
            return Precision(kind, None, f"fp32: bf16 matmuls measured {speedup:.2f}x the fp32 "
                                         "speed on this CPU, so bf16 would not train faster")
        return Precision(kind, torch.bfloat16, f"bf16 autocast (native CPU bf16, {speedup:.1f}x fp32 matmul)")
    if kind == "mps":
        return Precision(kind, torch.bfloat16, "bf16 autocast (MPS)")
    raise UserError(f"--mixed-precision: unsupported device {kind}")
