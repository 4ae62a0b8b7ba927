"""MTCNN face detection: the cascade on the device (image pyramid -> P-Net -> R-Net -> O-Net -> faces with
5 landmarks), and :class:`MTCNN`, the pipeline's detector (the :class:`~ffexport.pipeline.detectors.Detector`
protocol) that runs it on three stages.

The three nets of :class:`MTCNNDetector` are plain callables ``{"input": tensor} -> {"prob", "reg"[, "landmarks"]}``:
torch modules wrapped in :class:`TorchNet`, or any ffexport runner (onnxruntime,
TensorRT), so the same cascade checks a converted net end to end.

Coordinates: boxes are ``x1, y1, x2, y2`` with pixel ``j`` spanning ``[j, j + 1)``
(so ``x2 - x1`` is the width); landmarks are reported the way facenet-pytorch
reports them (``x1 + fraction * width``).  Everything stays on the device:
candidate boxes are resampled with ``grid_sample`` (one call per frame for all
its boxes), NMS is a vectorised fixed point, and nothing loops over boxes on the host.
:class:`MTCNN` reports in the pipeline's convention instead (pixel centres at integer coordinates).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..vision.mtcnn import batched_nms, bucket, crop_boxes, normalise, regress, square
from .detectors import MTCNN_MAX_SIDE, MTCNN_MODULES

if TYPE_CHECKING:
    from .stages import Stage

Net = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]
Faces = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (N, 4), points (N, 5, 2), scores (N,)

CELL, STRIDE = 12, 2  # P-Net window and step in pyramid pixels
MAX_CANDIDATES = 4096  # per pyramid level, highest scores first (bounds the NxN NMS matrix)


class TorchNet:
    """Adapt a torch module returning a tuple (spec output order) to the ``dict -> dict`` net interface.

    ``output_names`` defaults to the module's own ``output_names`` (ffexport's MTCNN nets have them).
    """

    def __init__(self, module: torch.nn.Module, output_names: Sequence[str] | None = None):
        names = output_names if output_names is not None else getattr(module, "output_names", None)
        if names is None:
            raise ValueError(f"TorchNet: {type(module).__name__} has no output_names; pass them")
        self.module = module
        self.output_names = list(names)

    def __call__(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.module(feeds["input"])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.output_names, out))


class MTCNNDetector:
    """Multi-scale MTCNN face detection over a batch of equally sized RGB frames."""

    def __init__(self, pnet: Net, rnet: Net, onet: Net, device: torch.device | str = "cpu",
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), min_face: float = 20, factor: float = 0.709,
                 nms_thresholds: Sequence[float] = (0.5, 0.7, 0.7, 0.7), max_batch: int | None = None,
                 pad_batches: bool = False):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"pyramid factor must be in (0, 1), got {factor}")
        if min_face < 1:
            raise ValueError(f"min_face must be >= 1 pixel, got {min_face}")
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.device = torch.device(device)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_face, self.factor = float(min_face), float(factor)
        self.nms_thresholds = tuple(float(t) for t in nms_thresholds)  # per level, all levels, R-Net, O-Net
        self.max_batch = max_batch  # split R-/O-Net calls (runners with a bounded batch profile)
        # R-/O-Net batches (the candidate count, new every frame) padded to powers of two: runners that
        # re-plan on every new input shape (onnxruntime CUDA) then see a handful of shapes
        self.pad_batches = bool(pad_batches)

    @classmethod
    def from_torch(cls, device: torch.device | str = "cpu", **kwargs) -> "MTCNNDetector":
        """The cascade on the trained facenet-pytorch weights, as torch modules on ``device``."""
        from .. import specs
        from ..models import build_model

        nets = []
        for module in MTCNN_MODULES:
            spec = specs.get(module)
            nets.append(TorchNet(build_model(spec).to(device), spec.output_names))
        return cls(*nets, device=device, **kwargs)

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: the smallest face maps to the 12-pixel window, then ``*factor`` while >= 12 px."""
        s = CELL / self.min_face
        side = min(height, width) * s
        out = []
        while side >= CELL:
            out.append(s)
            s *= self.factor
            side *= self.factor
        return out

    # stages ------------------------------------------------------------------------------
    def _run(self, net: Net, x: torch.Tensor, pad: bool = False) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        step = self.max_batch or max(n, 1)
        parts = []
        for i in range(0, max(n, 1), step):
            chunk = x[i:i + step]
            m = chunk.shape[0]
            if pad and self.pad_batches and m:
                size = bucket(m, self.max_batch)
                if size > m:
                    chunk = torch.cat([chunk, chunk.new_zeros(size - m, *chunk.shape[1:])])
            out = net({"input": chunk})
            parts.append({k: v[:m].to(self.device) for k, v in out.items()})
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _propose(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid: square candidate boxes, their scores and image indices."""
        h, w = images.shape[-2:]
        boxes, scores, index = [], [], []
        for s in self.scales(h, w):
            sh, sw = max(CELL, math.ceil(h * s)), max(CELL, math.ceil(w * s))
            level = F.interpolate(images, size=(sh, sw), mode="area")
            out = self._run(self.pnet, normalise(level))
            prob, reg = out["prob"][:, 1].float(), out["reg"].float()
            b, i, j = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
            if b.numel() == 0:
                continue
            score = prob[b, i, j]
            if score.numel() > MAX_CANDIDATES:
                top = torch.topk(score, MAX_CANDIDATES).indices
                b, i, j, score = b[top], i[top], j[top], score[top]
            sx, sy = sw / w, sh / h
            x1, y1 = (STRIDE * j).float(), (STRIDE * i).float()
            box = torch.stack([x1 / sx, y1 / sy, (x1 + CELL) / sx, (y1 + CELL) / sy], 1)
            keep = batched_nms(box, score, b, self.nms_thresholds[0])  # regression waits until after NMS
            boxes.append(torch.cat([box[keep], reg[b[keep], :, i[keep], j[keep]]], 1))
            scores.append(score[keep])
            index.append(b[keep])
        if not boxes:
            empty = images.new_zeros(0, 4)
            return empty, images.new_zeros(0), torch.zeros(0, dtype=torch.long, device=images.device)
        boxes, scores, index = torch.cat(boxes), torch.cat(scores), torch.cat(index)
        keep = batched_nms(boxes[:, :4], scores, index, self.nms_thresholds[1])
        boxes, scores, index = boxes[keep], scores[keep], index[keep]
        return square(regress(boxes[:, :4], boxes[:, 4:])), scores, index

    def _refine(self, images, boxes, index):
        """R-Net: rescore and refine candidates."""
        out = self._run(self.rnet, normalise(crop_boxes(images, boxes, 24, index)), pad=True)
        score = out["prob"][:, 1].float()
        ok = score > self.thresholds[1]
        boxes, score, index, reg = boxes[ok], score[ok], index[ok], out["reg"][ok].float()
        keep = batched_nms(boxes, score, index, self.nms_thresholds[2])
        return square(regress(boxes[keep], reg[keep])), score[keep], index[keep]

    def _output(self, images, boxes, index):
        """O-Net: final scores, boxes and landmarks."""
        out = self._run(self.onet, normalise(crop_boxes(images, boxes, 48, index)), pad=True)
        score = out["prob"][:, 1].float()
        ok = score > self.thresholds[2]
        boxes, score, index = boxes[ok], score[ok], index[ok]
        reg, lm = out["reg"][ok].float(), out["landmarks"][ok].float()
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        points = torch.stack([boxes[:, None, 0] + lm[:, :5] * wh[:, None, 0],
                              boxes[:, None, 1] + lm[:, 5:] * wh[:, None, 1]], -1)
        boxes = regress(boxes, reg)
        keep = batched_nms(boxes, score, index, self.nms_thresholds[3], mode="min")
        return boxes[keep], points[keep], score[keep], index[keep]

    def detect(self, images: torch.Tensor) -> list[Faces]:
        """Faces per image of ``images`` (``B x 3 x H x W`` float RGB in [0, 255]).

        Returns, per image, ``(boxes (N, 4) xyxy, points (N, 5, 2), scores (N,))``
        sorted by score, highest first, on the detector's device.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected B x 3 x H x W RGB images, got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        n = images.shape[0]
        boxes, scores, index = self._propose(images)
        points = images.new_zeros(0, 5, 2)
        if boxes.shape[0]:
            boxes, scores, index = self._refine(images, boxes, index)
        if boxes.shape[0]:
            boxes, points, scores, index = self._output(images, boxes, index)
        result = []
        for b in range(n):
            sel = (index == b).nonzero().squeeze(1) if boxes.shape[0] else index.new_zeros(0)
            order = sel[torch.sort(scores[sel], descending=True, stable=True).indices]
            result.append((boxes[order].reshape(-1, 4), points[order].reshape(-1, 5, 2), scores[order]))
        return result

    __call__ = detect


class MTCNN:
    """The pipeline's MTCNN detector on ``stages`` (``mtcnn_pnet``, ``mtcnn_rnet``, ``mtcnn_onet``; built, owned and
    closed by the caller).  Frames with a side longer than ``max_side`` are detected on a copy scaled to it
    (``None`` or 0: never); ``score_threshold`` is O-Net's (0.7 when None)."""

    kind = "mtcnn"

    def __init__(self, stages: Mapping[str, Stage], device: torch.device | str = "cpu",
                 score_threshold: float | None = None, min_face: float = 20.0,
                 max_side: int | None = MTCNN_MAX_SIDE):
        self.stages: dict[str, Stage] = {m: stages[m] for m in MTCNN_MODULES}
        self.device = torch.device(device)
        self.max_side = max_side
        last = 0.7 if score_threshold is None else float(score_threshold)
        batch = [s.max_batch for s in self.stages.values() if s.max_batch]
        # onnxruntime on CUDA re-plans on every new input shape: give it a few batch sizes only
        pad = self.device.type == "cuda" and any(self.stages[m].backend == "ort" for m in MTCNN_MODULES[1:])
        self.cascade = MTCNNDetector(*self.stages.values(), device=self.device, thresholds=(0.6, 0.7, last),
                                     min_face=min_face, max_batch=min(batch) if batch else None, pad_batches=pad)

    def detect(self, images: torch.Tensor) -> list[Faces]:
        """Per frame of ``images`` (``B x 3 x H x W`` float RGB in [0, 255]): boxes, 5 landmarks, scores."""
        h, w = images.shape[-2:]
        kx = ky = 1.0
        if self.max_side and max(h, w) > self.max_side:  # large frames: detect on a smaller copy
            k = self.max_side / max(h, w)
            size = (max(1, round(h * k)), max(1, round(w * k)))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            kx, ky = size[1] / w, size[0] / h
        scale = images.new_tensor([kx, ky])
        # the cascade counts pixel j as [j, j + 1) (so coordinates scale by plain division);
        # ffexport's geometry puts the centre of pixel j at j
        return [((b.reshape(-1, 2, 2) / scale).reshape(-1, 4) - 0.5, p / scale - 0.5, s)
                for b, p, s in self.cascade.detect(images)]

    __call__ = detect
