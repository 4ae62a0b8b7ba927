"""The naive baseline: the same models on the same backend, called the way common face-swap scripts call them.

Per frame, per face, on the CPU side: MTCNN's image pyramid with ``cv2.resize``
and ``cv2.dnn.blobFromImage``, box crops cut out one by one, NMS in a NumPy
loop; alignment with ``cv2.estimateAffinePartial2D`` + ``cv2.warpAffine``; every
model called with NumPy arrays in and NumPy arrays out (an onnxruntime CUDA
session without IO binding, a torch module fed ``torch.from_numpy(...).to(device)``
and read back with ``.cpu().numpy()``), so every stage crosses the PCIe bus
twice; the source identity's embedding recomputed for every face of every frame
(alignment + encoder); the swapped face pasted back with ``cv2.seamlessClone``
and the restored face with a full-frame float alpha blend.

The models, weights, artifacts and precisions are exactly the reference
pipeline's (:class:`ffexport.pipeline.pipeline.Pipeline`): only the way they are
driven differs, which is what the speed-up in the report measures.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import specs
from .._lazy import require
from ..errors import InputSpecError, NoFaceError
from ..specs.templates import FFHQ_512

MTCNN_MODULES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")


def _cv2():
    return require("cv2", "the naive baseline pipeline")


class NaiveModel:
    """One model, NumPy in and NumPy out, on ``backend``/``precision``/``device``."""

    def __init__(self, spec, backend: str, precision: str, device: str, out: str | Path):
        self.spec, self.backend, self.precision, self.device = spec, backend, precision, device
        self.source = ""
        if backend == "torch" and getattr(spec, "origin", ""):
            backend = self.backend = "ort"  # a user's ONNX file has no torch form (as in the reference pipeline)
        if backend == "torch":
            import torch

            from ..models import build_model

            self._torch = torch
            self.model = build_model(spec).to(device).eval()
            if precision == "fp16":
                self.model = self.model.half()
            self._dtype = torch.float16 if precision == "fp16" else torch.float32
            self.source = "torch (default weights)"
        elif backend == "ort":
            from ..backends.ort import ort_session
            from ..artifacts.find import onnx_artifact

            path = onnx_artifact(spec, precision, out, build_missing=False)  # the bench prepared it
            self.sess = ort_session(path, device)
            self._types = {i.name: (np.float16 if i.type == "tensor(float16)" else np.float32)
                           for i in self.sess.get_inputs()}
            self._outs = [o.name for o in self.sess.get_outputs()]
            self.source = str(path)
        elif backend == "trt":
            import torch

            from ..backends.trt import TrtRunner
            from ..artifacts.find import engine_artifact

            self._torch = torch
            path = engine_artifact(spec, precision, out, build_missing=False, device=device)
            self.runner = TrtRunner(path, spec=spec, device=device)
            self.runner.activate()
            self.source = str(path)
        else:
            raise InputSpecError(f"unknown backend {backend!r}")

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        if self.backend == "ort":
            feed = {n: np.ascontiguousarray(a, dtype=self._types[n]) for n, a in arrays.items()}
            return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self._outs, self.sess.run(self._outs, feed))}
        torch = self._torch
        if self.backend == "trt":
            out = self.runner.infer({n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()})
            return {n: v.float().cpu().numpy() for n, v in out.items()}
        args = [torch.from_numpy(np.ascontiguousarray(arrays[n])).to(self.device).to(self._dtype)
                for n in self.spec.input_names]
        with torch.inference_mode():
            out = self.model(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.float().cpu().numpy() for n, o in zip(self.spec.output_names, out)}

    def close(self) -> None:
        if self.backend == "trt":
            self.runner.deactivate()
        self.model = self.sess = self.runner = None


# --- MTCNN, the way NumPy scripts write it -------------------------------------------------------

def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy NMS in a Python loop; indices kept, highest score first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        if mode == "min":
            over = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-12)
        else:
            over = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[over <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(b: np.ndarray) -> np.ndarray:
    wh = b[:, 2:4] - b[:, 0:2]
    side = wh.max(1, keepdims=True)
    c = b[:, 0:2] + wh / 2
    return np.concatenate([c - side / 2, c + side / 2], 1)


def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    wh = np.tile(b[:, 2:4] - b[:, 0:2], (1, 2))
    return b + reg * wh


def _crop(img: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The box cut out of ``img`` (zeros outside), resized to ``size`` x ``size``."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    x1, y1 = int(math.floor(box[0])), int(math.floor(box[1]))
    x2, y2 = max(x1 + 1, int(math.ceil(box[2]))), max(y1 + 1, int(math.ceil(box[3])))
    patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = img[sy1:sy2, sx1:sx2]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def _blob(images, preprocess, size) -> np.ndarray:
    """``cv2.dnn.blobFromImage(s)`` with the module's mean/std and channel order (frames are RGB)."""
    cv2 = _cv2()
    kw = dict(scalefactor=1.0 / preprocess.std[0], size=(size[1], size[0]), mean=tuple(preprocess.mean),
              swapRB=preprocess.color == "BGR", crop=False)
    if isinstance(images, list):
        return cv2.dnn.blobFromImages(images, **kw)
    return cv2.dnn.blobFromImage(images, **kw)


