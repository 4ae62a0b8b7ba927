#!/usr/bin/env bash
# Issue #12 target 7 (CPU not slower): the tree before issue #12's first pipeline commit (949e45c, the parent of
# 47252a2) against the checkout, alternated on one machine, with benchmarks/cpu_stages.py (serial pipeline, torch
# FP32 on the CPU, identity generator, 1280x720 frames with one face): first 5 alternations of batch 1 and 8 over
# 8 frames (ab-8frames/), then 6 alternations of batch 1 over 16 frames (ab-b1-16frames/).
# From the repository root, with the README's install active:  bash benchmarks/results/cpu-amd-epyc/issue12-session18-cpu-ab/run.sh OUTDIR
set -u
out=${1:?OUTDIR}; mkdir -p "$out/ab-8frames" "$out/ab-b1-16frames"
root=$(pwd); base=$(mktemp -d)/base
git worktree add -q -f "$base" 949e45c
ab() {  # folder, rounds, batches, frames
  for r in $(seq "$2"); do for t in base head; do
    src=$base/src; [ $t = head ] && src=$root/src
    echo "== $1 $t run $r"
    PYTHONPATH=$src FFEXPORT_OUT=$out/artifacts python3 benchmarks/cpu_stages.py "$out/$1/$t-$r.json" "$3" "$4" 720p 2>&1 | tail -2
  done; done
}
ab ab-8frames 5 1,8 8
ab ab-b1-16frames 6 1 16
git worktree remove --force "$base"
