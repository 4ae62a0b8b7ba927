"""ONNX Runtime CPU latency of every module at FP32, FP16 and INT8 (batch 1).

For each module, ``ffexport optimize`` makes the three artifacts (fp32.sim.onnx,
fp16.onnx, int8.onnx; parity gates included), then each is timed on onnxruntime's
CPU execution provider: a fresh session (graph optimizations ALL, the same as
the runners use), warm-up runs first, then ``--iters`` synchronous runs over
inputs rotating through real faces in the module's preprocessing.  Latency is
median / p95 over the timed runs.  The script also saves the graph onnxruntime
actually runs (``optimized_model_filepath``) and counts its op types, to show
what INT8 became (QLinearConv and friends) and what stayed in float.

    python benchmarks/cpu_precisions.py                     # small variants (the CI ones)
    python benchmarks/cpu_precisions.py --variants default  # the pipeline's variants (slow on 2 cores)

Writes ``benchmarks/results/cpu/precisions.json`` and ``precisions.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

from ffexport.bench.report import cpu_model
from ffexport.vocab import PRECISIONS

REPO = Path(__file__).resolve().parents[1]
SMALL = {"detector": None, "landmarker": "2dfan1", "encoder": "iresnet18", "generator": "simswap-256-lite",
         "enhancer": "gfpgan-lite", "blender": None, "mtcnn_pnet": None, "mtcnn_rnet": None, "mtcnn_onet": None}
INT8_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
            "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "MatMulInteger",
            "ConvInteger", "DynamicQuantizeMatMul", "QLinearConvTranspose")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                                        "avx512_bf16", "f16c", "fma"})
    except OSError:
        pass
    return []


def session(path: Path, threads: int, optimized: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def time_model(path: Path, feeds: list[dict], threads: int, warmup: int, iters: int) -> dict:
    """Latency statistics (ms) of ``iters`` synchronous runs after ``warmup``, inputs rotating over ``feeds``."""
    from ffexport.bench.timing import Timer, stats

    sess = session(path, threads)
    names = [i.name for i in sess.get_inputs()]
    dtypes = {i.name: ("float16" if i.type == "tensor(float16)" else "float32") for i in sess.get_inputs()}
    arrays = [{n: f[n].numpy().astype(dtypes[n]) for n in names} for f in feeds]
    timing = Timer("cpu").run(lambda k: sess.run(None, arrays[k % len(arrays)]), iters=iters, warmup=warmup)
    return stats(timing.latency_ms)


def runtime_graph(path: Path, threads: int) -> dict:
    """Op counts of the graph onnxruntime runs after its optimizations (what fused, what stayed float)."""
    import onnx

    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "optimized.onnx"
        session(path, threads, opt)
        m = onnx.load(str(opt), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    return {"ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            "int8_kernels": sum(v for k, v in ops.items() if k in INT8_OPS),
            "float_conv": ops.get("Conv", 0) + ops.get("FusedConv", 0) + ops.get("NhwcFusedConv", 0),
            "quantize_dequantize": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", choices=("small", "default"), default="small")
    ap.add_argument("--modules", default="all", help="comma-separated modules, or all")
    ap.add_argument("--out", type=Path, default=None, help="artifact folder (default: a temporary one)")
    ap.add_argument("--calib", type=Path, default=REPO / "calibration")
    ap.add_argument("--samples", type=int, default=None, help="INT8 calibration faces (default: ffexport's)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "cpu")
    args = ap.parse_args()

    import onnxruntime
    import torch

    from ffexport import specs
    from ffexport.config import resolve_spec
    from ffexport.faces import load_face_folder, module_feeds
    from ffexport.passes.proof.calib import source_identities
    from ffexport.artifacts.optimize import optimize

    torch.set_num_threads(args.threads)
    names = specs.modules() if args.modules == "all" else args.modules.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="ffexport-bench-") if args.out is None else None
    out = Path(tmp.name) if tmp else args.out
    faces = load_face_folder(args.calib, limit=None, require_landmarks=True)[::6][:6]  # one view per person
    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(),
                          "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                          "threads": args.threads, "loadavg_start": os.getloadavg()},
              "settings": {"variants": args.variants, "warmup": args.warmup, "iters": args.iters, "batch": 1,
                           "inputs": f"{len(faces)} calibration faces in each module's preprocessing, rotating",
                           "session": "CPUExecutionProvider, ORT_ENABLE_ALL, inter-op 1"},
              "modules": []}
    for name in names:
        spec = resolve_spec(name) if args.variants == "default" else specs.get(name, SMALL.get(name))
        row = {"module": spec.key, "precisions": {}}
        print(f"== {spec.key}", flush=True)
        src = source_identities(spec, out)
        feeds = list(module_feeds(spec, faces, source_embedder=src.embed if src else None))
        for precision in PRECISIONS:
            t0 = time.time()
            steps: list = []
            try:
                path = optimize(spec, precision, out=out, calib=args.calib, samples=args.samples, results=steps,
                                progress=lambda m: print("   ", m, flush=True))
            except Exception as exc:  # a failed gate is a result too
                row["precisions"][precision] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"   {precision}: FAILED {exc}", flush=True)
                continue
            rec = steps[-1].record
            timing = time_model(path, feeds, args.threads, args.warmup, args.iters)
            entry = {"artifact": path.name, "size_mb": round(path.stat().st_size / 2**20, 2),
                     "latency_ms": timing, "parity_passed": rec["parity"]["passed"],
                     "optimize_s": round(time.time() - t0, 1), "runtime_graph": runtime_graph(path, args.threads)}
            if precision == "fp16":
                entry["kept_fp32"] = rec.get("kept_fp32_counts")
                entry["fp16_nodes"] = f"{rec.get('fp16_nodes')} of {rec.get('nodes')}"
            if precision == "int8":
                q = rec.get("qdq", {})
                entry["quantized"] = rec.get("quantized")
                entry["weights_int8"] = q.get("weights_per_channel")
                entry["weights_float"] = len(q.get("weights_float", []))
                entry["excluded"] = rec.get("excluded_counts")
            row["precisions"][precision] = entry
            print(f"   {precision}: p50 {timing['p50']:.2f} ms, p95 {timing['p95']:.2f} ms", flush=True)
        base = row["precisions"].get("fp32", {}).get("latency_ms", {}).get("p50")
        for p in ("fp16", "int8"):
            e = row["precisions"].get(p, {})
            if base and "latency_ms" in e:
                e["speedup_vs_fp32"] = round(base / e["latency_ms"]["p50"], 2)
        result["modules"].append(row)
    result["machine"]["loadavg_end"] = os.getloadavg()
    save(args.results, "precisions", result, markdown(result))


def save(folder: Path, stem: str, result: dict, md: str) -> None:
    """``folder/stem.json`` and ``folder/stem.md``; the table is printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(md)
    print(md)


