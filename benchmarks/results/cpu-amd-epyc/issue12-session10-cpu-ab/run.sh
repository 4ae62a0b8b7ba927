#!/usr/bin/env bash
# Issue #12 target 7 (CPU not slower): session 9's base (b6ee3eb) against 802d717, alternated twice on one machine.
# From the repository root, with the README's install active:  bash benchmarks/results/cpu-amd-epyc/issue12-session10-cpu-ab/run.sh OUTDIR
set -u
out=${1:?OUTDIR}; mkdir -p "$out"
root=$(pwd); base=$(mktemp -d)/base
git worktree add -q -f "$base" b6ee3eb
for r in 1 2; do for t in base head; do
  src=$base/src; [ $t = head ] && src=$root/src
  echo "== $t run $r"
  PYTHONPATH=$src FFEXPORT_OUT=$out/artifacts python3 benchmarks/cpu_stages.py "$out/$t-$r.json" 1,8 8 720p 2>&1 | tail -2
done; done
git worktree remove --force "$base"
