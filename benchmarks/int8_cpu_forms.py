"""Why INT8 is or is not faster than FP32 on onnxruntime's CPU provider: Q/DQ forms compared.

For each module's ``fp32.sim.onnx`` (made by ``cpu_precisions.py`` or ``ffexport optimize``), one
calibration on real faces (MinMax), then four INT8 models from the same tensor ranges, with no
parity-driven exclusions, so the *form* is the only difference:

* ``trt``: ffexport's form (symmetric INT8 activations and weights, weighted ops only);
* ``trt-all-ops``: the same, quantizing every op onnxruntime can (Add, Mul, Concat, Relu ...);
* ``cpu-u8``: onnxruntime's x86 recommendation (asymmetric UINT8 activations, INT8 weights),
  weighted ops only;
* ``cpu-u8-all-ops``: asymmetric UINT8 activations, every op.

Each is timed like ``cpu_precisions.py`` and the graph onnxruntime runs is inspected: how many
convolutions became ``QLinearConv``, how many stayed float, how many Q/DQ and layout Transposes
remain.  Writes ``benchmarks/results/cpu/int8_forms.json`` and ``.md``.

    python benchmarks/int8_cpu_forms.py --out ARTIFACTS [--modules encoder,generator]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from cpu_precisions import REPO, SMALL, cpu_flags, runtime_graph, save, time_model

from ffexport.bench.report import cpu_model

FORMS = {
    "trt": dict(activation="QInt8", symmetric=True, all_ops=False),
    "trt-all-ops": dict(activation="QInt8", symmetric=True, all_ops=True),
    "cpu-u8": dict(activation="QUInt8", symmetric=False, all_ops=False),
    "cpu-u8-all-ops": dict(activation="QUInt8", symmetric=False, all_ops=True),
}


def quantize(pre: Path, out: Path, cache: Path, form: dict) -> None:
    import logging

    from onnxruntime import quantization as qz

    from ffexport.passes.int8 import DEFAULT_OP_TYPES, EXTRA_OPTIONS

    extra = dict(EXTRA_OPTIONS, ActivationSymmetric=form["symmetric"])
    logging.getLogger().setLevel(logging.ERROR)
    qz.quantize_static(str(pre), str(out), calibration_data_reader=None, quant_format=qz.QuantFormat.QDQ,
                       op_types_to_quantize=None if form["all_ops"] else list(DEFAULT_OP_TYPES), per_channel=True,
                       activation_type=getattr(qz.QuantType, form["activation"]), weight_type=qz.QuantType.QInt8,
                       calibrate_method=qz.CalibrationMethod.MinMax, extra_options=extra,
                       calibration_cache_path=str(cache))


def main() -> None:
    from ffexport.passes.int8 import pre_process

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="artifact folder holding <module>/fp32.sim.onnx")
    ap.add_argument("--modules", default="detector,landmarker,encoder,generator,enhancer")
    ap.add_argument("--calib", type=Path, default=REPO / "calibration")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "cpu")
    args = ap.parse_args()

    from ffexport import specs
    from ffexport.faces import load_face_folder, module_feeds
    from ffexport.passes import calib as C
    from ffexport.passes import graph
    from ffexport.passes.int8 import DEFAULT_OP_TYPES, calibrate
    from ffexport.artifacts.optimize import Run
    from ffexport.artifacts.targets import module_target

    faces = load_face_folder(args.calib, require_landmarks=True)[::6][:6]
    res = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "threads": args.threads,
                       "loadavg_start": os.getloadavg()}, "modules": []}
    for name in args.modules.split(","):
        spec = specs.get(name, SMALL.get(name))
        run = Run(module_target(spec, args.out), calib=args.calib, samples=args.samples, precision="int8")
        sim = run.target.path("sim")
        if not sim.is_file():
            raise SystemExit(f"{sim} missing: run cpu_precisions.py --out {args.out} first")
        print(f"== {spec.key}", flush=True)
        src = run.sources()
        feeds = list(module_feeds(spec, faces, source_embedder=src.embed if src else None))
        row = {"module": spec.key, "fp32": {"latency_ms": time_model(sim, feeds, args.threads, args.warmup, args.iters),
                                            "runtime_graph": runtime_graph(sim, args.threads)}}
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            pre = work / "pre.onnx"
            pre_process(sim, pre)
            names = [i.name for i in graph.graph_inputs(graph.load(pre))]
            items = run.split()[0]
            caches = {}
            for all_ops in (False, True):
                sub = work / ("all" if all_ops else "weighted")
                sub.mkdir()
                reader = C.calibration_reader(run.target, run.faceset(), items, src, names)
                caches[all_ops], _ = calibrate(pre, reader, "minmax", None if all_ops else list(DEFAULT_OP_TYPES),
                                               sub, lambda m: None)
            for label, form in FORMS.items():
                q = work / f"{label}.onnx"
                quantize(pre, q, caches[form["all_ops"]], form)
                row[label] = {"latency_ms": time_model(q, feeds, args.threads, args.warmup, args.iters),
                              "runtime_graph": runtime_graph(q, args.threads)}
                print(f"   {label}: p50 {row[label]['latency_ms']['p50']:.1f} ms "
                      f"(fp32 {row['fp32']['latency_ms']['p50']:.1f})", flush=True)
        res["modules"].append(row)
    res["machine"]["loadavg_end"] = os.getloadavg()
    save(args.results, "int8_forms", res, markdown(res))


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# INT8 Q/DQ forms on onnxruntime CPU (batch 1, no parity exclusions)", "",
             f"CPU: {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}), {m['threads']} threads; load average "
             f"{tuple(round(x, 1) for x in m['loadavg_start'])} -> {tuple(round(x, 1) for x in m['loadavg_end'])}.",
             "", "| module | form | p50 ms | vs FP32 | QLinearConv | float Conv | Q + DQ left | Transpose |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in res["modules"]:
        base = row["fp32"]["latency_ms"]["p50"]
        for label in ("fp32", *FORMS):
            e = row[label]
            g = e["runtime_graph"]
            lines.append(f"| {row['module']} | {label} | {e['latency_ms']['p50']:.1f} | "
                         f"{base / e['latency_ms']['p50']:.2f}x | {g['ops'].get('QLinearConv', 0)} | {g['float_conv']} | "
                         f"{g['quantize_dequantize']} | {g['ops'].get('Transpose', 0)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
