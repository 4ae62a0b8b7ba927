"""Per-module input feeds built from real faces: the exact inputs a registered module expects (names,
shapes, preprocessing, alignment), as float32 CPU tensors.

Which feed a module gets is part of its spec (``ModuleSpec.feed``): a name registered in :data:`FEEDS`
(``aligned``, ``generator``, ``letterbox``, ``blender``, ``pnet``, ``box_crop``) or ``package.module:function``
for a module registered outside ffexport."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from ..errors import InputSpecError
from ..specs.templates import ARCFACE_128
from .load import FaceImage, box_from_landmarks, synthetic_landmarks

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..specs.base import ModuleSpec

BLENDER_MAX_SIDE = 640
BLENDER_MASK = (0.3, 0.0, 0.0, 0.0, 0.0)
SOURCE_ENCODER = ("encoder", "iresnet18")


@dataclass
class _Item:
    face: FaceImage
    source: "torch.Tensor | None" = None  # generator: the source identity (512,)


def _landmarks(face: FaceImage) -> np.ndarray:
    return face.landmarks if face.landmarks is not None else synthetic_landmarks(*face.size)[0]


def _box(face: FaceImage) -> np.ndarray:
    return face.box if face.box is not None else box_from_landmarks(_landmarks(face))


def _aligned(face: FaceImage, template, size: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``1 x 3 x size x size`` crop in [0, 255] and its frame -> crop matrix."""
    import torch

    from ..vision.align import align_crop, to_tensor_image

    return align_crop(to_tensor_image(face.rgb), torch.from_numpy(_landmarks(face))[None].float(), template, size)


def _image_input(spec: "ModuleSpec"):
    return spec.inputs[0]


