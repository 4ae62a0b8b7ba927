#!/usr/bin/env bash
# Issue #12, session 11, on the GPU host from the repository root, the wheels of .whl/ carried (facenet-pytorch's
# MTCNN weights, rich, PyYAML, matplotlib and its dependencies; see gpu_bench_env.sh):
#
#     OUT=/some/folder bash benchmarks/gpu_session11.sh tests latency b1 streaming video enhancer
#
# tests: the CUDA tests of the MTCNN cascade (its CUDA graph, no host wait, the compiled steps).
# latency: benchmarks/gpu_latency_b1.py with CASCADE_AB=steps: the cascade alone with its arithmetic eager and
#      compiled (compile_steps), 1 and 32 frames a call, alternated twice; then the serial batch-1 pipeline, compile
#      FP16, with the cascade's steps compiled (now) and eager (compile-eager-steps, as before), 1280-px copies.
# b1: the benchmark's batch-1 row on the serial path (target 2), compile FP16.
# streaming: compile FP16 at 32 frames a call through the streaming executor, no enhancer (target 1).
# video: the compile backend FP16 at 8 and 32 frames a call, decode and encode included (target 4), beside the
#      host's codec ceilings measured in the same run.
# enhancer: compile FP16 with GFPGAN-1.4 at 32 frames a call (target 1, second half).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
if compgen -G ".whl/*.whl" >/dev/null && [ ! -f "$SITE/.session11" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl 2>&1 | tail -2
  touch "$SITE/.session11"
fi
part() {
  case "$1" in
    tests)
      python3 -m pytest -q -rs -p no:cacheprovider tests/pipeline/test_mtcnn.py 2>&1 | tee "$OUT/gpu_tests_mtcnn.log" \
        | tail -5 ;;
    latency)
      CASCADE_AB=steps python3 benchmarks/gpu_latency_b1.py "$OUT/latency" "${LATENCY_RUNS:-compile,compile-eager-steps}" \
        1280 "${LATENCY_PARTS:-cascade,pipeline}" 2>&1 | grep -v Warning | tee "$OUT/latency-run.log" ;;
    b1) compile_b1 b1-serial ;;
    streaming)
      bench streaming --backends compile --precisions fp16 --pipeline-batch 32 --no-enhance --no-video \
        --timeout 250 ;;
    video)  # PyAV's cp312 wheel installed under $BENCH_SITE first (carried in .port/av/)
      bench compile-file-to-file --backends compile --precisions fp16 --pipeline-batch 8,32 --no-enhance \
        --timeout 300 ;;
    enhancer)
      bench compile-enhancer --backends compile --precisions fp16 --pipeline-batch 32 --enhance --no-video \
        --timeout 300 ;;
    *) echo "unknown part $1; use tests, latency, b1, streaming, video or enhancer" >&2; return 2 ;;
  esac
}
for p in "$@"; do echo "== $p $(date +%T)"; part "$p"; done
echo "== done $(date +%T)"
