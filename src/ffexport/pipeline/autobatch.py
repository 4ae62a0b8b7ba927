"""``batch="auto"``: how many frames one pipeline call takes, chosen to fill the GPU within a memory budget.

On a GPU: one call on ``PROBE_FRAMES`` real frames (the video's first) measures the device memory it needed at
its peak (``torch.cuda.max_memory_allocated`` over the allocation before it); that, per frame, plus what the
streaming executor keeps per frame on the device (its uploaded slots and its downloads in flight), gives the
frames that fit in ``MEMORY_FRACTION`` of the memory free for torch (the driver's free memory and torch's cached,
unused blocks), at most ``MAX_BATCH``.  The probe's per-frame figure includes the call's fixed costs (one-time
workspaces, the CUDA graph captured for its shape), so it errs towards smaller batches.

On a CPU: ``CPU_BATCH`` frames (larger batches do not run faster on a few cores, and hold more frames).

Importing this file does not import torch.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

    from .pipeline import Pipeline

AUTO = "auto"
CPU_BATCH = 4
MAX_BATCH = 32  # the largest batch measured on the H200 (benchmarks/NOTES.md): beyond it little FPS, more latency
PROBE_FRAMES = 2
MEMORY_FRACTION = 0.5
MB = 1024 * 1024


def parse_batch(value) -> int | str:
    """``auto`` or a positive whole number (``--batch``, ``Pipeline(batch=...)``); a one-line error otherwise."""
    from ..errors import InputSpecError

    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise InputSpecError(f"batch must be a positive whole number or auto, got {value!r}")


def choose_batch(pipe: "Pipeline", frames: Sequence["np.ndarray"], *, fraction: float = MEMORY_FRACTION,
                 most: int = MAX_BATCH) -> dict:
    """The batch for ``pipe`` on frames like ``frames`` (a video's first frames; unused on a CPU), and how it was
    chosen: ``{"batch", "how", ...}`` with the probe's measurements on a GPU.

    The probe is one serial call of ``pipe`` on ``frames[:PROBE_FRAMES]``; the pipeline's statistics, timings and
    last faces are as they were before it.
    """
    if pipe.device.type != "cuda":
        return {"batch": CPU_BATCH, "how": f"auto: {CPU_BATCH} frames on a CPU"}
    import torch

    from .streaming import DEPTH, SLOTS

    probe = list(frames[:PROBE_FRAMES])
    if not probe:
        return {"batch": 1, "how": "auto: no frame to probe with"}
    dev = pipe.device
    saved = dict(pipe.stats), dict(pipe.timings), pipe._last
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    try:
        pipe.process_frames(probe)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
    finally:
        pipe.stats.clear()
        pipe.stats.update(saved[0])
        pipe.timings.clear()
        pipe.timings.update(saved[1])
        pipe._last = saved[2]
    frame_bytes = int(probe[0].nbytes)
    # per frame: the call's peak, the executor's uploaded slots, and its downloads waiting (at most one copy each)
    per_frame = peak / len(probe) + (SLOTS + DEPTH) * frame_bytes
    free, _total = torch.cuda.mem_get_info(dev)
    unused = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    budget = fraction * (free + unused)
    batch = int(max(1, min(most, budget // max(per_frame, 1.0))))
    return {"batch": batch, "how": f"auto: {fraction:g} of free device memory / the probe's peak per frame, "
                                   f"at most {most}",
            "probe_frames": len(probe), "peak_mb_per_frame": round(per_frame / MB, 1),
            "budget_mb": round(budget / MB, 1)}