def _feed_aligned(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """Landmarker, encoder, enhancer (and any single-input module with a template)."""
    import torch

    from ..vision.align import normalize

    size = int(spec.input_size[0])
    crops = torch.cat([_aligned(it.face, spec.template, size)[0] for it in items])
    return {_image_input(spec).name: normalize(crops, spec.preprocess)}


def _feed_generator(spec: "ModuleSpec", items: list[_Item]) -> dict:
    import torch

    feeds = _feed_aligned(spec, items)
    feeds["source"] = torch.stack([it.source for it in items]).float()
    return feeds


def _feed_letterbox(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """Detector: letterboxed square frames (top-left aligned, zero padding) in the spec's colour/normalisation."""
    import torch

    from ..vision.align import letterbox, normalize, to_tensor_image

    size = int(spec.input_size[0])
    frames = torch.cat([letterbox(to_tensor_image(it.face.rgb), size)[0] for it in items])
    return {_image_input(spec).name: normalize(frames, spec.preprocess)}


def _resize(image: "torch.Tensor", hw: tuple[int, int]) -> "torch.Tensor":
    import torch.nn.functional as F

    if tuple(image.shape[-2:]) == tuple(hw):
        return image
    down = hw[0] < image.shape[-2] or hw[1] < image.shape[-1]
    return F.interpolate(image, size=hw, mode="bilinear", align_corners=False, antialias=down)


def _feed_pnet(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """P-Net: each image centre-cropped to the example aspect and resized to the example size."""
    import torch

    from ..vision.align import normalize, to_tensor_image

    tin = _image_input(spec)
    hh, ww = tin.concrete(1)[2:]
    out = []
    for it in items:
        img = to_tensor_image(it.face.rgb)
        h, w = img.shape[-2:]
        ch, cw = (h, round(h * ww / hh)) if w * hh > h * ww else (round(w * hh / ww), w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        out.append(_resize(img[..., y0:y0 + ch, x0:x0 + cw], (hh, ww)))
    return {tin.name: normalize(torch.cat(out), spec.preprocess)}


def _feed_box_crop(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """R-/O-Net: the face's square box resampled to the net's size, as the cascade does."""
    import torch

    from ..vision.align import normalize, to_tensor_image
    from ..vision.mtcnn import crop_boxes, square

    size = int(spec.input_size[0])
    crops = [crop_boxes(to_tensor_image(it.face.rgb), square(torch.from_numpy(_box(it.face))[None].float()), size)
             for it in items]
    return {_image_input(spec).name: normalize(torch.cat(crops), spec.preprocess)}


def _feed_blender(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """Blender: frame in [0, 1] (long side <= 640; a batch shares the first frame's size), its
    arcface_128 crop in [0, 1], the crop -> frame matrix and the default mask parameters."""
    import torch

    from ..vision.align import align_crop, invert_affine, to_tensor_image

    crop_size = int(spec.input("crop").concrete(1)[-1])
    frames, crops, mats = [], [], []
    hw = None
    for it in items:
        img = to_tensor_image(it.face.rgb)
        h, w = img.shape[-2:]
        if hw is None:
            k = min(1.0, BLENDER_MAX_SIDE / max(h, w))
            hw = (max(1, round(h * k)), max(1, round(w * k)))
        frame = _resize(img, hw)
        lm = torch.from_numpy(_landmarks(it.face)).float()[None] * torch.tensor([hw[1] / w, hw[0] / h])
        crop, M = align_crop(frame, lm, ARCFACE_128, crop_size)
        frames.append(frame / 255.0)
        crops.append(crop / 255.0)
        mats.append(invert_affine(M))
    n = len(items)
    return {"frame": torch.cat(frames), "crop": torch.cat(crops).clamp(0, 1), "affine": torch.cat(mats).float(),
            "mask": torch.tensor([BLENDER_MASK] * n, dtype=torch.float32)}


# feed name -> (builder(spec, items) -> {input: tensor}, needs a source identity)
FEEDS: dict[str, tuple[Callable[["ModuleSpec", list[_Item]], dict], bool]] = {
    "aligned": (_feed_aligned, False),  # one crop aligned to the spec's template (landmarker, encoder, enhancer)
    "generator": (_feed_generator, True),  # an aligned crop and another face's identity embedding
    "letterbox": (_feed_letterbox, False),  # a whole frame letterboxed to the input size (detector)
    "blender": (_feed_blender, False),  # frame, swapped crop, crop -> frame matrix and mask
    "pnet": (_feed_pnet, False),  # a whole frame at one pyramid scale (MTCNN P-Net)
    "box_crop": (_feed_box_crop, False),  # square crops of face boxes (MTCNN R-/O-Net)
}


def feed_for(spec: "ModuleSpec"):
    """(builder, needs a source identity) of ``spec.feed``."""
    name = getattr(spec, "feed", "aligned") or "aligned"
    if name in FEEDS:
        return FEEDS[name]
    if ":" in name:
        import importlib

        mod, _, fn = name.partition(":")
        try:
            build = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as exc:
            raise InputSpecError(f"{spec.key}: feed {name!r} cannot be imported ({exc})") from None
        return build, any(t.name == "source" for t in spec.inputs)
    raise InputSpecError(f"{spec.key}: unknown feed {name!r}; valid: {', '.join(FEEDS)} or package.module:function")


def default_source_embedder(seed: int = 0) -> Callable[[FaceImage], "torch.Tensor"]:
    """FaceImage -> L2-normalised 512-d embedding from ffexport's seeded iResNet-18 encoder on the
    face's arcface_112_v2 crop (a real-image identity vector when no trained encoder is given)."""
    import torch

    from .. import specs
    from ..models import build_model
    from ..vision.align import normalize

    spec = specs.get(*SOURCE_ENCODER)
    model = build_model(spec, seed=seed)

    def embed(face: FaceImage) -> torch.Tensor:
        crop, _ = _aligned(face, spec.template, int(spec.input_size[0]))
        with torch.inference_mode():
            out = model(normalize(crop, spec.preprocess))
        return (out[0] if isinstance(out, (tuple, list)) else out)[0]

    return embed


def np_copy(a):
    """A writable copy of an array or tensor (arrays read from ONNX files are read-only)."""
    return a.clone() if hasattr(a, "clone") else np.array(a, copy=True)


def source_transform(spec: "ModuleSpec", emap=None) -> "torch.Tensor | None":
    """The matrix a generator's source goes through (``spec.source_transform == "emap"``), else None:
    ``emap`` when given; for a user's ONNX file (``spec.origin``) its last initializer; for ffexport's own
    inswapper the fixed matrix its torch model and export carry."""
    import torch

    if spec.source_transform != "emap":
        return None
    if emap is not None:
        return torch.as_tensor(np_copy(emap)).detach().float().cpu()
    path = spec.builder_kwargs.get("onnx") if spec.origin else None
    if path:
        st = os.stat(path)
        return torch.from_numpy(_last_initializer(str(path), st.st_mtime_ns, st.st_size))
    from ..models.generator import emap_matrix

    return emap_matrix(spec.inputs[1].shape[-1] if len(spec.inputs) > 1 else 512)


@functools.lru_cache(maxsize=4)
def _last_initializer(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """The last initializer of the ONNX file ``path`` as float32, read once per file version (a generator's
    ONNX is hundreds of MB; feeds, calibration and the pipeline all ask for its emap)."""
    from .._lazy import require

    model = require("onnx").load(path)
    return require("onnx.numpy_helper").to_array(model.graph.initializer[-1]).astype("float32")


def transform_source(unit: "torch.Tensor", emap: "torch.Tensor | None") -> "torch.Tensor":
    """``normalize(unit @ emap)`` (the inswapper latent), or ``unit`` without a transform; any leading axes."""
    import torch

    if emap is None:
        return unit
    v = unit.float() @ emap.to(unit.device, torch.float32)
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _with_sources(faces: Iterable[FaceImage], embed: Callable[[FaceImage], "torch.Tensor"],
                  emap: "torch.Tensor | None" = None) -> Iterator[_Item]:
    """Pair each face with ANOTHER face's identity in a ring: face i gets face i-1's, the first face
    (emitted last) gets the last face's; a single face gets its own.  With ``emap`` the identity is the
    transformed latent (:func:`transform_source`)."""
    import torch

    def unit(face: FaceImage) -> torch.Tensor:
        v = torch.as_tensor(embed(face)).detach().float().reshape(-1).cpu()
        return transform_source(v / v.norm().clamp(min=1e-12), emap)

    it = iter(faces)
    first = next(it, None)
    if first is None:
        return
    prev = first
    for face in it:
        yield _Item(face, unit(prev))
        prev = face
    yield _Item(first, unit(prev))


def module_feeds(spec: "ModuleSpec", faces: Iterable[FaceImage],
                 source_embedder: Callable[[FaceImage], "torch.Tensor"] | None = None,
                 batch: int = 1, drop_last: bool = False, emap=None) -> Iterator[dict[str, "torch.Tensor"]]:
    """Stream ``spec``'s inputs built from real faces: dicts of float32 CPU tensors named and shaped as
    the spec says, ``batch`` faces each (the last one smaller unless ``drop_last``).

    Generators get ``source`` = the L2-normalised ``source_embedder(face)`` of
    another face of the stream (ring order, see :func:`_with_sources`); without
    an embedder, ffexport's seeded iResNet-18 (:func:`default_source_embedder`); a spec whose source goes
    through ``emap`` gets the transformed latent (:func:`source_transform`; ``emap`` overrides the matrix).
    """
    if batch < 1:
        raise InputSpecError(f"batch must be >= 1, got {batch}")
    build, needs_source = feed_for(spec)
    if needs_source:
        items: Iterable[_Item] = _with_sources(faces, source_embedder or default_source_embedder(),
                                               source_transform(spec, emap))
    else:
        items = (_Item(f) for f in faces)
    chunk: list[_Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == batch:
            yield _finish(spec, build(spec, chunk))
            chunk = []
    if chunk and not drop_last:
        yield _finish(spec, build(spec, chunk))


def _finish(spec: "ModuleSpec", feeds: dict) -> dict:
    import torch

    return {t.name: feeds[t.name].detach().to("cpu", torch.float32).contiguous() for t in spec.inputs}
