#!/usr/bin/env bash
# Issue #12, session 15, on the GPU host from the repository root: file to file (target 4), where its time goes,
# and how the threads that need the GPU's results wait for them (ffexport.pipeline.device.cuda_wait):
#
#     bash benchmarks/gpu_session15.sh install           # the wheel folders carried under .port/ (see below)
#     OUT=/some/folder bash benchmarks/gpu_session15.sh row f2f
#     OUT=/some/folder bash benchmarks/gpu_session15.sh tests row1024
#     OUT=/some/folder bash benchmarks/gpu_session15.sh b1 b32
#
# install: the carried wheel folders of .port/ (PyAV, rich, facenet-pytorch, matplotlib, PyYAML ...) into
#      $BENCH_SITE; one call can carry about 60 MB, so this part runs once per call that carries some.
# row: `ffexport bench --pipeline`, the compile backend FP16 at 8 frames a call with decode and encode included
#      (the benchmark's clip, 256 frames of 1080p), beside the codec ceilings measured in the same run; it also
#      prepares the artifacts under $ARTS that the next part runs.
# f2f: benchmarks/gpu_file_to_file.py: clips of 256 and 1024 frames, two rounds of pass-through and file to file
#      with the threads spinning (CUDA's default) and asleep (FFEXPORT_CUDA_WAIT=block).
# row1024: `row` with 1024 frames (the timed frames and the clip).
# b1 / b32: the compile FP16 rows of targets 2 and 1, no enhancer: batch 1 on the serial path, batch 32 streaming.
# (Session 15 ran row1024, b1 and b32 with the code of 51f3b6f, where every run's threads waited asleep; from
# the next commit on only a video's transcode does, and FFEXPORT_CUDA_WAIT=spin|block chooses for all runs.)
# tests: the GPU tests of the streaming executor and of the MTCNN cascade.
# (Session 16 ran tests, row1024, row and f2f with F2F_FRAMES=1024 F2F_ROUNDS=2, the code of 6f1198f, where the
# video row and the script warm up with ffexport.bench.e2e.warm_video.)
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_bench_env.sh
part() {
  case "$1" in
    install)
      for d in .port/*/; do
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$d"*.whl 2>&1 | tail -2
      done ;;
    row)
      bench compile-file-to-file --backends compile --precisions fp16 --pipeline-batch 8 --no-enhance \
        --timeout 400 ;;
    row1024)
      FRAMES=1024 bench compile-file-to-file-1024 --backends compile --precisions fp16 --pipeline-batch 8 \
        --no-enhance --timeout 500 ;;
    b1) compile_b1 b1-serial ;;
    b32) compile_b32 streaming ;;  # (session 15's run: --timeout 250)
    f2f)
      timeout 560 python3 benchmarks/gpu_file_to_file.py --out "$OUT/f2f" --arts "$ARTS" \
        --frames "${F2F_FRAMES:-256,1024}" --rounds "${F2F_ROUNDS:-2}" 2>&1 | grep -v Warning \
        | tee "$OUT/f2f.log" ;;
    tests)
      timeout 400 python3 -m pytest -q -rs -p no:cacheprovider tests/pipeline/test_streaming_gpu.py \
        tests/pipeline/test_mtcnn.py 2>&1 | tee "$OUT/tests.log" | tail -8 ;;
    *) echo "unknown part $1; use install, row, row1024, f2f, tests, b1 or b32" >&2; return 2 ;;
  esac
}
run_parts "$@"
