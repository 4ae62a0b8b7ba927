"""Issue #12 on the GPU host: the generator on onnxruntime-CUDA, FP32 against FP16, with and without CUDA graphs.

    PYTHONPATH=src python benchmarks/gpu_ort_fp16_graph.py --out ARTIFACTS [--variant inswapper-128]
        [--batches 1,8] [--iters 100] [--nhwc 0,1] [--kernels 12] [--json FILE]

Builds what is missing or stale with ``optimize(spec, precision, Settings(out=...))`` (export, simplify, FP16:
the FP16 step is redone when its options changed, e.g. the spec's block list), then for each precision and batch
times ``OrtRunner(path, device="cuda")`` and ``OrtRunner(..., cuda_graph=True)`` on the same device-resident
feeds (median of CUDA-event latency and of synchronised wall time per call, after warm-up calls that also
capture the graphs), and compares their outputs (largest absolute difference, PSNR in dB on [0, 1]).  Also
records, per artifact, its Cast and InstanceNormalization nodes and what the FP16 pass kept in FP32.
``--nhwc 0,1``: each row once per value of the CUDA provider's ``prefer_nhwc`` (added to
``$FFEXPORT_ORT_CUDA_OPTIONS``, as a user sets it).  ``--kernels N``: the N CUDA kernels that take the most device
time in a plain call (torch's profiler over 10 calls; CUPTI sees onnxruntime's kernels too), with the share of
layout transposes and casts.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
from pathlib import Path

import torch


def graph_facts(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    return {"nodes": len(m.graph.node), "casts": ops.get("Cast", 0),
            "instance_norms": ops.get("InstanceNormalization", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="artifact root")
    ap.add_argument("--module", default="generator")
    ap.add_argument("--variant", default=None, help="default: configs/<module>.yaml's, else the spec default")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--nhwc", default="", help="prefer_nhwc values to run each row with, e.g. 0,1 (default: as set)")
    ap.add_argument("--kernels", type=int, default=0, help="profile the plain calls: the N costliest kernels")
    ap.add_argument("--json", default="", help="write the rows to this JSON file")
    a = ap.parse_args()
    from ffexport.artifacts.optimize import Settings, optimize
    from ffexport.backends.ort import CUDA_OPTIONS_ENV
    from ffexport.config import resolve_spec
    from ffexport.manifest import artifact_dir

    spec = resolve_spec(a.module, a.variant)
    res = {"module": spec.key, "gpu": torch.cuda.get_device_name(0), "rows": [], "artifacts": {}}
    import onnxruntime

    res["onnxruntime"] = onnxruntime.__version__
    base = os.environ.get(CUDA_OPTIONS_ENV, "")  # the options set outside, read once: each row adds its layout
    for precision in a.precisions.split(","):
        path = Path(optimize(spec, precision, Settings(out=a.out, progress=lambda m: print(f"  {m}", flush=True))))
        facts = graph_facts(path)
        if precision == "fp16":
            rec = json.loads((artifact_dir(a.out, spec) / "manifest.json").read_text())["artifacts"]["fp16.onnx"]
            facts["kept_fp32"] = len(rec.get("kept_fp32", []))
            facts["kept_fp32_by_op"] = dict(collections.Counter(k["op"] for k in rec.get("kept_fp32", [])))
            facts["fused_instance_norms"] = (rec.get("fused") or {}).get("count", 0)
            facts["gates"] = {g["metric"]: g["value"] for g in rec["parity"]["vs_parent"]["gates"]}
        res["artifacts"][precision] = {"file": path.name, **facts}
        print(precision, json.dumps(res["artifacts"][precision]), flush=True)
        for batch in (int(b) for b in a.batches.split(",")):
            gen = torch.Generator(device="cuda").manual_seed(batch)
            feeds = []
            for _ in range(4):
                f = {t.name: torch.rand(t.concrete(batch=batch), device="cuda", generator=gen) for t in spec.inputs}
                if "source" in f:
                    f["source"] = torch.nn.functional.normalize(f["source"] - 0.5, dim=1)
                feeds.append(f)
            for nhwc in (a.nhwc.split(",") if a.nhwc else [None]):
                if nhwc is not None:  # over the options set outside
                    os.environ[CUDA_OPTIONS_ENV] = ",".join(filter(None, (base, f"prefer_nhwc={nhwc}")))
                row = time_row(a, spec, path, feeds, precision, batch)
                row["prefer_nhwc"] = nhwc
                res["rows"].append(row)
                print(json.dumps(row), flush=True)
    print("\n| precision | batch | prefer_nhwc | plain ms | graph ms | plain FPS | graph FPS | graph vs plain max abs "
          "| transposes | casts | graph |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in res["rows"]:
        k = r.get("kernels") or {}
        print(f"| {r['precision']} | {r['batch']} | {r['prefer_nhwc']} | {r['plain_ms_p50']} | {r['cuda_graph_ms_p50']} "
              f"| {r['fps_plain']} | {r['fps_cuda_graph']} | {r['graph_vs_plain_max_abs']:.3g} "
              f"| {k.get('transpose_share', '–')} | {k.get('cast_share', '–')} | {r['cuda_graph']} |")
    if a.json:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.json, res)


def kernel_table(run, n: int) -> dict:
    """The ``n`` kernels with the most device time over 10 calls of ``run`` (per call), and the shares of all device
    time taken by layout transposes and casts."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(10):
            run(i)
        torch.cuda.synchronize()
    per: dict = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        us = e.time_range.elapsed_us() if e.device_type.name == "CUDA" else 0
        if us > 0:
            per[e.name][0] += 1
            per[e.name][1] += us
    total = sum(v[1] for v in per.values()) or 1.0
    lname = {k: k.lower() for k in per}
    # layout conversions only (cuDNN's nchwToNhwc / nhwcToNchw, onnxruntime's Transpose): cuDNN's convolution
    # kernels name their layouts too (``..._nhwckrsc_nchw``) and are not counted
    transposes = sum(v[1] for k, v in per.items() if any(t in lname[k] for t in ("nchwtonhwc", "nhwctonchw",
                                                                                 "transpose")))
    casts = sum(v[1] for k, v in per.items() if "cast" in lname[k])
    top = sorted(per.items(), key=lambda kv: -kv[1][1])[:n]
    return {"device_us_per_call": round(total / 10, 1), "transpose_share": round(transposes / total, 3),
            "cast_share": round(casts / total, 3), "kernels": len(per),
            "top": [{"name": k[:160], "calls_per_call": v[0] / 10, "us_per_call": round(v[1] / 10, 1),
                     "share": round(v[1] / total, 3)} for k, v in top]}


