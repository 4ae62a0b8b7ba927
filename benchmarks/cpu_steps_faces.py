# On this CPU machine: python3 benchmarks/cpu_steps_faces.py [FRAMES]   (PRECISION=fp16 by default)
"""#12 lever 16 on the CPU: the fixed-shape MTCNN cascade with its steps compiled (inductor, C++) against the same
cascade with eager steps, on the same nets (torch stages, FP16 by default, as on the GPU), one frame a call, on
the benchmark's frames (1080p, scaled to the pipeline's 1280-px detection copy): per frame that differs by more
than 0.05 px, its box and landmark differences; then the largest over all frames."""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ffexport import specs
from ffexport.bench.e2e import frame_set
from ffexport.pipeline.detectors import MTCNN_MODULES
from ffexport.pipeline.mtcnn import Capacity, MTCNNDetector
from ffexport.pipeline.stages import make_stage

torch._dynamo.config.recompile_limit = 64
n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
frames, _ = frame_set({"calib": None, "faces": 1, "frames": n, "hw": (1080, 1920)})
x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
x = F.interpolate(x, size=(720, 1280), mode="bilinear", align_corners=False, antialias=True)
nets = [make_stage(specs.get(m), "torch", os.environ.get("PRECISION", "fp16"), "cpu", out="artifacts")
        for m in MTCNN_MODULES]
eager = MTCNNDetector(*nets, capacity=Capacity())
steps = MTCNNDetector(*nets, capacity=Capacity(), compile_steps=True)
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
