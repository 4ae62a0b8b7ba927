#!/usr/bin/env bash
# Issue #12, session 8, on the GPU host from the repository root (PyAV's cp312 wheel installed under $BENCH_SITE,
# onnxruntime-gpu under $ORT_SITE for the ort part; see the README's "Staging onnxruntime-gpu"):
#
#     OUT=/some/folder bash benchmarks/gpu_session8.sh video          # file to file, frames as YUV planes
#     OUT=/some/folder bash benchmarks/gpu_session8.sh compile compile-enhancer  # the compile backend, streaming
#     OUT=/some/folder bash benchmarks/gpu_session8.sh ort            # onnxruntime rows at batch 1
#
# video: the torch FP16 streaming rows at 8 and 32 frames per call with the decode/encode-included video part:
#      on CUDA a 4:2:0 video's frames now travel as YUV planes, converted on the GPU (pipeline/yuv.py); the
#      host's codecs alone are measured on both forms (planes and RGB) in the same worker; then the GPU tests of
#      the planes path.
# compile: the compile backend (torch.compile, CUDA graphs) FP16 through the streaming executor, without the
#      enhancer at 32 frames per call; compile-enhancer: with GFPGAN-1.4 at 32 (inductor's cache shared).
# compile-sweep: compile with GFPGAN-1.4 at 32 frames a call and 8 or 16 faces an enhancer call; compile without
#      the enhancer at 64 frames a call.
# ort: builds the ONNX artifacts, then the onnxruntime FP16 and FP32 rows at batch 1 (call size 2 warmed too).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
configs() {  # a copy of configs/ with enhance_faces_per_call $1
  local d; d=$(mktemp -d)/configs && cp -r configs "$d" \
    && sed -i "s/^enhance_faces_per_call:.*/enhance_faces_per_call: $1/" "$d/pipeline.yaml" && echo "$d"
}
part() {
  case "$1" in
    video)
      bench torch-file-to-file-planes --backends torch --precisions fp16 --pipeline-batch 8,32 --no-enhance \
        --timeout 200
      python3 -m pytest -q -rs -p no:cacheprovider tests/pipeline/test_yuv.py tests/pipeline/test_streaming_gpu.py \
        2>&1 | tee "$OUT/gpu_tests_planes.log" ;;
    compile)
      bench compile-streaming --backends compile --precisions fp16 --pipeline-batch 32 --no-enhance --no-video \
        --timeout 300 ;;
    compile-enhancer)
      bench compile-enhancer --backends compile --precisions fp16 --pipeline-batch 32 --enhance --no-video \
        --timeout 420 ;;
    compile-sweep)  # the enhancer's call size under compile, and 64 frames a call without it
      for n in 8 16; do
        bench compile-enhancer-$n --backends compile --precisions fp16 --pipeline-batch 32 --enhance --no-video \
          --timeout 240 --config-dir "$(configs $n)"
      done
      bench compile-streaming-64 --backends compile --precisions fp16 --pipeline-batch 64 --no-enhance --no-video \
        --timeout 200 ;;
    compile-enhancer-again)  # the row of compile-enhancer again, and 64 frames a call
      bench compile-enhancer-again --backends compile --precisions fp16 --pipeline-batch 32,64 --enhance \
        --no-video --timeout 300 ;;
    nhwc)  # MTCNN's nets channels-last: the cascade alone (A/B), then the pipeline rows at 32 frames a call
      python3 benchmarks/gpu_profile_batch.py "$OUT/profile-nhwc" compile 2>&1 | grep -v Warning \
        | tee "$OUT/profile-nhwc.log" | grep -E "channels_last|nchw|proposed"
      bench nhwc-streaming --backends torch,compile --precisions fp16 --pipeline-batch 32 --no-enhance --no-video \
        --timeout 200 ;;
    ort)
      python3 -m ffexport build --module mtcnn_pnet,mtcnn_rnet,mtcnn_onet,encoder,generator,blender \
        --precisions fp32,fp16 --no-trt --jobs 4 --out "$ARTS" 2>&1 | tee "$OUT/ort-build.log"
      bench ort-b1 --backends ort --precisions fp32,fp16 --pipeline-batch 1 --no-enhance --no-video --timeout 150 ;;
    *) echo "unknown part $1; use video, compile, compile-enhancer, compile-sweep, compile-enhancer-again, nhwc or ort" >&2; return 2 ;;
  esac
}
for p in "$@"; do part "$p"; done
