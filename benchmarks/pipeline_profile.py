"""Where the reference pipeline spends its time, per runner call, on one backend and precision.

    PYTHONPATH=src python benchmarks/pipeline_profile.py --backend ort --precision fp32 --device cuda \
        --resolution 1080p --frames 16 [--enhance] [--out ARTIFACTS] [--json profile.json]

Every stage's runner call is timed with a device synchronisation before and after, in the
pipeline (``in_pipeline``) and then again on the same inputs repeated back to back
(``repeated``: :class:`ffexport.bench.timing.Timer`'s synchronised wall times): a large gap
between the two is per-call overhead that the pipeline's mix of shapes and stages causes
(re-planning, re-tuning), not the model's own compute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", default="1080p")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--enhance", action="store_true")
    ap.add_argument("--calib", default="calibration")
    ap.add_argument("--out", default="artifacts", help="artifact folder (one sub-folder per module)")
    ap.add_argument("--json", default="", help="write the report to this JSON file")
    a = ap.parse_args(argv)

    from ffexport.bench.e2e import frame_set, parse_resolution
    from ffexport.bench.timing import Timer, stats
    from ffexport.pipeline.pipeline import Pipeline

    cuda = a.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    frames, source = frame_set({"calib": a.calib, "faces": 1, "frames": a.frames + a.warmup,
                                "hw": parse_resolution(a.resolution)})
    pipe = Pipeline(backend=a.backend, precision=a.precision, device=a.device, enhance=a.enhance, out=a.out)
    pipe.set_source(source)
    calls: dict[str, list] = defaultdict(list)
    last_feed: dict[str, dict] = {}
    recording = [False]
    for name, stage in pipe.stages.items():
        runner = stage.runner
        inner = runner.infer

        def timed(feeds, _inner=inner, _name=name):
            sync()
            t0 = time.perf_counter()
            out = _inner(feeds)
            sync()
            if recording[0]:
                calls[_name].append(((time.perf_counter() - t0) * 1e3,
                                     tuple(tuple(v.shape) for v in feeds.values())))
                last_feed[_name] = {k: v.clone() for k, v in feeds.items()}
            return out

        runner.infer = timed
    for f in frames[:a.warmup]:
        pipe.process_frame(f)
    faces = pipe.stats["faces_swapped"]
    recording[0] = True
    sync()
    t0 = time.perf_counter()
    for f in frames[a.warmup:]:
        pipe.process_frame(f)
    sync()
    wall = (time.perf_counter() - t0) / a.frames * 1e3
    recording[0] = False
    report = {"backend": a.backend, "precision": a.precision, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "resolution": a.resolution, "frames": a.frames, "frame_ms": round(wall, 2),
              "faces_per_frame": (pipe.stats["faces_swapped"] - faces) / a.frames, "stages": {}}
    print(f"{a.backend} {a.precision} {report['device']}: {wall:.1f} ms/frame, "
          f"{report['faces_per_frame']:.2f} faces/frame", flush=True)
    for name, rows in calls.items():
        ms = [r[0] for r in rows]
        shapes = sorted({r[1] for r in rows})
        feed = last_feed[name]
        runner = pipe.stages[name].runner
        rep = Timer(a.device).run(lambda _i, r=runner, f=feed: r.infer(f), iters=10).wall_ms
        entry = {"calls_per_frame": len(rows) / a.frames, "ms_per_frame": sum(ms) / a.frames,
                 "in_pipeline_median_ms": statistics.median(ms), "repeated_median_ms": stats(rep)["p50"],
                 "shapes": [list(map(list, s)) for s in shapes[:16]], "distinct_shapes": len(shapes)}
        report["stages"][name] = entry
        print(f"  {name:12s} {entry['calls_per_frame']:5.1f} calls/frame {entry['ms_per_frame']:8.2f} ms/frame; "
              f"per call in pipeline {entry['in_pipeline_median_ms']:.3f} ms, repeated {entry['repeated_median_ms']:.3f} ms; "
              f"{len(shapes)} shapes", flush=True)
    pipe.close()
    if a.json:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
