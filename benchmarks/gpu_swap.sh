#!/usr/bin/env bash
# `ffexport swap` on the GPU host, every backend and precision that runs there, on the astronaut photograph
# and on a short pan-and-zoom video of it with an audio track (made here, below), with --json statistics.
#
#     OUT=benchmarks/results/<gpu-name> bash benchmarks/gpu_swap.sh
#
# Needs what gpu_sweep.sh needs (onnxruntime-gpu at /tmp/ortgpu, the .whl wheels in /tmp/site: PyAV for video).
# Artifacts are built on demand into $ART (default /tmp/ffexport-bench/artifacts, the sweep's, when present).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}; ART=${ART:-/tmp/ffexport-bench/artifacts}; W=${SWAP_WORK:-/tmp/ffexport-swap}
mkdir -p "$OUT" "$ART" "$W"
export PYTHONPATH="${ORTGPU:-/tmp/ortgpu}:${BENCH_SITE:-/tmp/site}:$PWD/src" PYTHONUNBUFFERED=1
LOG="$OUT/swap_gpu.log"; : > "$LOG"
# 48 frames of 640x480 at 24 fps panning and zooming over the built-in astronaut photograph (the pipeline
# benchmark's frame maker), H.264 with a 440 Hz AAC tone, so that the swap's audio copy is exercised
python3 - "$W/clip.mp4" <<'PY' || { echo "cannot make the test video" | tee -a "$LOG"; exit 1; }
import sys

from ffexport.bench.e2e import cast, make_frames, write_video

targets, _ = cast(None, 1)  # the built-in face photograph
write_video(make_frames(targets, 48, (480, 640)), sys.argv[1], fps=24, audio=True, crf=12)
PY
SRC=calibration/grace_hopper.jpg; TGT=calibration/astronaut.jpg
for run in ${RUNS:-torch:fp32 torch:fp16 ort:fp32 ort:fp16 ort:int8}; do
  b=${run%%:*}; p=${run##*:}
  for target in "$TGT" "$W/clip.mp4"; do
    ext=${target##*.}; out="$W/out_${b}_${p}.$ext"
    cmd="ffexport swap --source $SRC --target $target --output $out --backend $b --precision $p --device cuda --out $ART --json --quiet --force"
    echo "\$ $cmd" >> "$LOG"
    s=$(date +%s.%N)
    python3 -m ffexport ${cmd#ffexport } > "$W/stats.json" 2> "$W/err.txt"; rc=$?
    e=$(python3 -c "print(round($(date +%s.%N) - $s, 1))")
    echo "rc=$rc wall=${e}s" >> "$LOG"
    python3 - "$W/stats.json" >> "$LOG" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception as exc:
    print("  (no statistics:", exc, ")"); sys.exit()
keep = {k: s[k] for k in s if k not in ("stages",)}
print("  " + json.dumps(keep, sort_keys=True))
print("  stages: " + ", ".join(f"{d['module']} {d['backend']} {d['precision']}" for d in s.get("stages", [])))
PY
    [ $rc -eq 0 ] || tail -3 "$W/err.txt" >> "$LOG"
  done
done
cat "$LOG"
