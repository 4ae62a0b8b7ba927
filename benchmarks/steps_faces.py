# python3 benchmarks/steps_faces.py DEVICE [FRAMES]   (DEVICE cpu or cuda; on the GPU host with PYTHONPATH=/tmp/site:src)
"""#12 lever 16: the fixed-shape MTCNN cascade with its steps compiled against the same cascade with eager steps,
on the same nets, one frame a call, on the benchmark's first FRAMES frames (default 64; 1080p, scaled to the
pipeline's 1280-px detection copy).  For each frame whose boxes differ by more than 0.05 px: the largest box and
landmark differences and both sides' scores; then the largest differences over all frames.

``cuda``: the compile backend's cascade as the pipeline makes it (FP16 nets, channels-last, CUDA graph, steps
compiled by inductor into Triton kernels) and its twin with eager steps.  ``cpu``: torch stages (``PRECISION``,
fp16 by default), steps compiled into C++; the CPU has no graph and would not take the fixed-shape cascade
otherwise."""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ffexport import specs
from ffexport.bench.e2e import frame_set
from ffexport.pipeline.detectors import MTCNN_MODULES, make_detector
from ffexport.pipeline.mtcnn import Capacity, MTCNNDetector
from ffexport.pipeline.stages import make_stage

device = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
torch._dynamo.config.recompile_limit = 64
frames, _ = frame_set({"calib": None, "faces": 1, "frames": n, "hw": (1080, 1920)})
x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float()
x = F.interpolate(x, size=(720, 1280), mode="bilinear", align_corners=False, antialias=True)
if device == "cuda":
    stages = {m: make_stage(specs.get(m), "compile", "fp16", "cuda", out="/tmp/arts") for m in MTCNN_MODULES}
    steps = make_detector("mtcnn", stages, "cuda").cascade
    eager = MTCNNDetector(steps.pnet, steps.rnet, steps.onet, device="cuda", thresholds=steps.thresholds,
                          min_face=steps.min_face, capacity=Capacity(), cuda_graphs=True,
                          channels_last=steps.channels_last)
else:
    nets = [make_stage(specs.get(m), "torch", os.environ.get("PRECISION", "fp16"), "cpu", out="artifacts")
            for m in MTCNN_MODULES]
    eager = MTCNNDetector(*nets, capacity=Capacity())
    steps = MTCNNDetector(*nets, capacity=Capacity(), compile_steps=True)
assert steps.compile_steps and not eager.compile_steps
t0 = time.time()
boxes, points = [], []
for i in range(n):
    a, b = eager.detect(x[i:i + 1])[0], steps.detect(x[i:i + 1])[0]
    if a[0].shape != b[0].shape:
        print(i, "face counts differ", a[2].tolist(), b[2].tolist(), flush=True)
        continue
    if not a[0].numel():
        continue
    boxes.append((a[0] - b[0]).abs().max().item())
    points.append((a[1] - b[1]).norm(dim=-1).max().item())
    if boxes[-1] > 0.05:
        print(i, "box px", round(boxes[-1], 3), "points px", round(points[-1], 3), a[2].tolist(), b[2].tolist(),
              flush=True)
print(f"frames {n}, largest box difference {max(boxes):.3f} px, largest landmark difference {max(points):.3f} px, "
      f"frames over 0.05 px {sum(d > 0.05 for d in boxes)}, {time.time() - t0:.0f} s")
