#!/usr/bin/env python
"""Export time, size and fidelity: a checkpoint of the given shape (default 6 x 384, context
256, the character vocabulary of the data) written by `fundamentallm export` in fp32 and
bf16, loaded back with `transformers`, and its logits compared with ours on a batch of
windows of the data (max absolute difference; in bf16 also of the probabilities).

    python benchmarks/export.py --data ../shared/data/shakespeare.txt --json

The weights are drawn at random (with the residual projections not zeroed, so every
matrix matters), or, with `--train-seconds S`, trained that long first (`fundamentallm
train`, the same shape), since trained weights give sharper logits than random ones. Each
architecture is one run (`swiglu`: the defaults, exported as Qwen3; `relu2`: our own
modelling code, loaded with trust_remote_code).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from fundamentallm.checkpoint import load_model, save_checkpoint
from fundamentallm.config import Config
from fundamentallm.data.text import read_text_file
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors
from fundamentallm.interop import export_checkpoint
from fundamentallm.model import GPT
from fundamentallm.tokenizers import build_tokenizer


def one(activation: str, args, text: str, work: Path) -> dict:
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise UserError("this benchmark loads the export with transformers: pip install 'fundamentallm[hf]'") from None
    tokenizer = build_tokenizer("char", text)
    cfg = Config()
    cfg.model.vocab_size = tokenizer.vocab_size
    cfg.model.model_dim, cfg.model.num_layers, cfg.model.num_heads = args.model_dim, args.num_layers, args.num_heads
    cfg.model.context_length, cfg.model.activation, cfg.model.zero_init = args.context_length, activation, False
    checkpoint = work / f"{activation}.pt"
    if args.train_seconds:
        (work / "train.txt").write_text(text[: int(len(text) * 0.9)], encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "fundamentallm", "train", str(work / "train.txt"),
                               "-o", str(work / activation), "--quiet", "--max-time", str(args.train_seconds),
                               "--model-dim", str(args.model_dim), "--num-layers", str(args.num_layers),
                               "--num-heads", str(args.num_heads), "--context-length", str(args.context_length),
                               "--activation", activation, "--val-split", "0"], capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"training failed: {done.stderr.strip().splitlines()[-1:]}")
        checkpoint = work / activation / "final.pt"
        model, tokenizer, _ = load_model(checkpoint)
    else:
        torch.manual_seed(0)
        model = GPT(cfg.model).eval()
        save_checkpoint(checkpoint, cfg, tokenizer, model)
    ids = tokenizer.encode(text[: 8 * args.context_length + 1])
    windows = torch.tensor([ids[i:i + args.context_length] for i in range(0, 8 * args.context_length,
                                                                         args.context_length)])  # (8, T)
    with torch.no_grad():
        ours = model(windows)
    result = {"activation": activation, "trained_s": args.train_seconds, "parameters": model.num_parameters(),
              "checkpoint_bytes": checkpoint.stat().st_size}
    for dtype in ("fp32", "bf16"):
        out = work / f"{activation}-{dtype}"
        report = export_checkpoint(checkpoint, out, dtype, overwrite=True)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=report.remote_code).eval()
        load_s = time.perf_counter() - started
        with torch.no_grad():
            logits = theirs(windows).logits.float()
        result[dtype] = {"architecture": report.architecture, "remote_code": report.remote_code,
                         "export_s": round(report.seconds, 3), "safetensors_bytes": report.bytes,
                         "transformers_load_s": round(load_s, 3),
                         "max_abs_logit_diff": float((logits - ours).abs().max()),
                         "max_abs_prob_diff": float((logits.softmax(-1) - ours.softmax(-1)).abs().max())}
    return result


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Export time, size and logit fidelity of `fundamentallm export`.")
    p.add_argument("--data", type=Path, default=Path("../shared/data/shakespeare.txt"))
    p.add_argument("--model-dim", type=int, default=384)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--num-heads", type=int, default=6)
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--activations", nargs="+", default=["swiglu", "relu2"], choices=["swiglu", "relu2", "gelu"])
    p.add_argument("--train-seconds", type=float, help="train each model this long first (default: random weights)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    return run_reporting_errors(lambda: run(args))


def run(args) -> int:
    text = read_text_file(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        results = [one(a, args, text, Path(tmp)) for a in args.activations]
    report = {"shape": {"model_dim": args.model_dim, "num_layers": args.num_layers, "num_heads": args.num_heads,
                        "context_length": args.context_length}, "torch_threads": torch.get_num_threads(),
              "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            for dtype in ("fp32", "bf16"):
                d = r[dtype]
                print(f"{r['activation']} {dtype}: {d['architecture']} {d['safetensors_bytes'] / 1e6:.1f} MB in "
                      f"{d['export_s']:.2f} s; max |logit diff| {d['max_abs_logit_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
