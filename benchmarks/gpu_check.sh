#!/usr/bin/env bash
# The GPU path, checked in one go on a CUDA machine (at most 12 minutes by its time limits; never run yet):
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else ./gpu_check
#
# Checks, each with its log in OUT_DIR/<check>.log:
#   device  a CUDA device is visible (torch, its name, memory, bf16 support)
#   readme  the README's Python snippet on the GPU (1 epoch): aelab.train returns a model whose codes of
#           CPU test images come back, then evaluate_run and Predictor.from_run on that run
#   tests   the device-path tests on the GPU (tests/test_device_paths.py, tests/test_speed_paths.py)
#   speed   benchmarks/speed.py --plan gpu: samples/s against the DataLoader loops, time to quality, fraction
#           of the step's own matmul bound, full MNIST, bf16 autocast (OUT_DIR/speed.json and speed.md)
#   ttq     benchmarks/time_to_quality.py: the shipped fast-*.toml recipes against the reference loops' 10 epochs,
#           on the GPU (OUT_DIR/ttq.json and ttq.md)
# and writes OUT_DIR/gpu_check.json: {"device": ..., "checks": {name: exit status}, "failed": [...]}.
# Exits 1 when any check failed (a check stopped at its time limit counts as failed: status 124).
# Needs a CUDA build of torch; MNIST's IDX files in $AELAB_DATA_DIR, ../shared/data or shared/data (else
# aelab's cache or a download). Uses $PYTHON (default python3).
set -uo pipefail  # no -e: every check runs and is recorded, the exit status says whether all passed
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"  # works without `pip install -e .`
declare -A STATUS
ORDER=()

check() {  # check NAME COMMAND...: run it, keep its output in OUT_DIR/NAME.log, record its exit status
    local name=$1; shift
    "$@" >"$OUT_DIR/$name.log" 2>&1
    STATUS[$name]=$?
    ORDER+=("$name")
    echo "gpu_check: $name: exit ${STATUS[$name]} (log: $OUT_DIR/$name.log)" >&2
}

device_json() {
    "$PY" - <<'EOF'
import json, torch
assert torch.cuda.is_available(), "no CUDA device visible: this check is for a GPU machine"
p = torch.cuda.get_device_properties(0)
print(json.dumps({"torch": torch.__version__, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                  "bf16": torch.cuda.is_bf16_supported()}))
EOF
}

readme_on_gpu() {
    timeout 90 "$PY" - "$OUT_DIR/readme-run" <<'EOF'
import sys, torch, aelab
data = aelab.load_dataset("mnist5k")
model = aelab.build_model("dense", latent_dim=32)
run = aelab.train(model, data, epochs=1, out=sys.argv[1], device="cuda", progress=False)
codes = run.model.encode(data.x_test.float() / 255)  # the README's line, on CPU images
assert codes.shape == (1000, 32), codes.shape
metrics = aelab.evaluate_run(sys.argv[1], progress=False)
assert metrics["test_mse"] < 0.1, metrics["test_mse"]
predictor = aelab.Predictor.from_run(sys.argv[1], device="cuda")
assert predictor.encode(data.x_test[:5]).shape == (5, 32)
print("README snippet, evaluation and Predictor on", torch.cuda.get_device_name(0), ": ok")
EOF
}

check device device_json
if [ "${STATUS[device]}" -eq 0 ]; then
    check readme readme_on_gpu
    check tests timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_device_paths.py tests/test_speed_paths.py
    # the JSON is rewritten after each model, so a run cut short by the limit still leaves results
    check speed timeout 240 "$PY" benchmarks/speed.py --plan gpu --device cuda --no-rss \
        --out "$OUT_DIR/speed.json" --markdown "$OUT_DIR/speed.md"
    check ttq timeout 300 "$PY" benchmarks/time_to_quality.py --device cuda \
        --out "$OUT_DIR/ttq.json" --markdown "$OUT_DIR/ttq.md"
fi

device=$(tail -n 1 "$OUT_DIR/device.log")
[ "${STATUS[device]}" -eq 0 ] || device=null
checks="" failed=""
for name in "${ORDER[@]}"; do
    checks+="${checks:+, }\"$name\": ${STATUS[$name]}"
    [ "${STATUS[$name]}" -eq 0 ] || failed+="${failed:+, }\"$name\""
done
printf '{"device": %s, "checks": {%s}, "failed": [%s], "speed": "speed.json", "time_to_quality": "ttq.json"}\n' "$device" "$checks" "$failed" \
    | tee "$OUT_DIR/gpu_check.json"
[ -z "$failed" ]
