#!/usr/bin/env bash
# The tests that need the GPU host, in one command, from the repository root, with onnxruntime-gpu installed under
# $ORT_SITE (see the README's "Staging onnxruntime-gpu") and the wheels of .whl/ carried:
#
#     OUT=/some/folder bash benchmarks/gpu_tests.sh
#
# The CUDA-only tests (onnxruntime's CUDA provider and its CUDA graphs, GPU warps, the fixed-shape MTCNN cascade
# and its CUDA graphs), the GPU pipeline smoke tests (the reference pipeline on CUDA, streamed and serial, frames
# compared bit for bit), and the benchmark's tests, which state what they check on any host.  The log goes to
# $OUT/gpu_tests.log, headed by the host's GPU, torch and onnxruntime providers.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ffexport-gpu-tests}
SITE=${BENCH_SITE:-/tmp/site}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl 2>/dev/null
fi
export PYTHONPATH="${ORT_SITE:-/tmp/ortgpu}:$SITE:$PWD/src"
{
  python3 - <<'PY'
import onnxruntime, torch
print(f"# {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA GPU'}, torch {torch.__version__}, "
      f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}")
PY
  python3 -m pytest -q -rs -p no:cacheprovider \
    tests/backends/test_ort_cuda.py tests/backends/test_ort_cuda_graph.py tests/vision/test_align.py \
    tests/pipeline/test_mtcnn.py tests/pipeline/test_streaming_gpu.py tests/pipeline/test_streaming.py \
    tests/bench/test_bench.py "$@"
} 2>&1 | tee "$OUT/gpu_tests.log"
exit "${PIPESTATUS[0]}"
