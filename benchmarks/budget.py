#!/usr/bin/env python
"""Time budgets: does `--max-time T` bound the run, and does the default compile choice pay?

For each budget T, five runs of what a user types (`fundamentallm train DATA --max-time T`),
each timed from outside (the whole process) and from inside (summary.json's wall_time_s: from
the data loaded to the final save, the span --max-time bounds):

    eager          --no-compile
    compile cold   --compile, in an empty Inductor cache (TORCHINDUCTOR_CACHE_DIR)
    compile warm   --compile again, in that cache
    default cold   no flag, in another empty cache: compiled or eager as the budget decides
    default warm   no flag, in the warm cache (which also holds the compile times measured)

The loss is the run's final validation loss (every run scores the same windows). The
default passes when its loss is within 5% of the better of eager and compiled, and a run
overruns when its wall_time_s exceeds T by more than `--slack` seconds (one step and the
final save: well under a second for these models on a CPU).

    python benchmarks/budget.py --data data/shakespeare_sample.txt --budgets 20 30 60 120 --json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

MODES = {"eager": ["--no-compile"], "compile": ["--compile"], "default": []}


def one_run(data: str, budget: float, flags: list[str], cache: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fundamentallm", "train", data, "--max-time", f"{budget:g}",
                           "-o", str(out), "--overwrite", *flags, *extra], capture_output=True, text=True, env=env)
    process_s = time.perf_counter() - began
    if done.returncode != 0:
        raise UserError(f"train --max-time {budget:g} {' '.join(flags)} failed: "
                        f"{done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text())
    compiled = next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                     if line.strip().startswith("compile:")), "?")
    return {"wall_time_s": summary["wall_time_s"], "process_s": round(process_s, 2),
            "overrun_s": round(summary["wall_time_s"] - budget, 2), "steps": summary["steps"],
            "val_loss": round(summary["final_val_loss"], 4), "parameters": summary["parameters"],
            "compile": compiled}


def one_budget(data: str, budget: float, slack: float, work: Path, extra: list[str]) -> dict:
    warm, cold = work / f"cache-{budget:g}", work / f"cache-{budget:g}-default"
    runs = {}
    for name, flags, cache in (("eager", MODES["eager"], warm), ("compile_cold", MODES["compile"], warm),
                               ("compile_warm", MODES["compile"], warm), ("default_cold", MODES["default"], cold),
                               ("default_warm", MODES["default"], warm)):
        runs[name] = one_run(data, budget, flags, cache, work / f"run-{budget:g}-{name}", extra)
        print(f"T={budget:g} {name}: {runs[name]}", file=sys.stderr)
    verdicts = {}
    for cache in ("cold", "warm"):
        best = min(runs["eager"]["val_loss"], runs[f"compile_{cache}"]["val_loss"])
        verdicts[cache] = {"best_of_eager_and_compile": best,
                           "default_vs_best": round(runs[f"default_{cache}"]["val_loss"] / best - 1, 4)}
    return {"budget_s": budget, "runs": runs,
            "default_within_5_percent": all(v["default_vs_best"] <= 0.05 for v in verdicts.values()),
            "default_overruns": any(runs[f"default_{c}"]["overrun_s"] > slack for c in ("cold", "warm")),
            "vs_best": verdicts}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shakespeare_sample.txt")
    p.add_argument("--budgets", type=float, nargs="+", default=[20, 30, 60, 120])
    p.add_argument("--slack", type=float, default=1.0, help="seconds past T that count as the last step and save")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="more train flags, after --")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_budget(args.data, b, args.slack, Path(tmp), args.extra) for b in args.budgets]
    report = {"data": args.data, "slack_s": args.slack, "budgets": results,
              "default_always_within_5_percent": all(r["default_within_5_percent"] for r in results),
              "default_never_overruns": not any(r["default_overruns"] for r in results)}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for r in results:
            print(f"T={r['budget_s']:g}: " + "  ".join(f"{k} {v['val_loss']:.4f} ({v['steps']} steps, "
                                                      f"{v['wall_time_s']:.1f} s)" for k, v in r["runs"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
