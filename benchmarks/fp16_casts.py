"""Issue #12: how many Cast nodes and FP32-kept nodes an FP16 artifact carries, and its parity gate values.

Builds (or reuses, when current) the FP16 artifact of each variant named, with seeded weights, through
``ffexport.artifacts.optimize.Chain`` (what ``optimize(spec, "fp16", Settings(out=...))`` and ``ffexport fp16
--module M --variant V`` run; the spec with configs/<module>.yaml applied), then reads the artifact and its
manifest record.  CPU only.

    python benchmarks/fp16_casts.py --out /tmp/fp16-casts generator:inswapper-128 generator:simswap-256-lite
    python benchmarks/fp16_casts.py --out DIR --json result.json all-ci

``all-ci`` stands for every module's CI variant.  ``--force`` redoes the FP16 step even when current (the
step's key holds its parent, options, gates, faces and tool versions, not the pass's code).  "Cast (live)"
counts the Casts left at run time: not those of constants (onnxruntime folds them when it loads the model),
and one per tensor and target type (the converter writes one per consumer; onnxruntime merges them).
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path


def count(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    # casts left at run time: not of a constant (onnxruntime folds those when it loads the model), and one per
    # tensor and target type (its common-subexpression pass merges the converter's cast-per-consumer copies)
    constant = {i.name for i in m.graph.initializer}
    live = set()
    for n in m.graph.node:
        if n.op_type == "Constant" or (n.op_type == "Cast" and n.input[0] in constant):
            constant.update(n.output)
        elif n.op_type == "Cast":
            live.add((n.input[0], tuple(a.i for a in n.attribute if a.name == "to")))
    return {"nodes": len(m.graph.node), "casts": ops.get("Cast", 0), "casts_live": len(live),
            "instance_norms": ops.get("InstanceNormalization", 0), "size_mb": round(path.stat().st_size / 2**20, 1)}


def measure(module: str, variant: str, out: Path, force: bool, parity_samples: int | None) -> dict:
    from ffexport.artifacts.optimize import Chain, Settings
    from ffexport.artifacts.targets import module_target
    from ffexport.config import resolve_spec
    from ffexport.manifest import artifact_dir

    spec = resolve_spec(module, variant)
    t0 = time.time()
    settings = Settings(out=out, parity_samples=parity_samples, progress=lambda m: print(f"  {m}", flush=True))
    chain = Chain(module_target(spec, out), settings, precision="fp16")
    path = chain.chain("fp16", force={"fp16"} if force else set())
    rec = json.loads((artifact_dir(out, spec) / "manifest.json").read_text())["artifacts"]["fp16.onnx"]
    kept = rec.get("kept_fp32", [])
    parity = rec["parity"]
    gates = {side: {g["metric"]: round(g["value"], 4) for g in parity[side]["gates"]}
             for side in ("vs_parent", "vs_torch") if parity.get(side)}
    cpu = parity.get("onnxruntime_cpu", {})
    cpu_gates = {side: {g["metric"]: round(g["value"], 4) for g in cpu[side]["gates"]}
                 for side in ("vs_parent", "vs_torch") if cpu.get(side)}
    return {
        "module": module, "variant": variant, "seconds": round(time.time() - t0, 1),
        "parent": count(artifact_dir(out, spec) / "fp32.sim.onnx"),
        "fp16": count(path),
        "fp32_kept": len(kept),
        "fp32_kept_by_reason": rec.get("kept_fp32_counts", {}),
        "fp32_kept_by_op": dict(collections.Counter(k["op"] for k in kept).most_common()),
        "fused": rec.get("fused", {}).get("count", 0) if isinstance(rec.get("fused"), dict) else 0,
        "rounds": len(rec.get("rounds", [])),
        "passed": parity["passed"],
        "gates_emulated": gates,
        "gates_ort_cpu": cpu_gates,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", help="module:variant, module (its default variant) or all-ci")
    ap.add_argument("--out", type=Path, required=True, help="artifact root (reused between runs)")
    ap.add_argument("--force", action="store_true", help="redo the FP16 step even when current")
    ap.add_argument("--parity-samples", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from ffexport import specs

    todo = []
    for t in args.targets:
        if t == "all-ci":
            todo += [(m, specs.ci_variant(m)) for m in specs.modules()]
        else:
            m, _, v = t.partition(":")
            todo.append((m, v or specs.default_variant(m)))
    rows = []
    for m, v in todo:
        print(f"{m}/{v}", flush=True)
        try:
            row = measure(m, v, args.out, args.force, args.parity_samples)
        except Exception as exc:  # one failing module does not hide the others' rows
            row = {"module": m, "variant": v, "error": f"{type(exc).__name__}: {exc}"[:400]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print()
    print("| module/variant | nodes (fp32) | nodes (fp16) | Cast (live) | FP32-kept | kept by op | passed "
          "| PSNR / SSIM vs parent (emulated) | PSNR / SSIM (ORT CPU) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['module']}/{r['variant']} | error: {r['error'][:120]} |")
            continue
        g = r["gates_emulated"].get("vs_parent", {})
        c = r["gates_ort_cpu"].get("vs_parent", {})
        print(f"| {r['module']}/{r['variant']} | {r['parent']['nodes']} | {r['fp16']['nodes']} | {r['fp16']['casts']} "
              f"({r['fp16']['casts_live']}) | {r['fp32_kept']} | {r['fp32_kept_by_op']} | {r['passed']} | {g} | {c} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
