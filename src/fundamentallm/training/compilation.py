"""Whether to train through `torch.compile`: what this machine has, and what the budget affords.

torch.compile (TorchInductor) fuses the many small elementwise operations of a small
transformer (norms, RoPE, activations, the loss) into a few generated kernels; that
makes a small model's training step markedly faster (1.4-1.8x, benchmarks/README.md). It needs
a C++ compiler on a CPU and Triton on CUDA; without them we train eagerly and say so,
instead of failing at the first step.

Compiling costs time up front: the first compile of a model shape takes tens of seconds on a
small CPU (28 s for the default shape on a 2-core Xeon, in bf16), and Inductor's on-disk cache
makes later runs of that shape start in a few. Under a time budget (`--max-time T`) that time
is part of the budget, so compiling is a trade: with a speedup s and a compile of c seconds,
compiled training does (T - c)·s seconds of eager work, which beats T only while
c < T·(1 - 1/s), a third to two fifths of T for these speedups. We compile when the expected
compile is at most COMPILE_SHARE of the budget (benchmarks/budget.py measures the choice).

The expected compile comes from this machine's own history: the first step of every compiled
run is timed and kept in a small file inside Inductor's cache directory (so clearing the cache
forgets it too), by the identity of what was compiled. A shape compiled before is expected to
come from the cache; a new one to take as long per layer as the slowest first compile seen
here, or a typical figure when none has been seen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fundamentallm.atomic import write_json

# Compile when the expected compile takes at most this share of --max-time (break-even is
# 0.29-0.44 for speedups of 1.4-1.8x; a margin for a slower compile than expected).
COMPILE_SHARE = 0.25
# A first compile, per transformer layer, before any has been measured on this machine
# (2-core Xeon, bf16: 28 s for 4 layers; an H200: about 20 s for 4).
SECONDS_PER_LAYER = {"cpu": 7.0, "cuda": 5.0}
# A compile from the cache, as a share of the first one, until one from the cache is measured
# (2-core Xeon: 2 s after 28).
CACHED_SHARE = 0.15
HISTORY_NAME = "fundamentallm-compile-times.json"


@dataclass(frozen=True)
class CompileJob:
    """What a run compiles: `key` names the graph (shape, batch, precision, device, torch), so
    the same key finds the same graph in Inductor's cache."""

    key: str
    device: str
    layers: int

    @classmethod
    def of(cls, settings: dict[str, Any], device: torch.device, layers: int) -> "CompileJob":
        text = json.dumps({**settings, "device": device.type, "torch": torch.__version__}, sort_keys=True)
        return cls(hashlib.sha256(text.encode()).hexdigest()[:16], device.type, layers)


class CompileHistory:
    """How long compiles took here: {key: {"device", "layers", "first_s", "cached_s"}}."""

    def __init__(self, path: Path | None = None):
        self.path = path or default_history_path()
        self.records = self.read()

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: an estimate only, never worth a failure
        return {k: v for k, v in records.items() if isinstance(v, dict)} if isinstance(records, dict) else {}

    def expected(self, job: CompileJob) -> tuple[float, str]:
        """Seconds the compile is expected to take, and why (for the start summary)."""
        record = self.records.get(job.key)
        if record:
            if "cached_s" in record:
                return float(record["cached_s"]), f"this shape compiled here before (from the cache in " \
                                                   f"{record['cached_s']:.0f} s)"
            cached = float(record["first_s"]) * CACHED_SHARE
            return cached, (f"this shape compiled here before in {record['first_s']:.0f} s; from the "
                            f"cache ~{cached:.0f} s")
        rates = [float(r["first_s"]) / max(1, int(r["layers"])) for r in self.records.values()
                 if r.get("device") == job.device and "first_s" in r and "layers" in r]
        rate = max(rates, default=SECONDS_PER_LAYER.get(job.device, SECONDS_PER_LAYER["cpu"]))
        source = "measured here" if rates else "typical; none measured here yet"
        return rate * job.layers, (f"a first compile of this shape takes ~{rate * job.layers:.0f} s "
                                   f"({rate:.1f} s a layer, {source})")

    def note(self, job: CompileJob, seconds: float) -> None:
        """Keep the time of a compile: the first of its key, or one from the cache after it."""
        self.records = self.read()  # another run may have written meanwhile
        record = self.records.get(job.key)
        if record is None:
            self.records[job.key] = {"device": job.device, "layers": job.layers, "first_s": round(seconds, 2)}
        else:
            record["cached_s"] = round(seconds, 2)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.records)
        except OSError:
            pass  # a read-only cache directory: the next run estimates again


def default_history_path() -> Path:
    """Inside Inductor's cache directory (TORCHINDUCTOR_CACHE_DIR, else a per-user temporary one)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir  # loads Inductor: only when compiling

    return Path(cache_dir()) / HISTORY_NAME


@dataclass
class Compilation:
    enabled: bool
    note: str  # one line for the run summary: which, and why
    job: CompileJob | None = None
    history: CompileHistory | None = None  # where the compile's time is kept (the main process only)
    began: float | None = None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: compiled, or the model itself. Both share
        parameters, so checkpoints and evaluation keep using the plain model."""
        self.began = time.perf_counter()
        return torch.compile(model) if self.enabled else model

    def after_step(self) -> None:
        """After the first step, which compiled the model: its time goes into the history."""
        if self.began is None:
            return
        seconds, self.began = time.perf_counter() - self.began, None
        if self.enabled and self.history is not None and self.job is not None:
            self.history.note(self.job, seconds)


def resolve_compile(requested: bool, device: torch.device, unsuitable: str | None = None, *,
                    budget_s: float | None = None, forced: bool = False, job: CompileJob | None = None,
                    history: CompileHistory | None = None) -> Compilation:
    """`unsuitable`: why this run should not compile (e.g. a setting that would recompile);
    `budget_s`: --max-time, which the compile is weighed against unless `forced` (--compile
    given); `job` and `history`: what is compiled, and this machine's compile times."""
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
    if budget_s and job is not None and history is not None and not forced:
        seconds, why = history.expected(job)
        share = f"{seconds / budget_s:.0%} of --max-time {budget_s:g} s"
        if seconds > COMPILE_SHARE * budget_s:
            return Compilation(False, f"eager: {why}, {share}; compiling pays from --max-time "
                                      f"{seconds / COMPILE_SHARE:.0f} s (--compile forces it)", job, history)
        return Compilation(True, f"torch.compile: {why}, {share}", job, history)
    given = "--compile given, so not weighed against --max-time; " if budget_s and forced else ""
    return Compilation(True, f"torch.compile ({given}the first run of a model shape compiles for up to "
                             "a minute; later runs reuse the cache)", job, history)
