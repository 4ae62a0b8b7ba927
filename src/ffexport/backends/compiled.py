"""The ``compile`` backend: the torch module through ``torch.compile`` (inductor), with CUDA graphs on a GPU.

Same model, weights and precision as the ``torch`` backend (FP32 or FP16); inductor generates fused kernels (the
batch axis dynamic when the first call's batch is above 1, so one compilation serves every batch) and, on CUDA
(``mode="reduce-overhead"``), records them in a CUDA graph per input shape that is replayed with one launch.  The
first call of each shape compiles or records: its seconds are kept in ``compile_s`` (per shape) and reported apart
from latency.  Inductor's cache lives in ``cache_dir`` (the artifact root's ``.inductor`` folder
when the pipeline opens the runner), so a second start reuses the generated kernels.

CUDA graph outputs are overwritten by the next replay: every output is copied out before it is returned.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

from .._lazy import require
from .torch import TorchRunner

RECOMPILE_LIMIT = 64  # shapes one compiled module keeps (P-Net sees one per pyramid level)


def _raise_recompile_limit(torch) -> None:
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < RECOMPILE_LIMIT:
            setattr(cfg, name, RECOMPILE_LIMIT)


class CompileRunner(TorchRunner):
    backend = "compile"

    def __init__(self, model, spec=None, device: str = "cpu", precision: str = "fp32", name: str = "",
                 cache_dir: str | Path | None = None):
        super().__init__(model, spec=spec, device=device, precision=precision, name=name)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # run the eager module instead (a caller that captures its own graph, or a module whose input shape
        # changes on every call: compiling it per shape would cost more than it saves)
        self.eager = False
        self.compile_s: dict[str, float] = {}  # input shapes -> seconds of the call that compiled them

    def activate_impl(self) -> None:
        torch = require("torch")
        super().activate_impl()
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # read when inductor first writes: a value set by the user wins
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.cache_dir.resolve()))
        _raise_recompile_limit(torch)
        self._cuda = self.device.startswith("cuda")
        # the batch axis is marked dynamic at the first call (see infer_impl): one compilation serves every batch;
        # torch.compile itself compiles nothing until then
        self._compiled = torch.compile(self.model, mode="reduce-overhead" if self._cuda else None, dynamic=None)
        self._called = False

    def infer_impl(self, feeds: Mapping[str, "object"]) -> dict:
        if self.eager:
            return super().infer_impl(feeds)
        torch = require("torch")
        args = self._args(feeds)
        key = " ".join("x".join(map(str, a.shape)) for a in args)
        first = key not in self.compile_s
        if not self._called and all(a.ndim and a.shape[0] > 1 for a in args):
            for a in args:  # torch specialises batch 0 and 1: a batch of 1 compiles a static graph instead
                torch._dynamo.mark_dynamic(a, 0)
        self._called = True
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self._cuda:
                torch.compiler.cudagraph_mark_step_begin()
            # copies: the next replay of the CUDA graph writes over its outputs
            out = self._named(self._compiled(*args), copy=True)
        if first:
            if self._cuda:
                torch.cuda.synchronize(self.device)
            self.compile_s[key] = round(time.perf_counter() - t0, 3)
        return out

    def deactivate_impl(self) -> None:
        self._compiled = None
        super().deactivate_impl()