class NaiveMTCNN:
    """MTCNN (same nets, thresholds and pyramid as :class:`ffexport.pipeline.mtcnn.MTCNNDetector`) in NumPy/cv2."""

    def __init__(self, pnet: NaiveModel, rnet: NaiveModel, onet: NaiveModel, min_face: float = 20.0,
                 factor: float = 0.709, thresholds=(0.6, 0.7, 0.7)):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face, self.factor, self.thresholds = min_face, factor, thresholds

    def detect(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """boxes (N, 4), points (N, 5, 2), scores (N,) in pixel-centre coordinates, best first."""
        cv2 = _cv2()
        pre = self.pnet.spec.preprocess
        h, w = img.shape[:2]
        found = []
        s = 12.0 / self.min_face
        side = min(h, w) * s
        while side >= 12:
            hs, ws = max(12, math.ceil(h * s)), max(12, math.ceil(w * s))
            level = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA)
            out = self.pnet(input=_blob(level, pre, (hs, ws)))
            prob, reg = out["prob"][0, 1], out["reg"][0]
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys):
                sx, sy = ws / w, hs / h
                box = np.stack([2 * xs / sx, 2 * ys / sy, (2 * xs + 12) / sx, (2 * ys + 12) / sy], 1)
                score = prob[ys, xs]
                k = nms(box, score, 0.5)
                found.append(np.concatenate([box[k], reg[:, ys[k], xs[k]].T, score[k, None]], 1))
            s *= self.factor
            side *= self.factor
        empty = (np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32))
        if not found:
            return empty
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 8], 0.7)]
        boxes = _square(_regress(cand[:, :4], cand[:, 4:8]))
        # R-Net on 24x24 crops cut out one at a time
        out = self.rnet(input=_blob([_crop(img, b, 24) for b in boxes], pre, (24, 24)))
        score = out["prob"][:, 1]
        ok = score > self.thresholds[1]
        boxes, score, reg = boxes[ok], score[ok], out["reg"][ok]
        if not len(boxes):
            return empty
        k = nms(boxes, score, 0.7)
        boxes = _square(_regress(boxes[k], reg[k]))
        # O-Net on 48x48 crops
        out = self.onet(input=_blob([_crop(img, b, 48) for b in boxes], pre, (48, 48)))
        score = out["prob"][:, 1]
        ok = score > self.thresholds[2]
        boxes, score, reg, lm = boxes[ok], score[ok], out["reg"][ok], out["landmarks"][ok]
        if not len(boxes):
            return empty
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        points = np.stack([boxes[:, None, 0] + lm[:, :5] * wh[:, None, 0],
                           boxes[:, None, 1] + lm[:, 5:] * wh[:, None, 1]], -1)
        boxes = _regress(boxes, reg)
        k = nms(boxes, score, 0.7, mode="min")
        # the cascade counts pixel j as [j, j + 1); alignment puts its centre at j
        return (boxes[k] - 0.5).astype(np.float32), (points[k] - 0.5).astype(np.float32), score[k]


# --- the pipeline --------------------------------------------------------------------------------

def _matrix(points: np.ndarray, template, size: int) -> np.ndarray:
    cv2 = _cv2()
    dst = np.asarray(template.scaled(size), np.float32)
    M, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), dst, method=cv2.RANSAC, ransacReprojThreshold=100)
    return M


