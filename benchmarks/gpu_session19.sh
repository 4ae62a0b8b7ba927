#!/usr/bin/env bash
# Issue #12, session 19, on the GPU host from the repository root (the carried wheels under $BENCH_SITE: see
# gpu_bench_env.sh; onnxruntime-gpu is not needed, these rows run torch and compile):
#
#     OUT=/some/folder bash benchmarks/gpu_session19.sh enh8
#     OUT=/some/folder bash benchmarks/gpu_session19.sh enh32
#     OUT=/some/folder bash benchmarks/gpu_session19.sh enh8-2
#
# Session 19 also ran, one call each, on the same machine: `gpu_session15.sh b32 b1` (targets 1 and 2), the
# onnxruntime FP16 rows (target 3's first half: onnxruntime-gpu staged, then gpu_bench_env.sh's `ort_build` and
# `ort_rows ort-pipeline`; the parts `build ort` here), `gpu_session18.sh row1024` (target 4) and
# `gpu_session18.sh mtcnn` (target 3's second half).
#
# enh8: target 5, the FP16 pipeline with GFPGAN-1.4 at 8 frames a call, on the compile and torch backends, with its
#   peak device memory (NVML, the whole process) and torch's own peak; the streaming executor, 256 timed frames.
# enh32: target 1's second half, the compile FP16 pipeline with GFPGAN-1.4 at 32 frames a call.
# enh8-2: enh8's compile row with the enhancer's calls capped at 2 faces (configs/pipeline.yaml's
#   enhance_faces_per_call, 4 by default), through a copy of configs/.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
part() {
  case "$1" in
    enh8) bench enhancer-b8 --backends compile,torch --precisions fp16 --pipeline-batch 8 --enhance --no-video \
      --timeout 400 2>&1 | tail -14 ;;
    enh32) bench enhancer-b32 --backends compile --precisions fp16 --pipeline-batch 32 --enhance --no-video \
      --timeout 400 2>&1 | tail -14 ;;
    enh8-2)
      local d; d=$(configs_with "enhance_faces_per_call: 2") || return 1
      bench enhancer-b8-cap2 --backends compile --precisions fp16 --pipeline-batch 8 --enhance --no-video \
        --timeout 420 --config-dir "$d" 2>&1 | tail -14 ;;
    build) ort_build ;;
    ort) ort_rows ort-pipeline 2>&1 | tail -8 ;;
    *) echo "unknown part $1; use enh8, enh32, enh8-2, build or ort" >&2; return 2 ;;
  esac
}
run_parts "$@"
