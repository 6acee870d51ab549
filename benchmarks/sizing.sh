#!/usr/bin/env bash
# A model sized to its budget (benchmarks/README.md, section 7). For each budget in seconds:
#   1. the shapes of training/sizing.py's LADDER named in SHAPES (default: the first three),
#      each trained for the budget: the measured best shape per budget, which the rule is
#      fitted to (table-<corpus>-<budget>-<shape>.json);
#   2. the budget-sized default (`--max-time B`, no shape) against the fixed default shape
#      (`--no-auto-size`), the comparison the rule has to win (sized-/fixed-<corpus>-<budget>.json).
# on Shakespeare and on a second corpus of another kind: the top-level modules of the running
# Python's standard library (about 4.7 MB of Python source), the first 90% to train, the rest
# to validate. One seed per run.
#
#   benchmarks/sizing.sh RESULTS_DIR [BUDGET...]      (default budgets: 105 600)
#   PARTS="table check" CORPORA="shakespeare python" SHAPES="128x4 160x5 192x6" benchmarks/sizing.sh ...
set -euo pipefail
out=${1:?usage: benchmarks/sizing.sh RESULTS_DIR [BUDGET...]}
shift
budgets=${*:-105 600}
parts=${PARTS:-table check}
corpora=${CORPORA:-shakespeare python}
shapes=${SHAPES:-128x4 160x5 192x6}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
mkdir -p "$out"

corpus_file() {
    case $1 in
        shakespeare) echo "${SHAKESPEARE:-$here/../../shared/data/shakespeare.txt}" ;;
        python)
            local file="${WORK:-${TMPDIR:-/tmp}}/fundamentallm-python-stdlib.txt"  # 4.7 MB: not kept
            if [ ! -s "$file" ]; then
                "$python" -c 'import pathlib, sysconfig
lib = pathlib.Path(sysconfig.get_paths()["stdlib"])
print("".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(lib.glob("*.py"))), end="")' > "$file"
            fi
            echo "$file" ;;
    esac
}

# WIDTHxLAYERS → the ladder's flags for that shape (heads, context, batch, learning rate)
shape_flags() {
    "$python" - "$1" <<'EOF'
import sys
from fundamentallm.training.sizing import LADDER
width, layers = map(int, sys.argv[1].split("x"))
s = next(s for s in LADDER if (s.model_dim, s.num_layers) == (width, layers))
print(f"--model-dim {s.model_dim} --num-layers {s.num_layers} --num-heads {s.num_heads} "
      f"--context-length {s.context_length} --batch-size {s.batch_size} --learning-rate {s.learning_rate}")
EOF
}

for corpus in $corpora; do
    data=$(corpus_file "$corpus")
    for budget in $budgets; do
        if [[ " $parts " == *" table "* ]]; then
            for shape in $shapes; do
                # shellcheck disable=SC2046
                "$python" "$here/quality.py" --data "$data" --max-time "$budget" --seeds 1 --no-classic --json \
                    -- $(shape_flags "$shape") > "$out/table-$corpus-$budget-$shape.json"
            done
        fi
        if [[ " $parts " == *" check "* ]]; then
            "$python" "$here/quality.py" --data "$data" --max-time "$budget" --seeds 1 --no-classic --json \
                > "$out/sized-$corpus-$budget.json"
            "$python" "$here/quality.py" --data "$data" --max-time "$budget" --seeds 1 --no-classic --json \
                -- --no-auto-size > "$out/fixed-$corpus-$budget.json"
        fi
    done
done
