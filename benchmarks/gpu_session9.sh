#!/usr/bin/env bash
# Issue #12, session 9, on the GPU host from the repository root (PyAV's cp312 wheel under $BENCH_SITE for the
# video part):
#
#     OUT=/some/folder bash benchmarks/gpu_session9.sh latency b1 streaming video enhancer
#
# latency: benchmarks/gpu_latency_b1.py: the serial batch-1 pipeline's latency, stage timers and profile (FP16;
#      compile, compile with the generator's one-face calls padded to 2 as before, torch; $LATENCY_RUNS), on
#      the 1280-px detection copy ($LATENCY_SIDES); LATENCY_PARTS=cascade,pipeline also times the cascade alone
#      with the pyramid levels' NMS level by level and together (the first run of this session: cascade and
#      pipeline, compile and torch, 1280 and 640 px).
# b1: the benchmark's batch-1 rows on the serial path (target 2), compile and torch FP16, the default detection
#      copy (1280 px).
# streaming: compile and torch FP16 at 32 frames a call through the streaming executor, no enhancer (target 1).
# video: the compile backend FP16 at 8 and 32 frames a call with the decode/encode-included video part (target 4).
# enhancer: compile FP16 with GFPGAN-1.4 at 32 frames a call (target 1, second half).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
part() {
  case "$1" in
    latency)
      python3 benchmarks/gpu_latency_b1.py "$OUT/latency" "${LATENCY_RUNS:-compile,compile-padded,torch}" \
        "${LATENCY_SIDES:-1280}" "${LATENCY_PARTS:-pipeline}" 2>&1 | grep -v Warning | tee "$OUT/latency-run.log" ;;
    b1)
      bench b1-serial --backends compile,torch --precisions fp16 --pipeline-batch 1 --no-enhance --no-video \
        --timeout 150 --config-dir "$(serial)" ;;
    streaming)
      bench streaming --backends compile,torch --precisions fp16 --pipeline-batch 32 --no-enhance --no-video \
        --timeout 200 ;;
    video)
      bench compile-file-to-file --backends compile --precisions fp16 --pipeline-batch 8,32 --no-enhance \
        --timeout 300 ;;
    enhancer)
      bench compile-enhancer --backends compile --precisions fp16 --pipeline-batch 32 --enhance --no-video \
        --timeout 300 ;;
    *) echo "unknown part $1; use latency, b1, streaming, video or enhancer" >&2; return 2 ;;
  esac
}
for p in "$@"; do part "$p"; done
