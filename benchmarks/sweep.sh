#!/usr/bin/env bash
# The learning-rate figures of benchmarks/README.md ("One learning rate", "A real sweep"):
#   1. the Muon/AdamW ratio: the defaults at 105 s with Muon's rate at half and at twice
#      MUON_LR_RATIO x --learning-rate (the defaults themselves are in cpu.sh's quality.json);
#   2. a real sweep: TRIALS trials of 60 s over benchmarks/sweep_space.yaml (tpe, median pruning);
#   3. the sweep's best parameters against the defaults at the same 60 s.
# Run it on a quiet machine: about 40 minutes on 2 cores.
#
#   benchmarks/sweep.sh RESULTS_DIR [TEXT]
set -uo pipefail
RESULTS=${1:?usage: benchmarks/sweep.sh RESULTS_DIR [TEXT]}
TEXT=${2:-../shared/data/shakespeare.txt}
TRIALS=${TRIALS:-20}
cd "$(dirname "$0")/.."
source benchmarks/steps.sh
RESULTS=$(cd "$RESULTS" && pwd)
WORK=${WORK:-/tmp/fundamentallm-sweep}
mkdir -p "$WORK"

# The standard split: the first 90% of the characters to train, the last 10% to validate.
"$PY" - "$TEXT" "$WORK" <<'PY'
import sys, pathlib
text = pathlib.Path(sys.argv[1]).read_text(encoding="utf-8")
cut = int(len(text) * 0.9)
out = pathlib.Path(sys.argv[2])
(out / "train.txt").write_text(text[:cut], encoding="utf-8")
(out / "val.txt").write_text(text[cut:], encoding="utf-8")
PY

step ratio-half.json 400 "$PY" benchmarks/quality.py --data "$TEXT" --seeds 1 --no-classic --json -- --muon-lr 0.025
step ratio-double.json 400 "$PY" benchmarks/quality.py --data "$TEXT" --seeds 1 --no-classic --json -- --muon-lr 0.1
rm -rf "$WORK/sweep"
step sweep.txt 3600 "$PY" -m fundamentallm sweep "$WORK/train.txt" --validation-data "$WORK/val.txt" \
    --space benchmarks/sweep_space.yaml -o "$WORK/sweep" --trials "$TRIALS" --max-time 60
step sweep.json 120 "$PY" -m fundamentallm sweep --report "$WORK/sweep" --json
cp "$WORK/sweep/best.yaml" "$WORK"/sweep/*.png "$RESULTS/" 2>/dev/null
step defaults-60s.json 300 "$PY" benchmarks/quality.py --data "$TEXT" --max-time 60 --seeds 1 --no-classic --json
best_flags=$("$PY" - "$RESULTS/sweep.json" <<'PY'
import json, sys
best = json.load(open(sys.argv[1]))["best"]["params"]
print(" ".join(f"--{k.replace('_', '-')} {v}" for k, v in best.items()))
PY
)
# shellcheck disable=SC2086  # a list of flags
step best-60s.json 300 "$PY" benchmarks/quality.py --data "$TEXT" --max-time 60 --seeds 1 --no-classic --json -- $best_flags
tail -n 8 "$RESULTS/log.txt"