def _warp(img: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    cv2 = _cv2()
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _to_image(chw: np.ndarray, value_range) -> np.ndarray:
    lo, hi = value_range or (0.0, 1.0)
    x = (chw.transpose(1, 2, 0) - lo) / (hi - lo) * 255.0
    return np.clip(x.round(), 0, 255).astype(np.uint8)


class NaivePipeline:
    """Same interface as the reference :class:`~ffexport.pipeline.pipeline.Pipeline` where the benchmark uses it."""

    def __init__(self, backend: str, precision: str, device: str = "cpu", out: str | Path = "artifacts",
                 variants: Mapping[str, str] | None = None, enhance: bool = True):
        variants = dict(variants or {})
        self.device, self.enhance = device, bool(enhance)
        self.timing = False
        self.timings: dict[str, float] = {}
        self.stats = {"frames": 0, "frames_with_faces": 0, "faces_swapped": 0}
        self.models: dict[str, NaiveModel] = {}
        try:
            for m in (*MTCNN_MODULES, "encoder", "generator", *(("enhancer",) if self.enhance else ())):
                spec = specs.get(m, variants.get(m))
                self.models[m] = NaiveModel(spec, backend, precision, device, out)
        except BaseException:
            self.close()
            raise
        self.detector = NaiveMTCNN(*(self.models[m] for m in MTCNN_MODULES))
        self._source: tuple[np.ndarray, np.ndarray] | None = None
        from ..faces.feeds import source_transform

        emap = source_transform(self.models["generator"].spec)
        self._emap = emap.numpy() if emap is not None else None

    # --- the Pipeline-like surface the benchmark uses ----------------------------------------------
    def describe(self) -> list[dict]:
        return [{"module": m.spec.key, "backend": m.backend, "precision": m.precision, "source": m.source,
                 "naive": True} for m in self.models.values()]

    def close(self) -> None:
        for m in self.models.values():
            m.close()

    def reset_timings(self) -> None:
        self.timings.clear()

    def _t(self, name: str):
        pipe = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if pipe.timing:
                    pipe.timings[name] = pipe.timings.get(name, 0.0) + time.perf_counter() - self.t0
                return False

        return _T()

    def set_source(self, image: np.ndarray) -> None:
        """Detect the source face (largest) once; its embedding is recomputed for every face swapped."""
        boxes, points, _ = self.detector.detect(np.ascontiguousarray(image))
        if not len(boxes):
            raise NoFaceError("no face found in the source image")
        k = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        self._source = (np.ascontiguousarray(image), points[k])

    def _embedding(self) -> np.ndarray:
        enc = self.models["encoder"]
        image, points = self._source
        size = int(enc.spec.input_size[0])
        crop = _warp(image, _matrix(points, enc.spec.template, size), size)
        emb = enc(**{enc.spec.input_names[0]: _blob(crop, enc.spec.preprocess, (size, size))})
        emb = emb[enc.spec.output_names[0]][0]
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        if self._emap is not None:  # the inswapper latent, as insightface's scripts compute it
            emb = emb @ self._emap
            emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        return emb.astype(np.float32)

    def process_frames(self, frames) -> list[np.ndarray]:
        """Frame by frame: the naive baseline never batches."""
        return [self.process_frame(f) for f in frames]

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        if self._source is None:
            raise InputSpecError("no source face: call set_source(image) first")
        with self._t("detect"):
            _boxes, points, _ = self.detector.detect(frame)
        out = np.array(frame, copy=True)
        gen = self.models["generator"]
        gsize = int(gen.spec.input_size[0])
        for lm in points:
            with self._t("encode"):
                emb = self._embedding()
            with self._t("align"):
                M = _matrix(lm, gen.spec.template, gsize)
                crop = _warp(out, M, gsize)
            with self._t("swap"):
                res = gen(target=_blob(crop, gen.spec.preprocess, (gsize, gsize)), source=emb[None])["output"][0]
                face = _to_image(res, gen.spec.outputs[0].value_range)
            with self._t("blend"):
                out = paste_seamless(out, face, M)
            if self.enhance:
                out = self._enhance(out, lm)
        self.stats["frames"] += 1
        self.stats["frames_with_faces"] += int(len(points) > 0)
        self.stats["faces_swapped"] += int(len(points))
        return out

    def _enhance(self, frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
        enh = self.models["enhancer"]
        size = int(enh.spec.input_size[0])
        with self._t("align"):
            M = _matrix(lm, enh.spec.template or FFHQ_512, size)
            crop = _warp(frame, M, size)
        with self._t("enhance"):
            res = enh(**{enh.spec.input_names[0]: _blob(crop, enh.spec.preprocess, (size, size))})
            face = _to_image(res[enh.spec.output_names[0]][0], enh.spec.outputs[0].value_range)
        with self._t("blend"):
            return paste_soft(frame, face, M)


def _inverse_mask(shape: tuple[int, int], IM: np.ndarray, frame_hw: tuple[int, int], margin: int) -> np.ndarray:
    cv2 = _cv2()
    mask = np.zeros(shape, np.uint8)
    mask[margin:shape[0] - margin, margin:shape[1] - margin] = 255
    h, w = frame_hw
    return cv2.warpAffine(mask, IM, (w, h))


def paste_seamless(frame: np.ndarray, face: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Warp ``face`` back over the whole frame and ``cv2.seamlessClone`` it in."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    IM = cv2.invertAffineTransform(M)
    warped = cv2.warpAffine(face, IM, (w, h))
    mask = _inverse_mask(face.shape[:2], IM, (h, w), max(2, face.shape[0] // 16))
    mask[:1], mask[-1:], mask[:, :1], mask[:, -1:] = 0, 0, 0, 0
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw < 3 or bh < 3:
        return frame
    return cv2.seamlessClone(warped, frame, mask, (x + bw // 2, y + bh // 2), cv2.NORMAL_CLONE)


def paste_soft(frame: np.ndarray, face: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Warp ``face`` and a feathered mask back over the whole frame and alpha-blend in float."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    IM = cv2.invertAffineTransform(M)
    warped = cv2.warpAffine(face, IM, (w, h)).astype(np.float32)
    size = face.shape[0]
    mask = np.zeros(face.shape[:2], np.float32)
    m = max(2, size // 10)
    mask[m:size - m, m:size - m] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), size / 20)
    mask = cv2.warpAffine(mask, IM, (w, h))[..., None]
    return (mask * warped + (1.0 - mask) * frame.astype(np.float32)).round().clip(0, 255).astype(np.uint8)
