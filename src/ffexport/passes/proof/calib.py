"""Face-aware inputs for the passes: calibration sets, parity feeds, and a streaming calibration reader.

Every image goes through the same detection-free preprocessing the pipeline
uses for the module (:func:`ffexport.faces.module_feeds`): the detector gets
letterboxed full frames; the landmarker, encoder, generator and enhancer get
crops aligned to their template from the image's 5 landmarks (the JSON beside
it); the blender gets the frame, its crop and the crop -> frame matrix.

The generator's ``source`` input is an identity embedding of another face of
the set.  It comes from the encoder's ONNX artifact in the same artifact
folder when one exists (``<out>/encoder/fp32.sim.onnx``, else ``fp32.onnx``:
the identities the deployed pipeline would feed), else from ffexport's seeded
iResNet-18 torch encoder (:func:`ffexport.faces.default_source_embedder`, the
same identities the export's own parity check uses).  The manifest records which.

Calibration streams: images are listed and checked up front (unreadable ones
skipped with a warning), then loaded and preprocessed one at a time while the
calibrator consumes them, so memory does not grow with the number of samples.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..._lazy import require
from ...errors import CalibrationError, InputSpecError

DEFAULT_CALIB_SAMPLES = 24
DEFAULT_PARITY_SAMPLES = 8
MIN_CALIB_IMAGES = 4


def needs_landmarks(target) -> bool:
    """Registered modules fed aligned crops need each image's landmarks; full-frame modules and
    bring-your-own models (fed resized photos) do not."""
    return target.registered and not target.spec.full_frame


@dataclass
class FaceSet:
    """A list of face images: files of a folder (loaded lazily, one at a time) or in-memory faces."""

    label: str
    items: list  # Path (a file of the folder) or FaceImage (built-in)
    sha256: str
    folder: Path | None = None
    require_landmarks: bool = False
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def iter_faces(self, items: Sequence | None = None) -> Iterator:
        from ...faces import load_face

        for it in (self.items if items is None else items):
            if isinstance(it, Path):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # already reported by scan_folder
                    face = load_face(it, require_landmarks=self.require_landmarks)
                if face is None:  # changed on disk since the scan
                    raise CalibrationError(f"{it} became unreadable during calibration")
                yield face
            else:
                yield it

    def describe(self, items: Sequence) -> dict:
        return {"set": self.label, "set_sha256": self.sha256, "count": len(items),
                "files": [it.name if isinstance(it, Path) else Path(it.path).name for it in items]}


def builtin_set():
    from ...faces import builtin_faces

    faces = builtin_faces()
    h = hashlib.sha256()
    for f in faces:
        h.update(f.rgb.tobytes())
        h.update(f.landmarks.astype("float32").tobytes())
    return FaceSet("built-in faces (astronaut photograph + 7 seeded augmentations)", faces, h.hexdigest())


def scan_folder(folder: str | Path, require_landmarks: bool, min_images: int = 1) -> FaceSet:
    """Check every image of ``folder`` once (corrupt ones and, where required, ones without landmarks are
    skipped with a warning); raise :class:`CalibrationError` when fewer than ``min_images`` remain."""
    from ...faces import image_files, load_face

    folder = Path(folder)
    files = image_files(folder, missing="calibration folder {folder} does not exist: pass --calib DIR with face "
                                        "photos and their landmark JSONs (see calibration/README.md)",
                        not_dir="--calib {folder} is not a folder: pass a folder of face photos",
                        empty="calibration folder {folder} holds no images ({suffixes}): add face photos with "
                              "their landmark JSONs")
    usable, skipped, reasons = [], [], []
    h = hashlib.sha256()
    for p in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            face = load_face(p, require_landmarks=require_landmarks)
        if face is None:  # why it was skipped; synthesised landmarks are irrelevant when not required
            reasons += [(w.message, w.category) for w in caught]
            skipped.append(p.name)
            continue
        usable.append(p)
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
        side = p.with_suffix(".json")
        if side.is_file():
            h.update(hashlib.sha256(side.read_bytes()).digest())
        del face
    # a failed scan is one line that gives the first reason; a scan that succeeds warns once per skipped image
    if not usable:
        files_n = f"{len(files)} file" + ("s" if len(files) != 1 else "")
        raise CalibrationError(f"no readable face images in {folder} ({files_n}, all skipped: "
                               f"{_first_reason(reasons, skipped)})")
    if len(usable) < min_images:
        why = f" after skipping {len(skipped)} ({_first_reason(reasons, skipped)})" if skipped else ""
        raise CalibrationError(f"only {len(usable)} usable face image(s) in {folder}{why}, need at least "
                               f"{min_images}")
    for message, category in reasons:
        warnings.warn(str(message), category, stacklevel=2)
    return FaceSet(f"{folder} ({len(usable)} usable images)", usable, h.hexdigest(), folder,
                   require_landmarks, skipped)


def _first_reason(reasons: list, skipped: list[str]) -> str:
    """``"a.png: why; +2 more (b.png, c.png)"`` from the warnings of the skipped images."""
    said = [str(m) for m, _ in reasons]
    first = next((m for m in said if m.startswith("skipping ")), said[0] if said else skipped[0])
    first = first[len("skipping "):] if first.startswith("skipping ") else first
    rest = skipped[1:]
    more = f"; +{len(rest)} more ({', '.join(rest[:3])}{', ...' if len(rest) > 3 else ''})" if rest else ""
    return first + more


def spread(items: Sequence, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when n >= len)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def split(faceset: FaceSet, samples: int | None, parity_samples: int) -> tuple[list, list, bool]:
    """Calibration items, parity items, and whether the parity items are held out from calibration.

    ``samples`` larger than the set is a user error (one line)."""
    n = len(faceset)
    if samples is not None:
        if samples < 1:
            raise InputSpecError(f"--samples must be a positive integer, got {samples}")
        if samples > n:
            raise CalibrationError(f"--samples {samples} is larger than the {n} usable images of "
                                   f"{faceset.folder or faceset.label}; use --samples {n} or fewer")
    want = samples if samples is not None else min(n, DEFAULT_CALIB_SAMPLES)
    if samples is None and n > parity_samples + MIN_CALIB_IMAGES:
        want = min(want, n - parity_samples)  # keep faces aside for an honest parity check
    calib = spread(faceset.items, want)
    rest = [it for it in faceset.items if not any(it is c for c in calib)]
    if len(rest) >= min(parity_samples, n):
        return calib, spread(rest, parity_samples), True
    return calib, spread(faceset.items, parity_samples), False


# --- feeds ----------------------------------------------------------------------------------------

Embedder = Callable[[object], "object"]


@dataclass
class SourceIdentities:
    """Where the generator's ``source`` embeddings come from."""

    embed: Embedder | None  # None: faces' default (seeded iResNet-18 torch encoder)
    label: str
    sha256: str | None = None


