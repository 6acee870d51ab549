"""Choosing the device and the arithmetic precision from what the hardware really does.

bf16 autocast (Kalamkar et al. 2019) runs matmuls in bfloat16, fp32's exponent with an
8-bit mantissa, and keeps the weights, the optimizer, the softmax and the loss in fp32. It
is fast where the hardware has native bf16 units (CUDA Ampere+, CPUs with AVX-512 BF16 or
AMX: 4.3x fp32 matmuls on a Zen 5 CPU). Without them PyTorch emulates bf16 and training
gets many times slower, so `--precision auto` (the default) trains in fp32 there and says
why. fp16 needs a GradScaler (its 5-bit exponent underflows small gradients); bf16 does not.
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


# A first look at a small size settles the common case of bf16 kernels that are emulated after
# all (the flag is there, but oneDNN is limited to AVX2, or a hypervisor hides the units): they
# run at 1-2% of fp32's speed, and the full probe would then take 10-20 s of a run's budget
# (measured on an EPYC Zen 5 under benchmarks/avx2.sh: 21 s before the first step).
QUICK_PROBE_SIZE = 128
CLEARLY_EMULATED = 0.3  # a quick-look speedup below this cannot be a fast bf16 unit


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """bf16 over fp32 matmul throughput, measured. A bf16 flag in /proc/cpuinfo is not
    enough: on some virtual machines bf16 kernels still run slower than fp32."""
    quick = (matmul_gflops(torch.bfloat16, size=QUICK_PROBE_SIZE, repeats=2)
             / matmul_gflops(torch.float32, size=QUICK_PROBE_SIZE, repeats=2))
    if quick < CLEARLY_EMULATED:
        return quick
    return matmul_gflops(torch.bfloat16) / matmul_gflops(torch.float32)


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None  # autocast dtype; None means plain fp32
    note: str  # one line for the run summary, saying what was chosen and why
    autocasts: bool = True  # False under FSDP, whose MixedPrecisionPolicy casts the weights instead

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None or not self.autocasts:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MIN_CPU_BF16_SPEEDUP = 1.2  # below this a bf16 matmul probe does not pay for autocast's casts


def auto_precision(device: torch.device, cpu_bf16: bool | None = None) -> Precision:
    """`--precision auto`: bf16 autocast where the hardware really computes bf16 faster
    (CUDA with bf16, MPS, a CPU with native bf16 units and a measured speedup); fp32 elsewhere."""
    kind = device.type
    if kind == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision(kind, torch.bfloat16, "bf16 autocast (auto: this GPU has bf16)")
        return Precision(kind, None, "fp32 (auto: this GPU has no bf16; --precision fp16 trains "
                                     "with fp16 and gradient scaling)")
    if kind == "mps":
        return Precision(kind, torch.bfloat16, "bf16 autocast (auto: MPS)")
    native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    if not native:
        return Precision(kind, None, "fp32 (auto: this CPU has no native bf16, AVX-512 BF16 or "
                                     "AMX, so bf16 would be emulated and slow)")
    speedup = cpu_bf16_speedup() if cpu_bf16 is None else 2.0
    if speedup < MIN_CPU_BF16_SPEEDUP:
        return Precision(kind, None, f"fp32 (auto: bf16 matmuls measured {speedup:.2f}x the fp32 "
                                     "speed on this CPU, so bf16 would not train faster)")
    return Precision(kind, torch.bfloat16, f"bf16 autocast (auto: native CPU bf16, matmuls "
                                           f"measured {speedup:.1f}x fp32)")


def resolve_precision(requested: str, device: torch.device, cpu_bf16: bool | None = None) -> Precision:
    """What `--precision` means on `device`. An explicit choice is obeyed (with a warning in
    the note where it will be slow); `auto` is the fastest safe one.

    `cpu_bf16` overrides CPU detection and measurement (tests)."""
    kind = device.type
    if requested == "auto":
        return auto_precision(device, cpu_bf16)
    if requested == "fp32":
        return Precision(kind, None, "fp32 (--precision fp32)")
    if requested == "bf16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError("--precision bf16: this GPU has no bf16 arithmetic; use fp16 or fp32")
        native = kind != "cpu" or (cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16)
        return Precision(kind, torch.bfloat16, "bf16 autocast (--precision bf16)" + (
            "" if native else "; this CPU has no native bf16, so expect it slower than fp32"))
    if requested == "fp16":
        slow = "; CPUs emulate most fp16 arithmetic, so expect it slower than fp32" if kind == "cpu" else ""
        return Precision(kind, torch.float16, f"fp16 autocast with gradient scaling (--precision fp16){slow}")
    raise UserError(f"--precision {requested}: expected one of {', '.join(PRECISIONS)}")
