"""`train --profile`: where a step's time goes, for a few steps after warm-up.

The profiler records steps START+1 .. END (`--profile-steps START:END`; the first START
steps, compilation included, are the warm-up) with `torch.profiler`, writes the trace to
OUTPUT_DIR/profile/ (a `*.pt.trace.json` that TensorBoard's profiler plugin reads with
`--logdir OUTPUT_DIR/profile` and that https://ui.perfetto.dev opens), and prints a summary
(also kept as OUTPUT_DIR/profile/summary.json):
the operators with the most self time, the shares of the step spent in data, forward,
backward and the optimizer (the loop marks them with `phase`), MFU against a matmul peak
measured in the same run, and peak memory (CUDA's allocator, or the process's RSS on CPU).
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fundamentallm.atomic import write_json
from fundamentallm.config.loading import parse_steps
from fundamentallm.training.precision import cpu_has_native_bf16, matmul_gflops

PHASES = ("data", "forward", "backward", "optimizer")


def peak_gflops(dtype: torch.dtype, device: torch.device, quick: bool = False) -> tuple[float, dict[int, float]]:
    """The most this machine's matmuls do in `dtype` (GFLOP/s), and the probe by size.

    On a CPU the best shape is not the largest: (2048x512)@(512x1024), whose operands fit in
    the caches, runs faster than a 4096-square product, and a model's small matmuls run as
    fast as that. Taking the best over sizes keeps MFU from reading high. The full probe is
    ~620 GFLOP (4 s on 2 AVX2 cores); `quick` does 1/18 of it, for sizing a model, where a
    few percent moves nothing (its shapes are 1.6-2.5x apart) and every second comes out of
    the training budget.
    """
    if device.type in ("cuda", "mps"):
        synchronize = torch.cuda.synchronize if device.type == "cuda" else torch.mps.synchronize
        size = 8192 if device.type == "cuda" else 4096
        a = torch.randn(size, size, device=device, dtype=dtype)
        a @ a  # warm-up
        synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        synchronize()
        best = 10 * 2 * size**3 / (time.perf_counter() - start) / 1e9
        return best, {size: round(best, 1)}
    trials = 3 if dtype == torch.float32 or cpu_has_native_bf16() else 1  # emulated bf16 is slow
    sizes = (256, 512, 1024) if trials > 1 else (512,)
    work = 4  # matmuls of (4s x s) @ (s x 2s) add up to work * 16 GFLOP per trial
    if quick:
        trials, sizes, work = min(trials, 2), sizes[:2], 0.5
    by_size = {size: max(matmul_gflops(dtype, size=size, repeats=max(1, int(work * (1024 // size) ** 3)))
                         for _ in range(trials)) for size in sizes}
    return max(by_size.values()), {k: round(v, 1) for k, v in by_size.items()}


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak anew (CUDA's allocator; Linux's peak RSS, through /proc/self/clear_refs),
    so that it measures the steps and not the building of the run."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif sys.platform.startswith("linux"):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "CUDA allocator peak"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss if sys.platform == "darwin" else rss * 1024, "process peak RSS"


@dataclass(kw_only=True)
class ProfileSummary:
    steps: int
    seconds: float
    top_ops: list[tuple[str, float, float]]  # name, self ms per step, share of the profiled time
    phases: dict[str, float]  # phase → share of the profiled time
    mfu: float
    achieved_gflops: float
    peak_gflops: float
    peak_memory_bytes: int
    memory_kind: str
    trace: str
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"profile of {self.steps} steps ({1000 * self.seconds / self.steps:.1f} ms/step), trace {self.trace}",
               "time: " + ", ".join(f"{name} {share:.0%}" for name, share in self.phases.items()),
               f"MFU {self.mfu:.1%} ({self.achieved_gflops:.1f} of a measured {self.peak_gflops:.0f} GFLOP/s); "
               f"peak memory {self.peak_memory_bytes / 2**20:,.0f} MiB ({self.memory_kind})",
               "top operators by self time:"]
        out += [f"  {share:6.1%}  {ms:8.2f} ms/step  {name}" for name, ms, share in self.top_ops]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 4), "phases": self.phases,
                "top_ops": [{"name": n, "self_ms_per_step": round(ms, 3), "share": round(s, 4)}
                            for n, ms, s in self.top_ops],
                "mfu": round(self.mfu, 4), "achieved_gflops": round(self.achieved_gflops, 1),
                "peak_gflops": round(self.peak_gflops, 1), "peak_memory_bytes": self.peak_memory_bytes,
                "memory_kind": self.memory_kind, "trace": self.trace, **self.extra}


class Profiler:
    """Decides for itself when to record: `after_step(step)` starts it after the warm-up
    and stops it at the end of the window; `phase(name)` marks a part of the step."""

    def __init__(self, steps: str | None, out: Path, *, device: torch.device, dtype: torch.dtype,
                 flops_per_step: float, report: Callable[[str], None], enabled: bool = True):
        self.enabled = steps is not None and enabled
        self.first, self.last = parse_steps(steps) if steps is not None else (0, 0)
        self.out, self.device, self.dtype = out / "profile", device, dtype
        self.flops_per_step, self.report = flops_per_step, report
        self.profile: torch.profiler.profile | None = None
        self.started = 0.0
        self.summary: ProfileSummary | None = None

    def phase(self, name: str):
        return torch.profiler.record_function(name) if self.profile is not None else nullcontext()

    def after_step(self, step: int, stopping: bool = False) -> None:
        if not self.enabled:
            return
        if self.profile is None and step == self.first and not stopping and self.summary is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.reset_peak_memory_stats(self.device)
            self.profile = torch.profiler.profile(activities=activities, record_shapes=False)
            self.profile.start()
            self.started = time.perf_counter()
        elif self.profile is not None and (step == self.last or stopping):
            self.finish(step - self.first)

    def finish(self, steps: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.started
        profile, self.profile = self.profile, None
        profile.stop()
        self.out.mkdir(parents=True, exist_ok=True)
        torch.profiler.tensorboard_trace_handler(str(self.out), worker_name="train")(profile)
        trace = max(self.out.glob("*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
        self.summary = summarise(profile, steps, seconds, flops_per_step=self.flops_per_step, device=self.device,
                                 dtype=self.dtype, trace=trace)
        write_json(self.out / "summary.json", self.summary.to_dict())
        if steps < self.last - self.first:
            self.report(f"note: the run ended after {steps} of the {self.last - self.first} profiled steps")
        for line in self.summary.lines():
            self.report(line)


def summarise(profile, steps: int, seconds: float, *, flops_per_step: float, device: torch.device,
              dtype: torch.dtype, trace: Path, top: int = 10) -> ProfileSummary:
    events = profile.key_averages()
    cuda = device.type == "cuda"
    total_us = seconds * 1e6
    phase_us = {e.key: (e.device_time_total if cuda and e.device_time_total else e.cpu_time_total)
                for e in events if e.key in PHASES}
    phases = {name: phase_us.get(name, 0.0) / total_us for name in PHASES}
    phases["other"] = max(0.0, 1.0 - sum(phases.values()))
    ops = [e for e in events if e.key not in PHASES and not e.key.startswith("ProfilerStep")]
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    ranked = sorted(ops, key=self_time, reverse=True)[:top]
    top_ops = [(e.key, self_time(e) / 1000 / max(1, steps), self_time(e) / total_us) for e in ranked]
    peak, by_size = peak_gflops(dtype, device)
    achieved = flops_per_step * steps / seconds / 1e9
    memory, kind = peak_memory_bytes(device)
    return ProfileSummary(steps=steps, seconds=seconds, top_ops=top_ops,
                          phases={k: round(v, 4) for k, v in phases.items()}, mfu=achieved / peak,
                          achieved_gflops=achieved, peak_gflops=peak, peak_memory_bytes=memory, memory_kind=kind,
                          trace=str(trace),
                          extra={"peak_probe_gflops_by_size": by_size, "dtype": str(dtype).removeprefix("torch.")})
