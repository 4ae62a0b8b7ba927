"""Face detection for the pipeline: the trained MTCNN cascade or RetinaFace, behind one call.

``FaceDetector(images)`` takes ``B x 3 x H x W`` float RGB frames in [0, 255]
on the device and returns, per frame, ``(boxes (N, 4) xyxy, landmarks (N, 5,
2), scores (N,))`` in frame pixels with pixel centres at integer coordinates
(the convention of :mod:`ffexport.vision.align`), highest score first.

* ``mtcnn``: three stages (P-/R-/O-Net) driven by :class:`MTCNNDetector`;
  the default, because its weights are trained (facenet-pytorch's wheel).
* ``retinaface``: one stage on a letterboxed 640x640 batch; anchor decoding,
  score threshold and NMS on the device (:mod:`ffexport.vision.retinaface`).
  Needs a trained checkpoint to find real faces.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..vision import align
from .stages import Stage

KINDS = ("mtcnn", "retinaface")
MTCNN_MAX_SIDE = 1280  # larger frames are detected on a copy scaled to this long side (1080p/4K: same faces, faster)
MTCNN_MODULES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")

Faces = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FaceDetector:
    """``make_stage(module) -> Stage`` builds each module's stage (backend, precision and weights are the caller's)."""

    def __init__(self, kind: str, make_stage: Callable[[str], Stage], device: torch.device | str = "cpu",
                 score_threshold: float | None = None, iou_threshold: float = 0.4, min_face: float = 20.0,
                 max_side: int | None = MTCNN_MAX_SIDE):
        if kind not in KINDS:
            from ..errors import UnknownNameError

            raise UnknownNameError("detector", kind, KINDS)
        self.kind = kind
        self.device = torch.device(device)
        self.max_side = max_side
        self.stages: dict[str, Stage] = {}
        if kind == "mtcnn":
            from .mtcnn import MTCNNDetector

            for m in MTCNN_MODULES:
                self.stages[m] = make_stage(m)
            last = 0.7 if score_threshold is None else float(score_threshold)
            batch = [s.max_batch for s in self.stages.values() if s.max_batch]
            # onnxruntime on CUDA re-plans on every new input shape: give it a few batch sizes only
            pad = self.device.type == "cuda" and any(self.stages[m].backend == "ort" for m in MTCNN_MODULES[1:])
            self._cascade = MTCNNDetector(*(self.stages[m] for m in MTCNN_MODULES), device=self.device,
                                          thresholds=(0.6, 0.7, last), min_face=min_face,
                                          max_batch=min(batch) if batch else None, pad_batches=pad)
        else:
            self.stages["detector"] = make_stage("detector")
            self.score_threshold = 0.5 if score_threshold is None else float(score_threshold)
            self.iou_threshold = float(iou_threshold)

    def __call__(self, images: torch.Tensor) -> list[Faces]:
        if self.kind == "mtcnn":
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
                    for b, p, s in self._cascade.detect(images)]
        from ..vision.retinaface import detect_postprocess

        stage = self.stages["detector"]
        size = int(stage.spec.input_size[0])
        boxed, scale, pad = align.letterbox(images, size)
        out = stage.run({stage.spec.input_names[0]: align.normalize(boxed, stage.spec.preprocess)})
        result = []
        for boxes, kps, scores in detect_postprocess(out, self.score_threshold, self.iou_threshold, input_size=size):
            boxes = align.unletterbox_points(boxes.reshape(-1, 2, 2), scale, pad).reshape(-1, 4)
            result.append((boxes, align.unletterbox_points(kps, scale, pad), scores))
        return result

    detect = __call__

    def close(self) -> None:
        for s in self.stages.values():
            s.close()


def largest(boxes: torch.Tensor) -> torch.Tensor:
    """Index of the largest box (by area)."""
    return torch.argmax((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0))
