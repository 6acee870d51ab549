#!/usr/bin/env python
"""LoRA against a full fine-tune of the same length: what trains, what it costs in memory,
and where the validation loss lands.

A base model trains `--base-seconds` on the first half of the training text (the first 90%
of `--data`, the standard split); each fine-tune then trains `--steps` steps from it on the
second half, the same batches for every run, and is validated on the last 10%:

    full     every weight trains (the default optimizer)
    lora-R   --lora-rank R for each R in --ranks, the base frozen

For each: the trained parameters and their share of the model, the training state (weights,
gradients, optimizer state: what the optimizer step holds, as the run's summary counts it),
the process's peak memory (peak RSS on a CPU, CUDA's peak allocation on a GPU), tokens/s,
the validation loss (and the base's, on the same text, before any fine-tune), and the size
of the checkpoint written (a LoRA checkpoint holds the
adapters alone).

    python benchmarks/lora.py --data ../shared/data/shakespeare.txt --json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors


def fundamentallm(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fundamentallm", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"fundamentallm {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shakespeare_sample.txt")
    p.add_argument("--base-seconds", type=float, default=120)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps of each fine-tune")
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 32])
    p.add_argument("--learning-rate", type=float, default=2e-3, help="every fine-tune's peak rate")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="train flags for the base (a shape), after --")
    args = p.parse_args(argv)
    text = Path(args.data).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    results: dict = {"data": args.data, "base_seconds": args.base_seconds, "steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "base.txt").write_text(text[: cut // 2], encoding="utf-8")
        (work / "tune.txt").write_text(text[cut // 2: cut], encoding="utf-8")
        (work / "val.txt").write_text(text[cut:], encoding="utf-8")
        fundamentallm("train", str(work / "base.txt"), "-o", str(work / "base"), "--max-time", str(args.base_seconds),
                      "--quiet", *args.extra)
        base = json.loads((work / "base" / "summary.json").read_text())
        results["base"] = {k: base[k] for k in ("parameters", "steps", "precision")}
        # the base on the fine-tunes' validation text: where each fine-tune starts from
        scored = json.loads(fundamentallm("evaluate", str(work / "base" / "final.pt"), "--data", str(work / "val.txt"),
                                          "--json"))
        results["base"]["val_loss"] = scored["loss"]
        runs = {"full": [], **{f"lora-{r}": ["--lora-rank", str(r)] for r in args.ranks}}
        for name, flags in runs.items():
            out = work / name
            fundamentallm("train", str(work / "tune.txt"), "-o", str(out), "--init-from", str(work / "base" / "final.pt"),
                          "--validation-data", str(work / "val.txt"), "--max-steps", str(args.steps),
                          "--eval-interval", str(args.steps), "--learning-rate", str(args.learning_rate),
                          "--quiet", *flags)
            summary = json.loads((out / "summary.json").read_text())
            results["runs"][name] = {
                "trained_parameters": summary["trained_parameters"],
                "trained_share": round(summary["trained_parameters"] / summary["parameters"], 5),
                "training_state_mb": summary["training_state_mb"],
                "peak_memory_mb": summary["peak_memory_mb"], "peak_memory_kind": summary["peak_memory_kind"],
                "tokens_per_s": summary["tokens_per_s"], "val_loss": summary["final_val_loss"],
                "checkpoint_mb": round((out / "final.pt").stat().st_size / 1e6, 3),
            }
            print(name, json.dumps(results["runs"][name]), file=sys.stderr)
    print(json.dumps(results, indent=2) if args.json else results)
    return 0


if __name__ == "__main__":
    run_reporting_errors(main)
