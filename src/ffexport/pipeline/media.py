"""Reading and writing still images (RGB uint8), with one-line errors and atomic writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .._lazy import require
from ..errors import MediaError
from ..fsutil import atomic_path

IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
# the largest source or target image read, in megapixels (an 8K frame is 33, a 60-MP camera's photo 61): larger
# ones are refused in one line from their header, before their pixels are decoded (PIL warns at 89)
MAX_IMAGE_MEGAPIXELS = 80


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_FORMATS


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """``H x W x 3`` RGB uint8, EXIF orientation applied; :class:`MediaError` when it cannot be read or has more
    than :data:`MAX_IMAGE_MEGAPIXELS` (read from its header, before decoding)."""
    from ..faces.load import ImageTooLargeError, open_within

    Image = require("PIL.Image", "reading images")
    ImageOps = require("PIL.ImageOps", "reading images")
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{what} {p} does not exist or is not a file")
    try:
        with open_within(p, Image, MAX_IMAGE_MEGAPIXELS, f"{what}s") as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB")).copy()
    except ImageTooLargeError as exc:
        raise MediaError(f"{what} {p}: {exc}") from None
    except Exception as exc:  # PIL raises several types for corrupt or unknown files
        raise MediaError(f"cannot read {what} {p}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """Write ``image`` (H x W x 3 RGB uint8) in the format of ``path``'s suffix, atomically."""
    Image = require("PIL.Image", "writing images")
    p = Path(path)
    fmt = IMAGE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise MediaError(f"cannot write {p}: unknown image suffix; use one of {', '.join(sorted(IMAGE_FORMATS))}")
    opts = {"quality": quality, "subsampling": 0} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(p) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **opts)
    return p


def content_hash(image) -> str:
    """sha256 of an image's pixels and shape (a path is read first): the source-embedding cache key."""
    if isinstance(image, (str, Path)):
        image = read_image(image)
    if not isinstance(image, np.ndarray):
        image = image.detach().cpu().numpy()
    arr = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(f"{arr.shape}|{arr.dtype}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()
