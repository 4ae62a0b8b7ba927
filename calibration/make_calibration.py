"""Build ffexport's calibration set: real face photos, seeded augmentations, MTCNN landmarks.

    python calibration/make_calibration.py                    # augmentations + every JSON, from the base photos
    python calibration/make_calibration.py --refresh-sources  # first re-extract the base photos from their packages

The base photos (``<name>.jpg``, listed in SOURCES) are extracted once from
packages whose licences allow redistribution; see README.md.  Everything else
(``<name>_aug<k>.jpg`` and every ``.json``) is regenerated deterministically:
augmentation ``k`` of a photo uses ``numpy.random.default_rng([seed, k])`` and
the landmarks come from ffexport's MTCNN (trained facenet-pytorch weights) run
on the written JPEG itself.  The astronaut photo and its JSON are also copied
to ``src/ffexport/assets/`` (the package's built-in face).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from ffexport.faces import FaceImage, augment, read_rgb  # noqa: E402

ASSETS = ROOT / "src" / "ffexport" / "assets"
N_AUGMENT = 5
JPEG_QUALITY = 90
MAX_SIDE = 640
DETECTOR = "ffexport.pipeline.mtcnn.MTCNNDetector, facenet-pytorch 2.6.0 trained weights, thresholds (0.6, 0.7, 0.7)"
CONVENTION = ("pixel coordinates, pixel centre (i, j) at x=j, y=i as MTCNN reports them; points: left eye, "
              "right eye, nose tip, left mouth corner, right mouth corner ('left' = smaller x in the image); "
              "box x1, y1, x2, y2")


@dataclass(frozen=True)
class Source:
    name: str
    seed: int
    origin: str          # where the file comes from (package and path)
    licence: str
    fetch: tuple          # (kind, package spec or module, path inside) used by --refresh-sources
    crop: tuple | None = None  # (top, bottom) fractions kept before resizing


SOURCES = (
    Source("astronaut", 1, "scikit-image: skimage.data.astronaut() (Eileen Collins, NASA)",
           "public domain (NASA; 'no known copyright restrictions, released into the public domain' per scikit-image)",
           ("skimage", "astronaut")),
    Source("grace_hopper", 2, "matplotlib: mpl-data/sample_data/grace_hopper.jpg (official US Navy portrait of "
           "Rear Admiral Grace Hopper, 1984)",
           "public domain (work of the US federal government / US Navy)",
           ("installed", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg")),
    Source("obama", 3, "face_recognition 1.3.0 sdist (MIT): tests/test_images/obama.jpg (official White House "
           "portrait of Barack Obama)",
           "public domain (official White House photograph, work of the US federal government)",
           ("sdist", "face_recognition==1.3.0", "tests/test_images/obama.jpg")),
    Source("biden", 4, "face_recognition 1.3.0 sdist (MIT): tests/test_images/biden.jpg (official portrait of "
           "Vice President Joe Biden), top half kept",
           "public domain (official White House photograph, work of the US federal government)",
           ("sdist", "face_recognition==1.3.0", "tests/test_images/biden.jpg"), crop=(0.0, 0.5)),
    Source("luispedro", 5, "mahotas 1.4.x wheel (MIT): mahotas/demos/data/luispedro.jpg (photo of mahotas' author, "
           "Luis Pedro Coelho, shipped by him as demo data)",
           "MIT (distributed as part of mahotas by its author)",
           ("wheel", "mahotas", "mahotas/demos/data/luispedro.jpg")),
    Source("camera", 6, "scikit-image: skimage.data.camera() (photographer Lav Varshney; grey, face in profile)",
           "CC0 (per scikit-image: 'No copyright restrictions. CC0 by the photographer')",
           ("skimage", "camera")),
)


# --- base photos -------------------------------------------------------------------------------

def _pip_download(spec: str, binary: bool, dest: Path) -> Path:
    flag = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", *flag,
                    "-d", str(dest), spec], check=True, capture_output=True)
    return next(p for p in dest.iterdir() if p.is_file())


def _fetch(src: Source, tmp: Path) -> np.ndarray:
    kind = src.fetch[0]
    if kind == "skimage":
        from skimage import data

        img = getattr(data, src.fetch[1])()
        return np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img
    if kind == "installed":
        import importlib.util

        root = Path(importlib.util.find_spec(src.fetch[1]).submodule_search_locations[0])
        return read_rgb(root / src.fetch[2])
    archive = _pip_download(src.fetch[1], kind == "wheel", tmp / src.name)
    if kind == "wheel":
        with zipfile.ZipFile(archive) as z:
            return read_rgb(io.BytesIO(z.read(src.fetch[2])))
    with tarfile.open(archive) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("/" + src.fetch[2]))
        return read_rgb(io.BytesIO(t.extractfile(member).read()))


def _fit(img: np.ndarray, crop: tuple | None) -> np.ndarray:
    from PIL import Image

    if crop is not None:
        h = img.shape[0]
        img = img[int(h * crop[0]):int(round(h * crop[1]))]
    h, w = img.shape[:2]
    k = min(1.0, MAX_SIDE / max(h, w))
    if k < 1.0:
        img = np.asarray(Image.fromarray(img).resize((round(w * k), round(h * k)), Image.LANCZOS))
    return img


def refresh_sources() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for src in SOURCES:
            _save_jpeg(_fit(_fetch(src, Path(tmp)), src.crop), HERE / f"{src.name}.jpg")
            print(f"source {src.name}.jpg")


# --- landmarks ---------------------------------------------------------------------------------

def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, quality=JPEG_QUALITY, optimize=False)


def _detect(detector, rgb: np.ndarray):
    from ffexport.pipeline.align import to_tensor_image

    boxes, points, scores = detector.detect(to_tensor_image(rgb))[0]
    return boxes.numpy(), points.numpy(), scores.numpy()


def _pick(boxes, points, scores, expected: np.ndarray | None) -> int | None:
    """Index of the face to record: nearest to the expected landmarks if given, else the most confident."""
    if len(scores) == 0:
        return None
    if expected is None:
        return int(np.argmax(scores))
    dist = np.linalg.norm(points - expected[None], axis=-1).mean(1)
    eye_gap = max(float(np.linalg.norm(expected[0] - expected[1])), 1.0)
    best = int(np.argmin(dist))
    return best if dist[best] < 0.5 * eye_gap else None


def _r(a) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 2).tolist()


def label(detector, src: Source, path: Path, expected: np.ndarray | None, extra: dict) -> FaceImage:
    """Detect on the written image, write its JSON, return it as a FaceImage."""
    rgb = read_rgb(path)
    boxes, points, scores = _detect(detector, rgb)
    i = _pick(boxes, points, scores, expected)
    record = {"image": path.name, "source": src.origin, "licence": src.licence, **extra,
              "faces_detected": int(len(scores)), "detector": DETECTOR, "convention": CONVENTION}
    if i is not None:
        lm, box, score, how = points[i], boxes[i], float(scores[i]), "mtcnn"
    elif expected is not None:  # the augmented face was missed: carry the source landmarks through the transform
        from ffexport.faces import box_from_landmarks

        lm, box, score, how = expected, box_from_landmarks(expected), None, "augmentation transform"
    else:
        raise SystemExit(f"{path.name}: MTCNN found no face in a base photo")
    record.update({"landmarks": _r(lm), "box": _r(box), "score": None if score is None else round(score, 5),
                   "landmarks_from": how})
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return FaceImage(str(path), rgb, np.asarray(lm, np.float32), np.asarray(box, np.float32))


def build() -> list[Path]:
    import torch

    from ffexport.pipeline.mtcnn import MTCNNDetector

    torch.manual_seed(0)
    detector = MTCNNDetector.from_torch("cpu")
    written = []
    for src in SOURCES:
        base_path = HERE / f"{src.name}.jpg"
        if not base_path.is_file():
            raise SystemExit(f"{base_path} missing: run with --refresh-sources")
        base = label(detector, src, base_path, None, {"derived_from": None, "augmentation": None, "seed": None})
        written.append(base_path)
        for k, aug in enumerate(augment(base, N_AUGMENT, seed=src.seed), start=1):
            path = HERE / f"{src.name}_aug{k}.jpg"
            _save_jpeg(aug.rgb, path)
            label(detector, src, path, aug.landmarks,
                  {"derived_from": base_path.name, "augmentation": aug.meta["augmentation"], "seed": aug.meta["seed"]})
            written.append(path)
        print(f"{src.name}: base + {N_AUGMENT} augmentations")
    ASSETS.mkdir(parents=True, exist_ok=True)
    for suffix in (".jpg", ".json"):
        shutil.copyfile(HERE / f"astronaut{suffix}", ASSETS / f"astronaut{suffix}")
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refresh-sources", action="store_true",
                    help="re-extract the base photos from their packages (pip download; needs the package index)")
    args = ap.parse_args()
    if args.refresh_sources:
        refresh_sources()
    files = build()
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} images, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
