#!/usr/bin/env bash
# The LUT on a GPU: profile dlrm-tiny and a reduced dlrm-kaggle (benchmarks/gpu_space.toml) with torch on
# CUDA, and with onnxruntime's CUDA provider where it is installed; validate each LUT on random archs;
# run the CUDA tests. Reports go to $OUT (default runs/gpu-check): summary.txt and reports.tar.gz.
# Sized for under 6 minutes on one H100 with 16 cores.
#
#   OUT=runs/gpu-check bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-check}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $WORK/NAME.log, note the outcome
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    say "[$name] exit $rc after $((SECONDS - start)) s"
    tail -n 4 "$WORK/$name.log" | tr '\r' '\n' | tail -n 4 | sed 's/^/    /' | tee -a "$SUMMARY"
    return $rc
}

"$PY" - <<'PY' | tee -a "$SUMMARY"
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY
ORT_CUDA=$("$PY" -c "import onnxruntime as o; print(int('CUDAExecutionProvider' in o.get_available_providers()))")

step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_profiler.py -k "cuda or every_registered"
for backend in torch onnxruntime; do
    if [ "$backend" = onnxruntime ] && [ "$ORT_CUDA" != 1 ]; then
        say "[onnxruntime-cuda] skipped: onnxruntime has no CUDAExecutionProvider here"
        continue
    fi
    for space in dlrm-tiny benchmarks/gpu_space.toml; do
        tag="$backend-$(basename "$space" .toml)"
        step "profile-$tag" 150 "$PY" -m dnas_hw.app.cli profile --space "$space" --backend "$backend" --device cuda \
            --threads 1 --batch-size 1,64,512 --out "$WORK/$tag.csv" || continue
        step "validate-$tag" 150 "$PY" -m dnas_hw.app.cli lut validate "$WORK/$tag.csv" --space "$space" \
            --samples 20 --batch-size 1,64,512 --out "$WORK/$tag.json"
    done
done
tar -czf "$OUT/reports.tar.gz" -C "$WORK" .
say "reports: $OUT/reports.tar.gz"
