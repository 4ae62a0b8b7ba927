# Sourced by the GPU-host benchmark scripts (benchmarks/gpu_session*.sh) from the repository root: where the
# results, the wheels and the artifacts go, and `bench NAME OPTIONS...`, one pipeline benchmark report under
# $OUT/NAME (256 timed frames of 1080p, no naive baseline, the artifacts under $ARTS), and `serial`, a copy of
# configs/ whose pipeline takes the serial executor.
OUT=${OUT:-/tmp/ffexport-speed}
SITE=${BENCH_SITE:-/tmp/site}
ARTS=${FFEXPORT_ARTIFACTS:-/tmp/arts}
export PYTHONPATH="${ORT_SITE:-/tmp/ortgpu}:$SITE:$PWD/src" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
bench() {  # name, options
  python3 -m ffexport bench --modules none --pipeline --frames 256 --no-naive --out "$ARTS" --report "$OUT/$1" "${@:2}"
}
serial() {  # a copy of configs/ with the serial executor (for --config-dir)
  local d; d=$(mktemp -d)/configs && cp -r configs "$d" && echo "streaming: false" >> "$d/pipeline.yaml" && echo "$d"
}
