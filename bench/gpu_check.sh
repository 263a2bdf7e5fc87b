#!/usr/bin/env bash
# The device call of bench/gpu_check.py (see its docstring): install the carried wheels, then
# every step, the output also into $OUT/gpu_check.log.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/latest}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu_carry/wheels/*.whl 2>&1 | tee "$OUT/gpu_check.log"
export PYTHONPATH=/tmp/site
python3 bench/gpu_check.py --results "$OUT" "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
