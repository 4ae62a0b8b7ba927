#!/usr/bin/env bash
# Issue #12, session 19, on the GPU host from the repository root (the carried wheels under $BENCH_SITE: see
# gpu_bench_env.sh; onnxruntime-gpu is not needed, these rows run torch and compile):
#
#     OUT=/some/folder bash benchmarks/gpu_session19.sh enh8
#     OUT=/some/folder bash benchmarks/gpu_session19.sh enh32
#
# enh8: target 5, the FP16 pipeline with GFPGAN-1.4 at 8 frames a call, on the compile and torch backends, with its
#   peak device memory (NVML, the whole process) and torch's own peak; the streaming executor, 256 timed frames.
# enh32: target 1's second half, the compile FP16 pipeline with GFPGAN-1.4 at 32 frames a call.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
part() {
  case "$1" in
    enh8) bench enhancer-b8 --backends compile,torch --precisions fp16 --pipeline-batch 8 --enhance --no-video \
      --timeout 400 2>&1 | tail -14 ;;
    enh32) bench enhancer-b32 --backends compile --precisions fp16 --pipeline-batch 32 --enhance --no-video \
      --timeout 400 2>&1 | tail -14 ;;
    *) echo "unknown part $1; use enh8 or enh32" >&2; return 2 ;;
  esac
}
run_parts "$@"
