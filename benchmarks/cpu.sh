#!/usr/bin/env bash
# The CPU figures of benchmarks/README.md in one go, each step's raw JSON kept:
#   1. throughput.py at the baby-GPT shape: the defaults (Muon, compiled), AdamW compiled,
#      AdamW eager (tokens/s and MFU, fp32 and --mixed-precision);
#   2. generate.py: KV-cached vs uncached generation at the nanoGPT Shakespeare shape;
#   3. quality.py: validation loss after 105 s, our defaults vs the classic recipe, 3 seeds.
# Run it on a quiet machine (nothing else busy): about 20 minutes on 2 cores.
#
#   benchmarks/cpu.sh RESULTS_DIR [TEXT]   e.g. benchmarks/cpu.sh benchmarks/results/epyc-zen5-2026-12-01
#
# Environment overrides: PYTHON (default .venv/bin/python where it exists), SEEDS ("1 2 3"), MAX_TIME (105), SKIP ("" or a list of
# step names to leave out: throughput generate quality).
set -uo pipefail
RESULTS=${1:?usage: benchmarks/cpu.sh RESULTS_DIR [TEXT]}
TEXT=${2:-../shared/data/shakespeare.txt}
SEEDS=${SEEDS:-"1 2 3"}
MAX_TIME=${MAX_TIME:-105}
cd "$(dirname "$0")/.."
source benchmarks/steps.sh
BABY="--model-dim 128 --num-layers 4 --num-heads 4 --context-length 64 --batch-size 12"

{ date -u; lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core)'
  grep -o -wE 'avx512_bf16|amx_bf16|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  "$PY" -c 'import torch; print("torch", torch.__version__, "capability",
torch.backends.cpu.get_cpu_capability(), "threads", torch.get_num_threads())'; } > "$RESULTS/env.txt" 2>&1
cat "$RESULTS/env.txt"

# shellcheck disable=SC2086  # BABY is a list of flags
step throughput-muon.json 600 "$PY" benchmarks/throughput.py $BABY --json
# shellcheck disable=SC2086
step throughput-adamw.json 600 "$PY" benchmarks/throughput.py $BABY --optimizer adamw --json
# shellcheck disable=SC2086
step throughput-adamw-eager.json 600 "$PY" benchmarks/throughput.py $BABY --optimizer adamw --no-compile --json
step generate.json 600 "$PY" benchmarks/generate.py --model-dim 384 --num-layers 6 --num-heads 6 \
    --context-length 256 --tokens 1000 --json
# shellcheck disable=SC2086  # SEEDS is a list
step quality.json 3000 "$PY" benchmarks/quality.py --data "$TEXT" --max-time "$MAX_TIME" --seeds $SEEDS --json
tail -n 5 "$RESULTS/log.txt"
