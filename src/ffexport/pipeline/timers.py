"""Per-stage wall-clock timers of the pipeline (``Pipeline(timing=True)``), synchronising the GPU."""

from __future__ import annotations

import time

import torch


class NoTimer:
    """The timer of a pipeline that does not time: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


NO_TIMER = NoTimer()


class Timer:
    """Accumulates wall time of a block into ``timings[name]``, synchronising the GPU at both ends."""

    __slots__ = ("timings", "name", "cuda", "t0")

    def __init__(self, timings: dict, name: str, cuda: bool):
        self.timings, self.name, self.cuda = timings, name, cuda

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.t0
        return False
