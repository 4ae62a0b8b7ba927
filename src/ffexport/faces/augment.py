"""Deterministic augmentations of real faces (flip, rotation, zoom, crop, shift, colour), landmarks carried
along: the built-in face and its augmentations are the default real inputs of the parity checks."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .load import FaceImage, builtin_face, synthetic_landmarks

# the subject's left/right swap under a horizontal flip: keep "left eye" = smaller x
FLIP_ORDER = (1, 0, 2, 4, 3)

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

    from ..vision.align import to_tensor_image, to_uint8_hwc, transform_points, warp_affine

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
