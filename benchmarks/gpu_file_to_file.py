# On the GPU host (PyAV under $BENCH_SITE, the artifacts of a compile FP16 pipeline row under --arts, e.g. made by
# `gpu_session15.sh row`):
#     PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_file_to_file.py --out DIR [--frames 256,1024] [--batch 8]
#         [--rounds 2] [--waits spin,block]
"""#12 target 4 (file to file >= 0.8x the host's encode-only ceiling): where a file-to-file run's time goes.

One compile FP16 pipeline (configs/pipeline.yaml, no enhancer) and, per clip length (the benchmark's 1080p
frames with one face, written as H.264 with an AAC track, as `ffexport bench --pipeline` writes its clip):
an untimed video of the first clip's first frames (:func:`ffexport.bench.e2e.warm_video`, the benchmark's video
row's warm-up since session 16; session 15 warmed with 64 frames of its own), then per clip the host's codec
ceilings (:func:`ffexport.pipeline.video.codec_ceiling`), then ``--rounds`` rounds of a
pass-through run (the same threads and queues, no pipeline work) and the pipeline's file-to-file run with each of
``--waits`` (how the threads that need the GPU's results wait: ``spin``, CUDA's default, or ``block``, asleep on
the event, a video's default since session 15; chosen as $FFEXPORT_CUDA_WAIT would, see
``ffexport.pipeline.device.cuda_wait``; session 15 ran the script at 51f3b6f and db4b9e9, where it set the module's
``CUDA_WAIT`` instead).  Each run records its FPS, the process's busy cores, the
encoder's first frame and the time it sat with nothing to encode, and the time results waited for room in the
encoder's queue.  One JSON file (``file_to_file.json``), written after each run."""
import argparse
import json
import tempfile
from pathlib import Path

import torch

from ffexport.bench.e2e import frame_set, passthrough_run, warm_video, write_video
from ffexport.pipeline import device as pipeline_device
from ffexport.pipeline.pipeline import Pipeline
from ffexport.pipeline.settings import load_pipeline_settings
from ffexport.pipeline.video import codec_ceiling

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--arts", default="/tmp/arts")
ap.add_argument("--frames", default="256,1024")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--waits", default="spin,block")
a = ap.parse_args()
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
waits = a.waits.split(",")
res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": a.batch, "clips": []}


def save():
    (out / "file_to_file.json").write_text(json.dumps(res, indent=1))


KEEP = ("throughput_fps", "seconds", "cpu_cores", "results_waited_s", "encoder", "faces_swapped", "frames_as",
        "codec_nice", "encoder_threads")

settings = load_pipeline_settings(None).override(backend="compile", precision="fp16", device="cuda", enhance=False)
with Pipeline.from_settings(settings, out=a.arts, build_missing=False, batch=a.batch, timing=False) as pipe, \
        tempfile.TemporaryDirectory(prefix="ffexport-f2f-") as tmp:
    for n in (int(v) for v in a.frames.split(",")):
        frames, source = frame_set({"calib": None, "faces": 1, "frames": n, "hw": (1080, 1920)})
        clip = write_video(frames, Path(tmp) / f"clip-{n}.mp4")
        del frames
        if "warm" not in res:  # the benchmark's video row's untimed first video, on the first clip's first frames
            pipe.set_source(source)
            res["warm"] = warm_video(pipe, clip, tmp)
        entry = {"frames": n, "ceiling": codec_ceiling(clip), "runs": []}
        res["clips"].append(entry)
        top = entry["ceiling"]["encode_only_fps"]
        print(f"{n} frames: encode-only {top} FPS (runs {entry['ceiling']['encode_only_runs']}, cores "
              f"{entry['ceiling'].get('encode_only_cpu_cores')})", flush=True)
        save()
        for r in range(a.rounds):
            forms = [("passthrough", None)] + [("pipeline", w) for w in waits]
            for name, wait in forms:
                dst = Path(tmp) / f"out-{n}-{r}-{name}-{wait}.mp4"
                if wait is not None:  # as $FFEXPORT_CUDA_WAIT would choose it
                    pipeline_device.CUDA_WAIT_SET = wait
                    stats = pipe.process_video(clip, dst, progress=False)
                else:
                    stats = passthrough_run(pipe, clip, dst, a.batch)
                dst.unlink(missing_ok=True)
                row = {"round": r, "run": name, "wait": wait, **{k: stats.get(k) for k in KEEP}}
                row["of_encode_only"] = round(row["throughput_fps"] / top, 3) if top else None
                entry["runs"].append(row)
                enc = row["encoder"] or {}
                print(f"  round {r} {name:11s} {wait or '':5s} {row['throughput_fps']:7.2f} FPS "
                      f"({row['of_encode_only']}x) cores {row['cpu_cores']} first frame {enc.get('first_frame_s')} s "
                      f"starved {enc.get('starved_s')} s busy {enc.get('busy_s')} s results waited "
                      f"{row['results_waited_s']} s", flush=True)
                save()
print(f"written {out / 'file_to_file.json'}")
