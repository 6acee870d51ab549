#!/usr/bin/env python
"""One process against two: tokens/s, and peak memory per process with DDP against FSDP.

Trains the same model for the same steps with the same global batch three ways, through
the real command (`fundamentallm train`, `--nproc 2` for two processes):

- one process, `--batch-size B`;
- DDP over 2 processes, `--batch-size B/2` each (every process holds the whole model,
  its gradients and its optimizer state);
- FSDP over 2 processes (`--fsdp`): each holds half of each;

and reports each run's tokens/s, every process's training state (the bytes of parameters,
gradients and optimizer state it holds: what FSDP divides), and its peak memory during the steps
(summary.json: on a CPU the process's peak resident set since the first step, on CUDA the
allocator's peak), with the model's size. Rank 0's peak includes gathering the whole model
and optimizer state for the single-file checkpoint at the end. On a CPU the peak resident set
also keeps what the allocator retains after the full model is built and sharded, so there
the training state is the measure that shows the sharding. On
a CPU the processes share the machine's cores, so two processes are not expected to be
faster than one; the memory per process is the point of FSDP.

    python benchmarks/distributed.py --model-dim 512 --num-layers 8 --json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "shakespeare_sample.txt"


def process_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run(corpus: Path, out: Path, flags: list[str], *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "fundamentallm", "train", str(corpus), "-o", str(out), *flags,
                           *extra, "--quiet"], capture_output=True, text=True, cwd=ROOT, env=process_env(),
                          timeout=3600)
    if done.returncode != 0:
        raise UserError(f"a run failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    summary = json.loads((out / "summary.json").read_text())
    peaks = summary["peak_memory_mb"]
    return {"tokens_per_s": summary["tokens_per_s"], "final_train_loss": round(summary["final_train_loss"], 4),
            "peak_memory_mb_per_process": peaks if isinstance(peaks, list) else [peaks],
            "memory_kind": summary["peak_memory_kind"], "parameters": summary["parameters"],
            "training_state_mb_per_process": held if isinstance(held := summary["training_state_mb"], list) else [held]}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Tokens/s and peak memory per process: one process, DDP and FSDP.")
    p.add_argument("--model-dim", type=int, default=512)
    p.add_argument("--num-layers", type=int, default=8)
    p.add_argument("--num-heads", type=int, default=8)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="the global batch (sequences a step)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--optimizer", default="adamw", help="adamw keeps the most state per parameter (16 bytes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def work() -> int:
        if args.batch_size % 2:
            raise UserError("--batch-size must be even (it is split over two processes)")
        root = Path(tempfile.mkdtemp(prefix="distributed-"))
        try:
            corpus = root / "train.txt"
            corpus.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
            flags = ["--model-dim", str(args.model_dim), "--num-layers", str(args.num_layers), "--num-heads",
                     str(args.num_heads), "--context-length", str(args.context_length), "--max-steps",
                     str(args.steps), "--eval-interval", str(10 * args.steps), "--val-split", "0.05",
                     "--precision", args.precision, "--optimizer", args.optimizer, "--device", args.device,
                     "--no-compile",
                     "--checkpoint-interval", str(10 * args.steps)]
            half = str(args.batch_size // 2)
            result = {
                "shape": f"{args.num_layers}x{args.model_dim}, ctx {args.context_length}, global batch {args.batch_size}",
                "steps": args.steps, "precision": args.precision, "optimizer": args.optimizer, "device": args.device,
                "one_process": run(corpus, root / "one", flags, "--batch-size", str(args.batch_size)),
                "ddp_2": run(corpus, root / "ddp", flags, "--batch-size", half, "--nproc", "2"),
                "fsdp_2": run(corpus, root / "fsdp", flags, "--batch-size", half, "--nproc", "2", "--fsdp"),
            }
        finally:
            shutil.rmtree(root, ignore_errors=True)
        ddp, fsdp = result["ddp_2"]["peak_memory_mb_per_process"], result["fsdp_2"]["peak_memory_mb_per_process"]
        result["fsdp_over_ddp_peak_memory"] = round(max(fsdp) / max(ddp), 3)
        result["fsdp_over_ddp_training_state"] = round(max(result["fsdp_2"]["training_state_mb_per_process"])
                                                       / max(result["ddp_2"]["training_state_mb_per_process"]), 3)
        print(json.dumps(result, indent=2) if args.json else result)
        return 0

    return run_reporting_errors(work)


if __name__ == "__main__":
    sys.exit(main())
