#!/usr/bin/env bash
# GPU readiness check, within 8 minutes on a machine with an NVIDIA GPU:
#   1. a fresh venv with tensorflow[and-cuda] at requirements.txt's TF version
#      and the other requirements (pip, <= 4 min);
#   2. the tests that run the model on the device (cells, fast-path
#      equivalence, networks, precision, sampler; <= 2 min);
#   3. benchmarks/gpu_bench.py: the paper-size train step (float32 and
#      mixed_bfloat16, with and without jit_compile) and a 1000-sketch
#      batched sample -> $OUT/gpu_bench.json and $OUT/gpu_bench.md.
# On a machine without one it says so in one line and exits 0 after a dry
# run of what it can check here (the requirement pins, the test selection,
# gpu_bench on the CPU with the tiny preset, in the current environment).
#
#   benchmarks/gpu_check.sh [OUT_DIR]     (default: gpu_check_out)
#   VENV=/path/to/venv  PYTHON=python3    (where the fresh venv goes; which
#                                          python creates it)
set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-gpu_check_out}"
VENV="${VENV:-/tmp/gpu_check_venv}"
PYTHON="${PYTHON:-python3}"
TESTS="tests/test_cells.py tests/test_fast_paths.py tests/test_networks.py tests/test_precision.py tests/test_sampler.py"
START=$SECONDS
cd "$ROOT" || exit 1
mkdir -p "$OUT" || exit 1

TF_VERSION="$(sed -n 's/^tensorflow==\([0-9.]*\).*/\1/p' requirements.txt)"
if [ -z "$TF_VERSION" ]; then
  echo "gpu_check: requirements.txt pins no tensorflow==X.Y.Z" >&2
  exit 2
fi
OTHER_REQS="$OUT/requirements-no-tf.txt"
grep -v '^tensorflow==' requirements.txt > "$OTHER_REQS"

left() { echo $(( 480 - (SECONDS - START) )); }

if ! command -v nvidia-smi > /dev/null 2>&1 || ! nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none): dry run only, on the CPU"
  for t in $TESTS; do
    [ -f "$t" ] || { echo "gpu_check: missing test file $t" >&2; exit 1; }
  done
  PY="${DRY_PYTHON:-python}"
  "$PY" -c "import tensorflow" > /dev/null 2>&1 \
    || { echo "gpu_check: '$PY' cannot import tensorflow: activate the project's venv or set DRY_PYTHON" >&2; exit 1; }
  "$PY" -m pytest -q --collect-only $TESTS > "$OUT/collect.txt" 2>&1 \
    || { echo "gpu_check: test collection failed, see $OUT/collect.txt" >&2; exit 1; }
  TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES="" "$PY" -m benchmarks.gpu_bench \
    --dry_run --out_dir "$OUT" > "$OUT/gpu_bench.log" 2>&1 \
    || { echo "gpu_check: gpu_bench dry run failed, see $OUT/gpu_bench.log" >&2; exit 1; }
  echo "gpu_check: dry run ok (would install tensorflow[and-cuda]==$TF_VERSION" \
       "into $VENV, run $(echo $TESTS | wc -w) test files, time the paper step);" \
       "table in $OUT/gpu_bench.md"
  exit 0
fi

echo "gpu_check: $(nvidia-smi -L | head -1)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || exit 1
# shellcheck disable=SC1091
source "$VENV/bin/activate"
timeout 240 pip install -q --upgrade pip > "$OUT/pip.log" 2>&1
timeout "$(( $(left) - 240 ))" pip install -q "tensorflow[and-cuda]==$TF_VERSION" \
  -r "$OTHER_REQS" >> "$OUT/pip.log" 2>&1 \
  || { echo "gpu_check: pip install failed, see $OUT/pip.log" >&2; exit 1; }
python -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); \
print('gpu_check: TF', tf.__version__, 'sees', len(g), 'GPU(s)'); assert g" \
  || { echo "gpu_check: TensorFlow does not see the GPU" >&2; exit 1; }

timeout "$(( $(left) - 200 > 120 ? 120 : $(left) - 200 ))" \
  python -m pytest -q -x $TESTS > "$OUT/tests.log" 2>&1
echo "gpu_check: tests exit $? ($(tail -1 "$OUT/tests.log"))"

timeout "$(( $(left) - 10 ))" python -m benchmarks.gpu_bench --out_dir "$OUT" \
  --deadline_s "$(( $(left) - 90 ))" > "$OUT/gpu_bench.log" 2>&1
RC=$?
cat "$OUT/gpu_bench.md" 2>/dev/null
echo "gpu_check: done in $(( SECONDS - START )) s (gpu_bench exit $RC); $OUT/gpu_bench.json"
exit $RC
