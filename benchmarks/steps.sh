# Shared by cpu.sh and sweep.sh (sourced from the repository root, after RESULTS is set):
# the Python to use, the source tree on the path, and `step`.
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SKIP=${SKIP:-}
mkdir -p "$RESULTS"

step() {  # step NAME LIMIT_S COMMAND...: run it unless SKIP names it, keep its output, say how it went
    local name=$1 limit=$2; shift 2
    case " $SKIP " in *" ${name%%[-.]*} "*) return ;; esac
    local start=$SECONDS
    timeout "$limit" "$@" > "$RESULTS/$name" 2>> "$RESULTS/log.txt"
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$RESULTS/log.txt"
}
