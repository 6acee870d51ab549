#!/usr/bin/env bash
# The default architecture question of issue 15: ReLU² (today's default) against SwiGLU
# (which leaves as a standard Qwen3 model), same run, same machine.
set -uo pipefail
RESULTS=${1:?usage: benchmarks/architecture.sh RESULTS_DIR [TEXT]}
TEXT=${2:-../shared/data/shakespeare.txt}
cd "$(dirname "$0")/.."
source benchmarks/steps.sh
RESULTS=$(cd "$RESULTS" && pwd)
step arch-relu2-105s.json 900 "$PY" benchmarks/quality.py --data "$TEXT" --no-classic --json -- --activation relu2
step arch-swiglu-105s.json 900 "$PY" benchmarks/quality.py --data "$TEXT" --no-classic --json -- --activation swiglu
step arch-relu2-600s.json 900 "$PY" benchmarks/quality.py --data "$TEXT" --max-time 600 --seeds 1 --no-classic --json -- --activation relu2
step arch-swiglu-600s.json 900 "$PY" benchmarks/quality.py --data "$TEXT" --max-time 600 --seeds 1 --no-classic --json -- --activation swiglu
