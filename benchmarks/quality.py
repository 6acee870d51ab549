#!/usr/bin/env python
"""Quality per minute: validation loss after a fixed wall-clock budget.

Splits a text into the first 90% (train) and the last 10% (validation) of its characters,
then, for each seed, runs exactly what a user would type:

    fundamentallm train train.txt --validation-data val.txt --max-time 105 --seed S
    fundamentallm evaluate OUT/final.pt val.txt --json

with our defaults (plus any extra train flags after `--`, e.g. `--tokenizer bpe`), and the
classic recipe (nanoGPT's "baby GPT" on CPU: learned positions, LayerNorm, GELU, AdamW at 1e-3 with cosine decay,
4 layers x 4 heads x 128 dim, context 64, batch 12, eager and fp32 as in nanoGPT's CPU recipe) for
the same time on the same machine, so the gain is a same-machine comparison. Loss is in
nats per token over the whole validation split (per character with the default tokenizer);
`bits_per_char` compares runs with different tokenizers.

    python benchmarks/quality.py --data ../shared/data/shakespeare.txt --json

With `--target-loss L` each run also reports `time_to_target_s`: the elapsed training time
(compilation included) at the first periodic evaluation whose validation loss is <= L, or
null. Periodic evaluations score `--eval-iters` batches of the validation text, not the
whole split, so the final whole-split loss is reported beside it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from fundamentallm.data.text import read_text_file
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

CLASSIC = [
    "--position", "learned", "--norm", "layernorm", "--activation", "gelu", "--no-qk-norm", "--tie-embeddings",
    "--no-zero-init", "--optimizer", "adamw", "--learning-rate", "1e-3", "--min-lr", "1e-4",
    "--lr-schedule", "cosine", "--warmup-steps", "100", "--beta2", "0.99", "--weight-decay", "0.1",
    "--model-dim", "128", "--num-layers", "4", "--num-heads", "4", "--context-length", "64",
    "--batch-size", "12", "--dropout", "0", "--no-compile", "--precision", "fp32",
]


def fundamentallm(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fundamentallm", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"fundamentallm {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def time_to_target(out: Path, target: float) -> float | None:
    """Elapsed seconds at the first periodic evaluation at or under `target`."""
    records = json.loads((out / "metrics.json").read_text())
    return next((r["elapsed_s"] for r in records if r.get("val_loss", float("inf")) <= target), None)


def one_run(train: Path, val: Path, out: Path, seed: int, max_time: float, flags: list[str],
            target: float | None = None) -> dict:
    fundamentallm("train", str(train), "--validation-data", str(val), "--max-time", str(max_time),
                  "--seed", str(seed), "-o", str(out), "--overwrite", "--quiet", *flags)
    score = json.loads(fundamentallm("evaluate", str(out / "final.pt"), str(val), "--json"))
    summary = json.loads((out / "summary.json").read_text())
    model = yaml.safe_load((out / "config.yaml").read_text())["model"]  # the shape it trained (sized or given)
    result = {"seed": seed, "val_loss": round(score["loss"], 4),
              "bits_per_char": round(score["bits_per_char"], 4), "steps": summary["steps"],
              "tokens_per_s": summary["tokens_per_s"], "wall_time_s": summary["wall_time_s"],
              "precision": summary["precision"], "parameters": summary["parameters"],
              "shape": "x".join(str(model[k]) for k in ("model_dim", "num_layers", "num_heads", "context_length"))}
    if target is not None:
        result["time_to_target_s"] = time_to_target(out, target)
    return result


def recipe(name: str, runs: list[dict]) -> dict:
    losses = [r["val_loss"] for r in runs]
    bits = [r["bits_per_char"] for r in runs]
    return {"name": name, "median_val_loss": statistics.median(losses),
            "median_bits_per_char": statistics.median(bits), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = ArgumentParser(description="Validation loss after a wall-clock budget: ours vs the classic recipe. "
                       "Train flags after `--` apply to our runs.")
    p.add_argument("--data", type=Path, default=Path("../shared/data/shakespeare.txt"))
    p.add_argument("--max-time", type=float, default=105.0, help="seconds of training per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--no-classic", action="store_true", help="skip the classic recipe")
    p.add_argument("--target-loss", type=float,
                   help="also report the training time at which validation loss first reached this")
    p.add_argument("--work-dir", type=Path, help="keep runs here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    return run_reporting_errors(lambda: run(args, extra))


def run(args, extra: list[str]) -> int:
    text = read_text_file(args.data)
    cut = int(len(text) * 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train, val = work / "train.txt", work / "val.txt"
        train.write_text(text[:cut], encoding="utf-8")
        val.write_text(text[cut:], encoding="utf-8")
        recipes = [("fundamentallm defaults" + (" " + " ".join(extra) if extra else ""), extra)]
        if not args.no_classic:
            recipes.append(("classic baby-GPT recipe", CLASSIC))
        report = {"data": str(args.data), "max_time_s": args.max_time, "target_loss": args.target_loss,
                  "recipes": []}
        for index, (name, flags) in enumerate(recipes):
            runs = []
            for seed in args.seeds:
                runs.append(one_run(train, val, work / f"recipe{index}-seed{seed}", seed, args.max_time,
                                    flags, args.target_loss))
                if not args.json:
                    print(f"{name}: seed {seed}: val loss {runs[-1]['val_loss']:.4f} "
                          f"({runs[-1]['steps']} steps, {runs[-1]['tokens_per_s']:,.0f} tokens/s)"
                          + (f", reached {args.target_loss} after {runs[-1]['time_to_target_s']} s"
                             if args.target_loss is not None else ""), flush=True)
            report["recipes"].append(recipe(name, runs))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["recipes"]:
            print(f"{r['name']}: median val loss {r['median_val_loss']:.4f} over seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
