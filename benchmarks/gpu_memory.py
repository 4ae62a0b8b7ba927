# On the GPU host: PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_memory.py OUT_DIR   (/tmp/site: facenet-pytorch)
"""#12 target 5: where the device memory of the batch-8 torch FP16 pipeline with GFPGAN-1.4 goes, and what running
the enhancer on fewer faces per call does to its peak and its speed.

For each enhancer call size (8 = the whole batch, as the pipeline runs it; then 4, 2, 1) a fresh pipeline, serial
path, 1080p frames in memory, one face each: torch's allocated memory after the models are built (weights) and after
the warm-up (CUDA-graph pools, cuDNN), the peak each stage adds over what was allocated when it started (its
transient memory; detection's nets are not watched: they run inside the cascade's CUDA graph), torch's peak allocated and reserved over the timed frames, the process's memory from NVML
(context, torch's cache, cuDNN/cuBLAS workspaces), and frames per second.  One JSON file, one line per row."""
import json
import os
import sys
import time

import torch

from ffexport.bench.e2e import cast, make_frames
from ffexport.bench.memory import MemoryProbe
from ffexport.pipeline.pipeline import Pipeline

MB = float(1 << 20)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
targets, source = cast(None, 1)
frames = make_frames(targets, 96, (1080, 1920))
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "frames": 64, "batch": 8, "rows": []}


def watch(stage, name, peaks):
    run = stage.run

    def measured(feeds):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        r = run(feeds)
        torch.cuda.synchronize()
        peaks[name] = max(peaks.get(name, 0.0), (torch.cuda.max_memory_allocated() - base) / MB)
        return r

    stage.run = measured


for call in (8, 4, 2, 1):
    torch.cuda.empty_cache()
    probe = MemoryProbe("cuda")
    with Pipeline(backend="torch", precision="fp16", device="cuda", batch=8, enhance=True, out="/tmp/arts",
                  streaming=False) as p:
        weights = torch.cuda.memory_allocated() / MB
        p.stages["enhancer"].max_batch = call
        p.set_source(source.rgb)
        for i in range(0, 32, 8):
            p.process_frames(frames[i:i + 8])
        torch.cuda.synchronize()
        warm = torch.cuda.memory_allocated() / MB
        peaks: dict[str, float] = {}
        for name, stage in p.stages.items():
            if not name.startswith("mtcnn"):  # the cascade's nets run inside its CUDA graph: no synchronising there
                watch(stage, name, peaks)
        probe.reset_peaks()
        torch.cuda.reset_peak_memory_stats()
        p.stats.update(frames=0, faces_swapped=0, frames_with_faces=0)
        t0 = time.perf_counter()
        for i in range(32, 96, 8):
            p.process_frames(frames[i:i + 8])
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = {"enhancer_faces_per_call": call, "fps": round(64 / dt, 1),
               "faces_per_frame": round(p.stats["faces_swapped"] / 64, 3),
               "weights_mb": round(weights), "after_warmup_mb": round(warm),
               "stage_transient_peak_mb": {k: round(v) for k, v in peaks.items()},
               "torch_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / MB),
               "torch_peak_reserved_mb": round(torch.cuda.max_memory_reserved() / MB),
               "process": probe.read()}
    print(json.dumps(row), flush=True)
    res["rows"].append(row)
json.dump(res, open(os.path.join(out, "memory.json"), "w"), indent=1)
