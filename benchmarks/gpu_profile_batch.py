# On the GPU host: PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_profile_batch.py OUT_DIR [BACKEND]
"""#12 target 1: where the GPU time of a batch-32 frame goes, and what the detection cascade's buffers cost.

1. The streaming pipeline (BACKEND, default compile; FP16, CUDA, 32 frames a call, 1080p, one face a frame, the
   benchmark's frames), timing off, under torch.profiler for 4 batches after a warm-up: CUDA kernel time per
   frame, grouped by the pipeline stage that launched it (record_function ranges around the stage calls) and the
   top kernels.
2. The fixed-shape MTCNN cascade alone (FP16 nets, CUDA graph, the pipeline's 1280-px detection copy of the same
   frames, 32 a call), the nets channels-first (NCHW) and channels-last (NHWC): ms per frame, overflows, and the
   faces of the two compared; and the most live candidates per image after P-Net and R-Net (what the buffers
   must hold).  One JSON file."""
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from _ranges import range_stages
from ffexport.bench.e2e import frame_set
from ffexport.pipeline.mtcnn import Capacity, MTCNNDetector
from ffexport.pipeline.pipeline import Pipeline

out = Path(sys.argv[1])
backend = sys.argv[2] if len(sys.argv) > 2 else "compile"
out.mkdir(parents=True, exist_ok=True)
B = 32
frames, source = frame_set({"calib": None, "faces": 1, "frames": B * 6, "hw": (1080, 1920)})
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "backend": backend, "batch": B}

with Pipeline(backend=backend, precision="fp16", device="cuda", batch=B, out="/tmp/arts") as pipe:
    pipe.set_source(source)
    range_stages(pipe)
    batches = [frames[i:i + B] for i in range(0, len(frames), B)]
    list(pipe.process_batches(batches[:2]))  # warm-up: graphs, compilation
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        list(pipe.process_batches(batches[2:6]))
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    n = 4 * B
    kernels = {}
    for e in prof.key_averages():
        if e.device_time_total > 0 and e.key and not e.key.startswith("stage:"):
            kernels[e.key] = kernels.get(e.key, 0.0) + e.self_device_time_total / 1000.0 / n
    ranges = {e.key: e.device_time_total / 1000.0 / n for e in prof.key_averages() if e.key.startswith("stage:")}
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:30]
    res["pipeline"] = {"frames": n, "wall_ms_per_frame_profiled": round(wall * 1000 / n, 3),
                       "kernel_ms_per_frame": round(sum(kernels.values()), 3),
                       "stage_ranges_ms_per_frame": {k: round(v, 3) for k, v in ranges.items()},
                       "top_kernels_ms_per_frame": [(k[:120], round(v, 4)) for k, v in top]}
    print(json.dumps(res["pipeline"], indent=1), flush=True)

    # 2. the cascade alone, on the pipeline's detection copy, FP16 nets
    nets = [pipe.stages[m] for m in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")]
    imgs = []
    for b in batches[:4]:
        x = torch.from_numpy(__import__("numpy").stack(b)).cuda().permute(0, 3, 1, 2).float()
        imgs.append(F.interpolate(x, size=(720, 1280), mode="bilinear", align_corners=False, antialias=True))
    rows, faces = [], {}
    for nhwc in (False, True, False, True):  # the nets' layout, twice each (the host's noise)
        for s in nets:
            s.runner.model = s.runner.model.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        det = MTCNNDetector(*nets, device="cuda", capacity=Capacity(), cuda_graphs=True, channels_last=nhwc)
        for x in imgs[:2]:
            det.detect(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            for x in imgs:
                found = det.detect(x)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000 / (reps * len(imgs) * B)
        faces[nhwc] = torch.cat([b for b, _, _ in found])
        row = {"channels_last": nhwc, "ms_per_frame": round(ms, 3), "fallbacks": det.fallbacks}
        rows.append(row)
        print(row, flush=True)
    a, b = faces[False], faces[True]
    res["cascade_faces"] = {"nchw": a.shape[0], "nhwc": b.shape[0],
                            "max_box_diff_px": float((a - b).abs().max()) if a.shape == b.shape else None}
    print(res["cascade_faces"], flush=True)
    res["cascade"] = {"rows": rows}
    (out / "profile.json").write_text(json.dumps(res, indent=1))  # written again below with the live counts
    # live candidates per image at each stage of the variable cascade (what a buffer must hold)
    det = MTCNNDetector(*nets, device="cuda", channels_last=True)
    live = {"proposed": 0, "refined": 0}
    for x in imgs:
        boxes, scores, index = det._propose(x)
        live["proposed"] = max(live["proposed"], int(torch.bincount(index, minlength=B).max()) if index.numel() else 0)
        _, _, i2 = det._refine(x, boxes, index)
        live["refined"] = max(live["refined"], int(torch.bincount(i2, minlength=B).max()) if i2.numel() else 0)
    res["cascade"]["most_live_per_image"] = live
    print(live, flush=True)
(out / "profile.json").write_text(json.dumps(res, indent=1))
