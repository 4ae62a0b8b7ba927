#!/usr/bin/env bash
# Issue #12, session 18, on the GPU host from the repository root (onnxruntime-gpu under $ORT_SITE, the carried wheels
# under $BENCH_SITE: see gpu_bench_env.sh and the README's "Staging onnxruntime-gpu"):
#
#     OUT=/some/folder bash benchmarks/gpu_session18.sh build mtcnn
#     OUT=/some/folder bash benchmarks/gpu_session18.sh others
#     OUT=/some/folder bash benchmarks/gpu_session18.sh row1024
#
# build: the onnxruntime pipeline's artifacts, FP32 and FP16 (gpu_bench_env.sh's ort_build).
# mtcnn / others: target 3's second half, the module rows on onnxruntime-CUDA, FP32 and FP16 at batch 1 and 8, each
#   row in several fresh processes taken in turns (`ffexport bench --repeats`): MTCNN's three nets 5 times each,
#   the blender, the encoder and the generator 3 times each.
# row1024: target 4, the benchmark's compile FP16 row at 8 frames a call on a 1024-frame clip with decode and encode
#   included, now 3 rounds of encode-only then file to file (`--video-rounds 3`, the default).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
ort_repeats() {  # report folder name, modules, repeats
  python3 -m ffexport bench --modules "$2" --backends ort --precisions fp32,fp16 --batch 1,8 --max-time 1 \
    --repeats "$3" --no-pipeline --out "$ARTS" --report "$OUT/$1" --timeout 90 2>&1 | tail -30
}
part() {
  case "$1" in
    build) ort_build ;;
    mtcnn) ort_repeats modules-mtcnn mtcnn_pnet,mtcnn_rnet,mtcnn_onet 5 ;;
    others) ort_repeats modules-others blender,encoder,generator 3 ;;
    row1024)
      FRAMES=1024 bench compile-file-to-file-1024 --backends compile --precisions fp16 --pipeline-batch 8 \
        --no-enhance --video-rounds 3 --timeout 560 2>&1 | tail -12 ;;
    *) echo "unknown part $1; use build, mtcnn, others or row1024" >&2; return 2 ;;
  esac
}
run_parts "$@"
