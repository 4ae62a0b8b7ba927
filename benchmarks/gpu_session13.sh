#!/usr/bin/env bash
# Issue #12, session 13, on the GPU host from the repository root: the onnxruntime-CUDA rows (target 3), with
# onnxruntime-gpu installed under $ORT_SITE and the carried wheels under $BENCH_SITE (see gpu_bench_env.sh and the
# README's "Staging onnxruntime-gpu"; facenet-pytorch's MTCNN weights, onnxsim, onnxslim, onnxconverter-common,
# PyYAML and rich for the build, matplotlib for the plots):
#
#     OUT=/some/folder bash benchmarks/gpu_session13.sh build profile-before profile
#     OUT=/some/folder bash benchmarks/gpu_session13.sh pipeline-before pipeline modules
#     OUT=/some/folder bash benchmarks/gpu_session13.sh compile
#
# build: the ONNX artifacts the onnxruntime pipeline runs, FP32 and FP16 (`ffexport build`, four modules at once).
# profile-before: benchmarks/gpu_ort_fp16_graph.py on the generator as the CUDA provider ran it before this session
#      (use_tf32=0 for every model), FP32 and FP16 at 1, 8 and 32 faces a call, prefer_nhwc 0 and 1, the costliest
#      kernels of each plain call (torch's profiler).  Session 13's folder 1-build-profile.
# profile: the same with ffexport's options now (use_tf32=1 for FP16 artifacts), onnxruntime's own layout.
#      Session 13 ran it as FFEXPORT_ORT_CUDA_OPTIONS=use_tf32=1 on 170e61c (folder 3-tf32-profile-pipeline).
# pipeline-before / pipeline: the onnxruntime FP16 pipeline at 1, 8 and 32 frames a call (1080p, 256 timed frames,
#      no enhancer), before (use_tf32=0; folder 2-ort-pipeline-modules) and now (folder 3, run as above).
# modules: the module rows of the pipeline's ONNX artifacts on onnxruntime-CUDA, FP32 and FP16 at batch 1 and 8
#      (folders 2 and 4: FP32 rows as now, FP16 rows before and with use_tf32=1).
# compile: the compile backend's FP16 pipeline at 32 frames a call on the same machine (the best backend, folder 5).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
before() { FFEXPORT_ORT_CUDA_OPTIONS=use_tf32=0 "$@"; }
profile() {  # name, then options
  python3 benchmarks/gpu_ort_fp16_graph.py --out "$ARTS" --precisions fp32,fp16 --batches 1,8,32 --iters 50 \
    --kernels 12 --json "$OUT/$1.json" "${@:2}" 2>&1 | tee "$OUT/$1.log" | grep -v "^{"
}
part() {
  case "$1" in
    build) ort_build ;;
    profile-before) before profile profile-before --nhwc 0,1 ;;
    profile) profile profile ;;
    pipeline-before) before ort_rows ort-fp16-before ;;
    pipeline) ort_rows ort-fp16 ;;
    modules) ort_modules modules ;;
    compile) compile_b32 compile-streaming ;;
    *) echo "unknown part $1; use build, profile-before, profile, pipeline-before, pipeline, modules or compile" >&2
       return 2 ;;
  esac
}
run_parts "$@"
