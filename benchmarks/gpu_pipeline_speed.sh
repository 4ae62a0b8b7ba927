#!/usr/bin/env bash
# Issue #12's pipeline rows on the GPU host, from the repository root (the wheels of .whl/ carried, for
# facenet-pytorch's MTCNN weights):
#
#     OUT=/some/folder bash benchmarks/gpu_pipeline_speed.sh
#
# The reference pipeline at 1080p, one face per frame, FP16, 256 timed frames decoded in memory, at 1, 8 and 32
# frames per call: torch and compile without the enhancer, torch with GFPGAN-1.4. Reports in $OUT/<name>/.
# The compile rows' first calls compile (minutes): their time is reported apart (compile_s) from the FPS.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ffexport-speed}
SITE=${BENCH_SITE:-/tmp/site}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl 2>/dev/null
fi
export PYTHONPATH="$SITE:${EXTRA_PYTHONPATH:+$EXTRA_PYTHONPATH:}$PWD/src"
bench() {  # name, options
  python3 -m ffexport bench --modules none --pipeline --precisions fp16 --frames 256 --no-naive --no-video \
    --out "${FFEXPORT_ARTIFACTS:-/tmp/arts}" --report "$OUT/$1" "${@:2}"
}
bench torch-no-enhancer --backends torch --pipeline-batch 1,8,32 --no-enhance --timeout 200
bench torch-enhancer --backends torch --pipeline-batch 1,8,32 --enhance --timeout 200
bench compile-no-enhancer --backends compile --pipeline-batch 1,8,32 --no-enhance --timeout 300
