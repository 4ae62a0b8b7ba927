"""A pipeline stage: one module's spec and the runner that executes it (torch, onnxruntime or TensorRT).

``make_runner`` asks the artifacts layer (:mod:`ffexport.artifacts.find`) for what a backend runs, found or
built and checked against the spec's IO contract before anything runs:

* ``torch``: the module built by ``build_model`` (seeded, trained package weights, or ``checkpoint``),
  fp32 or fp16;
* ``compile``: the same module through ``torch.compile`` (CUDA graphs on a GPU; inductor's cache in
  ``<out>/.inductor``);
* ``ort``: the module's ONNX artifact at the precision;
* ``trt``: its TensorRT engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..artifacts.find import Say, _quiet, engine_artifact, onnx_artifact
from ..backends.base import Runner
from ..errors import RuntimeUnavailableError, UnknownNameError
from ..vision.mtcnn import bucket
from ..vocab import BACKENDS, PRECISIONS, TORCH_BACKENDS


class Stage:
    """One module of the pipeline: ``stage(name=tensor, ...) -> {output: float32 tensor}``."""

    def __init__(self, spec, runner: Runner, backend: str, precision: str, source: str = ""):
        self.spec, self.runner = spec, runner
        self.backend, self.precision, self.source = backend, precision, source
        # largest batch one call may take (TensorRT engines are built for a batch profile)
        self.max_batch: int | None = int(spec.batch_profile[2]) if backend == "trt" else None
        # a compiled module records a CUDA graph per input shape: batches are padded to a few sizes (powers of two)
        self.pad_batches = backend == "compile"
        # a compiled stage's calls of one item run a static graph of their own instead of the dynamic one padded
        # to 2 (see warm_single_item)
        self.single_item_graph = False
        # onnxruntime CUDA re-plans a convolutional model kept in one session (too large for a session per shape)
        # whenever its input shape changes: such a stage of fixed item shape runs its items in calls of a few
        # sizes (powers of two up to ORT_CALL_CAP, see call_sizes), each size replayed from a CUDA-graph session
        # of its own (OrtRunner's cuda_graph), so the number of faces in a frame never re-plans the model; one of
        # variable item shape (the blender, on each face's region) gets one item per call
        self.call_sizes = False
        self._warm: set[int] = set()  # call sizes run until captured (warm_call_sizes)
        if (backend == "ort" and str(getattr(runner, "device", "")).startswith("cuda")
                and getattr(runner, "convolutional", False) and (getattr(runner, "shape_sessions", 1) or 1) <= 1):
            if _fixed_item_shape(runner):
                self.call_sizes = True
                self.max_batch = ORT_CALL_CAP
                if hasattr(runner, "cuda_graph"):
                    runner.cuda_graph = True
            else:
                self.max_batch = 1

    @property
    def module(self) -> str:
        return self.spec.module

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = next(iter(feeds.values())).shape[0]
        if self.call_sizes and n:
            return self._run_sizes(feeds, n)
        if self.max_batch is None or n <= self.max_batch:
            return self._run(feeds)
        parts = [self._run({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                 for i in range(0, n, self.max_batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _run(self, feeds):
        if self.pad_batches:
            return self._run_padded(feeds)
        out = self.runner.infer(feeds)
        return {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v) for k, v in out.items()}

    def run_eager(self) -> None:
        """A compiled stage runs its eager module, unpadded (inside a caller's CUDA graph, or for inputs whose
        shape changes nearly every call); other stages are eager already."""
        if self.backend == "compile":
            self.runner.eager = True
            self.pad_batches = False

    def channels_last(self) -> bool:
        """Keep a torch module's weights channels-last (NHWC) on CUDA, for callers that feed it channels-last
        inputs: cuDNN's FP16 tensor-core convolutions then need no layout transpose before and after each
        convolution.  True when done (torch and compile backends on CUDA); the results are the same up to the
        convolution algorithms' rounding."""
        if self.backend not in TORCH_BACKENDS or not str(self.runner.device).startswith("cuda"):
            return False
        self.runner.model = self.runner.model.to(memory_format=torch.channels_last)
        return True

    def warm_call_sizes(self, items: int) -> list[int]:
        """Run each call size that calls of up to ``items`` items use (powers of two up to ``items`` rounded up to
        one, at least 2, at most ``max_batch``) until its CUDA graph is captured, so that no size is first met, and
        its session made, while frames wait (one to two seconds for a large model).  Size 2 is warmed for calls
        of one frame too: a frame with a second face makes a call of 2.  Only for a stage that runs in call sizes;
        returns the sizes warmed now."""
        if not self.call_sizes:
            return []
        top = min(self.max_batch or ORT_CALL_CAP, bucket(int(items), smallest=2))
        shapes = self.runner.input_shapes
        warmed, size = [], 1
        while size <= top:
            if size not in self._warm:
                feeds = {n: torch.zeros((size, *shapes[n][1:]), device=self.runner.device) for n in shapes}
                for _ in range(WARM_RUNS):
                    self._run(feeds)
                self._warm.add(size)
                warmed.append(size)
            size *= 2
        return warmed

    def _run_sizes(self, feeds, n: int):
        """``n`` items in calls of :func:`call_sizes`' sizes, the last call's missing items copies of its last."""
        parts, start = [], 0
        for size in call_sizes(n, self.max_batch or ORT_CALL_CAP):
            m = min(size, n - start)
            out = self._run(_padded({k: v[start:start + m] for k, v in feeds.items()}, size))
            parts.append({k: v[:m] for k, v in out.items()})
            start += m
        return parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def warm_single_item(self) -> None:
        """A compiled stage on CUDA that mostly gets one item a call (the generator of a pipeline fed one frame a
        call): compile its dynamic graph (2 items) and a static one for a single item, before any frame waits.
        The static graph runs one item instead of two, with kernels specialised to its shapes."""
        if self.backend != "compile" or not str(self.runner.device).startswith("cuda") or self.runner.eager:
            return
        if not all(isinstance(d, int) for t in self.spec.inputs for d in t.shape[1:]):
            return  # an input of variable size: nothing to warm
        self.single_item_graph = True
        # inference tensors, as the pipeline's: a graph compiled for other tensors would be compiled again (its
        # guards check) at the first real call of its shape, while a frame waits
        with torch.inference_mode():
            for n in (2, 1):  # 2 first: the first call decides that the batch axis is dynamic
                feeds = {t.name: torch.zeros((n, *t.shape[1:]), device=self.runner.device) for t in self.spec.inputs}
                for _ in range(WARM_RUNS):
                    self._run(feeds)

    def _run_padded(self, feeds):
        n = next(iter(feeds.values())).shape[0]
        # torch.compile specialises a batch of 1: 2 keeps the batch axis dynamic, unless one item has its own graph
        smallest = 1 if self.single_item_graph and n == 1 else 2
        out = self.runner.infer(_padded(feeds, bucket(n, smallest=smallest)))
        return {k: (v[:n].float() if v.is_floating_point() else v[:n]) for k, v in out.items()}

    __call__ = run

    def close(self) -> None:
        self.runner.deactivate()

    def describe(self) -> dict:
        d = {"module": self.spec.key, "backend": self.backend, "precision": self.precision, "source": self.source}
        if self.max_batch is not None:  # the largest call (an engine's profile, a memory cap, onnxruntime's sizes)
            d["max_items_per_call"] = self.max_batch
        if self.call_sizes:
            d["call_sizes"] = f"powers of two up to {self.max_batch}, padded"
        cuda_graph = self.runner.describe().get("cuda_graph") if self.backend == "ort" else None
        if cuda_graph:
            d["cuda_graph"] = cuda_graph
        return d


