#!/usr/bin/env python
"""Documents on short records: joined by text, ended by the end-of-text token, and masked.

The corpus: `--data` cut into records at its blank lines (a play's speeches: a few hundred
characters each), as JSONL; the records of the first 90% train, those of the last 10% are
`--validation-data`. Three runs of `--max-time` seconds each, the defaults otherwise (the
first run sizes the model to the budget; the others train that same shape, so that the
comparison is of the data, not of two shapes):

    none   --doc-boundary none   records joined by a blank line, as before documents had ends
    eos    --doc-boundary eos    each record ended by <|endoftext|>
    mask   --doc-mask            ... and each token attending only within its own record

and for each: the validation loss (per token and in bits per character: the eos runs also
predict the end of each record, which the character count does not include), training
tokens/s, steps and the stop accuracy: how often, given a validation record whole, the
model's most likely next token is the end of text (the none run has no such token to learn).

    python benchmarks/documents.py --data ../shared/data/shakespeare.txt --max-time 60 --json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from fundamentallm.checkpoint import load_model
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

RUNS = {"none": ["--doc-boundary", "none"], "eos": ["--doc-boundary", "eos"], "mask": ["--doc-mask"]}


def fundamentallm(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fundamentallm", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"fundamentallm {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def records(text: str) -> list[str]:
    return [r.strip("\n") for r in text.split("\n\n") if r.strip()]


@torch.no_grad()
def stop_accuracy(checkpoint: Path, held_out: list[str], limit: int = 300) -> float | None:
    """How often the end of text is the most likely token right after a whole record."""
    model, tokenizer, _ = load_model(checkpoint, "cpu")
    if tokenizer.eos_id is None:
        return None
    context, right, asked = model.cfg.context_length, 0, 0
    for record in held_out[:limit]:
        ids = [tokenizer.eos_id, *tokenizer.encode(record)][-context:]  # as in training: after an end of text
        right += int(model(torch.tensor([ids]))[0, -1].argmax()) == tokenizer.eos_id
        asked += 1
    return round(right / max(1, asked), 3)


def shape_flags(out: Path) -> list[str]:
    """The flags that give another run the shape this one trained (sized to its budget)."""
    config = yaml.safe_load((out / "config.yaml").read_text())
    model, training = config["model"], config["training"]
    return ["--model-dim", str(model["model_dim"]), "--num-layers", str(model["num_layers"]),
            "--num-heads", str(model["num_heads"]), "--context-length", str(model["context_length"]),
            "--batch-size", str(training["batch_size"]), "--learning-rate", str(config["optim"]["learning_rate"])]


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shakespeare_sample.txt")
    p.add_argument("--max-time", type=float, default=60)
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="more train flags for every run, after --")
    args = p.parse_args(argv)
    text = Path(args.data).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train, held_out = records(text[:cut]), records(text[cut:])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, part in (("train", train), ("val", held_out)):
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in part),
                                               encoding="utf-8")
        shape: list[str] = []
        for name in args.runs:
            out = tmp / name
            fundamentallm("train", str(tmp / "train.jsonl"), "--validation-data", str(tmp / "val.jsonl"), "-o",
                          str(out), "--max-time", str(args.max_time), "--quiet", *RUNS[name], *shape, *args.extra)
            shape = shape or shape_flags(out)
            summary = json.loads((out / "summary.json").read_text())
            results[name] = {"val_loss": round(summary["best_val_loss"], 4),
                             "val_bits_per_char": round(summary["best_val_bits_per_char"], 4),
                             "tokens_per_s": summary["tokens_per_s"], "steps": summary["steps"],
                             "parameters": summary["parameters"], "precision": summary["precision"],
                             "stop_accuracy": stop_accuracy(out / "final.pt", held_out)}
            print(name, results[name], file=sys.stderr)
    report = {"data": args.data, "max_time_s": args.max_time, "shape": " ".join(shape),
              "records": {"train": len(train), "val": len(held_out)},
              "mean_record_chars": round(sum(map(len, train)) / max(1, len(train)), 1), "runs": results}
    if "mask" in results and "eos" in results:
        report["mask_throughput_vs_eos"] = round(results["mask"]["tokens_per_s"] / results["eos"]["tokens_per_s"], 3)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, r in results.items():
            print(f"{name:>5}: val {r['val_loss']:.4f} nats/token, {r['val_bits_per_char']:.4f} bits/char, "
                  f"{r['tokens_per_s']:,.0f} tokens/s, {r['steps']} steps, stops right {r['stop_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
