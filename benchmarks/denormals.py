#!/usr/bin/env python
"""Would flushing subnormal numbers to zero make a CPU training step faster?

x86 CPUs take arithmetic on subnormal floats (below 1.2e-38 in fp32) through a slow
microcode path, and training could make them: attention probabilities of ignored keys,
their gradients. `torch.set_flush_denormal(True)` computes them as zero. This times one
forward and backward of a checkpoint's model (trained weights, and the same shape freshly
initialised) on a batch of `--data`, with flushing off and on, interleaved, on one thread
(the setting is per thread), and counts the subnormal gradient entries the step leaves.

    python benchmarks/denormals.py OUT/final.pt --data val.txt --json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from fundamentallm.checkpoint import load_model
from fundamentallm.data.text import read_text_file
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors
from fundamentallm.model import GPT


def subnormal_gradients(model: torch.nn.Module) -> int:
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((p.grad != 0) & (p.grad.abs() < tiny)).sum()) for p in model.parameters() if p.grad is not None)


def main(argv: list[str]) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="text for the batch (its first batch x (context + 1) tokens)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--repeats", type=int, default=4, help="interleaved measurements per setting")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for flag in ("batch_size", "steps", "repeats"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1 (got {getattr(args, flag)})")
    torch.set_num_threads(1)
    trained, tokenizer, cfg = load_model(args.checkpoint)
    torch.manual_seed(0)
    models = {"trained": trained, "fresh": GPT(cfg.model)}
    T = cfg.model.context_length
    ids = torch.tensor(tokenizer.encode(read_text_file(args.data)), dtype=torch.long)
    if len(ids) < args.batch_size * (T + 1):
        raise UserError(f"--data: {len(ids)} tokens, a batch needs {args.batch_size * (T + 1)}")
    batch = ids[: args.batch_size * (T + 1)].view(args.batch_size, T + 1)  # (B, T + 1)
    x, y = batch[:, :-1], batch[:, 1:]  # (B, T) each

    def step(model: torch.nn.Module) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        model(x, y).backward()

    times: dict[tuple[str, bool], list[float]] = {}
    subnormal = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                step(model)  # warm-up, and the gradients counted below
                if not flush:
                    subnormal[name] = subnormal_gradients(model)
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(model)
                times.setdefault((name, flush), []).append((time.perf_counter() - start) / args.steps * 1e3)
    torch.set_flush_denormal(False)
    report = {"checkpoint": args.checkpoint, "threads": 1, "batch_size": args.batch_size, "context": T,
              "models": {name: {"ms_per_step_kept": round(statistics.median(times[(name, False)]), 2),
                                "ms_per_step_flushed": round(statistics.median(times[(name, True)]), 2),
                                "flushed_over_kept": round(statistics.median(times[(name, True)])
                                                           / statistics.median(times[(name, False)]), 3),
                                "subnormal_gradient_entries": subnormal[name]}
                         for name in models}}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, row in report["models"].items():
            print(f"{name}: {row['ms_per_step_kept']} ms kept, {row['ms_per_step_flushed']} ms flushed "
                  f"({row['flushed_over_kept']}x); {row['subnormal_gradient_entries']} subnormal gradient entries")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: main(sys.argv[1:])))
