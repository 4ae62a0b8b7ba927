# Sourced by the GPU-host benchmark scripts (benchmarks/gpu_session*.sh) from the repository root: where the
# results, the wheels and the artifacts go, and `bench NAME OPTIONS...`, one pipeline benchmark report under
# $OUT/NAME ($FRAMES, default 256, timed frames of 1080p, no naive baseline, the artifacts under $ARTS),
# `configs_with "key: value"`, a copy of configs/ whose pipeline.yaml sets it (for --config-dir), `serial`, one
# whose pipeline takes the serial executor, and the onnxruntime sessions' common parts: `ort_build` (the
# pipeline's ONNX artifacts, FP32 and FP16), `ort_modules` (their module rows on onnxruntime-CUDA at batch 1 and 8)
# `ort_rows NAME` (the onnxruntime FP16 pipeline at 1, 8 and 32 frames a call, no enhancer), `compile_b1 NAME`
# (the compile backend's FP16 pipeline at batch 1, serial) and `compile_b32 NAME` (at batch 32, the best backend).
OUT=${OUT:-/tmp/ffexport-speed}
SITE=${BENCH_SITE:-/tmp/site}
ARTS=${FFEXPORT_ARTIFACTS:-/tmp/arts}
export PYTHONPATH="${ORT_SITE:-/tmp/ortgpu}:$SITE:$PWD/src" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
bench() {  # name, options
  python3 -m ffexport bench --modules none --pipeline --frames "${FRAMES:-256}" --no-naive --out "$ARTS" --report "$OUT/$1" "${@:2}"
}
configs_with() {  # "key: value": a copy of configs/ whose pipeline.yaml sets it, replaced or added (for --config-dir)
  local d key=${1%%:*}; d=$(mktemp -d)/configs && cp -r configs "$d" || return 1
  if grep -q "^$key:" "$d/pipeline.yaml"; then sed -i "s/^$key:.*/$1/" "$d/pipeline.yaml"; else echo "$1" >> "$d/pipeline.yaml"; fi
  echo "$d"
}
serial() {  # a copy of configs/ with the serial executor (for --config-dir)
  configs_with "streaming: false"
}
ORT_MODULES=mtcnn_pnet,mtcnn_rnet,mtcnn_onet,encoder,generator,blender
ort_build() {
  python3 -m ffexport build --module "$ORT_MODULES" --precisions fp32,fp16 --no-trt --jobs 4 --out "$ARTS" 2>&1 \
    | tee "$OUT/build.log" | grep -v "^ "
}
ort_modules() {  # report folder name
  python3 -m ffexport bench --modules "$ORT_MODULES" --backends ort --precisions fp32,fp16 --batch 1,8 --max-time 1 \
    --no-pipeline --out "$ARTS" --report "$OUT/$1" --timeout 90
}
ort_rows() {  # name
  bench "$1" --backends ort --precisions fp16 --pipeline-batch 1,8,32 --no-enhance --no-video --timeout 150
}
compile_b1() {  # name: the compile backend's FP16 pipeline at batch 1 on the serial path (target 2)
  bench "$1" --backends compile --precisions fp16 --pipeline-batch 1 --no-enhance --no-video --timeout 250 \
    --config-dir "$(serial)"
}
compile_b32() {  # name
  bench "$1" --backends compile --precisions fp16 --pipeline-batch 32 --no-enhance --no-video --timeout 300
}
run_parts() {  # the parts named, each through the sourcing script's `part`, stamped with the time
  for p in "$@"; do echo "== $p $(date +%T)"; part "$p"; done
  echo "== done $(date +%T)"
}