def source_identities(spec, out: Path | None) -> SourceIdentities | None:
    """The generator's source-identity embedder (see the module docstring); None for other modules."""
    if not any(t.name == "source" for t in spec.inputs):
        return None
    if out is not None:
        from ...config import resolve_spec
        from ...fsutil import sha256_file
        from ...manifest import artifact_dir
        from ...vocab import RUNNABLE_ONNX

        enc = resolve_spec("encoder")
        for name in RUNNABLE_ONNX["fp32"]:
            p = artifact_dir(out, enc) / name
            if p.is_file():
                return SourceIdentities(_onnx_embedder(enc, p), f"encoder ONNX {p} ({enc.key})", sha256_file(p))
    from ...faces import SOURCE_ENCODER

    return SourceIdentities(None, "seeded {}/{} torch encoder (ffexport.faces.default_source_embedder)"
                            .format(*SOURCE_ENCODER))


def _onnx_embedder(enc_spec, path: Path) -> Embedder:
    torch = require("torch")
    from ...backends.ort import OrtRunner
    from ...vision.align import align_crop, normalize, to_tensor_image

    runner = OrtRunner(path, spec=enc_spec, name=path.name)
    size = int(enc_spec.input_size[0])

    def embed(face):
        crop, _ = align_crop(to_tensor_image(face.rgb), torch.from_numpy(face.landmarks)[None].float(),
                             enc_spec.template, size)
        out = runner.infer({enc_spec.inputs[0].name: normalize(crop, enc_spec.preprocess)})
        return out[enc_spec.outputs[0].name][0]

    return embed


def feeds_for(target, faces: Iterable, sources: SourceIdentities | None = None) -> Iterator[dict]:
    """Stream batch-1 input dicts (name -> float32 CPU tensor) for ``target`` built from ``faces``."""
    if target.registered:
        from ...faces import module_feeds

        embed = sources.embed if sources is not None else None
        yield from module_feeds(target.spec, faces, source_embedder=embed, batch=1)
    else:
        yield from _raw_feeds(target.spec, faces)


def raw_feeds_label(spec) -> str:
    kinds = []
    for t in spec.inputs:
        kinds.append(f"{t.name}: {'face photographs resized and scaled to [-1, 1]' if _is_image(t) else 'seeded normal noise'}")
    return "; ".join(kinds)


def _is_image(t) -> bool:
    try:
        shape = t.concrete(1)
    except KeyError:
        return False
    return t.dtype.startswith("float") and len(shape) == 4 and shape[1] == 3 and min(shape[2:]) >= 16


def _raw_feeds(spec, faces: Iterable) -> Iterator[dict]:
    """Inputs of a model whose preprocessing is unknown (bring your own): image-shaped float inputs get
    the face photographs resized to the input size and scaled to [-1, 1] (as `ffexport onnx --model`
    does), other inputs seeded normal noise."""
    torch = require("torch")
    for k, face in enumerate(faces):
        feed = {}
        for i, t in enumerate(spec.inputs):
            shape = t.concrete(1)
            dtype = getattr(torch, t.dtype)
            if _is_image(t):
                img = torch.from_numpy(face.rgb).permute(2, 0, 1)[None].float()
                img = torch.nn.functional.interpolate(img, size=shape[2:], mode="bilinear", align_corners=False)
                feed[t.name] = (img / 127.5 - 1.0).clamp(-1, 1).to(dtype)
            elif dtype in (torch.int64, torch.int32):
                g = torch.Generator().manual_seed(1234 + k * 16 + i)
                feed[t.name] = torch.randint(0, 8, shape, generator=g, dtype=dtype)
            else:
                g = torch.Generator().manual_seed(1234 + k * 16 + i)
                feed[t.name] = torch.randn(shape, generator=g).to(dtype)
        yield feed


def calibration_reader(target, faceset: FaceSet, items: Sequence, sources: SourceIdentities | None,
                       input_names: Sequence[str]):
    """An onnxruntime ``CalibrationDataReader`` that builds one sample at a time from ``items``."""
    qz = require("onnxruntime.quantization", "INT8 calibration")

    class FaceReader(qz.CalibrationDataReader):
        def __init__(self):
            self._it = feeds_for(target, faceset.iter_faces(items), sources)
            self.count = 0

        def get_next(self):
            feed = next(self._it, None)
            if feed is None:
                return None
            self.count += 1
            return {n: feed[n].numpy() for n in input_names}

        def __len__(self):
            return len(items)

    return FaceReader()
