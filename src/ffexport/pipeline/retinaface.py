"""RetinaFace face detection for the pipeline (the :class:`~ffexport.pipeline.detectors.Detector` protocol).

One stage on a batch letterboxed to the spec's square input size; anchor decoding, score threshold and
NMS on the device (:mod:`ffexport.vision.retinaface`); boxes and landmarks mapped back to frame pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch

from ..vision import align
from ..vision.retinaface import detect_postprocess

if TYPE_CHECKING:
    from .detectors import Faces
    from .stages import Stage


class RetinaFace:
    """RetinaFace on ``stages["detector"]`` (built, owned and closed by the caller)."""

    kind = "retinaface"

    def __init__(self, stages: Mapping[str, Stage], score_threshold: float | None = None,
                 iou_threshold: float = 0.4):
        self.stages: dict[str, Stage] = {"detector": stages["detector"]}
        self.score_threshold = 0.5 if score_threshold is None else float(score_threshold)
        self.iou_threshold = float(iou_threshold)

    def detect(self, images: torch.Tensor) -> list[Faces]:
        """Per frame of ``images`` (``B x 3 x H x W`` float RGB in [0, 255]): boxes, 5 landmarks, scores."""
        stage = self.stages["detector"]
        size = int(stage.spec.input_size[0])
        boxed, scale, pad = align.letterbox(images, size)
        out = stage.run({stage.spec.input_names[0]: align.normalize(boxed, stage.spec.preprocess)})
        result = []
        for boxes, kps, scores in detect_postprocess(out, self.score_threshold, self.iou_threshold, input_size=size):
            boxes = align.unletterbox_points(boxes.reshape(-1, 2, 2), scale, pad).reshape(-1, 4)
            result.append((boxes, align.unletterbox_points(kps, scale, pad), scores))
        return result

    __call__ = detect