ORT_CALL_CAP = 32  # the largest call of an onnxruntime-CUDA stage that runs in call sizes (Stage.call_sizes)
# runs of a call size until its CUDA graph replays: the shared session's (the output shapes), then the size's
# graph session's first run, then onnxruntime captures
WARM_RUNS = 3


def call_sizes(n: int, cap: int = ORT_CALL_CAP) -> list[int]:
    """The sizes of the calls that run ``n`` items, each a power of two of at most ``cap`` (a power of two): calls of
    ``cap`` while at least ``cap`` items are left; then a remainder of at least 3/4 of the next power of two is padded
    up to it, a smaller one takes the power of two below and goes on (7 -> [8], 9 -> [8, 1], 5 -> [4, 1])."""
    sizes: list[int] = []
    while n > 0:
        if n >= cap:
            sizes.append(cap)
            n -= cap
            continue
        up = bucket(n, smallest=1)
        if 4 * n >= 3 * up:
            sizes.append(up)
            break
        sizes.append(up >> 1)
        n -= up >> 1
    return sizes


def _padded(feeds: Mapping[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """``feeds`` with copies of their last item appended up to ``size`` items."""
    n = next(iter(feeds.values())).shape[0]
    if size <= n:
        return dict(feeds)
    return {k: torch.cat([v, v[-1:].expand(size - n, *v.shape[1:])]) for k, v in feeds.items()}


def _fixed_item_shape(runner) -> bool:
    """Whether every input of ``runner`` has a fixed shape apart from its batch axis (unknown: no)."""
    shapes = getattr(runner, "input_shapes", None)
    return bool(shapes) and all(all(isinstance(d, int) for d in dims[1:]) for dims in shapes.values())


# --- runners --------------------------------------------------------------------------------

def make_runner(spec, backend: str, precision: str = "fp32", device: str = "cpu", out: str | Path = "artifacts",
                checkpoint=None, build_missing: bool = True, say: Say = _quiet, config_dir=None) -> Runner:
    """A runner for ``spec`` on ``backend`` at ``precision`` on ``device`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    if backend in TORCH_BACKENDS:
        if precision == "int8":
            raise RuntimeUnavailableError(f"{spec.key}: the {backend} backend runs fp32 or fp16, not int8; "
                                          "use --backend ort or trt for int8")
        from ..models import build_model

        model = build_model(spec, checkpoint=checkpoint)
        if backend == "compile":
            from ..backends.compiled import CompileRunner

            return CompileRunner(model, spec=spec, device=device, precision=precision,
                                 cache_dir=Path(out) / ".inductor")
        from ..backends.torch import TorchRunner

        return TorchRunner(model, spec=spec, device=device, precision=precision)
    if backend == "ort":
        from ..backends.ort import OrtRunner

        path = onnx_artifact(spec, precision, out, checkpoint, build_missing, say, config_dir)
        return OrtRunner(path, spec=spec, device=device)
    if not device.startswith("cuda"):
        raise RuntimeUnavailableError("the TensorRT backend runs on a GPU: use --device cuda, or --backend ort/torch")
    from ..backends.trt import TrtRunner

    path = engine_artifact(spec, precision, out, checkpoint, build_missing, device, say, config_dir)
    return TrtRunner(path, spec=spec, device=device)


def make_stage(spec, backend: str, precision: str = "fp32", device: str = "cpu", out: str | Path = "artifacts",
               checkpoint=None, build_missing: bool = True, say: Say = _quiet, config_dir=None) -> Stage:
    runner = make_runner(spec, backend, precision, device, out, checkpoint, build_missing, say, config_dir)
    source = str(getattr(runner, "path", "")) or (f"torch ({checkpoint})" if checkpoint else "torch (default weights)")
    runner.activate()
    return Stage(spec, runner, backend, precision, source)