def time_row(a, spec, path, feeds, precision: str, batch: int) -> dict:
    from ffexport.backends.ort import OrtRunner
    from ffexport.bench.timing import Timer, stats

    row = {"precision": precision, "batch": batch}
    outs = {}
    for label, graphs in (("plain", False), ("cuda_graph", True)):
        r = OrtRunner(path, spec=spec, device="cuda", cuda_graph=graphs)
        r.activate()
        t = Timer("cuda").run(lambda i, r=r: r.infer(feeds[i % len(feeds)]), iters=a.iters, warmup=8)
        row[f"{label}_ms_p50"] = round(stats(t.latency_ms)["p50"], 3)
        row[f"{label}_wall_ms_p50"] = round(stats(t.wall_ms)["p50"], 3)
        outs[label] = [{k: v.float() for k, v in r.infer(f).items()} for f in feeds]
        if graphs:
            row["cuda_graph"] = r.describe().get("cuda_graph")
        elif a.kernels:
            try:
                row["kernels"] = kernel_table(lambda i, r=r: r.infer(feeds[i % len(feeds)]), a.kernels)
            except Exception as exc:  # noqa: BLE001 - a profiler that fails loses the table, not the timings
                row["kernels"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        r.deactivate()
    diffs = [float((g[k] - p[k]).abs().max()) for g, p in zip(outs["cuda_graph"], outs["plain"]) for k in p]
    mse = sum(float(((g[k] - p[k]) ** 2).mean()) for g, p in zip(outs["cuda_graph"], outs["plain"]) for k in p)
    mse /= max(1, len(diffs))
    row["graph_vs_plain_max_abs"] = max(diffs)
    row["graph_vs_plain_psnr_db"] = round(10 * math.log10(1.0 / mse), 2) if mse > 0 else float("inf")
    row["fps_plain"] = round(1000.0 * batch / row["plain_ms_p50"], 1)
    row["fps_cuda_graph"] = round(1000.0 * batch / row["cuda_graph_ms_p50"], 1)
    return row


if __name__ == "__main__":
    main()
