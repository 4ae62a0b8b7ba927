"""Is an INT8 gate the same on every CPU?  The parity the INT8 pass gates on, and what onnxruntime's fused
integer kernels give, for artifacts made elsewhere, re-computed on this machine.

For each module folder under ``--out`` holding ``fp32.sim.onnx`` and ``int8.onnx`` (made by
``ffexport optimize --precision int8``, possibly on another machine), on the same parity faces the pass
used (the manifest's split of ``--calib``):

* ``gate``: the INT8 gate's metrics with the Q/DQ graph run as its operators define it (what the pass
  gates on since 2026-11-30);
* ``kernels``: the same comparison with onnxruntime's fused integer CPU kernels (what it gated on before);
* with ``--rebuild``, the INT8 pass run again here from the same ``fp32.sim.onnx`` (into a copy of the
  folder): its rounds, exclusions and the sha256 of the file it writes.

Prints JSON (and writes it with ``--json PATH``), with this CPU's vector extensions.

    PYTHONPATH=src python3 benchmarks/int8_portability.py --out artifacts --modules detector,landmarker \\
        --calib calibration [--rebuild] [--json result.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def measure(module: str, out: Path, calib: Path, rebuild: bool) -> dict:
    from ffexport.config import resolve_spec
    from ffexport.fsutil import sha256_file
    from ffexport.manifest import Manifest
    from ffexport.passes.int8 import cpu_kernel_parity
    from ffexport.artifacts.optimize import Run
    from ffexport.artifacts.targets import module_target
    from ffexport.vocab import INT8_ONNX, SIM_ONNX

    name, _, variant = module.partition(".")
    spec = resolve_spec(name, variant or None)
    target = module_target(spec, out)
    folder = target.folder
    rec = Manifest.load(folder, required=True).get(INT8_ONNX) or {}
    samples = (rec.get("options") or {}).get("samples")
    run = Run(target, calib=calib, samples=samples, precision="int8")
    judge = run.judge()
    sim, q = folder / SIM_ONNX, folder / INT8_ONNX
    gate = judge.compare(q, sim, "int8")
    judge.forget(q)
    kernels = cpu_kernel_parity(judge, q, sim)
    row = {"module": spec.key, "int8_sha256": sha256_file(q), "made_on": rec.get("onnxruntime_cpu_kernels", {}).get("cpu"),
           "recorded_gate": {g["metric"]: g["value"] for g in rec["parity"]["vs_parent"]["gates"]},
           "gate_here": {g["metric"]: g["value"] for g in gate["vs_parent"]["gates"]}, "gate_passed_here": gate["passed"],
           "kernels_here": kernels["metrics"], "kernels_within_gate_here": kernels["within_gate"]}
    if rebuild:
        with tempfile.TemporaryDirectory(prefix="ffexport-portability-") as d:
            copy = Path(d) / folder.name
            shutil.copytree(folder, copy)
            again = Run(module_target(spec, Path(d)), calib=calib, samples=samples, precision="int8")
            res = again.int8(copy / SIM_ONNX, force=True)
            row["rebuilt"] = {"sha256": res.record["sha256"], "rounds": res.record["rounds"],
                              "excluded": [e["node"] for e in res.record["excluded"]],
                              "same_file": res.record["sha256"] == row["int8_sha256"]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("artifacts"))
    ap.add_argument("--modules", default="detector,landmarker")
    ap.add_argument("--calib", type=Path, default=Path("calibration"))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from ffexport import __version__
    from ffexport.hostinfo import cpu_features
    from ffexport.manifest import tool_versions

    result = {"cpu": cpu_features(), "versions": tool_versions(), "ffexport": __version__,
              "rows": [measure(m, a.out, a.calib, a.rebuild) for m in a.modules.split(",") if m]}
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.json, result)


if __name__ == "__main__":
    main()
