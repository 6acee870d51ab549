#!/usr/bin/env python
"""Generation speed: KV-cached sampling against recomputing the whole context per token.

Builds a model of the given shape (random weights: speed does not depend on them) or loads
a checkpoint, then samples `--tokens` tokens with the same seed both ways. Without the
cache, every new token runs the model over the whole (latest) context; with it, over one
position. Reports tokens/s for each and the speed-up, and whether both produced the same
tokens while the text still fits in the context (after that the cached sampler restarts
from the latest half of the context, so the two legitimately differ).

    python benchmarks/generate.py --model-dim 384 --num-layers 6 --num-heads 6 \\
        --context-length 256 --tokens 1000 --json
"""

from __future__ import annotations

import json
import sys
import time

import torch

from fundamentallm.checkpoint import load_model
from fundamentallm.config import ModelConfig
from fundamentallm.errors import ArgumentParser, run_reporting_errors
from fundamentallm.generation import SamplingOptions, generate
from fundamentallm.model import GPT


def timed(model: GPT, prompt: list[int], options: SamplingOptions) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    tokens = torch.stack([token for token, *_ in generate(model, prompt, options)], dim=1)  # (samples, tokens)
    return tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="KV-cached vs uncached generation speed.")
    p.add_argument("--checkpoint", help="a trained model (default: random weights of the shape below)")
    p.add_argument("--model-dim", type=int, default=384)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--num-heads", type=int, default=6)
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=65)
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--cached-only", action="store_true",
                   help="time only KV-cached generation (uncached is slow with many samples)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    return run_reporting_errors(lambda: run(args))


def run(args) -> int:
    torch.manual_seed(0)
    if args.checkpoint:
        model, _, _ = load_model(args.checkpoint)
    else:
        cfg = ModelConfig(model_dim=args.model_dim, num_layers=args.num_layers,
                          num_heads=args.num_heads, context_length=args.context_length,
                          vocab_size=args.vocab_size)
        model = GPT(cfg).eval()
    prompt = [1]
    report = {"shape": {k: getattr(model.cfg, k) for k in
                        ("model_dim", "num_layers", "num_heads", "context_length")},
              "parameters": model.num_parameters(), "tokens": args.tokens,
              "num_samples": args.num_samples, "threads": torch.get_num_threads()}
    results = {}
    modes = (("cached", True),) if args.cached_only else (("cached", True), ("uncached", False))
    for name, use_cache in modes:
        options = SamplingOptions(max_tokens=args.tokens, temperature=1.0, seed=7,
                                  num_samples=args.num_samples, use_cache=use_cache)
        warm_up = SamplingOptions(max_tokens=4, seed=7, use_cache=use_cache)
        list(generate(model, prompt, warm_up))  # first calls pay for kernel selection
        tokens, seconds = timed(model, prompt, options)
        results[name] = tokens
        report[name] = {"seconds": round(seconds, 3),
                        "tokens_per_s": round(args.tokens * args.num_samples / seconds, 1)}
    if not args.cached_only:
        report["speedup"] = round(report["cached"]["tokens_per_s"] / report["uncached"]["tokens_per_s"], 2)
        fits = model.cfg.context_length - len(prompt)
        report["same_tokens_within_context"] = bool(
            torch.equal(results["cached"][:, :fits], results["uncached"][:, :fits]))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['parameters']:,} parameters, {args.tokens} tokens x {args.num_samples} samples")
        for name, _ in modes:
            print(f"{name:9s} {report[name]['tokens_per_s']:>9,.1f} tokens/s ({report[name]['seconds']} s)")
        if not args.cached_only:
            print(f"KV cache speed-up: {report['speedup']}x; same tokens within the context: "
                  f"{report['same_tokens_within_context']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