def markdown(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    lines = [
        "# ONNX Runtime CPU latency by precision (batch 1)",
        "",
        f"CPU: {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}); onnxruntime {m['onnxruntime']}, "
        f"{m['threads']} intra-op threads. Load average at start {tuple(round(x, 1) for x in m['loadavg_start'])}, "
        f"at end {tuple(round(x, 1) for x in m['loadavg_end'])} (the machine is shared: timings are noisy).",
        f"Variants: {s['variants']}. {s['warmup']} warm-up + {s['iters']} timed runs; {s['inputs']}; {s['session']}.",
        "Artifacts made by `ffexport optimize` with their parity gates (see each manifest).",
        "",
        "| module | precision | p50 ms | p95 ms | vs FP32 | size MB | int8 kernels / float convs after ORT fusion | notes |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in res["modules"]:
        for p in PRECISIONS:
            e = row["precisions"].get(p)
            if e is None:
                continue
            if "error" in e:
                lines.append(f"| {row['module']} | {p} | - | - | - | - | - | FAILED: {e['error'][:120]} |")
                continue
            lat = e["latency_ms"]
            g = e["runtime_graph"]
            note = ""
            if p == "fp16":
                note = f"{e.get('fp16_nodes')} nodes FP16"
            if p == "int8":
                note = ("nothing to quantize" if e.get("quantized") is False else
                        f"{e.get('weights_int8')} weights int8, {e.get('weights_float')} float")
            lines.append(f"| {row['module']} | {p} | {lat['p50']:.2f} | {lat['p95']:.2f} | "
                         f"{e.get('speedup_vs_fp32', 1.0) if p != 'fp32' else 1.0:.2f}x | {e['size_mb']} | "
                         f"{g['int8_kernels']} / {g['float_conv']} | {note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
