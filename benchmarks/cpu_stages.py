#!/usr/bin/env python3
"""The CPU pipeline's per-stage time for one source tree (target 7 of issue #12: nothing slower on the CPU).

    PYTHONPATH=TREE/src python3 benchmarks/cpu_stages.py OUT.json [BATCHES] [FRAMES] [RESOLUTION] [GENERATOR]

Runs ``Pipeline(backend="torch", device="cpu", precision="fp32", timing=True)`` of whatever ``ffexport`` is on
``PYTHONPATH`` over the benchmark's frames (``bench.e2e.frame_set``, one face a frame), serial (no streaming
executor, so the stage timers do not overlap), one warm-up call, then every frame once per batch size.  The
``identity`` generator (default) times the stages that session 9 changed (detect, align, blend) without the
2-core inswapper's seconds, which that session did not touch; ``inswapper-128`` times the default pipeline.
Alternate trees on one machine to compare them."""
import inspect
import json
import os
import sys
import time
from pathlib import Path

import torch

from ffexport.bench.e2e import frame_set
from ffexport.bench.report import git_commit

try:
    from ffexport.bench.report import source_digest
except ImportError:  # a tree from before source_digest: its commit names it
    source_digest = None
from ffexport.pipeline.pipeline import Pipeline

out = Path(sys.argv[1])
batches = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,8").split(",")]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 16
hw = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}[sys.argv[4] if len(sys.argv) > 4 else "720p"]
generator = sys.argv[5] if len(sys.argv) > 5 else "identity"

import ffexport  # noqa: E402

tree = Path(ffexport.__file__).resolve().parents[2]
frames, source = frame_set({"frames": n, "hw": hw, "faces": 1})
rows = []
# a tree from before the streaming executor (issue #12's first commits) has no `streaming`: its pipeline is serial
serial = {"streaming": False} if "streaming" in inspect.signature(Pipeline).parameters else {}
for batch in batches:
    with Pipeline(backend="torch", device="cpu", precision="fp32", generator=generator, batch=batch,
                  timing=True, out=os.environ.get("FFEXPORT_OUT", "artifacts"), **serial) as pipe:
        pipe.set_source(source)
        pipe.process_frames(frames[:batch])  # warm-up
        pipe.reset_timings()
        faces = 0
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            pipe.process_frames(frames[i:i + batch])
            faces += len(pipe.last_faces)
        wall = time.perf_counter() - t0
        rows.append({"batch": batch, "frames": n, "fps": round(n / wall, 3), "ms_per_frame": round(1e3 * wall / n, 2),
                     "stages_ms_per_frame": {k: round(1e3 * v / n, 2) for k, v in sorted(pipe.timings.items())},
                     "faces_per_frame": round(faces / n, 3)})
        print(json.dumps(rows[-1]), flush=True)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"tree": str(tree), "git_commit": git_commit(tree), "source_sha256": source_digest(tree) if source_digest else None,
                           "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                           "resolution": f"{hw[1]}x{hw[0]}", "generator": generator, "rows": rows}, indent=1))
