#!/usr/bin/env bash
# Issue #12, session 14, on the GPU host from the repository root: onnxruntime's CUDA runs without host
# synchronisation, and the MTCNN cascade with onnxruntime's nets captured in one CUDA graph (target 3), with
# onnxruntime-gpu installed under $ORT_SITE and the carried wheels under $BENCH_SITE (see gpu_bench_env.sh and the
# README's "Staging onnxruntime-gpu"):
#
#     OUT=/some/folder bash benchmarks/gpu_session14.sh build tests detect
#     OUT=/some/folder bash benchmarks/gpu_session14.sh pipeline-before pipeline-async pipeline
#     OUT=/some/folder bash benchmarks/gpu_session14.sh modules compile
#
# build: the ONNX artifacts the onnxruntime pipeline runs, FP32 and FP16 (`ffexport build`, four modules at once).
# tests: the CUDA tests of onnxruntime's runner and of the MTCNN cascade (its graph with onnxruntime's nets).
# detect: benchmarks/gpu_mtcnn_ort_graph.py, the detector alone with onnxruntime's nets (host synchronised, not
#      synchronised, captured in a graph) and torch's, FP16 and FP32, at 1, 8 and 32 frames a call.
# pipeline-before / pipeline-async / pipeline: the onnxruntime FP16 pipeline at 1, 8 and 32 frames a call (1080p,
#      256 timed frames, no enhancer) as before this session (FFEXPORT_ORT_HOST_SYNC=1, FFEXPORT_MTCNN_GRAPH=0),
#      with the host left free but no graph (FFEXPORT_MTCNN_GRAPH=0), and with ffexport's defaults now.
# modules: the module rows on onnxruntime-CUDA, FP32 and FP16 at batch 1 and 8, as ffexport runs them now.
# compile: the compile backend's FP16 pipeline at 32 frames a call on the same machine (the best backend).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
part() {
  case "$1" in
    build) ort_build ;;
    tests)
      timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/backends/test_ort_cuda.py \
        tests/backends/test_ort_cuda_graph.py tests/backends/test_backend_ort.py tests/pipeline/test_mtcnn.py 2>&1 \
        | tee "$OUT/tests.log" | tail -15 ;;
    detect)
      timeout 400 python3 benchmarks/gpu_mtcnn_ort_graph.py --out "$ARTS" --json "$OUT/mtcnn_ort_graph.json" 2>&1 \
        | grep -v '^[ {}]' | tee "$OUT/mtcnn_ort_graph.log" ;;
    pipeline-before) FFEXPORT_ORT_HOST_SYNC=1 FFEXPORT_MTCNN_GRAPH=0 ort_rows ort-fp16-before ;;
    pipeline-async) FFEXPORT_MTCNN_GRAPH=0 ort_rows ort-fp16-async ;;
    pipeline) ort_rows ort-fp16 ;;
    modules) ort_modules modules ;;
    compile) compile_b32 compile-streaming ;;
    *) echo "unknown part $1; use build, tests, detect, pipeline-before, pipeline-async, pipeline, modules or compile" >&2
       return 2 ;;
  esac
}
run_parts "$@"
