"""What a pipeline module IS: its IO contract, preprocessing, alignment and parity gates.

Specs are data.  Exporters, passes, runners, the pipeline and the benchmark
read them; nothing guesses preprocessing or IO names from a graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

Precision = Literal["fp32", "fp16", "int8"]
BATCH = "batch"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output.

    ``shape`` holds ints for fixed axes and strings for dynamic axes (the
    ONNX dim_param).  ``example`` gives the concrete size used for a dynamic
    axis when an example tensor is built (batch defaults to 1).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    value_range: tuple[float, float] | None = None
    doc: str = ""
    example: Mapping[str, int] = field(default_factory=dict)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    @property
    def has_batch(self) -> bool:
        return bool(self.shape) and self.shape[0] == BATCH

    def concrete(self, batch: int = 1, **dims: int) -> tuple[int, ...]:
        sizes = {BATCH: batch, **self.example, **dims}
        out = []
        for d in self.shape:
            if isinstance(d, int):
                out.append(d)
            elif d in sizes:
                out.append(int(sizes[d]))
            else:
                raise KeyError(f"{self.name}: no size for dynamic axis {d!r}")
        return tuple(out)

    def contract(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "range": list(self.value_range) if self.value_range else None, "doc": self.doc}


@dataclass(frozen=True)
class Preprocess:
    """How an RGB uint8 image becomes the model's input: ``(pixel - mean) / std``
    in the given channel order, mean and std in 0..255 pixel units."""

    color: Literal["RGB", "BGR"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        m, s = self.mean, self.std
        if len(set(m)) == 1 and len(set(s)) == 1:
            return f"{self.color}, (x - {m[0]:g}) / {s[0]:g}"
        return f"{self.color}, (x - {list(m)}) / {list(s)}"


@dataclass(frozen=True)
class Template:
    """A 5-point alignment template: left eye, right eye, nose tip, left and
    right mouth corners, in pixels of a ``size`` x ``size`` crop."""

    name: str
    size: int
    points: tuple[tuple[float, float], ...]

    def scaled(self, size: int) -> tuple[tuple[float, float], ...]:
        k = size / self.size
        return tuple((x * k, y * k) for x, y in self.points)


@dataclass(frozen=True)
class Gate:
    """``metric op threshold``: e.g. ``cosine_min >= 0.999``."""

    metric: str
    op: Literal[">=", "<="]
    threshold: float

    def passes(self, value: float) -> bool:
        if value != value:  # NaN never passes
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def gates(*items: tuple[str, str, float]) -> tuple[Gate, ...]:
    return tuple(Gate(m, op, t) for m, op, t in items)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModuleSpec:
    """A registered pipeline module (one variant of one module kind)."""

    module: str
    variant: str
    summary: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    builder: str  # "package.module:function"; called as fn(spec, **builder_kwargs)
    builder_kwargs: Mapping[str, object] = field(default_factory=dict)
    input_size: tuple[int, int] | None = None  # (H, W) of the image input
    preprocess: Preprocess | None = None
    template: Template | None = None
    output_semantics: str = ""
    task: str = "image"  # task-metric family used by parity: embedding|image|detection|landmarks|blend|raw
    gates: Mapping[str, tuple[Gate, ...]] = field(default_factory=dict)
    # Used instead of the task gates when seeded weights make the task metric meaningless
    # (e.g. a seeded detector finds no face, so box IoU is undefined).  Recorded in the manifest.
    fallback_gates: Mapping[str, tuple[Gate, ...]] = field(default_factory=dict)
    opset: int = 17
    batch_profile: tuple[int, int, int] = (1, 1, 8)  # min, opt, max for the dynamic batch axis
    fp16_block_ops: tuple[str, ...] = ()
    # why the ops of fp16_block_ops stay FP32, as the FP16 record says it for each kept node (default: fragile)
    fp16_block_reason: str = "numerically fragile in FP16"
    in_default_pipeline: bool = True
    pretrained: bool = False  # True when the default weights are trained (shipped by a package), not seeded
    notes: str = ""
    # how real faces become this module's inputs: a feed of ffexport.faces.feeds.FEEDS (aligned, generator,
    # letterbox, blender, pnet, box_crop) or "package.module:function" for a module registered elsewhere
    feed: str = "aligned"
    full_frame: bool = False  # fed whole frames (no landmarks needed), not crops aligned by landmarks
    ci: bool = False  # the variant CI tests this module with (the real architecture at its smallest size)
    quantizable: bool = True  # False: no weights INT8 makes cheaper (its int8.onnx is its FP32 graph)
    # "emap": the generator's ``source`` input is ``normalize(normalize(embedding) @ emap)``, ``emap`` being the
    # 512 x 512 matrix stored as the last initializer of the module's FP32 ONNX (the public inswapper layout)
    source_transform: str = ""
    # "" for a module ffexport builds in torch; for a user's ONNX file (``--onnx MODULE=PATH``) the layout it
    # was recognised as and the file's name: that file, not a torch model, is its FP32 reference
    origin: str = ""

    @property
    def key(self) -> str:
        return f"{self.module}/{self.variant}"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes for t in (*self.inputs, *self.outputs) if t.dynamic_axes}

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def stage_precision(self, precision: str) -> str:
        """The precision this module runs at in a pipeline asked for ``precision``: a module with nothing to
        quantise runs its FP32 artifact when INT8 is asked for."""
        return "fp32" if precision == "int8" and not self.quantizable else precision

    def gates_for(self, precision: str) -> tuple[Gate, ...]:
        return tuple(self.gates.get(precision, ()))

    def contract(self) -> dict:
        """The IO contract as recorded in manifests and checked by the pipeline."""
        return {
            "module": self.module,
            "variant": self.variant,
            "inputs": [t.contract() for t in self.inputs],
            "outputs": [t.contract() for t in self.outputs],
            "input_size": list(self.input_size) if self.input_size else None,
            "preprocess": self.preprocess.describe() if self.preprocess else None,
            "template": self.template.name if self.template else None,
            "output_semantics": self.output_semantics,
            **({"source_transform": self.source_transform} if self.source_transform else {}),
        }

