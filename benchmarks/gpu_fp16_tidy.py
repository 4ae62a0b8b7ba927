"""Issue #12 on the GPU host: small FP16 artifacts against their FP32 parents on onnxruntime-CUDA, variant by variant.

    PYTHONPATH=src python benchmarks/gpu_fp16_tidy.py --dir VARIANTS [--modules mtcnn_rnet,mtcnn_onet,blender]
        [--batches 1,8] [--rounds 5] [--iters 200] [--graph] [--json FILE]

``VARIANTS`` holds ``<module>.<label>.onnx`` files (the artifacts as built, and graphs edited from them).  For each
module and batch, every variant runs as the module rows run it (``OrtRunner(path, device="cuda")``, plain: no CUDA
graph; ``--graph``: also with onnxruntime's CUDA graph, ``OrtRunner(..., cuda_graph=True)``, as the pipeline's
fixed-shape stages run) on the same real inputs (``bench.prepare.make_inputs``, the built-in faces; a variant with
float16 inputs gets them cast beforehand, outside the timing), the variants taking turns for
``--rounds`` rounds so that a drift of the host falls on all of them; a variant's figure is the median over the
rounds of each round's p50 (CUDA-event ms per call and synchronised wall ms per call).  Also printed per variant:
its node count and op counts, and where onnxruntime placed its nodes (its INFO log, "Node placements").
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch


def placements(path: Path) -> list[str]:
    """onnxruntime's INFO lines about node placement for a CUDA session of ``path`` (its C++ log goes to fd 2)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 1
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            ort.InferenceSession(str(path), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    keep = ("placed", "Placement", "CPUExecutionProvider", "Memcpy")
    return [ln.strip()[-300:] for ln in text.splitlines() if any(k in ln for k in keep)][:40]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--modules", default="mtcnn_rnet,mtcnn_onet,blender")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--graph", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    import onnx
    import onnxruntime

    from ffexport.backends.ort import OrtRunner
    from ffexport.bench.prepare import make_inputs
    from ffexport.bench.timing import Timer, stats
    from ffexport.config import resolve_spec

    res = {"gpu": torch.cuda.get_device_name(0), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
           "rounds": a.rounds, "iters": a.iters, "variants": {}, "rows": []}
    for module in a.modules.split(","):
        spec = resolve_spec(module, None)
        files = sorted(a.dir.glob(f"{module}.*.onnx"))
        for f in files:
            g = onnx.load(str(f)).graph
            res["variants"][f.name] = {"nodes": len(g.node),
                                       "ops": dict(collections.Counter(n.op_type for n in g.node)),
                                       "placements": placements(f)}
            print(f.name, json.dumps(res["variants"][f.name]), flush=True)
        for batch in (int(b) for b in a.batches.split(",")):
            feeds = [{k: v.to("cuda") for k, v in fd.items()} for fd in make_inputs(spec, None, batch, 4)]
            runners, fed = {}, {}
            for f in files:
                for graph in ((False, True) if a.graph else (False,)):
                    r = OrtRunner(f, spec=spec, device="cuda", cuda_graph=graph)
                    r.activate()
                    name = f.name + (" +graph" if graph else "")
                    runners[name] = r
                    fed[name] = [{k: v.to(r._in_dtype[k]) for k, v in fd.items()} for fd in feeds]
            per = collections.defaultdict(lambda: {"ms": [], "wall": []})
            for _ in range(a.rounds):
                for name, r in runners.items():
                    t = Timer("cuda").run(lambda i, r=r, fd=fed[name]: r.infer(fd[i % len(fd)]), iters=a.iters,
                                          warmup=10)
                    per[name]["ms"].append(stats(t.latency_ms)["p50"])
                    per[name]["wall"].append(stats(t.wall_ms)["p50"])
            ref = {k: v.float() for k, v in runners[files[0].name].infer(feeds[0]).items()}
            for name, r in runners.items():
                out = {k: v.float() for k, v in r.infer(fed[name][0]).items()}
                row = {"module": module, "variant": name, "batch": batch,
                       "ms_p50": round(statistics.median(per[name]["ms"]), 4),
                       "wall_ms_p50": round(statistics.median(per[name]["wall"]), 4),
                       "ms_rounds": per[name]["ms"],
                       "max_abs_vs_first": max(float((out[k] - ref[k]).abs().max()) for k in ref)}
                res["rows"].append(row)
                print(json.dumps(row), flush=True)
                r.deactivate()
    print("\n| module | batch | variant | nodes | ms p50 (median of rounds) | wall ms | rounds' p50 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in res["rows"]:
        print(f"| {r['module']} | {r['batch']} | {r['variant']} | {res['variants'][r['variant'].split(' ')[0]]['nodes']} "
              f"| {r['ms_p50']} | {r['wall_ms_p50']} | {', '.join(f'{x:.3f}' for x in r['ms_rounds'])} |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
