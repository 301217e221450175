#!/usr/bin/env bash
# The GPU path, checked in one go on a CUDA machine (under 5 minutes on an H200):
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else ./gpu_check
#
# Prints the same JSON as benchmarks/speed.py (samples/s per model against the DataLoader loops,
# time to quality, fraction of the step's own matmul/convolution bound) for full MNIST on the GPU,
# with bf16 autocast, fused Adam, channels-last convolutions and the data on the device; then the
# GPU-path unit tests. Needs a CUDA build of torch; MNIST's IDX files in $AELAB_DATA_DIR,
# ../shared/data or shared/data (else aelab's cache or a download). Uses $PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # works without `pip install -e .`

"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible: this check is for a GPU machine"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16: {torch.cuda.is_bf16_supported()}")
EOF

# Whole-run guard: the JSON is rewritten after each model, so a cut-short run still leaves results.
status=0
timeout 260 "$PY" benchmarks/speed.py --plan gpu --device cuda --no-rss \
    --out "$OUT_DIR/speed.json" --markdown "$OUT_DIR/speed.md" 2> >(tee "$OUT_DIR/speed.log" >&2) || status=$?
[ -f "$OUT_DIR/speed.json" ] && cat "$OUT_DIR/speed.json"
[ "$status" -eq 124 ] && echo "speed.py stopped at the 260 s limit: the JSON above holds the models finished" >&2

timeout 40 "$PY" -m pytest -q -p no:cacheprovider tests/test_speed_paths.py 2>&1 | tail -3 || true
exit "$status"
