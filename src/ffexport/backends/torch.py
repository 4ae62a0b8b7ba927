"""Eager PyTorch runner (the reference every artifact is compared with)."""

from __future__ import annotations

import time
from typing import Mapping

from .._lazy import require
from .base import Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model, spec=None, device: str = "cpu", precision: str = "fp32", name: str = ""):
        super().__init__(name or (spec.key if spec else type(model).__name__), device, spec)
        self.model = model
        self.precision = precision

    def activate_impl(self) -> None:
        torch = require("torch")
        t0 = time.perf_counter()
        self.model = self.model.to(self.device).eval()
        if self.precision == "fp16":
            self.model = self.model.half()
        elif self.precision != "fp32":
            from ..errors import RuntimeUnavailableError

            raise RuntimeUnavailableError(f"the torch backend runs fp32 or fp16, not {self.precision}; "
                                          "use --backend ort or trt for int8")
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.load_time_s = time.perf_counter() - t0

    def infer_impl(self, feeds: Mapping[str, "object"]) -> dict:
        torch = require("torch")
        args = []
        for n in self.input_names:
            t = feeds[n].to(self.device, non_blocking=True)
            args.append(t.to(self._dtype) if t.is_floating_point() else t)
        with torch.inference_mode():
            out = self.model(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        names = self.output_names or [f"output_{i}" for i in range(len(out))]
        return {n: (o.float() if o.is_floating_point() else o) for n, o in zip(names, out)}

    def deactivate_impl(self) -> None:
        self.model = self.model.to("cpu")
        if self.device.startswith("cuda"):
            require("torch").cuda.empty_cache()
