"""Timers for the benchmark: CUDA events on the GPU, ``perf_counter`` on the CPU, and their statistics.

Every timed iteration is synchronised before the next one starts, so a
latency is the time one request takes (what a caller waits), not a share of a
pipelined queue.  On CUDA each iteration is bracketed by two
``torch.cuda.Event(enable_timing=True)`` on the current stream (the stream the
runners launch on); the wall time of the same iteration is kept beside it.
Warm-up iterations are run first and never counted.  Inputs rotate over a set
of pre-made tensors already on the device, so no iteration reuses the previous
one's input and no host copy is timed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

PERCENTILES = (50, 95, 99)


def stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """mean / p50 / p95 / p99 / min / max / std (ms) and n of ``samples_ms`` (linear-interpolated percentiles)."""
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    if n == 0:
        return {"n": 0}
    mean = sum(xs) / n
    out = {"n": n, "mean": mean}
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(xs, p)
    out["min"], out["max"] = xs[0], xs[-1]
    out["std"] = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def median_index(values: Sequence[float], upper: bool) -> int:
    """The index of the median of ``values`` (measurements repeated to see past a host's drift): for an even count
    the upper or the lower of the two middle ones, as the caller's conservative side is."""
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[len(values) // 2 if upper else (len(values) - 1) // 2]


def percentile(sorted_xs: Sequence[float], p: float) -> float:
    """The ``p``-th percentile of already sorted values, linear interpolation (numpy's default)."""
    if not sorted_xs:
        raise ValueError("percentile of no samples")
    k = (len(sorted_xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return float(sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo))


@dataclass
class Timing:
    """What one timed loop measured."""

    timer: str                      # "cuda_events" or "perf_counter"
    latency_ms: list[float]         # per iteration, from the timer
    wall_ms: list[float]            # per iteration, host wall clock (synchronised)
    warmup: int
    seconds: float                  # wall time of the timed loop
    capped: bool = False            # stopped early by the time cap
    notes: list[str] = field(default_factory=list)

    def summary(self, batch: int = 1) -> dict:
        lat = stats(self.latency_ms)
        fps = (batch * 1000.0 / lat["mean"]) if lat.get("mean") else None
        return {"timer": self.timer, "latency_ms": lat, "wall_ms": stats(self.wall_ms),
                "fps": round(fps, 2) if fps else None, "iters": len(self.latency_ms), "warmup": self.warmup,
                "timed_s": round(self.seconds, 3), "capped_by_time": self.capped}


class Timer:
    """Times ``fn(i)`` for iterations ``i`` on ``device`` ("cuda[:N]" or "cpu")."""

    def __init__(self, device: str = "cpu"):
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        self._torch = None
        if self.cuda:
            import torch

            self._torch = torch

    @property
    def name(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter"

    def sync(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize(self.device)

    def run(self, fn: Callable[[int], object], *, iters: int, warmup: int = 0,
            max_seconds: float | None = None, min_iters: int = 3) -> Timing:
        """``warmup`` untimed calls (fewer once they took ``max_seconds``, at least ``min_iters``), then up to
        ``iters`` timed ones (fewer when ``max_seconds`` of timed work have passed, but at least
        ``min(min_iters, iters)``)."""
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        warm = 0
        t_warm = time.perf_counter()
        while warm < max(0, warmup):
            fn(warm)
            warm += 1
            if max_seconds is not None and warm >= min(warmup, min_iters) and time.perf_counter() - t_warm > max_seconds:
                break  # a slow model (a big one on the CPU) is warm after a few calls
        self.sync()
        lat, wall = [], []
        capped = False
        start = time.perf_counter()
        floor = min(min_iters, iters)
        for i in range(iters):
            j = warm + i  # keep rotating past the warm-up inputs
            if self.cuda:
                t0, t1 = self._torch.cuda.Event(enable_timing=True), self._torch.cuda.Event(enable_timing=True)
                w0 = time.perf_counter()
                t0.record()
                fn(j)
                t1.record()
                self.sync()  # the whole device: a runner may also use streams of its own
                w1 = time.perf_counter()
                lat.append(float(t0.elapsed_time(t1)))
            else:
                w0 = time.perf_counter()
                fn(j)
                w1 = time.perf_counter()
                lat.append((w1 - w0) * 1000.0)
            wall.append((w1 - w0) * 1000.0)
            if max_seconds is not None and i + 1 >= floor and time.perf_counter() - start > max_seconds:
                capped = i + 1 < iters
                break
        return Timing(self.name, lat, wall, warm, time.perf_counter() - start, capped)
