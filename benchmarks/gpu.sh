#!/usr/bin/env bash
# Issue 4's GPU measurements in one go, for a machine with a CUDA GPU (see README.md):
#   1. the CUDA tests (bf16 autocast, fused AdamW, flash attention, compile, KV cache);
#   2. throughput.py on the 6-layer / 384-dim / context-256 model, batch 64 (fp32 and bf16);
#   3. quality.py runs of that model (--precision auto: bf16 on a GPU with it) for two
#      wall-clock budgets, reporting the time at which validation loss first reached 1.47;
#   4. the budget-sized default for SIZED_BUDGET seconds (60): no shape given, so
#      training/sizing.py picks one for this GPU (its shape, parameters and precision are in
#      sized60.json; compare with the CPU's choice for the same time).
# Each step has its own time limit, so one that hangs cannot take the others with it.
#
#   benchmarks/gpu.sh TEXT RESULTS_DIR        e.g. benchmarks/gpu.sh shakespeare.txt results
#
# Environment overrides (for a dry run on a CPU): PYTHON, DEVICE (cuda), SHAPE, BUDGETS
# ("120 60"), TARGET (1.47), STEPS (200).
set -uo pipefail
TEXT=${1:?usage: benchmarks/gpu.sh TEXT RESULTS_DIR}
RESULTS=${2:?usage: benchmarks/gpu.sh TEXT RESULTS_DIR}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-"--model-dim 384 --num-layers 6 --num-heads 6 --context-length 256 --batch-size 64"}
BUDGETS=${BUDGETS:-"120 60"}
TARGET=${TARGET:-1.47}
SIZED_BUDGET=${SIZED_BUDGET:-60}
STEPS=${STEPS:-200}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"

step() {  # step NAME LIMIT_S COMMAND...: run it, keep its output, say how it went
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$RESULTS/$name" 2>> "$RESULTS/log.txt"
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$RESULTS/log.txt"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'; } > "$RESULTS/env.txt" 2>&1
cat "$RESULTS/env.txt"

[ "$DEVICE" = cuda ] && step pytest.txt 150 "$PY" -m pytest -q -p no:cacheprovider tests/integration/test_gpu.py
# shellcheck disable=SC2086  # SHAPE is a list of flags
step throughput.json 300 "$PY" benchmarks/throughput.py $SHAPE --device "$DEVICE" --steps "$STEPS" --json
for budget in $BUDGETS; do
    # shellcheck disable=SC2086
    step "quality$budget.json" $((budget + 120)) "$PY" benchmarks/quality.py --data "$TEXT" \
        --max-time "$budget" --seeds 1 --no-classic --target-loss "$TARGET" \
        --work-dir "/tmp/gpu-quality-$budget" --json -- $SHAPE --device "$DEVICE" \
        --eval-interval 50
    cp "/tmp/gpu-quality-$budget/recipe0-seed1/metrics.json" "$RESULTS/metrics$budget.json" 2>/dev/null
done
step "sized$SIZED_BUDGET.json" $((SIZED_BUDGET + 180)) "$PY" benchmarks/quality.py --data "$TEXT" \
    --max-time "$SIZED_BUDGET" --seeds 1 --no-classic --target-loss "$TARGET" --json -- --device "$DEVICE" \
    --eval-interval 50
tail -n 30 "$RESULTS"/*.json "$RESULTS/pytest.txt" 2>/dev/null | grep -v '^$' | tail -n 120
