#!/usr/bin/env bash
# Issue #12, session 13, on the GPU host from the repository root: the onnxruntime-CUDA rows (target 3), with
# onnxruntime-gpu installed under $ORT_SITE and the carried wheels under $BENCH_SITE (see gpu_bench_env.sh and the
# README's "Staging onnxruntime-gpu"; facenet-pytorch's MTCNN weights, onnxsim, onnxslim, onnxconverter-common,
# PyYAML and rich for the build, matplotlib for the plots):
#
#     OUT=/some/folder bash benchmarks/gpu_session13.sh build profile
#     OUT=/some/folder bash benchmarks/gpu_session13.sh pipeline
#     OUT=/some/folder bash benchmarks/gpu_session13.sh modules
#
# build: the ONNX artifacts the onnxruntime pipeline runs, FP32 and FP16 (`ffexport build`, four modules at once).
# profile: benchmarks/gpu_ort_fp16_graph.py on the generator, FP32 and FP16 at 1, 8 and 32 faces a call, with the
#      CUDA provider's prefer_nhwc 0 and 1, and the costliest kernels of each plain call (torch's profiler).
# pipeline: the onnxruntime FP16 pipeline at 1, 8 and 32 frames a call (1080p, 256 timed frames, no enhancer),
#      with onnxruntime's default layout and with FFEXPORT_ORT_CUDA_OPTIONS=prefer_nhwc=1.
# modules: the module rows of the pipeline's ONNX artifacts on onnxruntime-CUDA, FP32 and FP16 at batch 1 and 8,
#      both layouts.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
MODULES=mtcnn_pnet,mtcnn_rnet,mtcnn_onet,encoder,generator,blender
modules() {  # name, then options
  python3 -m ffexport bench --modules "$MODULES" --backends ort --precisions fp32,fp16 --batch 1,8 --max-time 1 \
    --no-pipeline --out "$ARTS" --report "$OUT/$1" --timeout 90 "${@:2}"
}
part() {
  case "$1" in
    build)
      python3 -m ffexport build --module "$MODULES" --precisions fp32,fp16 --no-trt --jobs 4 --out "$ARTS" 2>&1 \
        | tee "$OUT/build.log" | grep -v "^ " ;;
    profile)
      python3 benchmarks/gpu_ort_fp16_graph.py --out "$ARTS" --batches 1,8,32 --iters 50 --nhwc 0,1 --kernels 12 \
        --json "$OUT/profile.json" 2>&1 | tee "$OUT/profile.log" | grep -v "^{" ;;
    pipeline)
      bench ort-fp16 --backends ort --precisions fp16 --pipeline-batch 1,8,32 --no-enhance --no-video --timeout 150
      FFEXPORT_ORT_CUDA_OPTIONS=prefer_nhwc=1 bench ort-fp16-nhwc --backends ort --precisions fp16 \
        --pipeline-batch 1,8,32 --no-enhance --no-video --timeout 150 ;;
    modules)
      modules modules-default
      FFEXPORT_ORT_CUDA_OPTIONS=prefer_nhwc=1 modules modules-nhwc ;;
    *) echo "unknown part $1; use build, profile, pipeline or modules" >&2; return 2 ;;
  esac
}
for p in "$@"; do echo "== $p $(date +%T)"; part "$p"; done
echo "== done $(date +%T)"
