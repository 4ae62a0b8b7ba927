"""Detection alone on the GPU host (issue #12, session 14): the pipeline's MTCNN detector with onnxruntime running its
nets (the artifacts under --out, FP16 and FP32), on the pipeline's 1280-px copy of 1080p frames, in three forms, and
torch's FP16 nets for reference:

* ``ort-sync``: onnxruntime synchronises the host after every run, no CUDA graph (as before session 14);
* ``ort-async``: no host synchronisation (ffexport's default now), no CUDA graph;
* ``ort-graph``: the cascade, onnxruntime's runs included, captured in one CUDA graph per input shape (the default);
* ``torch-graph``: torch's FP16 nets in the cascade's graph (the torch backend's form).

Per form and batch (1, 8, 32 frames a call): milliseconds per frame over 64 frames (after 3 warm-up calls), faces
per frame, and how far its faces are from ``ort-sync``'s of the same precision (frames whose face count differs;
the largest box, point and score difference otherwise).  Prints a line each, then the JSON.

    PYTHONPATH=/tmp/ortgpu:/tmp/site:src python3 benchmarks/gpu_mtcnn_ort_graph.py --out $ARTS --json F
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from ffexport import specs
from ffexport.backends.ort import HOST_SYNC_ENV
from ffexport.bench.e2e import cast, make_frames
from ffexport.pipeline.detectors import MTCNN_MODULES, make_detector
from ffexport.pipeline.mtcnn import GRAPH_ENV
from ffexport.pipeline.stages import make_stage

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="/tmp/arts")
ap.add_argument("--precisions", default="fp16,fp32")
ap.add_argument("--batches", default="1,8,32")
ap.add_argument("--frames", type=int, default=64)
ap.add_argument("--json")
args = ap.parse_args()

targets, _ = cast(None, 1)
frames = torch.from_numpy(np.stack(make_frames(targets, args.frames, (1080, 1920)))).cuda().permute(0, 3, 1, 2).float()
batches = [int(b) for b in args.batches.split(",")]
FORMS = {"ort-sync": ("ort", {HOST_SYNC_ENV: "1", GRAPH_ENV: "0"}), "ort-async": ("ort", {HOST_SYNC_ENV: "", GRAPH_ENV: "0"}),
         "ort-graph": ("ort", {HOST_SYNC_ENV: "", GRAPH_ENV: ""}), "torch-graph": ("torch", {HOST_SYNC_ENV: "", GRAPH_ENV: ""})}


def detect_all(det, b):
    faces = []
    for i in range(0, args.frames, b):
        faces += [(bx.cpu(), pt.cpu(), sc.cpu()) for bx, pt, sc in det(frames[i:i + b])]
    return faces


def distance(faces, ref):
    differ, box, point, score = 0, 0.0, 0.0, 0.0
    for (b, p, s), (rb, rp, rs) in zip(faces, ref):
        if b.shape[0] != rb.shape[0]:
            differ += 1
        elif b.shape[0]:
            box = max(box, float((b - rb).abs().max()))
            point = max(point, float((p - rp).abs().max()))
            score = max(score, float((s - rs).abs().max()))
    return {"frames_with_other_counts": differ, "box_px": round(box, 5), "point_px": round(point, 5),
            "score": round(score, 7)}


res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "frames": args.frames, "rows": {}}
try:
    import onnxruntime
    res["onnxruntime"] = onnxruntime.__version__
except ImportError:
    pass
for precision in args.precisions.split(","):
    refs = {}
    for form, (backend, env) in FORMS.items():
        if backend == "torch" and precision != "fp16":
            continue
        os.environ.update(env)
        stages = {m: make_stage(specs.get(m), backend, precision, "cuda", args.out, build_missing=False)
                  for m in MTCNN_MODULES}
        det = make_detector("mtcnn", stages, device="cuda")
        for b in batches:
            for _ in range(3):
                det(frames[:b])
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            faces = detect_all(det, b)
            ms = (time.perf_counter() - t0) * 1000 / args.frames
            if form == "ort-sync":
                refs[b] = faces
            row = {"ms_per_frame": round(ms, 3), "faces_per_frame": round(sum(f[0].shape[0] for f in faces) / len(faces), 3),
                   "fallbacks": det.cascade.fallbacks,
                   "graph": det.cascade.graph_state}
            if b in refs and form != "ort-sync":
                row["against_ort_sync"] = distance(faces, refs[b])
            res["rows"][f"{precision}/{form}/b{b}"] = row
            print(precision, form, b, row, flush=True)
        for s in stages.values():
            s.close()
text = json.dumps(res, indent=1)
if args.json:
    open(args.json, "w").write(text)
print(text)
