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

    def _args(self, feeds: Mapping[str, "object"]) -> list:
        """The model's arguments: each input on the device, floating ones at the runner's precision."""
        args = []
        for n in self.input_names:
            t = feeds[n].to(self.device, non_blocking=True)
            args.append(t.to(self._dtype) if t.is_floating_point() else t)
        return args

    def _named(self, out, copy: bool = False) -> dict:
        """Outputs by name, floating ones as float32 (``copy``: always a new tensor)."""
        torch = require("torch")
        if isinstance(out, torch.Tensor):
            out = (out,)
        names = self.output_names or [f"output_{i}" for i in range(len(out))]
        return {n: (o.to(torch.float32, copy=copy) if o.is_floating_point() else (o.clone() if copy else o))
                for n, o in zip(names, out)}

    def infer_impl(self, feeds: Mapping[str, "object"]) -> dict:
        torch = require("torch")
        args = self._args(feeds)
        with torch.inference_mode():
            return self._named(self.model(*args))

    def deactivate_impl(self) -> None:
        self.model = self.model.to("cpu")
        if self.device.startswith("cuda"):
            require("torch").cuda.empty_cache()
