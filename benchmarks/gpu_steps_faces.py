# On the GPU host: PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_steps_faces.py
"""#12 lever 16: the frames of the benchmark on which the compile backend's cascade with compiled steps and the
same cascade with eager steps (the same FP16 nets, channels-last, CUDA graph) report different boxes, at batch 1:
each such frame's boxes and scores from both."""
import time

import numpy as np
import torch
import torch.nn.functional as F

from ffexport import specs
from ffexport.bench.e2e import frame_set
from ffexport.pipeline.detectors import MTCNN_MODULES, make_detector
from ffexport.pipeline.mtcnn import MTCNNDetector, Capacity
from ffexport.pipeline.stages import make_stage
t0 = time.time()
frames, source = frame_set({"calib": None, "faces": 1, "frames": 64, "hw": (1080, 1920)})
x = torch.from_numpy(np.stack(frames[:64])).cuda().permute(0, 3, 1, 2).float()
x = F.interpolate(x, size=(720, 1280), mode="bilinear", align_corners=False, antialias=True)
stages = {m: make_stage(specs.get(m), "compile", "fp16", "cuda", out="/tmp/arts") for m in MTCNN_MODULES}
c = make_detector("mtcnn", stages, "cuda").cascade
e = MTCNNDetector(c.pnet, c.rnet, c.onet, device="cuda", thresholds=c.thresholds, min_face=c.min_face,
                  capacity=Capacity(), cuda_graphs=True, channels_last=c.channels_last, compile_steps=False)
print("steps", c.compile_steps, e.compile_steps, round(time.time() - t0, 1), flush=True)
for i in range(64):
    a = e.detect(x[i:i+1])[0]; b = c.detect(x[i:i+1])[0]
    if i == 0: print("warm", round(time.time() - t0, 1), c.capture_s, e.capture_s, flush=True)
    if a[0].shape != b[0].shape:
        print(i, "count", a[0].tolist(), b[0].tolist(), a[2].tolist(), b[2].tolist(), flush=True); continue
    d = (a[0]-b[0]).abs().max().item() if a[0].numel() else 0
    if d > 0.05:
        print(i, round(d, 3), [[round(v, 1) for v in r] for r in a[0].tolist()], [[round(v, 1) for v in r] for r in b[0].tolist()],
              a[2].tolist(), b[2].tolist(), flush=True)
print("done", round(time.time() - t0, 1))
