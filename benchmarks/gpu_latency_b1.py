# On the GPU host: PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_latency_b1.py OUT_DIR [RUNS] [SIDES] [PARTS]
"""#12 target 2 (p50 frame latency <= 10 ms at batch 1): where a batch-1 frame's time goes.  One JSON file,
written after each part.

1. The fixed-shape MTCNN cascade alone (the FP16 nets of a compile pipeline's stages, channels-last, CUDA graph,
   the pipeline's 1280-px detection copies of the benchmark's frames), 1 and 32 frames a call, two forms alternated
   twice (``CASCADE_AB``): ``nms`` (session 9): the pyramid levels' NMS level by level (``NMS_ROWS=1``) and
   together (16); ``steps`` (session 11): the arithmetic between the nets eager and through torch.compile
   (``compile_steps``).  Per form: ms per frame (median of synchronised calls, the read-back included), CUDA
   kernels per call (counted by the profiler on the same cascade run without its graph), and the faces of the two
   forms compared.
2. The serial pipeline at batch 1 (FP16, ``streaming=False``), per run (default ``compile,torch``; a backend,
   or ``compile-padded``: the compile backend with the generator's one-face calls padded to its dynamic graph's 2,
   as before ``Stage.warm_single_item``; ``compile-eager-steps``: the compile backend with the cascade's arithmetic
   eager, as before ``compile_steps``; ``compile-outer-scan``: the cascade's integral image scanned along its
   outer axis, as before ``Pyramid``'s transposed scan) and detection copy size (default ``1280,640``): frame latency p50/p95 over 256 synchronised frames with the timers
   off, faces per frame; the stage timers over 64 frames; torch.profiler over 16 frames: host wall ms, CUDA kernel
   ms and kernels per frame, by stage range, and the top kernels.
PARTS: ``cascade,pipeline`` (default) or one of them."""
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from _ranges import range_stages
from ffexport.bench.e2e import frame_set
from ffexport.pipeline import mtcnn
from ffexport.pipeline.mtcnn import Capacity, MTCNNDetector
from ffexport.pipeline.pipeline import Pipeline

out = Path(sys.argv[1])
backends = (sys.argv[2] if len(sys.argv) > 2 else "compile,torch").split(",")
sides = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "1280,640").split(",")]
parts = (sys.argv[4] if len(sys.argv) > 4 else "cascade,pipeline").split(",")
out.mkdir(parents=True, exist_ok=True)
frames, source = frame_set({"calib": None, "faces": 1, "frames": 256, "hw": (1080, 1920)})
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "frames": len(frames)}


def save():
    (out / "latency_b1.json").write_text(json.dumps(res, indent=1))


def kernels(prof) -> tuple[int, float]:
    evs = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(evs), sum(e.device_time for e in evs) / 1000.0


def upload(batch) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).cuda().permute(0, 3, 1, 2).float()


# 1. the cascade alone
if "cascade" in parts:
    with Pipeline(backend="compile", precision="fp16", device="cuda", batch=1, streaming=False, out="/tmp/arts") as pipe:
        c = pipe.detector.cascade
        copies = [F.interpolate(upload(frames[i:i + 32]), size=(720, 1280), mode="bilinear", align_corners=False,
                                antialias=True) for i in range(0, 128, 32)]
        rows = []
        faces = {}
        ab = os.environ.get("CASCADE_AB", "nms")
        default_rows = mtcnn.NMS_ROWS
        forms = {"nms": (1, default_rows), "steps": (False, True)}[ab]
        detectors = {}
        for form in forms + forms:  # twice each: the host's noise
            nms_rows, steps = (form, False) if ab == "nms" else (default_rows, form)
            mtcnn.NMS_ROWS = nms_rows
            for b in (1, 32):
                def make(graphs):
                    return MTCNNDetector(c.pnet, c.rnet, c.onet, device="cuda", thresholds=c.thresholds,
                                         min_face=c.min_face, capacity=Capacity(), cuda_graphs=graphs,
                                         channels_last=c.channels_last, compile_steps=steps)
                det = detectors.setdefault((form, b), make(True))  # the second round: graphs and kernels made
                calls = [x[i:i + b] for x in copies for i in range(0, 32, b)][: (64 if b == 1 else 4)]
                t0 = time.perf_counter()
                for x in calls[:3]:
                    det.detect(x)
                torch.cuda.synchronize()
                warm_s = time.perf_counter() - t0
                ms = []
                got = []
                for x in calls:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    got += det.detect(x)
                    ms.append((time.perf_counter() - t0) * 1000.0 / b)
                plain = detectors.setdefault(("plain", form, b), make(False))
                plain.detect(calls[0])
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    plain.detect(calls[0])
                    torch.cuda.synchronize()
                n_k, k_ms = kernels(prof)
                faces.setdefault(b, {})[form] = got
                rows.append({"form": f"{ab}={form}", "nms_rows": nms_rows, "compile_steps": steps, "batch": b,
                             "warm_s": round(warm_s, 2), "ms_per_frame_p50": round(statistics.median(ms), 4),
                             "ms_per_frame_min": round(min(ms), 4), "kernels_per_call": n_k,
                             "kernel_ms_per_frame_ungraphed": round(k_ms / b, 4), "fallbacks": det.fallbacks,
                             "faces": sum(int(f[0].shape[0]) for f in got)})
                print(rows[-1], flush=True)
        mtcnn.NMS_ROWS = default_rows
        same = {}
        for b, by in faces.items():
            a, z = by[forms[0]], by[forms[1]]
            same[b] = max(float((x[0] - y[0]).abs().max()) if x[0].numel() else 0.0 for x, y in zip(a, z)) \
                if all(x[0].shape == y[0].shape for x, y in zip(a, z)) else "different face counts"
        res["cascade"] = {"rows": rows, f"max_box_difference_px_{forms[0]}_vs_{forms[1]}": same}
        save()

