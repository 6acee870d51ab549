#!/usr/bin/env python
"""Training throughput: tokens/s and MFU, in fp32 and in bf16 (--precision fp32, bf16).

MFU (model FLOPs utilisation) is the share of the machine's matmul peak that training turns
into model arithmetic: tokens/s x FLOPs per token / peak, with FLOPs per token =
6·(weight-matrix parameters) + 12·layers·dim·context (GPT.flops_per_token). The peak is
measured in the same run, so figures from different machines or loads stay comparable.

Each measurement is the real training loop (fundamentallm.training.loop.train) on the
bundled text; tokens/s is taken between the end of a warm-up and the last step. Both runs
see the same batches from the same initial weights, so the gap between their last losses
is what the arithmetic changed. The shape defaults to train's.

    python benchmarks/throughput.py --json
    python benchmarks/throughput.py --model-dim 384 --num-layers 6 --num-heads 6 \\
        --context-length 256 --steps 20 --warmup 10 --json
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


def measure(args, precision: str, workdir: Path) -> dict:
    cfg = Config()
    m, t = cfg.model, cfg.training
    m.model_dim, m.num_layers, m.num_heads, m.context_length = (
        args.model_dim, args.num_layers, args.num_heads, args.context_length)
    t.batch_size, t.max_steps, t.log_interval = args.batch_size, args.warmup + args.steps, 10
    t.precision, t.device = precision, args.device
    if args.compile is not None:
        t.compile = args.compile
    if args.optimizer is not None:
        cfg.optim.optimizer = args.optimizer
    cfg.data.train, cfg.data.val_split = [str(args.data)], 0.0
    cfg.checkpoint.output_dir = str(workdir / precision)
    cfg.checkpoint.checkpoint_interval = 10**9
    summary = train(cfg, overwrite=True)
    records = read_metrics(Path(cfg.checkpoint.output_dir) / "metrics.json")
    start = next(r for r in records if r["step"] >= args.warmup)
    end = records[-1]
    tokens_per_s = (end["tokens"] - start["tokens"]) / (end["elapsed_s"] - start["elapsed_s"])
    return {"tokens_per_s": round(tokens_per_s, 1), "precision": summary["precision"],
            "last_loss": round(end["train_loss"], 4)}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Training tokens/s and MFU, fp32 and bf16.")
    model, training = Config().model, Config().training
    p.add_argument("--model-dim", type=int, default=model.model_dim)
    p.add_argument("--num-layers", type=int, default=model.num_layers)
    p.add_argument("--num-heads", type=int, default=model.num_heads)
    p.add_argument("--context-length", type=int, default=model.context_length)
    p.add_argument("--batch-size", type=int, default=training.batch_size)
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
        for key in ("fp32", "bf16"):
            results[key] = measure(args, key, Path(tmp))
    # A shared virtual machine's speed drifts: probe the peak again after training and keep
    # the higher figure, so MFU errs low rather than high.
    peaks = {name: max(peaks[name], probed_peak(dtype, device)) for name, dtype in DTYPE_NAMES.items()}
    report["peak_gflops"] = {k: float(f"{v:.4g}") for k, v in peaks.items()}  # 4 digits: 1.234 as well as 1234
    report["last_probe_gflops_by_size"] = PROBES
    for key, result in results.items():
        result["mfu"] = round(result["tokens_per_s"] * flops / (peaks[result.pop("precision")] * 1e9), 4)
        report[key] = result
    report["bf16_over_fp32"] = round(results["bf16"]["tokens_per_s"] / results["fp32"]["tokens_per_s"], 2)
    report["last_loss_gap"] = round(results["bf16"]["last_loss"] - results["fp32"]["last_loss"], 4)
    report["auto"] = resolve_precision("auto", device).note
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"peak matmul: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
        for key in ("fp32", "bf16"):
            r = report[key]
            print(f"{key:5s} {r['tokens_per_s']:>9,.0f} tokens/s  MFU {r['mfu']:.1%}  last loss {r['last_loss']:.4f}")
        print(f"bf16 / fp32 {report['bf16_over_fp32']:.2f}x, last-loss gap {report['last_loss_gap']:+.4f}")
        print(f"--precision auto here: {report['auto']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
