#!/usr/bin/env python
"""Scoring speed: `evaluate`'s tokens/s against training's, on the same model and machine.

Trains the default model for `--train-steps` steps (compiled, the default precision), reads
its steady training speed from metrics.json (the records after the first, which compiled),
then scores texts of each size in `--sizes` (MB: the data repeated to that length) with

    fundamentallm evaluate final.pt TEXT --json [--precision P]

for each precision in `--precisions`. The speed is the scored tokens over the scoring time
(evaluate's own `seconds`: the forward passes, not reading and tokenizing); `command_s` is
the whole command. The goal: at least 3x training's tokens/s in the default precision.

    python benchmarks/evaluate.py --data data/shakespeare_sample.txt --sizes 1 10 --json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors


def fundamentallm(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fundamentallm", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"fundamentallm {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def training_speed(out: Path) -> float:
    """Tokens/s between the second metrics record and the last (the first steps compiled)."""
    records = [r for r in json.loads((out / "metrics.json").read_text()) if "tokens" in r]
    if len(records) < 3:
        raise UserError("--train-steps: give at least 30 steps (three metrics records, one every 10)")
    first, last = records[1], records[-1]
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def text_of(data: Path, megabytes: float, directory: Path) -> Path:
    text = data.read_text(encoding="utf-8")
    size = int(megabytes * 1_000_000)
    path = directory / f"text-{megabytes:g}MB.txt"
    path.write_text((text * (size // len(text) + 1))[:size], encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shakespeare_sample.txt")
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 10], help="megabytes of text to score")
    p.add_argument("--precisions", nargs="+", default=["auto", "fp32"])
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="more train flags, after --")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        fundamentallm("train", args.data, "-o", str(out), "--max-steps", str(args.train_steps),
                      "--log-interval", "10", "--quiet", *args.extra)
        summary = json.loads((out / "summary.json").read_text())
        train_speed = training_speed(out)
        runs = []
        for size in args.sizes:
            text = text_of(Path(args.data), size, Path(tmp))
            for precision in args.precisions:
                began = time.perf_counter()
                score = json.loads(fundamentallm("evaluate", str(out / "final.pt"), str(text), "--json",
                                                 "--precision", precision))
                speed = score["tokens"] / score["seconds"]
                runs.append({"megabytes": size, "precision": precision, "chosen": score["precision"],
                             "tokens": score["tokens"], "seconds": score["seconds"],
                             "command_s": round(time.perf_counter() - began, 2), "tokens_per_s": round(speed),
                             "vs_training": round(speed / train_speed, 2), "loss": round(score["loss"], 5)})
                print(runs[-1], file=sys.stderr)
    report = {"data": args.data, "parameters": summary["parameters"], "training_precision": summary["precision"],
              "training_tokens_per_s": round(train_speed), "runs": runs,
              "default_at_least_3x": all(r["vs_training"] >= 3 for r in runs if r["precision"] == "auto")}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"training: {report['training_tokens_per_s']:,} tokens/s ({summary['precision']})")
        for r in runs:
            print(f"{r['megabytes']:g} MB, {r['chosen']}: {r['tokens_per_s']:,} tokens/s "
                  f"({r['vs_training']}x training), {r['command_s']} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
