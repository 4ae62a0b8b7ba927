#!/usr/bin/env bash
# Issue #12, session 17, on the GPU host from the repository root (onnxruntime-gpu under $ORT_SITE, the carried wheels
# under $BENCH_SITE: see gpu_bench_env.sh and the README's "Staging onnxruntime-gpu"):
#
#     OUT=/some/folder VARIANTS=/folder/of/edited.onnx bash benchmarks/gpu_session17.sh fp16
#     OUT=/some/folder bash benchmarks/gpu_session17.sh build tests
#     OUT=/some/folder bash benchmarks/gpu_session17.sh modules pipeline
#     OUT=/some/folder bash benchmarks/gpu_session17.sh compile
#
# fp16: target 3's second half after the FP16 pass undoes the Casts that change nothing (passes.fp16._tidy_casts):
#   MTCNN's R-Net and O-Net and the blender built FP32 and FP16 by `ffexport build` with this code, their module
#   rows on onnxruntime-CUDA at batch 1 and 8 (`ffexport bench`, as ort_modules runs them), then
#   benchmarks/gpu_fp16_tidy.py over those artifacts and the graphs in $VARIANTS (edited from them: the flatten
#   as one node, float16 inputs and outputs), plain and with onnxruntime's CUDA graph, taking turns.
# build: the onnxruntime pipeline's artifacts, FP32 and FP16, with this code (gpu_bench_env.sh's ort_build).
# tests: the GPU tests of what this session changed: the benchmark's module rows (onnxruntime's CUDA graph), the FP16
#   pass, onnxruntime's CUDA runner.
# modules: the module rows on onnxruntime-CUDA, FP32 and FP16 at batch 1 and 8 (ort_modules), now timed with
#   onnxruntime's CUDA graph where it takes one, the plain run beside it.
# pipeline: the onnxruntime FP16 pipeline at 1, 8 and 32 frames a call (ort_rows); compile: the compile backend's
#   FP16 pipeline at 32 frames a call (the best backend), on the same machine, for target 3's ratio.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
SMALL=mtcnn_rnet,mtcnn_onet,blender
part() {
  case "$1" in
    fp16)
      python3 -m ffexport build --module "$SMALL" --precisions fp32,fp16 --no-trt --jobs 3 --out "$ARTS" 2>&1 \
        | tee "$OUT/build.log" | grep -v "^ "
      python3 -m ffexport bench --modules "$SMALL" --backends ort --precisions fp32,fp16 --batch 1,8 --max-time 1 \
        --no-pipeline --out "$ARTS" --report "$OUT/modules" --timeout 90 2>&1 | tail -25
      local d; d=$(mktemp -d)
      for m in ${SMALL//,/ }; do
        cp "$ARTS/$m/fp32.sim.onnx" "$d/$m.fp32.onnx" && cp "$ARTS/$m/fp16.onnx" "$d/$m.fp16.onnx"
      done
      cp "${VARIANTS:-/nonexistent}"/*.onnx "$d/" 2>/dev/null
      timeout 400 python3 benchmarks/gpu_fp16_tidy.py --dir "$d" --graph --json "$OUT/variants.json" 2>&1 \
        | grep -v '^[a-z_]*\.[a-z0-9]*\.onnx {' | tee "$OUT/variants.log" | tail -40 ;;
    build) ort_build ;;
    tests)
      timeout 500 python3 -m pytest -q -rs -p no:cacheprovider tests/bench/test_bench.py tests/passes/test_passes_fp16.py \
        tests/backends/test_ort_cuda.py tests/backends/test_ort_cuda_graph.py 2>&1 | tee "$OUT/tests.log" | tail -15 ;;
    modules) ort_modules modules ;;
    pipeline) ort_rows ort-fp16 ;;
    compile) compile_b32 compile-streaming ;;
    *) echo "unknown part $1; use fp16, build, tests, modules, pipeline or compile" >&2; return 2 ;;
  esac
}
run_parts "$@"
