#!/usr/bin/env bash
# The whole GPU benchmark in one command, run from the repository root on the GPU host:
#
#     bash benchmarks/gpu_sweep.sh
#
# Every module at its default variant on torch (FP32/FP16), onnxruntime CUDA (FP32/FP16/INT8, IO binding),
# TensorRT (rows with the reason where it cannot run) and onnxruntime CPU (FP32/INT8), at batch 1 and 8 (CPU rows:
# batch 1),
# plus the reference pipeline beside the naive baseline at 1080p, one face per frame, with decode/encode.
# Artifacts are built on the host first (export -> simplify -> FP16 -> INT8 calibrated on 8 samples of
# calibration/, each pass parity-gated on 4 faces), several modules at a time on the CPU.
#
# Needs (see DEVELOPERS.md): onnxruntime-gpu unpacked at /tmp/ortgpu (ORTGPU=... to change), and the wheels of
# .whl/ (PyAV, facenet-pytorch's MTCNN weights, onnxsim, onnxslim, onnxconverter-common), installed here into
# /tmp/site on the first run. TensorRT, if staged, is picked up from $EXTRA_PYTHONPATH.
#
# Time: the run stops measuring after BENCH_BUDGET_S seconds (default 470) and reports what is left as
# "not measured"; everything is kept in $FFEXPORT_BENCH_WORK (default /tmp/ffexport-bench), so running the
# same command again on the same machine reuses the artifacts and measured rows (--resume) and measures
# only the rest. Results: results.json, results.md, the PNG plots and bench.log in $OUT/<gpu-name>/
# (OUT defaults to benchmarks/results).
#
# SEED=benchmarks/results/<gpu-name>/results.json starts from committed results on a fresh machine (their
# measured rows are kept, as with --resume); REDO=pipeline drops the pipeline rows from the seed so that
# they are measured again (REDO=all: every row).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
WORK=${FFEXPORT_BENCH_WORK:-/tmp/ffexport-bench}
BUDGET=${BENCH_BUDGET_S:-470}
ORTGPU=${ORTGPU:-/tmp/ortgpu}
SITE=${BENCH_SITE:-/tmp/site}
mkdir -p "$WORK" "$OUT"
t0=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null && [ ! -f "$SITE/.ffexport-bench-site" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && touch "$SITE/.ffexport-bench-site"
fi
export PYTHONPATH="$ORTGPU:$SITE:${EXTRA_PYTHONPATH:+$EXTRA_PYTHONPATH:}$PWD/src"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
python3 - <<'EOF' || true
import importlib
for m in ("onnxruntime", "torch", "av", "onnxsim", "onnxslim", "onnxconverter_common", "pynvml", "cv2", "matplotlib"):
    try:
        mod = importlib.import_module(m)
        extra = f" providers={mod.get_available_providers()}" if m == "onnxruntime" else ""
        print(f"[sweep] {m} {getattr(mod, '__version__', '?')}{extra}")
    except Exception as exc:
        print(f"[sweep] {m} MISSING ({type(exc).__name__}: {exc})")
EOF

[ -n "${SEED:-}" ] && python3 benchmarks/seed_results.py "$SEED" "$WORK/results" "${REDO:-}"

python3 -m ffexport bench \
  --modules all --backends torch,ort,trt,ort:cpu --precisions fp32,fp16,int8 --batch 1,8 --batch-cpu 1 --precisions-cpu fp32,int8 \
  --pipeline --resolution 1080p --faces 1 --frames 32 --naive-frames 8 \
  --iters 100 --warmup 10 --max-time 1 --rotate 4 \
  --samples 8 --parity-samples 4 --prepare-jobs 4 \
  --calib calibration --out "$WORK/artifacts" --work "$WORK/bench" --report "$WORK/results/{host}" \
  --timeout 240 --deadline "$BUDGET" --resume 2>"$WORK/sweep.stderr"
rc=$?
[ $rc -eq 0 ] || tail -n 20 "$WORK/sweep.stderr"

for d in "$WORK"/results/*/; do
  [ -f "$d/results.json" ] || continue
  tag=$(basename "$d")
  mkdir -p "$OUT/$tag"
  cp "$d"/results.json "$d"/results.md "$OUT/$tag/"
  cp "$d"/*.png "$OUT/$tag/" 2>/dev/null
  { cat "$WORK/sweep.stderr"; echo; echo "===== worker output ====="; tail -c 12000000 "$WORK/bench/bench.log"; } \
    > "$OUT/$tag/bench.log" 2>/dev/null
  echo "[sweep] $OUT/$tag: $(ls "$OUT/$tag" | tr '\n' ' ')"
done
echo "[sweep] exit $rc after $(( $(date +%s) - t0 )) s"
exit $rc
