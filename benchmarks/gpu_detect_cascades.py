"""Detection alone on the GPU host: the MTCNN cascade's three forms on the same 1080p frames (detected on the pipeline's
1280-px copy), torch FP32 nets, 32 frames at batch 1, 8 and 32.

    PYTHONPATH=/tmp/site:src python benchmarks/gpu_detect_cascades.py > detect_cascades.json

variable: the variable-size cascade (the host reads each stage's candidate count); fixed: fixed-size candidate
buffers and masks (one read-back per batch); graph: the fixed-shape cascade captured as a CUDA graph per input shape
(the pipeline's form on a GPU when torch runs the nets).  Prints one line per form and batch, then the JSON.
"""
import json, sys, time
import numpy as np, torch
import torch.nn.functional as F
from ffexport.bench.e2e import cast, make_frames
from ffexport.pipeline.mtcnn import MTCNNDetector, Capacity

targets, _ = cast(None, 1)
frames = torch.from_numpy(np.stack(make_frames(targets, 32, (1080, 1920)))).cuda().permute(0, 3, 1, 2).float()
small = F.interpolate(frames, size=(720, 1280), mode="bilinear", antialias=True)
res = {}
for name, kw in (("variable", {}), ("fixed", {"capacity": Capacity()}), ("graph", {"capacity": Capacity(), "cuda_graphs": True})):
    d = MTCNNDetector.from_torch("cuda", **kw)
    for b in (1, 8, 32):
        for _ in range(3):
            d.detect(small[:b])
        torch.cuda.synchronize(); t0 = time.perf_counter(); n = 0
        for i in range(0, 32, b):
            n += sum(f[0].shape[0] for f in d.detect(small[i:i + b]))
        torch.cuda.synchronize()
        res[f"{name}_b{b}"] = {"ms_per_frame": round((time.perf_counter() - t0) * 1000 / 32, 3), "faces_per_frame": n / 32,
                               "fallbacks": d.fallbacks}
        print(name, b, res[f"{name}_b{b}"], flush=True)
print(json.dumps(res))
