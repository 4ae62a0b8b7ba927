# On the GPU host: PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_detect_size.py OUT_DIR  (/tmp/site: facenet-pytorch)
"""#12 groundwork: how much of the torch FP16 pipeline's frame time is MTCNN detection, against the size of the copy
it detects on (detect_max_side), at batch 1, 8 and 32; faces per frame for each (1080p, one face per frame)."""
import json, os, sys, time
import torch
from ffexport.bench.e2e import cast, make_frames
from ffexport.pipeline.pipeline import Pipeline

out = sys.argv[1]
targets, source = cast(None, 1)
frames = make_frames(targets, 128, (1080, 1920))
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "frames": 128, "rows": []}
for side in (None, 640, 480):
    for batch in (1, 8, 32):
        kw = {} if side is None else {"detect_max_side": side}
        with Pipeline(backend="torch", precision="fp16", device="cuda", batch=batch, timing=True, out="/tmp/arts", **kw) as p:
            p.set_source(source.rgb)
            for i in range(0, 32, batch):
                p.process_frames(frames[i:i + batch])
            torch.cuda.synchronize(); p.reset_timings(); p.stats.update(frames=0, faces_swapped=0, frames_with_faces=0)
            t0 = time.perf_counter()
            for i in range(0, 128, batch):
                p.process_frames(frames[i:i + batch])
            torch.cuda.synchronize(); dt = time.perf_counter() - t0
            row = {"detect_max_side": side or "default", "batch": batch, "fps": round(128 / dt, 1),
                   "faces_per_frame": round(p.stats["faces_swapped"] / 128, 3),
                   "ms_per_frame": {k: round(v / 128 * 1000, 2) for k, v in p.timings.items()}}
            print(json.dumps(row), flush=True)
            res["rows"].append(row)
json.dump(res, open(os.path.join(out, "detect_size.json"), "w"), indent=1)
