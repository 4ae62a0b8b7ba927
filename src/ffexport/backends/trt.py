"""TensorRT runner (TensorRT 10.x, 11.x, TensorRT for RTX): torch CUDA tensors in, torch CUDA tensors out.

Inputs and outputs are bound by name (``set_input_shape`` / ``set_tensor_address``)
and the engine runs on the caller's current CUDA stream (``execute_async_v3``),
so tensors pass between backends without copies.  The engine's scratch memory
is a torch allocation as well: no pycuda, no cuda-python.  Optionally the run is
captured once per input shape as a CUDA graph and replayed.

Whether an engine can run here is answered honestly and in one line: no GPU, no
runtime of the engine's flavour, TensorRT for RTX on a GPU it does not support
(compute capability 9.0, the H100/H200, is such a case), an engine from another
version, or a corrupt file.  ``trt_availability()`` gives the same answer to the
benchmark without an engine.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

from .._lazy import available, require
from ..errors import InputSpecError, ModelLoadError, RuntimeUnavailableError
from . import trt_flavors as F
from .base import Runner
from .trt_engine import (MB, TORCH_DTYPES, check_engine_file, check_loadable, device_memory_size, engine_io,
                         engine_record, load_error, read_engine, runtime_flavor)



def trt_availability(flavor: str = "auto", device: int = 0) -> tuple[bool, str]:
    """Whether a TensorRT runtime here can run engines on GPU ``device``: (ok, reason in one line)."""
    if flavor != "auto" and flavor not in F.FLAVORS:
        return False, f"unknown TensorRT flavor {flavor!r}; valid: {', '.join(F.FLAVORS)}, auto"
    gpu = F.local_gpu(device)
    if gpu is None:
        return False, "no CUDA GPU here (torch sees none), so TensorRT engines cannot run"
    names = F.FLAVORS if flavor == "auto" else (flavor,)
    installed = [n for n in names if available(n)]
    if not installed:
        want = " or ".join(names)
        return False, f"no TensorRT runtime is installed ({want}): {'; '.join(F.INSTALL[n] for n in names)}"
    reasons = []
    for n in installed:
        try:
            fl = F.load(n)
        except Exception as exc:  # an installed but broken wheel
            reasons.append(f"{n} cannot be imported: {str(exc).splitlines()[0][:200]}")
            continue
        ok, why = fl.runs_on(gpu)
        if ok:
            return True, f"{fl.label} on {gpu.name} (compute capability {gpu.cc_str})"
        reasons.append(why)
    return False, "; ".join(reasons)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------

class TrtRunner(Runner):
    """Runs a serialized TensorRT / TensorRT-RTX engine on a CUDA device with torch tensors."""

    backend = "trt"

    def __init__(self, path: str | Path, spec=None, device: str = "cuda", name: str = "", cuda_graph: bool = False):
        super().__init__(name or Path(path).name, device, spec)
        self.path = Path(path)
        self.cuda_graph = cuda_graph
        self.flavor: F.Flavor | None = None
        self._engine = self._ctx = self._runtime = self._workspace = None
        self._graph = None
        self.engine_bytes = 0

    # lifecycle -------------------------------------------------------------
    def activate_impl(self) -> None:
        torch = require("torch", "running TensorRT engines")
        if not str(self.device).startswith("cuda"):
            raise RuntimeUnavailableError(f"{self.name}: TensorRT engines run on a CUDA GPU; use device 'cuda' "
                                          f"(got {self.device!r})")
        t0 = time.perf_counter()
        data = read_engine(self.path)
        record = engine_record(self.path)
        fl = runtime_flavor(check_engine_file(self.path, data, record), self.path)
        dev = torch.device(self.device)
        index = dev.index if dev.index is not None else 0
        gpu = F.local_gpu(index)
        if gpu is not None:
            ok, why = fl.runs_on(gpu)
            if not ok:
                raise RuntimeUnavailableError(f"{self.name}: {why}")
        trt = fl.trt
        self._logger = F.capture_logger(trt)
        runtime = trt.Runtime(self._logger)  # needs no GPU: the header checks below run everywhere
        check_loadable(fl, runtime, self._logger, data, self.path)
        if gpu is None:
            raise RuntimeUnavailableError(f"{self.name}: no CUDA GPU here (torch sees none), so {fl.label} "
                                          "engines cannot run")
        if record and (record.get("options") or {}).get("version_compatible"):
            runtime.engine_host_code_allowed = True  # a version-compatible plan carries its lean runtime
        self._dev = torch.device("cuda", index)
        with torch.cuda.device(index):
            self._logger.clear()
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise load_error(fl, self._logger, self.path)
            self._runtime, self._engine, self.flavor = runtime, engine, fl
            self._ctx = self._make_context(torch, trt, engine)
        self.engine_bytes = len(data)
        self._io = engine_io(trt, engine)
        self.input_names = [t["name"] for t in self._io if t["mode"] == "input"]
        self.output_names = [t["name"] for t in self._io if t["mode"] == "output"]
        self.input_shapes = {t["name"]: [d if d >= 0 else None for d in t["shape"]]
                             for t in self._io if t["mode"] == "input"}
        self._dtype = {t["name"]: getattr(torch, TORCH_DTYPES.get(t["dtype"].upper(), "float32")) for t in self._io}
        self._profile = {t["name"]: t["profiles"][0] for t in self._io if t.get("profiles")}
        self.load_time_s = time.perf_counter() - t0

    def _make_context(self, torch, trt, engine):
        """An execution context whose scratch memory is a torch allocation (shared allocator, reported by torch)."""
        strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
        if strategy is None or not hasattr(strategy, "USER_MANAGED"):
            ctx = engine.create_execution_context()
        else:
            ctx = engine.create_execution_context(strategy.USER_MANAGED)
            size = device_memory_size(engine)
            self._workspace = torch.empty(max(size, 1), dtype=torch.uint8, device=self._dev)
            if hasattr(ctx, "set_device_memory"):
                ctx.set_device_memory(self._workspace.data_ptr(), size)
            else:
                ctx.device_memory = self._workspace.data_ptr()
        if ctx is None:
            why = (self._logger.errors() or ["no reason given"])[0]
            raise ModelLoadError(f"{self.flavor.label} could not create an execution context for {self.path}: {why}")
        return ctx

    def deactivate_impl(self) -> None:
        self._graph = None
        self._static = None
        self._ctx = None  # the context before the engine, the engine before the runtime
        self._engine = None
        self._runtime = None
        self._workspace = None

    # inference -------------------------------------------------------------
    def _check_profile(self, name: str, shape) -> None:
        p = self._profile.get(name)
        if p is None:
            return
        if len(shape) != len(p["min"]) or any(not lo <= s <= hi for s, lo, hi in zip(shape, p["min"], p["max"])):
            raise InputSpecError(f"{self.name}: input {name!r} has shape {list(shape)}, outside the engine's "
                                 f"profile min {p['min']} .. max {p['max']}; rebuild with a wider --batch/--dim")

    def _bind(self, torch, feeds: Mapping, own: bool = False) -> tuple[dict, dict]:
        """Set shapes and addresses; ``own`` binds copies of the inputs (a graph's static buffers), never the
        caller's tensors."""
        ctx = self._ctx
        inputs = {}
        for n in self.input_names:
            t = feeds[n].to(self._dev, non_blocking=True)
            if t.dtype != self._dtype[n]:
                t = t.to(self._dtype[n])
            t = t.clone(memory_format=torch.contiguous_format) if own else t.contiguous()
            self._check_profile(n, tuple(t.shape))
            if not ctx.set_input_shape(n, tuple(t.shape)):
                why = (self._logger.errors() or ["no reason given"])[0]
                raise InputSpecError(f"{self.name}: the engine rejected shape {list(t.shape)} for input {n!r}: {why}")
            ctx.set_tensor_address(n, t.data_ptr())
            inputs[n] = t
        outputs = {}
        for n in self.output_names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise ModelLoadError(f"{self.name}: output {n!r} has a data-dependent shape {list(shape)}, "
                                     "which this runner does not allocate")
            o = torch.empty(shape, dtype=self._dtype[n], device=self._dev)
            ctx.set_tensor_address(n, o.data_ptr())
            outputs[n] = o
        return inputs, outputs

    def _execute(self, stream_handle: int) -> None:
        self._logger.clear()
        if not self._ctx.execute_async_v3(stream_handle):
            errs = self._logger.errors()
            raise ModelLoadError(f"{self.name}: {self.flavor.label} execution failed: "
                                 f"{errs[0] if errs else 'no reason given'}")

    def infer_impl(self, feeds: Mapping) -> dict:
        torch = require("torch")
        if self.cuda_graph:
            return self._infer_graph(torch, feeds)
        with torch.cuda.device(self._dev):
            _inputs, outputs = self._bind(torch, feeds)
            self._execute(torch.cuda.current_stream(self._dev).cuda_stream)
        return outputs  # inputs stay referenced until here; the stream orders their reuse

    def _infer_graph(self, torch, feeds: Mapping) -> dict:
        """Replay a CUDA graph captured for these input shapes (captured on the first call with them)."""
        key = tuple((n, tuple(feeds[n].shape)) for n in self.input_names)
        with torch.cuda.device(self._dev):
            stream = torch.cuda.current_stream(self._dev)
            if self._graph is None or self._graph_key != key:
                self._graph = None
                inputs, outputs = self._bind(torch, feeds, own=True)  # static buffers the graph reads and writes
                self._execute(stream.cuda_stream)  # warm-up outside capture: shape-dependent setup happens here
                stream.synchronize()
                if hasattr(self._ctx, "is_stream_capturable") and not self._ctx.is_stream_capturable(stream.cuda_stream):
                    raise RuntimeUnavailableError(f"{self.name}: {self.flavor.label} cannot capture this engine in "
                                                  "a CUDA graph; run without --cuda-graph")
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    self._execute(torch.cuda.current_stream(self._dev).cuda_stream)
                self._graph, self._graph_key, self._static = graph, key, (inputs, outputs)
            else:
                inputs, outputs = self._static
                for n in self.input_names:
                    inputs[n].copy_(feeds[n], non_blocking=True)
                self._graph.replay()
            return {n: o.clone() for n, o in outputs.items()}  # the static outputs are overwritten next replay

    # reporting -------------------------------------------------------------
    def memory_report(self) -> dict[str, float]:
        if self._engine is None:
            return {}
        torch = require("torch")
        return {"engine_device_memory_mb": device_memory_size(self._engine) / MB,
                "engine_file_mb": self.engine_bytes / MB,
                "torch_allocated_mb": torch.cuda.memory_allocated(self._dev) / MB,
                "torch_reserved_mb": torch.cuda.memory_reserved(self._dev) / MB}

    def describe(self) -> dict:
        d = super().describe()
        if self.flavor is not None:
            d.update(runtime=self.flavor.label, cuda_graph=self.cuda_graph, io=self._io)
        return d
