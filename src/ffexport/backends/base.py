"""One runner interface for every backend (torch, onnxruntime CPU/CUDA, TensorRT).

Inputs and outputs are dicts of name -> ``torch.Tensor``.  ``infer()`` checks
the feed against the runner's IO contract, then calls ``infer_impl()``; a
runner is a context manager that frees its session/engine on exit.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Mapping, Sequence

from ..errors import InputSpecError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..specs.base import ModuleSpec

BACKENDS = ("torch", "compile", "ort", "trt")


class Runner(abc.ABC):
    """Base class of every backend runner.

    Subclasses set ``backend`` and implement ``activate_impl``, ``infer_impl``
    and ``deactivate_impl``; they fill ``input_names``/``output_names`` and may
    fill ``input_shapes`` (``None`` or a string marks a dynamic axis).
    """

    backend: str = "?"

    def __init__(self, name: str = "", device: str = "cpu", spec: "ModuleSpec | None" = None):
        self.name = name
        self.device = device
        self.spec = spec
        self.input_names: list[str] = list(spec.input_names) if spec else []
        self.output_names: list[str] = list(spec.output_names) if spec else []
        self.input_shapes: dict[str, Sequence[int | str | None]] = (
            {t.name: t.shape for t in spec.inputs} if spec else {})
        self.active = False
        self.load_time_s: float | None = None

    # context manager -------------------------------------------------------
    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.active:
            self.activate_impl()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False

    close = deactivate

    # inference -------------------------------------------------------------
    def infer(self, feeds: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        if not self.active:
            self.activate()
        self.check_feeds(feeds)
        return self.infer_impl(feeds)

    __call__ = infer

    def check_feeds(self, feeds: Mapping[str, "torch.Tensor"]) -> None:
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise InputSpecError(f"{self.name}: inputs {sorted(feeds)} do not match the model's "
                                 f"{self.input_names} (missing {missing}, unexpected {extra})")
        for n, t in feeds.items():
            want = self.input_shapes.get(n)
            if want is None:
                continue
            got = tuple(t.shape)
            if len(got) != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want, got)):
                raise InputSpecError(f"{self.name}: input {n!r} has shape {list(got)}, expected {list(want)}")

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feeds: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]: ...

    def deactivate_impl(self) -> None:  # optional
        pass

    # reporting -------------------------------------------------------------
    def memory_report(self) -> dict[str, float]:
        """Backend-specific memory figures in MB (arena, engine device memory...)."""
        return {}

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "name": self.name, "device": self.device}
