#!/usr/bin/env bash
# Our exports through insightface's own loaders: export the detector, the encoder (iresnet18) and the
# inswapper-layout generator (inswapper-128-small) with this checkout's ffexport, then load and run each with
# insightface.model_zoo.get_model (benchmarks/insightface_compat.py).  insightface lives in its own venv (it is
# not a dependency of ffexport): IFPY=/tmp/ifvenv/bin/python, made as insightface_compat.py's docstring says.
# Writes benchmarks/results/insightface-compat/{summary.json,run.log}; exit status is the check's.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ifpy=${IFPY:-/tmp/ifvenv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
res="$here/benchmarks/results/insightface-compat"
mkdir -p "$res"
cd "$work"
ffexport onnx -m detector --out arts > /dev/null
ffexport onnx -m encoder --variant iresnet18 --out arts > /dev/null
ffexport onnx -m generator --variant inswapper-128-small --out arts > /dev/null
{
  echo "ffexport commit: $(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet HEAD -- src || echo ' (+ uncommitted changes)')"
  echo "insightface: $("$ifpy" -c 'import insightface; print(insightface.__version__)'), python: $("$ifpy" -c 'import platform; print(platform.python_version())')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$res/run.log"
set +e
"$ifpy" "$here/benchmarks/insightface_compat.py" --detector arts/detector/fp32.onnx \
    --encoder arts/encoder.iresnet18/fp32.onnx --generator arts/generator.inswapper-128-small/fp32.onnx \
    --image "$here/calibration/astronaut.jpg" --json "$res/summary.json" 2>/dev/null | grep -E '^(detector|encoder|generator) | warning' >> "$res/run.log"
rc=${PIPESTATUS[0]}
echo "exit status: $rc" >> "$res/run.log"
cat "$res/run.log"
exit "$rc"
