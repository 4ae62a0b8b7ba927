# On the GPU host: PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_video_contention.py OUT_DIR [BATCH]
"""#12 target 4: why file to file stays at ~0.7x of encode-only while the pipeline alone runs at 2x the encoder.

One torch FP16 pipeline (CUDA, streaming, BATCH frames per call, default 8) on the benchmark's clip (256 frames
of 1080p H.264 with AAC audio, `bench.e2e`'s frames); the codecs alone on it first (`codec_ceiling`, both
forms), then file-to-file runs and pass-through runs (the same threads, no pipeline work) with the codec
threads' niceness (`codec_nice`: the decode and encode threads and the codecs' own workers, which inherit it) and
libx264's thread count varied, and the interpreter's switch interval (how long a thread that wants the GIL waits
for a thread that holds it), frames as planes and as RGB; the codecs alone again at the end.  Each run records its FPS and the CPU time the
process used per second of wall time (cores busy).  One JSON file."""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from ffexport.bench.e2e import cast, make_frames, write_video
from ffexport.pipeline.pipeline import Pipeline
from ffexport.pipeline.video import codec_ceiling, transcode

out = Path(sys.argv[1])
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
out.mkdir(parents=True, exist_ok=True)
targets, source = cast(None, 1)
tmp = Path(tempfile.mkdtemp(prefix="contention-"))
src = write_video(make_frames(targets, 256, (1080, 1920)), tmp / "clip.mp4")
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cores": os.cpu_count(), "batch": batch,
       "frames": 256, "ceiling": codec_ceiling(src), "runs": []}
print(res["ceiling"], flush=True)


def timed(fn):
    c0, t0 = os.times(), time.perf_counter()
    stats = fn()
    c1, wall = os.times(), time.perf_counter() - t0
    return stats, round((c1.user + c1.system - c0.user - c0.system) / wall, 2)


SWITCH = float(os.environ.get("SWITCH_S", "0")) or None  # only this switch interval (else the sweep below)
with Pipeline(backend="torch", precision="fp16", device="cuda", batch=batch, out=os.environ.get("ARTS", "/tmp/arts")) as pipe:
    pipe.set_source(source.rgb)
    pipe.process_video(src, tmp / "warm.mp4", progress=False)  # shapes, graphs, ring
    default_switch = sys.getswitchinterval()
    combos = [(sw, nice, threads, planes) for planes in (True, False)
              for sw in ((SWITCH,) if SWITCH else (default_switch,))
              for nice, threads in ((0, None), (10, None), (0, 12), (10, 12))]
    for sw, nice, threads, planes in combos:  # noqa
        pipe.video_planes = None if planes else False
        form = pipe.video_planes_for(src)
        sys.setswitchinterval(sw)
        try:
            for kind in ("pipeline", "passthrough"):
                if kind == "pipeline":
                    stats, cores = timed(lambda: pipe.process_video(src, tmp / "o.mp4", progress=False,
                                                                    codec_nice=nice, encoder_threads=threads))
                else:
                    stats, cores = timed(lambda: transcode(src, tmp / "p.mp4", list, batch=batch, progress=False,
                                                           planes=form, codec_nice=nice, encoder_threads=threads))
                row = {"kind": kind, "frames_as": stats["frames_as"], "switch_interval_s": sw, "codec_nice": nice,
                       "encoder_threads": threads, "fps": stats["throughput_fps"], "cores_busy": cores}
                res["runs"].append(row)
                print(row, flush=True)
        finally:
            sys.setswitchinterval(default_switch)
res["ceiling_after"] = codec_ceiling(src)
print(res["ceiling_after"], flush=True)
(out / "contention.json").write_text(json.dumps(res, indent=1))
