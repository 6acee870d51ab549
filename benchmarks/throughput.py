#!/usr/bin/env python
"""Training throughput: tokens/s and MFU, in fp32 and with --mixed-precision.

MFU (model FLOPs utilisation) is the share of the machine's matmul peak that training turns
into model arithmetic: tokens/s x FLOPs per token / peak, with FLOPs per token =
6·(weight-matrix parameters) + 12·layers·dim·context (GPT.flops_per_token). The peak is
measured in the same run, so figures from different machines or loads stay comparable.

Each measurement is the real training loop (fundamentallm.training.loop.train) on the
bundled text; tokens/s is taken between the end of a warm-up and the last step.

    python benchmarks/throughput.py --model-dim 128 --num-layers 4 --num-heads 4 \\
        --context-length 64 --batch-size 12 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from fundamentallm.config import Config
from fundamentallm.errors import ArgumentParser, run_reporting_errors
from fundamentallm.model import GPT
from fundamentallm.tracking import read_metrics
from fundamentallm.training.loop import train
from fundamentallm.training.precision import resolve_device, resolve_precision
from fundamentallm.training.profiling import peak_gflops

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "shakespeare_sample.txt"
DTYPE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROBES: dict[str, dict[int, float]] = {}  # the last probe's GFLOP/s by size, for the report


def probed_peak(dtype: torch.dtype, device: torch.device) -> float:
    """The package's peak probe (training/profiling.py, which `train --profile` uses too)."""
    peak, by_size = peak_gflops(dtype, device)
    PROBES[str(dtype).removeprefix("torch.")] = by_size
    return peak


def measure(args, mixed: bool, workdir: Path) -> dict:
    cfg = Config()
    m, t = cfg.model, cfg.training
    m.model_dim, m.num_layers, m.num_heads, m.context_length = (
        args.model_dim, args.num_layers, args.num_heads, args.context_length)
    t.batch_size, t.max_steps, t.log_interval = args.batch_size, args.warmup + args.steps, 10
    t.mixed_precision, t.device = mixed, args.device
    if args.compile is not None:
        t.compile = args.compile
    if args.optimizer is not None:
        cfg.optim.optimizer = args.optimizer
    cfg.data.train, cfg.data.val_split = [str(args.data)], 0.0
    cfg.checkpoint.output_dir = str(workdir / ("mixed" if mixed else "fp32"))
    cfg.checkpoint.checkpoint_interval = 10**9
    summary = train(cfg, overwrite=True)
    records = read_metrics(Path(cfg.checkpoint.output_dir) / "metrics.json")
    start = next(r for r in records if r["step"] >= args.warmup)
    end = records[-1]
    tokens_per_s = (end["tokens"] - start["tokens"]) / (end["elapsed_s"] - start["elapsed_s"])
    return {"tokens_per_s": round(tokens_per_s, 1), "precision": summary["precision"]}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Training tokens/s and MFU, fp32 and --mixed-precision.")
    p.add_argument("--model-dim", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--context-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--optimizer", choices=("adamw", "muon"), help="default: train's default")
    p.add_argument("--steps", type=int, default=150, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="train through torch.compile (default: train's default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--data", type=Path, default=SAMPLE, help="training text")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    return run_reporting_errors(lambda: run(args))


def run(args) -> int:
    device = resolve_device(args.device)
    peaks = {name: probed_peak(dtype, device) for name, dtype in DTYPE_NAMES.items()}
    defaults = Config()
    cfg = defaults.model
    cfg.model_dim, cfg.num_layers, cfg.num_heads, cfg.context_length, cfg.vocab_size = (
        args.model_dim, args.num_layers, args.num_heads, args.context_length, 65)
    flops = GPT(cfg).flops_per_token()  # vocab differs by a few rows from the real one
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "capability": torch.backends.cpu.get_cpu_capability(),
                    "threads": torch.get_num_threads(), "device": str(device)},
        "shape": {k: getattr(args, k) for k in
                  ("model_dim", "num_layers", "num_heads", "context_length", "batch_size")},
        "optimizer": args.optimizer or defaults.optim.optimizer,
        "compile": defaults.training.compile if args.compile is None else args.compile,
        "flops_per_token": flops,
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, mixed in (("fp32", False), ("mixed", True)):
            results[key] = measure(args, mixed, Path(tmp))
    # A shared virtual machine's speed drifts: probe the peak again after training and keep
    # the higher figure, so MFU errs low rather than high.
    peaks = {name: max(peaks[name], probed_peak(dtype, device)) for name, dtype in DTYPE_NAMES.items()}
    report["peak_gflops"] = {k: round(v, 1) for k, v in peaks.items()}
    report["last_probe_gflops_by_size"] = PROBES
    for key, result in results.items():
        dtype = result.pop("precision")
        peak = peaks["bf16" if dtype == "bf16" else "fp32"]
        result["mfu"] = round(result["tokens_per_s"] * flops / (peak * 1e9), 4)
        if key == "mixed":
            result = {"dtype": dtype, **result, "note": resolve_precision(True, device).note}
        report[key] = result
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"peak matmul: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
        for key in ("fp32", "mixed"):
            r = report[key]
            print(f"{key:5s} {r.get('dtype', 'fp32'):4s} {r['tokens_per_s']:>9,.0f} tokens/s  MFU {r['mfu']:.1%}")
        print(report["mixed"]["note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
