#!/usr/bin/env bash
# Issue #12's streaming-executor and onnxruntime rows on the GPU host, from the repository root (the wheels of .whl/
# carried; onnxruntime-gpu under $ORT_SITE for the ort rows):
#
#     OUT=/some/folder bash benchmarks/gpu_streaming.sh torch   # streaming against serial, torch FP16
#     OUT=/some/folder bash benchmarks/gpu_streaming.sh ort     # onnxruntime-CUDA FP32 and FP16, streaming
#
# The reference pipeline at 1080p, one face per frame, 256 timed frames decoded in memory, at 1, 8 and 32 frames
# per call. The serial rows run with `streaming: false` in a copy of configs/. The ort part first builds the
# ONNX artifacts the pipeline runs with `ffexport build` (four modules at once), then times them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ffexport-speed}
SITE=${BENCH_SITE:-/tmp/site}
ARTS=${FFEXPORT_ARTIFACTS:-/tmp/arts}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl 2>/dev/null
fi
export PYTHONPATH="${ORT_SITE:-/tmp/ortgpu}:$SITE:$PWD/src"
bench() {  # name, options
  python3 -m ffexport bench --modules none --pipeline --frames 256 --no-naive --no-video --out "$ARTS" \
    --report "$OUT/$1" "${@:2}"
}
case "${1:-torch}" in
  torch)
    serial=$(mktemp -d)/configs && cp -r configs "$serial" && echo "streaming: false" >> "$serial/pipeline.yaml"
    bench torch-no-enhancer-streaming --backends torch --precisions fp16 --pipeline-batch 1,8,32 --no-enhance --timeout 200
    bench torch-no-enhancer-serial --backends torch --precisions fp16 --pipeline-batch 1,8,32 --no-enhance --timeout 200 \
      --config-dir "$serial"
    bench torch-enhancer-streaming --backends torch --precisions fp16 --pipeline-batch 8,32 --enhance --timeout 200
    ;;
  ort)
    python3 -m ffexport build --module mtcnn_pnet,mtcnn_rnet,mtcnn_onet,encoder,generator,blender \
      --precisions fp32,fp16 --no-trt --jobs 4 --out "$ARTS" 2>&1 | tee "$OUT/ort-build.log"
    bench ort-no-enhancer-streaming --backends ort --precisions fp32,fp16 --pipeline-batch 1,8,32 --no-enhance \
      --timeout 200
    ;;
esac
