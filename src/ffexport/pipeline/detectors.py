"""Face detectors: one protocol, two implementations, and the factory the pipeline uses.

A :class:`Detector` takes ``B x 3 x H x W`` float RGB frames in [0, 255] on the
device and returns, per frame, ``(boxes (N, 4) xyxy, landmarks (N, 5, 2),
scores (N,))`` in frame pixels with pixel centres at integer coordinates (the
convention of :mod:`ffexport.vision.align`), highest score first.  It runs the
:class:`~ffexport.pipeline.stages.Stage` objects it is given (the caller builds
them with ``make_stage``, owns them and closes them); ``stages`` lists them.

* ``mtcnn`` (:class:`ffexport.pipeline.mtcnn.MTCNN`): the P-/R-/O-Net cascade on
  the trained facenet-pytorch weights; frames larger than ``max_side`` are
  detected on a scaled copy.
* ``retinaface`` (:class:`ffexport.pipeline.retinaface.RetinaFace`): one stage on
  a letterboxed batch at the spec's input size; anchor decoding, score threshold
  and NMS on the device.  Needs a trained checkpoint to find real faces.

Importing this file does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol, runtime_checkable

from ..errors import UnknownNameError

if TYPE_CHECKING:
    import torch

    from .stages import Stage

    Faces = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (N, 4), landmarks (N, 5, 2), scores (N,)

KINDS: tuple[str, ...] = ("mtcnn", "retinaface")
AUTO = "auto"
CHOICES: tuple[str, ...] = (AUTO, *KINDS)  # what a user may ask for: auto picks one of KINDS
MTCNN_MODULES: tuple[str, ...] = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")
MTCNN_MAX_SIDE = 1280  # larger frames are detected on a copy scaled to this long side (1080p/4K: same faces, faster)
MODULES: dict[str, tuple[str, ...]] = {"mtcnn": MTCNN_MODULES, "retinaface": ("detector",)}


@runtime_checkable
class Detector(Protocol):
    """What the pipeline asks of a face detector."""

    kind: str                     # one of KINDS
    stages: Mapping[str, "Stage"]  # module -> the stage it runs (describe; the caller closes them)

    def detect(self, images: "torch.Tensor") -> list["Faces"]:
        """Per frame of ``images`` (``B x 3 x H x W`` float RGB in [0, 255]): boxes, 5 landmarks, scores."""
        ...


def resolve_kind(choice: str, has_detector_checkpoint: bool = False) -> str:
    """The detector ``choice`` names: ``auto`` is RetinaFace when it has a (trained) checkpoint, else MTCNN."""
    if choice not in CHOICES:
        raise UnknownNameError("detector", choice, CHOICES)
    if choice == AUTO:
        return "retinaface" if has_detector_checkpoint else "mtcnn"
    return choice


def detector_modules(kind: str) -> tuple[str, ...]:
    """The modules (stages) detector ``kind`` runs, in order."""
    if kind not in MODULES:
        raise UnknownNameError("detector", kind, KINDS)
    return MODULES[kind]


def make_detector(kind: str, stages: Mapping[str, "Stage"], device="cpu", score_threshold: float | None = None,
                  min_face: float = 20.0, max_side: int | None = MTCNN_MAX_SIDE) -> Detector:
    """Detector ``kind`` on ``stages`` (``module -> Stage``, at least ``detector_modules(kind)``).

    ``score_threshold`` is the last stage's (MTCNN's O-Net: 0.7, RetinaFace: 0.5 when None);
    ``min_face`` (pixels of the detection image) and ``max_side`` apply to MTCNN only.
    """
    missing = [m for m in detector_modules(kind) if m not in stages]
    if missing:
        raise ValueError(f"the {kind} detector needs stages {list(detector_modules(kind))}; missing {missing}")
    if kind == "mtcnn":
        from .mtcnn import MTCNN

        return MTCNN(stages, device=device, score_threshold=score_threshold, min_face=min_face, max_side=max_side)
    from .retinaface import RetinaFace

    return RetinaFace(stages, score_threshold=score_threshold)


def largest(boxes: "torch.Tensor") -> "torch.Tensor":
    """Index of the largest box (by area) of ``boxes`` ``(N, 4)`` xyxy."""
    return ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).argmax()
