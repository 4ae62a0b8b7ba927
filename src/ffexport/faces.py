"""Real face images with 5-point landmarks, and per-module input feeds built from them.

A face folder holds images (``.jpg``, ``.png``, ...) and, beside each, a JSON
file of the same stem with at least ``"landmarks": [[x, y] x 5]`` (left eye,
right eye, nose, left and right mouth corner, in image pixels) and optionally
``"box": [x1, y1, x2, y2]``; ``calibration/make_calibration.py`` writes them.

* a corrupt or unreadable image is skipped with a :class:`FaceDataWarning`;
* an image without (usable) landmarks gets *synthesised* ones with a warning:
  the image is taken to be a face crop, and the ArcFace 112 template is placed
  in a centred square of side ``0.6 * min(H, W)`` (which is also its box);
* a folder that is missing, holds no image, or ends up with fewer than
  ``min_images`` usable ones raises :class:`CalibrationError`.

:func:`module_feeds` turns faces into the exact inputs a registered module
expects (names, shapes, preprocessing, alignment), as float32 CPU tensors.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import CalibrationError, InputSpecError
from .specs.templates import ARCFACE_112_V2, ARCFACE_128

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .specs.base import ModuleSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ASSETS = Path(__file__).parent / "assets"
BUILTIN_IMAGE = ASSETS / "astronaut.jpg"
SYNTH_BOX_FRACTION = 0.6
# the subject's left/right swap under a horizontal flip: keep "left eye" = smaller x
FLIP_ORDER = (1, 0, 2, 4, 3)
BLENDER_MAX_SIDE = 640
BLENDER_MASK = (0.3, 0.0, 0.0, 0.0, 0.0)
SOURCE_ENCODER = ("encoder", "iresnet18")

# Documented augmentation ranges (see calibration/README.md).
AUGMENT = {
    "flip_p": 0.5,                 # horizontal flip probability (landmark order kept: left eye = smaller x)
    "rotate_deg": (-25.0, 25.0),   # rotation about the face centre
    "zoom": (0.75, 1.3),           # uniform scale
    "crop": (0.65, 1.0),           # output width/height as fractions of the input's
    "shift": (-0.12, 0.12),        # face centre offset from the output centre, fraction of the output size
    "max_side": 640,               # outputs larger than this are scaled down
    "brightness": (0.7, 1.3),      # multiplicative
    "contrast": (0.7, 1.3),        # around the mean grey level
    "saturation": (0.6, 1.4),      # blend with the grey image
}


class FaceDataWarning(UserWarning):
    """A face image was skipped or its landmarks were synthesised."""


@dataclass
class FaceImage:
    """One RGB image and its main face: 5 landmarks ``(5, 2)`` and box ``(4,)`` in image pixels."""

    path: str
    rgb: np.ndarray
    landmarks: np.ndarray | None = None
    box: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


# --- landmarks --------------------------------------------------------------------------

def synthetic_landmarks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks and box for an image assumed to be a face crop: the ArcFace 112 template in a
    centred square of side ``SYNTH_BOX_FRACTION * min(height, width)``."""
    side = SYNTH_BOX_FRACTION * min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    pts = np.asarray(ARCFACE_112_V2.points, np.float32) * (side / ARCFACE_112_V2.size) + [x0, y0]
    return pts.astype(np.float32), np.array([x0, y0, x0 + side, y0 + side], np.float32)


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """A face box around 5 landmarks (the spread of the points grown to the whole face)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    c = (lo + hi) / 2
    side = max(float((hi - lo).max()) * 2.0, 8.0)
    return np.array([c[0] - side / 2, c[1] - side * 0.45, c[0] + side / 2, c[1] + side * 0.55], np.float32)


def _read_landmarks(json_path: Path, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """``(landmarks, box, why_not)`` from a sidecar JSON; landmarks None with a reason when unusable."""
    if not json_path.is_file():
        return None, None, "no landmarks"
    try:
        data = json.loads(json_path.read_text())
        raw = data.get("landmarks") if isinstance(data, dict) else None
        if raw is None:
            return None, None, f"no face in {json_path.name}"
        lm = np.asarray(raw, dtype=np.float32).reshape(5, 2)
        box = data.get("box")
        box = None if box is None else np.asarray(box, dtype=np.float32).reshape(4)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        return None, None, f"bad landmarks JSON {json_path.name} ({type(exc).__name__})"
    if not np.isfinite(lm).all() or (box is not None and not np.isfinite(box).all()):
        return None, None, f"non-finite landmarks in {json_path.name}"
    margin = max(height, width)
    if (lm < -margin).any() or (lm[:, 0] > width + margin).any() or (lm[:, 1] > height + margin).any():
        return None, None, f"landmarks in {json_path.name} lie far outside the {width}x{height} image"
    return lm, (box if box is not None else box_from_landmarks(lm)), ""


# --- loading ----------------------------------------------------------------------------

def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 ``H x W x 3`` (EXIF orientation applied); raises on corrupt files."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _downscale(face: FaceImage, max_side: int | None) -> FaceImage:
    h, w = face.size
    if not max_side or max(h, w) <= max_side:
        return face
    from PIL import Image

    k = max_side / max(h, w)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    rgb = np.asarray(Image.fromarray(face.rgb).resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))
    sx, sy = nw / w, nh / h
    lm = None if face.landmarks is None else (face.landmarks * [sx, sy]).astype(np.float32)
    box = None if face.box is None else (face.box * [sx, sy, sx, sy]).astype(np.float32)
    return replace(face, rgb=rgb, landmarks=lm, box=box)


def load_face(path: str | Path, require_landmarks: bool = False, max_side: int | None = None) -> FaceImage | None:
    """One image and its landmarks; None (with a warning) if it cannot be used."""
    path = Path(path)
    try:
        rgb = read_rgb(path)
    except Exception as exc:  # PIL raises many types for corrupt files
        warnings.warn(f"skipping {path.name}: not a readable image ({type(exc).__name__})", FaceDataWarning,
                      stacklevel=3)
        return None
    h, w = rgb.shape[:2]
    lm, box, why = _read_landmarks(path.with_suffix(".json"), h, w)
    meta = {}
    if lm is None:
        if require_landmarks:
            warnings.warn(f"skipping {path.name}: {why} (landmarks required)", FaceDataWarning, stacklevel=3)
            return None
        warnings.warn(f"{why} for {path.name}: using a centred crop", FaceDataWarning, stacklevel=3)
        lm, box = synthetic_landmarks(h, w)
        meta["landmarks"] = "synthetic"
    return _downscale(FaceImage(str(path), rgb, lm, box, meta), max_side)


def _image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise CalibrationError(f"face folder {folder} does not exist: pass a folder of face images")
    if not folder.is_dir():
        raise CalibrationError(f"face folder {folder} is not a folder: pass a folder of face images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}: add face photographs")
    return files


def iter_face_folder(folder: str | Path, limit: int | None = None, require_landmarks: bool = False,
                     min_images: int = 1, max_side: int | None = None) -> Iterator[FaceImage]:
    """Stream the usable faces of ``folder`` (sorted by name), one image in memory at a time.

    The folder is checked at once; :class:`CalibrationError` is raised at the end
    of the stream if fewer than ``min_images`` were usable.
    """
    files = _image_files(folder)
    if limit is not None:
        files = files[:max(0, int(limit))]

    def stream() -> Iterator[FaceImage]:
        count = 0
        for path in files:
            face = load_face(path, require_landmarks, max_side)
            if face is not None:
                count += 1
                yield face
        if count < min_images:
            raise CalibrationError(f"only {count} usable face image(s) in {folder}, need at least {min_images}")

    return stream()


def load_face_folder(folder: str | Path, limit: int | None = None, require_landmarks: bool = False,
                     min_images: int = 1, max_side: int | None = None) -> list[FaceImage]:
    """All usable faces of ``folder`` (see :func:`iter_face_folder`)."""
    return list(iter_face_folder(folder, limit, require_landmarks, min_images, max_side))


# --- built-in faces and augmentation ------------------------------------------------------

def builtin_face() -> FaceImage:
    """The packaged astronaut photo (Eileen Collins, NASA, public domain) with its landmarks."""
    face = load_face(BUILTIN_IMAGE, require_landmarks=True)
    if face is None:
        raise CalibrationError(f"ffexport's built-in face {BUILTIN_IMAGE} is missing or damaged: reinstall ffexport")
    return face


def builtin_faces(n_augment: int = 7, seed: int = 0) -> list[FaceImage]:
    """The built-in face plus ``n_augment`` deterministic augmentations of it (default real inputs)."""
    face = builtin_face()
    return [face, *augment(face, n_augment, seed)]


def _augment_params(rng: np.random.Generator) -> dict:
    u = lambda key: float(rng.uniform(*AUGMENT[key]))  # noqa: E731
    return {"flip": bool(rng.random() < AUGMENT["flip_p"]), "rotate_deg": u("rotate_deg"), "zoom": u("zoom"),
            "crop_w": u("crop"), "crop_h": u("crop"), "shift_x": u("shift"), "shift_y": u("shift"),
            "brightness": u("brightness"), "contrast": u("contrast"), "saturation": u("saturation")}


def _augment_matrix(face: FaceImage, p: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """Source -> output pixel matrix and output ``(h, w)`` for augmentation parameters ``p``."""
    h, w = face.size
    out_w, out_h = max(16, round(w * p["crop_w"])), max(16, round(h * p["crop_h"]))
    k = min(1.0, AUGMENT["max_side"] / max(out_w, out_h))
    out_w, out_h = max(16, round(out_w * k)), max(16, round(out_h * k))
    centre = face.landmarks.mean(0) if face.landmarks is not None else np.array([(w - 1) / 2, (h - 1) / 2])
    flip = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) if p["flip"] else np.eye(3)
    c = flip @ np.array([centre[0], centre[1], 1.0])
    a = math.radians(p["rotate_deg"])
    s = p["zoom"] * k
    rot = np.array([[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
    target = np.array([(out_w - 1) / 2 + p["shift_x"] * out_w, (out_h - 1) / 2 + p["shift_y"] * out_h])
    move = np.eye(3)
    move[:2, 2] = target - (rot @ c)[:2]
    return (move @ rot @ flip)[:2], (out_h, out_w)


def _inside(points: np.ndarray, hw: tuple[int, int], margin: float = 4.0) -> bool:
    return bool((points >= margin).all() and (points[:, 0] <= hw[1] - 1 - margin).all()
                and (points[:, 1] <= hw[0] - 1 - margin).all())


def _colour_jitter(x, p: dict):
    grey = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = grey + (x - grey) * p["saturation"]
    x = x.mean() + (x - x.mean()) * p["contrast"]
    return (x * p["brightness"]).clamp(0, 255)


def augment(face: FaceImage, n: int, seed: int = 0) -> list[FaceImage]:
    """``n`` deterministic augmentations of ``face`` (crop, zoom, rotation, flip, colour jitter; ranges in
    :data:`AUGMENT`) with landmarks and box carried through the same transform.

    Augmentation ``i`` draws from ``numpy.random.default_rng([seed, i])``, so
    it does not depend on ``n``; draws that would push a landmark out of the
    frame are redrawn (deterministically).
    """
    import torch

    from .vision.align import to_tensor_image, to_uint8_hwc, transform_points, warp_affine

    out = []
    lm = face.landmarks if face.landmarks is not None else synthetic_landmarks(*face.size)[0]
    base = replace(face, landmarks=lm)
    image = to_tensor_image(face.rgb)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        for _ in range(20):
            p = _augment_params(rng)
            M, hw = _augment_matrix(base, p)
            pts = lm @ M[:, :2].T + M[:, 2]
            if _inside(pts, hw):
                break
        Mt = torch.from_numpy(M).float()[None]
        warped = _colour_jitter(warp_affine(image, Mt, hw, padding="border"), p)
        pts = transform_points(torch.from_numpy(lm).float()[None], Mt)[0].numpy()
        if p["flip"]:
            pts = pts[list(FLIP_ORDER)]
        box = None
        if face.box is not None:
            corners = np.array([[face.box[0], face.box[1]], [face.box[2], face.box[1]],
                                [face.box[0], face.box[3]], [face.box[2], face.box[3]]], np.float32)
            c = corners @ M[:, :2].T + M[:, 2]
            box = np.concatenate([c.min(0), c.max(0)]).astype(np.float32)
        meta = {"augmentation": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()},
                "augmented_from": face.path, "seed": [seed, i]}
        out.append(FaceImage(f"{face.path}#aug{i}", to_uint8_hwc(warped)[0], pts.astype(np.float32), box, meta))
    return out


# --- module feeds -------------------------------------------------------------------------

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

    from .vision.align import align_crop, to_tensor_image

    return align_crop(to_tensor_image(face.rgb), torch.from_numpy(_landmarks(face))[None].float(), template, size)


def _image_input(spec: "ModuleSpec"):
    return spec.inputs[0]


def _feed_aligned(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """Landmarker, encoder, enhancer (and any single-input module with a template)."""
    import torch

    from .vision.align import normalize

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

    from .vision.align import letterbox, normalize, to_tensor_image

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

    from .vision.align import normalize, to_tensor_image

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

    from .vision.align import normalize, to_tensor_image
    from .vision.mtcnn import crop_boxes, square

    size = int(spec.input_size[0])
    crops = [crop_boxes(to_tensor_image(it.face.rgb), square(torch.from_numpy(_box(it.face))[None].float()), size)
             for it in items]
    return {_image_input(spec).name: normalize(torch.cat(crops), spec.preprocess)}


def _feed_blender(spec: "ModuleSpec", items: list[_Item]) -> dict:
    """Blender: frame in [0, 1] (long side <= 640; a batch shares the first frame's size), its
    arcface_128 crop in [0, 1], the crop -> frame matrix and the default mask parameters."""
    import torch

    from .vision.align import align_crop, invert_affine, to_tensor_image

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


# module -> (feed builder, needs a source identity)
_FEEDS: dict[str, tuple[Callable[["ModuleSpec", list[_Item]], dict], bool]] = {
    "detector": (_feed_letterbox, False),
    "landmarker": (_feed_aligned, False),
    "encoder": (_feed_aligned, False),
    "enhancer": (_feed_aligned, False),
    "generator": (_feed_generator, True),
    "blender": (_feed_blender, False),
    "mtcnn_pnet": (_feed_pnet, False),
    "mtcnn_rnet": (_feed_box_crop, False),
    "mtcnn_onet": (_feed_box_crop, False),
}


def _feed_for(spec: "ModuleSpec"):
    if spec.module in _FEEDS:
        return _FEEDS[spec.module]
    if spec.template is not None and spec.input_size and len(spec.inputs) == 1:
        return _feed_aligned, False
    raise InputSpecError(f"no real-image feed for module {spec.module!r} ({spec.key}): "
                         f"add one to ffexport.faces._FEEDS")


def default_source_embedder(seed: int = 0) -> Callable[[FaceImage], "torch.Tensor"]:
    """FaceImage -> L2-normalised 512-d embedding from ffexport's seeded iResNet-18 encoder on the
    face's arcface_112_v2 crop (a real-image identity vector when no trained encoder is given)."""
    import torch

    from . import specs
    from .models import build_model
    from .vision.align import normalize

    spec = specs.get(*SOURCE_ENCODER)
    model = build_model(spec, seed=seed)

    def embed(face: FaceImage) -> torch.Tensor:
        crop, _ = _aligned(face, spec.template, int(spec.input_size[0]))
        with torch.inference_mode():
            out = model(normalize(crop, spec.preprocess))
        return (out[0] if isinstance(out, (tuple, list)) else out)[0]

    return embed


def _with_sources(faces: Iterable[FaceImage], embed: Callable[[FaceImage], "torch.Tensor"]) -> Iterator[_Item]:
    """Pair each face with ANOTHER face's identity in a ring: face i gets face i-1's, the first face
    (emitted last) gets the last face's; a single face gets its own."""
    import torch

    def unit(face: FaceImage) -> torch.Tensor:
        v = torch.as_tensor(embed(face)).detach().float().reshape(-1).cpu()
        return v / v.norm().clamp(min=1e-12)

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
                 batch: int = 1, drop_last: bool = False) -> Iterator[dict[str, "torch.Tensor"]]:
    """Stream ``spec``'s inputs built from real faces: dicts of float32 CPU tensors named and shaped as
    the spec says, ``batch`` faces each (the last one smaller unless ``drop_last``).

    Generators get ``source`` = the L2-normalised ``source_embedder(face)`` of
    another face of the stream (ring order, see :func:`_with_sources`); without
    an embedder, ffexport's seeded iResNet-18 (:func:`default_source_embedder`).
    """
    if batch < 1:
        raise InputSpecError(f"batch must be >= 1, got {batch}")
    build, needs_source = _feed_for(spec)
    if needs_source:
        items: Iterable[_Item] = _with_sources(faces, source_embedder or default_source_embedder())
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


def feed_list(spec: "ModuleSpec", faces: Sequence[FaceImage], **kwargs) -> list[dict]:
    """:func:`module_feeds` collected into a list."""
    return list(module_feeds(spec, faces, **kwargs))
