"""Real face images with 5-point landmarks: reading one, a folder of them, and the built-in face.

A face folder holds images (``.jpg``, ``.png``, ...) and, beside each, a JSON
file of the same stem with at least ``"landmarks": [[x, y] x 5]`` (left eye,
right eye, nose, left and right mouth corner, in image pixels) and optionally
``"box": [x1, y1, x2, y2]``; ``calibration/make_calibration.py`` writes them.

* a corrupt or unreadable image is skipped with a :class:`FaceDataWarning`, and so is one over
  :data:`MAX_MEGAPIXELS` (its size read from the header, before any pixel is decoded);
* an image without (usable) landmarks gets *synthesised* ones with a warning:
  the image is taken to be a face crop, and the ArcFace 112 template is placed
  in a centred square of side ``0.6 * min(H, W)`` (which is also its box);
* a folder that is missing, holds no image, or ends up with fewer than
  ``min_images`` usable ones raises :class:`CalibrationError`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CalibrationError
from ..specs.templates import ARCFACE_112_V2

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# larger face images are skipped before their pixels are decoded (50 megapixels are 150 MB as RGB)
MAX_MEGAPIXELS = 50
ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUILTIN_IMAGE = ASSETS / "astronaut.jpg"
SYNTH_BOX_FRACTION = 0.6


class FaceDataWarning(UserWarning):
    """A face image was skipped or its landmarks were synthesised."""


class ImageTooLargeError(ValueError):
    """An image whose header gives more than :data:`MAX_MEGAPIXELS`; ``str()`` says its size and the limit."""


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

def _too_large(width: int, height: int, limit: int = MAX_MEGAPIXELS, what: str = "face images") -> str:
    """Why an image of this size is refused, or ``""``."""
    if width * height <= limit * 1_000_000:
        return ""
    return (f"{width}x{height} pixels ({width * height / 1e6:.1f} megapixels) is over the {limit}-megapixel "
            f"limit for {what}: downscale it")


def open_within(path, Image, limit: int = MAX_MEGAPIXELS, what: str = "face images"):
    """``Image.open`` (the header only); an image of more than ``limit`` megapixels raises
    :class:`ImageTooLargeError` (naming its size, the limit and ``what`` it is for) before a pixel is decoded,
    also where PIL's own decompression-bomb check would warn or refuse first."""
    import re

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "more megapixels than PIL decodes"
        raise ImageTooLargeError(f"{pixels} is over the {limit}-megapixel limit for {what}: downscale it") from None
    why = _too_large(*im.size, limit, what)
    if why:
        im.close()
        raise ImageTooLargeError(why)
    return im


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 ``H x W x 3`` (EXIF orientation applied); raises on corrupt files, and
    :class:`ImageTooLargeError` (read from the header, before decoding) above :data:`MAX_MEGAPIXELS`."""
    from PIL import Image, ImageOps

    with open_within(path, Image) as im:
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
    except ImageTooLargeError as exc:
        warnings.warn(f"skipping {path.name}: {exc}", FaceDataWarning, stacklevel=3)
        return None
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


def image_files(folder: str | Path, missing: str = "face folder {folder} does not exist: pass a folder of "
                "face images", not_dir: str = "face folder {folder} is not a folder: pass a folder of face images",
                empty: str = "no images ({suffixes}) in {folder}: add face photographs") -> list[Path]:
    """The image files of ``folder``, sorted by name; a :class:`CalibrationError` (the messages are templates
    with ``{folder}`` and ``{suffixes}``) when it is missing, not a folder, or holds none."""
    folder = Path(folder)
    say = dict(folder=folder, suffixes=", ".join(IMAGE_SUFFIXES))
    if not folder.exists():
        raise CalibrationError(missing.format(**say))
    if not folder.is_dir():
        raise CalibrationError(not_dir.format(**say))
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(empty.format(**say))
    return files


def iter_face_folder(folder: str | Path, limit: int | None = None, require_landmarks: bool = False,
                     min_images: int = 1, max_side: int | None = None) -> Iterator[FaceImage]:
    """Stream the usable faces of ``folder`` (sorted by name), one image in memory at a time.

    The folder is checked at once; :class:`CalibrationError` is raised at the end
    of the stream if fewer than ``min_images`` were usable.
    """
    files = image_files(folder)
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


def builtin_face() -> FaceImage:
    """The packaged astronaut photo (Eileen Collins, NASA, public domain) with its landmarks."""
    face = load_face(BUILTIN_IMAGE, require_landmarks=True)
    if face is None:
        raise CalibrationError(f"ffexport's built-in face {BUILTIN_IMAGE} is missing or damaged: reinstall ffexport")
    return face