# 2. the serial pipeline at batch 1
if "pipeline" in parts:
    res["pipeline"] = []
    pyramid_init = mtcnn.Pyramid.__init__
    for backend in backends:
        for side in sides:
            row = {"run": backend, "detect_max_side": side}
            if backend == "compile-outer-scan":  # the integral image as before Pyramid's transposed scan
                mtcnn.Pyramid.__init__ = mtcnn.AreaPyramid.__init__
            with Pipeline(backend=backend.split("-")[0], precision="fp16", device="cuda", batch=1, streaming=False,
                          detect_max_side=side, out="/tmp/arts") as pipe:
                pipe.set_source(source)
                if backend == "compile-padded":
                    pipe.stages["generator"].single_item_graph = False
                if backend == "compile-eager-steps":
                    pipe.detector.cascade.compile_steps = False
                row["compile_steps"] = pipe.detector.cascade.compile_steps
                row["generator_compile_s"] = dict(getattr(pipe.stages["generator"].runner, "compile_s", {}))
                for f in frames[:24]:
                    pipe.process_frames([f])
                before = pipe.stats["faces_swapped"]
                lat = []
                for f in frames:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    pipe.process_frames([f])
                    lat.append((time.perf_counter() - t0) * 1000.0)
                lat.sort()
                row.update(p50_ms=round(lat[len(lat) // 2], 3), p95_ms=round(lat[int(len(lat) * 0.95)], 3),
                           min_ms=round(lat[0], 3), faces_per_frame=round((pipe.stats["faces_swapped"] - before)
                                                                           / len(frames), 3))
                pipe.timing = True
                pipe.reset_timings()
                for f in frames[:64]:
                    pipe.process_frames([f])
                pipe.timing = False
                row["stages_ms"] = {k: round(v * 1000.0 / 64, 3) for k, v in pipe.timings.items()}
                range_stages(pipe)
                n = 16
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for f in frames[:n]:
                        pipe.process_frames([f])
                    torch.cuda.synchronize()
                row["profiled_wall_ms_per_frame"] = round((time.perf_counter() - t0) * 1000.0 / n, 3)
                n_k, k_ms = kernels(prof)
                row["kernels_per_frame"] = round(n_k / n, 1)
                row["kernel_ms_per_frame"] = round(k_ms / n, 3)
                avg = prof.key_averages()
                row["ranges"] = {e.key: {"host_ms": round(e.cpu_time_total / 1000.0 / n, 3),
                                         "device_ms": round(e.device_time_total / 1000.0 / n, 3)}
                                 for e in avg if e.key.startswith("stage:")}
                top = sorted(((e.key, e.self_device_time_total / 1000.0 / n, e.count / n) for e in avg
                              if e.self_device_time_total > 0), key=lambda t: -t[1])[:20]
                row["top_device_ms_per_frame"] = [(k[:100], round(v, 4), round(c, 1)) for k, v, c in top]
                host = sorted(((e.key, e.self_cpu_time_total / 1000.0 / n, e.count / n) for e in avg),
                              key=lambda t: -t[1])[:25]
                row["top_host_ms_per_frame"] = [(k[:100], round(v, 4), round(c, 1)) for k, v, c in host]
            mtcnn.Pyramid.__init__ = pyramid_init
            res["pipeline"].append(row)
            print({k: v for k, v in row.items() if not k.startswith("top")}, flush=True)
            save()
