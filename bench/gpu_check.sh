#!/usr/bin/env bash
# The GPU check in one command, for a bare device machine with no network (README: "GPU setup"):
# makes fcls importable from this tree without fetching anything, then runs bench/gpu_check.py
# (full staged recipe on CUDA in bf16, export + CPU parity, scoring evaluate.csv.gz) under a
# time budget, writing gpu_report.json, learning_curves.png, history.csv and the log to $OUT.
#   bash bench/gpu_check.sh              # the real check (needs CUDA and .gpu-data/*.csv.gz)
#   bash bench/gpu_check.sh --dry-run    # the same steps on CPU, tiny (CI)
# Options: --out DIR (default: $OUT, else ./gpu-check-out), --data DIR (default .gpu-data),
# --budget SECONDS (default 480: the report is written, partial, when it runs out),
# --recipe notebook|fast|both (default notebook; both: fast, then the notebook's, each with
# half the budget, reports in DIR/fast and DIR/notebook).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/gpu-check-out}
budget=480
recipe=notebook
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --recipe) recipe=$2; shift 2 ;;
        --dry-run) args+=(--dry-run); shift ;;
        --data) args+=(--data "$2"); shift 2 ;;
        *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=python3; fi
fi
# fcls maps fcls.train -> train/ etc. (setuptools package-dir): a throwaway `fcls` folder of
# links gives the same import names with no pip, no build and no network
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir "$shim/fcls"
for pkg in train export infer bench; do ln -s "$root/$pkg" "$shim/fcls/$pkg"; done
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
case $recipe in
    notebook|fast) runs=("$recipe"); dirs=("$out") ;;
    both) runs=(fast notebook); dirs=("$out/fast" "$out/notebook"); budget=$((budget / 2)) ;;
    *) echo "gpu_check.sh: --recipe must be notebook, fast or both, not $recipe" >&2; exit 2 ;;
esac
rc=0
for i in "${!runs[@]}"; do
    mkdir -p "${dirs[$i]}"
    timeout --signal=TERM --kill-after=30 "$budget" \
        "$python" -m fcls.bench.gpu_check --out "${dirs[$i]}" --recipe "${runs[$i]}" \
        ${args[@]+"${args[@]}"} || rc=$?
done
exit $rc
