#!/usr/bin/env bash
# Issue #12, session 7, on the GPU host from the repository root (onnxruntime-gpu under $ORT_SITE, the wheels of
# .whl/ and PyAV's installed under $BENCH_SITE, see the README's "Staging onnxruntime-gpu"):
#
#     OUT=/some/folder bash benchmarks/gpu_session7.sh ort     # onnxruntime-CUDA pipeline rows, faces in call sizes
#     OUT=/some/folder bash benchmarks/gpu_session7.sh torch   # file to file, memory, batch-1 detection size
#     OUT=/some/folder bash benchmarks/gpu_session7.sh enhancer video   # parts by name, in order
#
# ort: builds the ONNX artifacts the pipeline runs (`ffexport build`, four modules at once), then the onnxruntime
#      FP32 and FP16 pipeline rows at 1, 8 and 32 frames per call (1080p, one face per frame, 256 timed frames).
# torch: the torch FP16 streaming rows at 8 and 32 frames per call with the decode/encode-included video part
#      (an H.264 file with AAC audio; the host's encode-only ceiling measured in the same worker); the memory
#      breakdown of the batch-8 enhancer pipeline (benchmarks/gpu_memory.py); the serial batch-1 rows with the
#      detection copy at 1280 (default), 640 and 480 px (parts video, memory, detect).
# enhancer: the torch FP16 streaming rows with GFPGAN-1.4 at 8 and 32 frames per call (enhance_faces_per_call of
#      configs/pipeline.yaml).
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
configs() {  # a copy of configs/ with the serial executor and MTCNN's detection size $1
  local d; d=$(mktemp -d)/configs && cp -r configs "$d" && echo "streaming: false" >> "$d/pipeline.yaml" \
    && sed -i "s/^detect_max_side:.*/detect_max_side: $1/" "$d/pipeline.yaml" && echo "$d"
}
part() {
  case "$1" in
    ort)
      python3 -m ffexport build --module mtcnn_pnet,mtcnn_rnet,mtcnn_onet,encoder,generator,blender \
        --precisions fp32,fp16 --no-trt --jobs 4 --out "$ARTS" 2>&1 | tee "$OUT/ort-build.log"
      bench ort-calls --backends ort --precisions fp32,fp16 --pipeline-batch 1,8,32 --no-enhance --no-video --timeout 150
      ;;
    video)
      bench torch-file-to-file --backends torch --precisions fp16 --pipeline-batch 8,32 --no-enhance --timeout 150 ;;
    memory)
      python3 benchmarks/gpu_memory.py "$OUT/memory" 2>&1 | tee "$OUT/memory.log" ;;
    detect)
      for side in 1280 640 480; do
        bench torch-b1-detect-$side --backends torch --precisions fp16 --pipeline-batch 1 --no-enhance --no-video \
          --timeout 100 --config-dir "$(configs $side)"
      done ;;
    enhancer)
      bench torch-enhancer --backends torch --precisions fp16 --pipeline-batch 8,32 --enhance --no-video --timeout 200 ;;
    torch) part video; part memory; part detect ;;
    *) echo "unknown part $1; use ort, torch, video, memory, detect or enhancer" >&2; return 2 ;;
  esac
}
for p in "${@:-torch}"; do part "$p"; done
