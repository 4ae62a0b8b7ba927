#!/usr/bin/env bash
# Where the time goes on the GPU host, and whether converted MTCNN nets find the same faces:
#   benchmarks/mtcnn_check.py        the cascade per backend/precision vs torch FP32, level by level
#                                    (--no-sync: net calls without host synchronisation, as the pipeline makes them)
#   benchmarks/ort_shape_overhead.py onnxruntime CUDA per-call cost when input shapes change
#   benchmarks/pipeline_profile.py   the pipeline's per-runner-call times, in the pipeline and repeated
#
#     OUT=benchmarks/results/<gpu-name>/diag bash benchmarks/gpu_diag.sh
#
# Needs onnxruntime-gpu at /tmp/ortgpu and the wheels of .whl/ in /tmp/site (see gpu_sweep.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/diag-out}; ART=${ART:-/tmp/diag-arts}; mkdir -p "$OUT" "$ART"
export PYTHONPATH="${ORTGPU:-/tmp/ortgpu}:${BENCH_SITE:-/tmp/site}:$PWD/src" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
for p in fp16 int8; do
  python3 -m ffexport optimize -m mtcnn_pnet,mtcnn_rnet,mtcnn_onet --precision $p --out "$ART" >"$ART/opt_mtcnn_$p.log" 2>&1 \
    || tail -5 "$ART/opt_mtcnn_$p.log"
done
python3 benchmarks/mtcnn_check.py --device cuda --out "$ART" --frames 8 --no-sync \
  --runs ${RUNS:-torch:fp16,ort:fp32,ort:fp16,ort:int8} --json "$OUT/mtcnn_check.json" 2>&1 | tee "$OUT/mtcnn_check.log"
for bp in ${PROFILES:-torch:fp32 ort:fp32 ort:fp16}; do
  timeout ${PROFILE_TIMEOUT:-200} python3 benchmarks/pipeline_profile.py --backend ${bp%%:*} --precision ${bp##*:} \
    --device cuda --enhance --frames 12 --out "$ART" --json "$OUT/profile_${bp%%:*}_${bp##*:}.json" 2>&1 \
    | tail -8 | tee -a "$OUT/profile.log"
done
for p in fp32 fp16; do  # after the profiles: they built the generator's and enhancer's artifacts
  python3 benchmarks/ort_shape_overhead.py --out "$ART" --precision $p --big generator,enhancer \
    --json "$OUT/ort_shape_overhead_$p.json"
done
