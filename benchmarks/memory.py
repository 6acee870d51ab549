#!/usr/bin/env python
"""Activation memory, with and without `--activation-checkpointing`.

For one training step of a model shape, measures the bytes of the tensors autograd keeps
for the backward pass (exact, any device: counted as they are saved) and the step time;
on CUDA also the peak allocated memory. Prints JSON.

    python benchmarks/memory.py --model-dim 384 --num-layers 6 --context-length 256 --batch-size 16 --json
"""

from __future__ import annotations

import json
import sys
import time

import torch

from fundamentallm.config import ModelConfig
from fundamentallm.errors import ArgumentParser, run_reporting_errors
from fundamentallm.model import GPT
from fundamentallm.training.activation_checkpointing import checkpoint_blocks, saved_bytes


def measure(cfg: ModelConfig, batch: int, checkpointed: bool, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    if checkpointed:
        checkpoint_blocks(model)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), device=device)
    saved = saved_bytes(model, x, x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(x, x).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"saved_activation_mb": round(saved / 1e6, 2), "step_s": round(sorted(times)[len(times) // 2], 4)}
    if device == "cuda":
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 1e6, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Activation memory with and without activation checkpointing.")
    p.add_argument("--model-dim", type=int, default=384)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--num-heads", type=int, default=6)
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--vocab-size", type=int, default=65)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def work() -> int:
        cfg = ModelConfig(vocab_size=args.vocab_size, model_dim=args.model_dim, num_layers=args.num_layers,
                          num_heads=args.num_heads, context_length=args.context_length)
        off = measure(cfg, args.batch_size, False, args.device, args.repeats)
        on = measure(cfg, args.batch_size, True, args.device, args.repeats)
        result = {"shape": f"{args.num_layers}x{args.model_dim}, ctx {args.context_length}, batch {args.batch_size}",
                  "device": args.device, "without": off, "with_activation_checkpointing": on,
                  "activation_memory_ratio": round(on["saved_activation_mb"] / off["saved_activation_mb"], 3),
                  "step_time_ratio": round(on["step_s"] / off["step_s"], 3)}
        print(json.dumps(result, indent=2) if args.json else result)
        return 0

    return run_reporting_errors(work)


if __name__ == "__main__":
    sys.exit(main())
