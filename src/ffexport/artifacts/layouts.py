"""The public ONNX layouts ffexport recognises in a user's file, and how each maps onto a module's spec.

A layout is read from the graph alone (input and output count, ranks, shapes, a last initializer); names
in the public files are often numbers (``input.1``, ``448``), so they are matched by position and shape:

* ``scrfd`` (detector): insightface's SCRFD / RetinaFace files (det_10g, scrfd_2.5g, retinaface_10g): one
  image input (640 x 640 or dynamic); per stride 8/16/32 a score, a box-distance and (9 outputs) a keypoint
  output, in that order, two anchors per cell, ``(N, C)`` or ``(1, N, C)``; BGR ``(x - 127.5) / 128``;
* ``arcface`` (encoder): 1 x 3 x 112 x 112 in, 512 out (w600k_r50); RGB ``(x - 127.5) / 127.5``, or raw
  pixels when the graph starts by normalising them itself (Sub and Mul among its first nodes);
* ``inswapper`` (generator): inputs ``target`` 1 x 3 x 128 x 128 RGB in [0, 1] and ``source`` 1 x 512, a
  512 x 512 ``emap`` as the last initializer: the source fed is ``normalize(normalize(embedding) @ emap)``;
* ``simswap`` (generator): the same inputs at 256 or 512 without ``emap``: the source is the normalised
  embedding;
* ``gfpgan`` (enhancer): GFPGAN / GPEN, 1 x 3 x S x S in and out, RGB in [-1, 1], S in 256 / 512 / 1024;
* ``2dfan`` (landmarker): FaceFusion's 2dfan4, 1 x 3 x 256 x 256 in [0, 1]; 68 x 64 x 64 heatmaps, and
  68 x 3 points (x, y in heatmap cells, score) where present.

:func:`recognise` returns the :class:`Plan` that turns the file into the module's FP32 artifact: which of
its inputs and outputs become which spec tensors, and the small graph additions (a reshape to the spec's
batched shape, the landmarker's decode) that do it.  A file that fits no layout of the module, or fits
another module's, is one line naming what was expected against what was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import InputSpecError
from ..specs.base import BATCH, Preprocess, TensorSpec

DETECT_SIZE = 640
STRIDES = (8, 16, 32)
ANCHORS = 2
HEATMAP = 64


@dataclass
class Tensor:
    name: str
    dims: list  # int, str (symbolic) or None

    def fixed(self, axis: int) -> int | None:
        d = self.dims[axis] if axis < len(self.dims) else None
        return d if isinstance(d, int) and d > 0 else None

    def describe(self) -> str:
        return f"{self.name} [{'x'.join(str(d) if isinstance(d, int) and d > 0 else '?' for d in self.dims)}]"


@dataclass
class Graph:
    """What recognition reads from a model: its inputs, outputs, first ops and trailing initializer."""

    path: Path
    inputs: list[Tensor]
    outputs: list[Tensor]
    first_ops: list[str]
    emap: tuple | None  # shape of an unused last initializer called emap
    run_dims: dict = field(default_factory=dict)  # output name -> dims of a run at the detector size

    def describe(self) -> str:
        return (f"{len(self.inputs)} input(s) {', '.join(t.describe() for t in self.inputs)} -> "
                f"{len(self.outputs)} output(s) {', '.join(t.describe() for t in self.outputs[:4])}"
                + (" ..." if len(self.outputs) > 4 else ""))


@dataclass
class Plan:
    """How a user's file becomes a module's FP32 artifact (see :mod:`ffexport.artifacts.adopt`)."""

    module: str
    layout: str
    inputs: dict  # spec input name -> the file's input name
    outputs: dict  # spec output name -> (the file's output name, reshape-to dims or None)
    size: int  # square image input size
    preprocess: Preprocess
    source_transform: str = ""
    decode: str = ""  # "2dfan-heatmaps" | "2dfan-points": landmarker outputs computed in the graph
    notes: list[str] = field(default_factory=list)


def read_graph(model, path: Path) -> Graph:
    from ..passes import graph as G

    dims = G.io_dims(model)
    inputs = [Tensor(i.name, dims[i.name]) for i in G.graph_inputs(model)]
    outputs = [Tensor(o.name, dims[o.name]) for o in model.graph.output]
    last = model.graph.initializer[-1] if model.graph.initializer else None
    emap = None
    if last is not None and (last.name == "emap" or list(last.dims) == [512, 512]):
        if last.name not in {i for n in model.graph.node for i in n.input}:
            emap = tuple(last.dims)
    return Graph(Path(path), inputs, outputs, [n.op_type for n in model.graph.node[:8]], emap)


def _image(t: Tensor, size: int | None = None) -> bool:
    if len(t.dims) != 4 or t.fixed(1) != 3:
        return False
    h, w = t.fixed(2), t.fixed(3)
    if size is None:
        return True
    return (h is None or h == size) and (w is None or w == size)


def _square(t: Tensor) -> int | None:
    h, w = t.fixed(2), t.fixed(3)
    return h if h is not None and h == w else None


def _last(t: Tensor, dims: list | None = None) -> int | None:
    d = (dims or t.dims)
    return d[-1] if d and isinstance(d[-1], int) and d[-1] > 0 else None


# --- per layout: (match -> Plan or a reason) -----------------------------------------------------

def _scrfd(g: Graph) -> Plan | str:
    if len(g.inputs) != 1 or not _image(g.inputs[0], DETECT_SIZE):
        return f"one image input 1x3x{DETECT_SIZE}x{DETECT_SIZE} (or dynamic)"
    if len(g.outputs) not in (6, 9):
        return "9 outputs (score, box and keypoints per stride 8/16/32) or 6 without keypoints"
    if len(g.outputs) == 6:
        return ("9 outputs: score, box and keypoint outputs per stride 8/16/32 (this file has 6: no keypoint "
                "outputs, and alignment needs the 5 keypoints)")
    counts = {s: (DETECT_SIZE // s) ** 2 * ANCHORS for s in STRIDES}
    outputs = {}
    for k, (kind, width) in enumerate((("score", 1), ("bbox", 4), ("kps", 10))):
        for j, s in enumerate(STRIDES):
            o = g.outputs[k * 3 + j]
            dims = g.run_dims.get(o.name) or o.dims
            n = 1
            for d in dims[:-1]:
                n *= d if isinstance(d, int) and d > 0 else 0
            if _last(o, dims) != width or n != counts[s]:
                return (f"output {k * 3 + j + 1} ({o.name}) = {kind} of stride {s}: "
                        f"{counts[s]}x{width}, found {dims}")
            # the spec's 2-D (batch x anchors, k); a batched (1, N, k) file gets a reshape
            outputs[f"{kind}_{s}"] = (o.name, None if len(dims) == 2 else [-1, width])
    return Plan("detector", "scrfd", {"input": g.inputs[0].name}, outputs, DETECT_SIZE,
                Preprocess("BGR", (127.5,) * 3, (128.0,) * 3))


def _arcface(g: Graph) -> Plan | str:
    if len(g.inputs) != 1 or not _image(g.inputs[0], 112):
        return "one input 1x3x112x112"
    if len(g.outputs) != 1 or _last(g.outputs[0]) != 512:
        return "one 512-d output"
    raw = "Sub" in g.first_ops and "Mul" in g.first_ops
    pre = Preprocess("RGB", (0.0,) * 3, (1.0,) * 3) if raw else Preprocess("RGB", (127.5,) * 3, (127.5,) * 3)
    p = Plan("encoder", "arcface", {"input": g.inputs[0].name}, {"embedding": (g.outputs[0].name, None)}, 112, pre)
    if raw:
        p.notes.append("the graph normalises its input itself (Sub, Mul first): fed raw RGB pixels")
    return p


def _swapper(g: Graph, want_emap: bool) -> Plan | str:
    if len(g.inputs) != 2:
        return "two inputs: target 1x3xSxS and source 1x512"
    image = [t for t in g.inputs if _image(t)]
    latent = [t for t in g.inputs if len(t.dims) == 2 and _last(t) == 512]
    if len(image) != 1 or len(latent) != 1:
        return "inputs target 1x3xSxS (RGB in [0, 1]) and source 1x512"
    size = _square(image[0])
    if size is None:
        return f"a square target input, found {image[0].describe()}"
    if len(g.outputs) != 1 or not _image(g.outputs[0], size):
        return f"one output 1x3x{size}x{size}"
    has_emap = g.emap is not None and tuple(g.emap) == (512, 512)
    if want_emap and (size != 128 or not has_emap):
        return "inswapper: 128x128 target and a 512x512 emap as the last initializer"
    if not want_emap and has_emap:
        return "simswap: no emap initializer"
    return Plan("generator", "inswapper" if want_emap else "simswap",
                {"target": image[0].name, "source": latent[0].name}, {"output": (g.outputs[0].name, None)}, size,
                Preprocess("RGB", (0.0,) * 3, (255.0,) * 3), source_transform="emap" if want_emap else "")


def _gfpgan(g: Graph) -> Plan | str:
    if len(g.inputs) != 1 or not _image(g.inputs[0]) or _square(g.inputs[0]) not in (256, 512, 1024):
        return "one input 1x3xSxS, S = 256, 512 or 1024"
    size = _square(g.inputs[0])
    if len(g.outputs) != 1 or not _image(g.outputs[0], size):
        return f"one output 1x3x{size}x{size}"
    return Plan("enhancer", "gfpgan", {"input": g.inputs[0].name}, {"output": (g.outputs[0].name, None)}, size,
                Preprocess("RGB", (127.5,) * 3, (127.5,) * 3))


def _fan(g: Graph) -> Plan | str:
    if len(g.inputs) != 1 or not _image(g.inputs[0], 256) or _square(g.inputs[0]) not in (256, None):
        return "one input 1x3x256x256"
    heat = [o for o in g.outputs if len(o.dims) == 4 and o.fixed(1) == 68 and o.fixed(2) == HEATMAP]
    pts = [o for o in g.outputs if len(o.dims) == 3 and o.fixed(1) == 68 and _last(o) == 3]
    if len(heat) != 1 or len(g.outputs) > 2 or (len(g.outputs) == 2 and len(pts) != 1):
        return "a 68x64x64 heatmap output, and a 68x3 point output where present"
    outputs = {"heatmaps": (heat[0].name, None)}
    if pts:
        outputs["points"] = (pts[0].name, None)
    return Plan("landmarker", "2dfan", {"input": g.inputs[0].name}, outputs, 256,
                Preprocess("RGB", (0.0,) * 3, (255.0,) * 3), decode="2dfan-points" if pts else "2dfan-heatmaps")


LAYOUTS: dict[str, tuple[str, Callable[[Graph], Plan | str]]] = {
    "scrfd": ("detector", _scrfd),
    "arcface": ("encoder", _arcface),
    "inswapper": ("generator", lambda g: _swapper(g, True)),
    "simswap": ("generator", lambda g: _swapper(g, False)),
    "gfpgan": ("enhancer", _gfpgan),
    "2dfan": ("landmarker", _fan),
}


def recognise(module: str, g: Graph, layout: str | None = None) -> Plan:
    """The plan for ``g`` as ``module`` (``layout`` forces one); a one-line :class:`InputSpecError` otherwise."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise InputSpecError(f"--contract layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        if LAYOUTS[layout][0] != module:
            raise InputSpecError(f"--contract layout {layout!r} is a {LAYOUTS[layout][0]} layout, not a {module} one")
    mine = [(name, fn) for name, (m, fn) in LAYOUTS.items() if m == module and (layout is None or name == layout)]
    if not mine:
        raise InputSpecError(f"{g.path.name}: ffexport knows no public ONNX layout for the {module}; "
                             f"modules with one: {', '.join(sorted({m for m, _ in LAYOUTS.values()}))}")
    reasons = []
    for name, fn in mine:
        got = fn(g)
        if isinstance(got, Plan):
            return got
        reasons.append(f"{name}: {got}")
    others = [(m, name) for name, (m, fn) in LAYOUTS.items() if m != module and isinstance(fn(g), Plan)]
    found = g.describe()
    if others:
        m, name = others[0]
        raise InputSpecError(f"--onnx {module}={g.path.name}: this file is in the {name} layout of the {m}, not a "
                             f"{module} layout: expected {'; or '.join(reasons)}; found {found}")
    raise InputSpecError(f"--onnx {module}={g.path.name}: no {module} layout matches: expected "
                         f"{'; or '.join(reasons)}; found {found} (describe unusual files with --contract FILE)")


def spec_tensors(plan: Plan, base, batch_dynamic: bool) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The adopted spec's inputs and outputs: the base spec's names and meanings at the file's size."""
    b = BATCH if batch_dynamic else 1

    def resize(t: TensorSpec) -> TensorSpec:
        shape = list(t.shape)
        if len(shape) == 4 and shape[1] == 3 and plan.size:  # size 0: no square image input (the blender)
            shape[2] = shape[3] = plan.size
        shape[0] = b if t.has_batch else shape[0]
        return replace(t, shape=tuple(shape))

    ins = tuple(resize(t) for t in base.inputs)
    outs = tuple(resize(t) for t in base.outputs)
    return ins, outs
