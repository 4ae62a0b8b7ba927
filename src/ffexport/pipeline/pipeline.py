"""The reference face-swap pipeline: detect -> (68-point landmarks) -> align -> encode -> swap -> (enhance) -> paste.

Everything after the upload stays on the pipeline's device: frames go up once
(uint8, from pinned host memory, non-blocking), detection and NMS run on the
device, every face of every frame of a batch is aligned by one batched
``grid_sample`` per frame, the generator and enhancer run batched over faces,
and the blender pastes each face back on its region of the frame (ROI).  Only
frames that received a face come back to the host; frames without one are
returned as given, bit for bit.

Each module runs through a :class:`~ffexport.pipeline.stages.Stage` (torch
eager, onnxruntime CPU/CUDA, or TensorRT), chosen per module.

Streams of batches (videos, :meth:`Pipeline.process_batches`) go through the
:class:`~ffexport.pipeline.streaming.StreamingExecutor` (``streaming=True``):
host copies, uploads and downloads of neighbouring batches overlap each
batch's GPU work; ``streaming=False`` runs them one after the other, the
serial path :meth:`Pipeline.process_frames` always takes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .. import specs
from ..errors import InputSpecError, MediaError, NoFaceError, UnknownNameError
from ..faces.feeds import source_transform, transform_source
from ..specs.templates import FFHQ_512
from ..vision import align
from ..vocab import PRECISIONS, TORCH_BACKENDS
from .autobatch import AUTO, parse_batch
from .detectors import MTCNN_MAX_SIDE, detector_modules, largest, make_detector, resolve_kind
from .device import asleep_while_running, check_device, cuda_event, from_host, wait_for
from .crops import crop_faces
from .paste import mask_rois, paste
from .settings import BLEND_MODES, DETECTORS, ENHANCE_FACES_PER_CALL, IDENTITY, check_enhance_faces_per_call
from .stages import Stage, make_stage
from .timers import NO_TIMER, Timer

if TYPE_CHECKING:
    from .settings import PipelineSettings

FACE_MODES = ("all", "largest", "reference")
STAGE_TIMERS = ("transfer", "detect", "landmarks", "align", "encode", "swap", "enhance", "blend")
SOURCE_CACHE = 16


class IdentityGenerator(torch.nn.Module):
    """A generator whose output is its target input: the identity round trip of the tests."""

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return target


class Pipeline:
    """End-to-end face swap on frames, images and videos.

    ``backend`` and ``precision`` are one name for every module or a mapping
    ``module -> name`` (key ``"default"`` for the rest).  ``variants`` picks a
    registered variant per module (e.g. ``{"encoder": "iresnet18"}``);
    ``checkpoints`` maps a module to a state dict.  ``detector="auto"`` uses the
    trained MTCNN cascade unless a RetinaFace checkpoint is given; it detects
    frames larger than ``detect_max_side`` on a scaled copy.
    ``generator="identity"`` returns the target crop unchanged (tests).
    ``timing=True`` accumulates seconds per stage in ``timings`` (GPU synchronised).
    ``enhance_faces_per_call``: the enhancer's largest call (memory).  ``batch``: frames per call of a video, or
    ``"auto"`` (:mod:`.autobatch`: a memory budget on a GPU, 4 frames on a CPU, chosen per video).  ``streaming``: videos and :meth:`process_batches` through the streaming executor.
    ``video_planes``: a streamed video's frames travel as the decoder's YUV 4:2:0 planes and are converted to
    RGB and back on the device (:mod:`.yuv`; no conversion on the host, half the bytes copied): ``None`` (the
    default) on CUDA when the video allows it (:func:`~.video.planes_for`), ``True`` on any device (tests),
    ``False`` never.
    :meth:`from_settings` takes the defaults from ``configs/pipeline.yaml``
    (:class:`~ffexport.pipeline.settings.PipelineSettings`) instead of these.
    """

    def __init__(self, backend: str | Mapping[str, str] = "torch", precision: str | Mapping[str, str] = "fp32",
                 device: str = "cpu", generator: str = "inswapper-128", enhance: bool = False,
                 landmarks68: bool = False, faces: str = "all", detector: str = "auto",
                 checkpoints: Mapping[str, str | Path] | None = None, out: str | Path = "artifacts",
                 batch: int | str = 1,
                 blend: str = "box", mask: Sequence[float] = (0.3, 0.0, 0.0, 0.0, 0.0),
                 variants: Mapping[str, str] | None = None, build_missing: bool = True, timing: bool = False,
                 score_threshold: float | None = None, min_face: float = 20.0, reference_threshold: float = 0.4,
                 detect_max_side: int | None = MTCNN_MAX_SIDE, config_dir: str | Path | None = None,
                 streaming: bool = True, enhance_faces_per_call: int = ENHANCE_FACES_PER_CALL, say=None,
                 video_planes: bool | None = None):
        self.device = check_device(device)
        batch = parse_batch(batch)
        self.auto_batch = batch == AUTO
        self.batch = 1 if self.auto_batch else batch  # with auto: chosen per video (process_video)
        self.streaming = bool(streaming)
        self.video_planes = None if video_planes is None else bool(video_planes)
        check_enhance_faces_per_call(enhance_faces_per_call)
        self._executor = None
        self._plane_executors: dict = {}
        for name, value, valid in (("faces", faces, FACE_MODES), ("blend", blend, BLEND_MODES),
                                   ("detector", detector, DETECTORS)):
            if value not in valid:
                raise UnknownNameError(f"{name} mode", value, valid)
        if generator != IDENTITY:
            specs.get("generator", generator)  # unknown names list the valid ones
        mask = tuple(float(v) for v in mask)
        if len(mask) != 5 or not all(0.0 <= v < 1.0 for v in mask):
            raise InputSpecError(f"mask needs 5 values in [0, 1) (blur, top, right, bottom, left), got {list(mask)}")
        self.checkpoints = {k: Path(v) for k, v in (checkpoints or {}).items()}
        for module in self.checkpoints:
            specs.variants(module)  # unknown module names fail here
        self.faces, self.blend_mode, self.enhance, self.landmarks68 = faces, blend, bool(enhance), bool(landmarks68)
        self.generator_name = generator
        self.reference_threshold = float(reference_threshold)
        self._backend, self._precision = backend, precision
        self._variants = dict(variants or {})
        self._config_dir = config_dir
        self._out, self._build_missing, self._say = out, build_missing, say or (lambda _m: None)
        self.timing = bool(timing)
        self.timings: dict[str, float] = {}
        self.stats = {"frames": 0, "frames_with_faces": 0, "faces_swapped": 0}
        self._mask = torch.tensor(mask, dtype=torch.float32, device=self.device)
        self._mask_values = mask
        self._sources: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._source: torch.Tensor | None = None
        self._latent: torch.Tensor | None = None
        self._emap: torch.Tensor | None = None
        self._reference: torch.Tensor | None = None
        self._pinned: torch.Tensor | None = None
        self._upload_done = None
        self._last: tuple | None = None  # the last batch's faces, on the device (see last_faces)

        self.stages: dict[str, Stage] = {}
        try:
            self.detector_name = resolve_kind(detector, "detector" in self.checkpoints
                                              or "detector" in self._variants_with_origin())
            detector_stages = {m: self._add_stage(m) for m in detector_modules(self.detector_name)}
            self.detector = make_detector(self.detector_name, detector_stages, self.device,
                                          score_threshold=score_threshold, min_face=min_face,
                                          max_side=detect_max_side)
            if self.landmarks68:
                self._add_stage("landmarker")
            self._add_stage("encoder")
            if generator == IDENTITY:
                self._add_identity_generator()
            else:
                self._add_stage("generator", generator)
            self._emap = source_transform(self.stages["generator"].spec)  # the inswapper latent's matrix
            if self.batch == 1 and not self.auto_batch:  # one frame a call: mostly one face a call
                self.stages["generator"].warm_single_item()
            if self.enhance:
                enhancer = self._add_stage("enhancer")
                # its activations are most of the device memory: at most this many faces a call
                enhancer.max_batch = min(enhancer.max_batch or enhance_faces_per_call, enhance_faces_per_call)
            # the blender runs on each face's region of the frame, a new shape for nearly every face: compiled per
            # shape it would compile all the time, so it runs eager (see benchmarks/NOTES.md)
            self._add_stage("blender").run_eager()
            self._warm_call_sizes(self.batch)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, settings: PipelineSettings, **kwargs) -> "Pipeline":
        """A pipeline with ``settings`` (:func:`~ffexport.pipeline.settings.load_pipeline_settings`) for its
        choices; ``kwargs`` are the other arguments of the constructor, and override the settings."""
        return cls(**{**settings.pipeline_kwargs(), **kwargs})

    # --- construction ---------------------------------------------------------------------------
    def _choice(self, value, module: str, default: str) -> str:
        if isinstance(value, str):
            return value
        return value.get(module, value.get("default", default))

    def backend_of(self, module: str) -> str:
        b = self._choice(self._backend, module, "torch")
        if b in TORCH_BACKENDS and module in self._variants_with_origin():
            return "ort"  # a user's ONNX model has no torch form: onnxruntime runs it
        return b

    def _variants_with_origin(self) -> set[str]:
        mods = {m: v for m, v in self._variants.items()}
        if self.generator_name != IDENTITY:
            mods["generator"] = self.generator_name
        return {m for m, v in mods.items() if getattr(specs.get(m, v), "origin", "")}

    def precision_of(self, module: str) -> str:
        p = self._choice(self._precision, module, "fp32")
        if p not in PRECISIONS:
            raise UnknownNameError("precision", p, PRECISIONS)
        # a module with nothing to quantise (the blender) runs its FP32 artifact when INT8 is asked for
        return self._spec(module).stage_precision(p)

    def _spec(self, module: str, variant: str | None = None):
        """The module's spec with configs/ applied (the same spec `ffexport onnx` exports)."""
        from ..config import resolve_spec

        return resolve_spec(module, variant or self._variants.get(module), directory=self._config_dir)

    def _add_stage(self, module: str, variant: str | None = None) -> Stage:
        spec = self._spec(module, variant)
        stage = make_stage(spec, self.backend_of(module), self.precision_of(module), str(self.device), self._out,
                           checkpoint=self.checkpoints.get(module), build_missing=self._build_missing, say=self._say,
                           config_dir=self._config_dir)
        self.stages[module] = stage
        return stage

    def _add_identity_generator(self) -> None:
        from ..backends.torch import TorchRunner

        spec = self._spec("generator")
        runner = TorchRunner(IdentityGenerator(), spec=spec, device=str(self.device), name="identity")
        runner.activate()
        self.stages["generator"] = Stage(spec, runner, "torch", "fp32", "identity (output = target)")

    def _warm_call_sizes(self, frames: int) -> None:
        """Stages that run in call sizes (onnxruntime on CUDA) warm the sizes calls of ``frames`` frames, a face
        each, use (:meth:`Stage.warm_call_sizes`); the encoder runs once per source face and is left alone."""
        for module, stage in self.stages.items():
            if module != "encoder":
                stage.warm_call_sizes(frames)

    def describe(self) -> list[dict]:
        return [s.describe() for s in self.stages.values()]

    def close(self) -> None:
        for ex in (self._executor, *self._plane_executors.values()):
            if ex is not None:
                ex.close()
        for s in self.stages.values():
            s.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- timing -----------------------------------------------------------------------------------
    def _t(self, name: str):
        if not self.timing:
            return NO_TIMER
        return Timer(self.timings, name, self.device.type == "cuda")

    def reset_timings(self) -> None:
        self.timings.clear()

    # --- host <-> device ------------------------------------------------------------------------
    def _upload(self, frames) -> torch.Tensor:
        """``B x H x W x 3`` uint8 on the device (one pinned, non-blocking copy on CUDA)."""
        if isinstance(frames, torch.Tensor):
            t = frames if frames.ndim == 4 else frames[None]
            return t.to(self.device, non_blocking=True)
        arrays = [np.asarray(f) for f in frames]
        shape = (len(arrays), *arrays[0].shape)
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(arrays) if len(arrays) > 1 else arrays[0][None].copy())
        if self._upload_done is not None:
            self._upload_done.synchronize()  # the previous copy out of the pinned buffer has finished
        if self._pinned is None or tuple(self._pinned.shape) != shape:
            self._pinned = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        host = self._pinned.numpy()
        for i, a in enumerate(arrays):
            host[i] = a
        dev = self._pinned.to(self.device, non_blocking=True)
        self._upload_done = cuda_event()
        self._upload_done.record()
        return dev

    def _download(self, t: torch.Tensor) -> np.ndarray:
        """``t`` on the host: on CUDA through page-locked memory (torch's caching host allocator reuses the block
        once the arrays that view it are gone), one copy the stream waits for."""
        if t.device.type != "cuda":
            return t.numpy()
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        wait_for(t.device)
        return host.numpy()

    @staticmethod
    def _check_frames(frames) -> None:
        for f in frames:
            shape, dtype = tuple(f.shape), f.dtype
            if len(shape) != 3 or shape[-1] != 3 or str(dtype) not in ("uint8", "torch.uint8"):
                raise InputSpecError(f"frames must be H x W x 3 RGB uint8, got {list(shape)} {dtype}")
            if shape[0] < 8 or shape[1] < 8:
                raise InputSpecError(f"frame of {shape[1]}x{shape[0]} pixels is too small")

    # --- detection ------------------------------------------------------------------------------
    def detect(self, images: torch.Tensor):
        """Per image of ``images`` (``B x 3 x H x W`` float RGB in [0, 255], on the device):
        boxes ``(N, 4)`` xyxy, 5 landmarks ``(N, 5, 2)`` and scores ``(N,)`` (see :mod:`.detectors`)."""
        return self.detector.detect(images)

    # --- embeddings -----------------------------------------------------------------------------
    def _embed(self, images: torch.Tensor, kps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """L2-normalised identity embeddings of faces ``kps`` in ``images[index]``."""
        stage = self.stages["encoder"]
        spec = stage.spec
        with self._t("align"):
            crops, _ = align.align_crop(images, kps, spec.template, int(spec.input_size[0]), image_index=index)
        with self._t("encode"):
            emb = stage.run({spec.input_names[0]: align.normalize(crops, spec.preprocess)})[spec.output_names[0]]
        return torch.nn.functional.normalize(emb.float(), dim=1)

    def _largest_face_embedding(self, image, name: str) -> torch.Tensor:
        self._check_frames([image])
        x = self._upload([image]).permute(0, 3, 1, 2).float()
        with self._t("detect"):
            boxes, kps, _ = self.detect(x)[0]
        if boxes.shape[0] == 0:
            raise NoFaceError(f"no face found in {name}")
        k = int(largest(boxes))
        return self._embed(x, kps[k:k + 1], torch.zeros(1, dtype=torch.long, device=self.device))[0]

    def embedding(self, image, name: str = "source image") -> torch.Tensor:
        """The (cached) L2-normalised embedding of the largest face of ``image`` (array, tensor or path)."""
        from .media import content_hash, read_image

        if isinstance(image, (str, Path)):
            name = str(image)
            image = read_image(image, "source image")
        key = content_hash(image)
        if key in self._sources:
            self._sources.move_to_end(key)
            return self._sources[key]
        emb = self._largest_face_embedding(image, name)
        self._sources[key] = emb
        while len(self._sources) > SOURCE_CACHE:
            self._sources.popitem(last=False)
        return emb

    def set_source(self, image, name: str = "source image") -> torch.Tensor:
        """The identity to paste: the largest face of ``image``, embedded once (LRU cache by content hash)."""
        self._source = self.embedding(image, name)
        self._latent = None
        return self._source

    def set_reference(self, image, name: str = "reference image") -> torch.Tensor:
        """With ``faces="reference"``: swap only the faces that look like the largest face of ``image``."""
        self._reference = self.embedding(image, name)
        return self._reference

    # --- faces ----------------------------------------------------------------------------------
    def _select(self, images: torch.Tensor, dets) -> tuple[torch.Tensor, torch.Tensor]:
        """All selected faces of the batch: 5 landmarks ``(F, 5, 2)`` and frame indices ``(F,)``."""
        kps, index = [], []
        for b, (boxes, points, _scores) in enumerate(dets):
            if boxes.shape[0] == 0:
                continue
            if self.faces == "largest":
                k = largest(boxes)
                points = points[k][None]
            kps.append(points)
            index.append(torch.full((points.shape[0],), b, dtype=torch.long, device=points.device))
        if not kps:
            return images.new_zeros(0, 5, 2), torch.zeros(0, dtype=torch.long, device=images.device)
        kps, index = torch.cat(kps).to(self.device).float(), torch.cat(index).to(self.device)
        if self.faces == "reference":
            if self._reference is None:
                raise InputSpecError("faces='reference' needs set_reference(image) first")
            sim = self._embed(images, kps, index) @ self._reference
            keep = sim >= self.reference_threshold
            kps, index = kps[keep], index[keep]
        return kps, index

    def _refine_landmarks(self, images: torch.Tensor, kps: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """5 points from the 68-point landmarker: eye centres, nose tip, mouth corners.

        A face whose refined points stray from the detector's by more than half
        the detector's eye distance keeps the detector's points (a landmarker
        failure, or seeded weights, must not throw the alignment off).
        """
        stage = self.stages["landmarker"]
        spec = stage.spec
        crops, M = crop_faces(images, kps, spec.template, int(spec.input_size[0]), frames)
        pts = stage.run({spec.input_names[0]: align.normalize(crops, spec.preprocess)})["points"]
        pts = align.transform_points(pts.float().to(self.device), align.invert_affine(M))
        five = torch.stack([pts[:, 36:42].mean(1), pts[:, 42:48].mean(1), pts[:, 30], pts[:, 48], pts[:, 54]], 1)
        eye_dist = (kps[:, 1] - kps[:, 0]).norm(dim=-1)
        ok = (five - kps).norm(dim=-1).amax(1) <= 0.5 * eye_dist
        return torch.where(ok[:, None, None], five, kps)

    # --- crops and paste back ---------------------------------------------------------------------
    def _crops(self, images: torch.Tensor, kps: torch.Tensor, template, size: int, frames: list[int]):
        """The faces' ``size`` crops, their crop -> frame matrices, and the paste-back's regions for crops of that
        size (``(size, regions)``), read back now: the device has only the crops to finish, and the model that
        makes the crops to paste and the paste-back then run back to back."""
        crops, M = crop_faces(images, kps, template, size, frames)
        affine = align.invert_affine(M.double()).float()
        return crops, affine, (size, mask_rois(affine, size, self._mask_values, *images.shape[-2:]))

    def _paste(self, work: torch.Tensor, crops01: torch.Tensor, affine: torch.Tensor, frames: list[int],
               rois: tuple[int, list]) -> None:
        """Paste ``crops01`` back with :meth:`_crops`' regions, which hold if the model kept the crops' size."""
        size, regions = rois
        paste(work, crops01, affine, frames, self.stages["blender"], self._mask, self._mask_values,
              regions if crops01.shape[-1] == size else None)

    def _output01(self, stage: Stage, out: torch.Tensor) -> torch.Tensor:
        lo, hi = stage.spec.outputs[0].value_range or (0.0, 1.0)
        return ((out.float() - lo) / (hi - lo)).clamp(0, 1)

    # --- frames ---------------------------------------------------------------------------------
    def process_frames(self, frames) -> list[np.ndarray]:
        """Swap the source identity into every selected face of ``frames`` (RGB uint8 ``H x W x 3``
        arrays of one size, or a ``B x H x W x 3`` uint8 tensor); returns RGB uint8 arrays."""
        if self._source is None:
            raise InputSpecError("no source face: call set_source(image) first")
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        as_list = list(frames) if not isinstance(frames, torch.Tensor) else list(frames.unbind(0))
        if not as_list:
            return []
        self._check_frames(as_list)
        if len({tuple(f.shape) for f in as_list}) > 1:  # different sizes: one at a time
            return [r for f in as_list for r in self.process_frames([f])]
        with torch.inference_mode():
            return self._process(frames, as_list)

    def process_frame(self, frame) -> np.ndarray:
        """One RGB uint8 ``H x W x 3`` frame (array or tensor) -> the swapped frame."""
        return self.process_frames([frame])[0]

    def _process(self, frames, as_list) -> list[np.ndarray]:
        """The serial path: upload, the GPU work, download, one after the other."""
        with self._t("transfer"):
            x8 = self._upload(frames)
        out_dev, touched = self._compute(x8)
        result = [self._host(f) for f in as_list]
        if out_dev is None:
            return result
        with self._t("transfer"):
            out_host = self._download(out_dev)
        for j, b in enumerate(touched):
            result[b] = out_host[j]
        return result

    def _compute(self, x8: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
        """The device work of one batch: ``B x H x W x 3`` uint8 frames on the device -> the frames that received
        a face (``T x H x W x 3`` uint8 on the device; None when none did) and their indices in the batch.

        The per-batch function of the streaming executor (:mod:`.streaming`) and of the serial path.
        """
        with self._t("transfer"):
            images = x8.permute(0, 3, 1, 2).float()
        with self._t("detect"):
            dets = self.detect(images)
        kps, index = self._select(images, dets)
        self.stats["frames"] += int(x8.shape[0])
        self._last = None
        if kps.shape[0] == 0:
            return None, []
        # read now, while the stream is idle after detection (at the end it would wait for the whole batch)
        frames = index.tolist()
        touched = sorted(set(frames))
        if self.landmarks68:
            with self._t("landmarks"):
                kps = self._refine_landmarks(images, kps, frames)
        gen = self.stages["generator"]
        size = int(gen.spec.input_size[0])
        with self._t("align"):
            targets, affine, rois = self._crops(images, kps, gen.spec.template, size, frames)
            targets01 = align.normalize(targets, gen.spec.preprocess)
        with self._t("swap"):
            if self._latent is None:  # the source identity as the generator takes it, once per source
                self._latent = transform_source(self._source.to(self.device), self._emap)
            src = self._latent[None].expand(kps.shape[0], -1).contiguous()
            swapped = gen.run({"target": targets01, "source": src})["output"]
            swapped = self._output01(gen, swapped).to(self.device)
        work = images  # the float copy of the upload: composited in place
        with self._t("blend"):
            if self.blend_mode == "poisson":
                from .poisson import poisson_blend

                swapped = poisson_blend(swapped, targets01.clamp(0, 1)).clamp(0, 1)
            self._paste(work, swapped, affine, frames, rois)
        if self.enhance:
            self._enhance(work, kps, frames)
        self._last = (kps, affine, index, size)
        with self._t("transfer"):
            if len(touched) < work.shape[0]:  # (indexing with the host list would wait for the device)
                work = work.index_select(0, from_host(touched, work.device))
            out_dev = work.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        self.stats["frames_with_faces"] += len(touched)
        self.stats["faces_swapped"] += int(kps.shape[0])
        return out_dev, touched

    # --- streams of batches -------------------------------------------------------------------
    def process_batches(self, batches: Iterable, stop=None, planes=None) -> Iterator[list[np.ndarray]]:
        """The swapped frames of each batch of ``batches`` (each a list of RGB uint8 ``H x W x 3`` arrays, as
        :meth:`process_frames` takes), one list per batch, in order, as they are done.

        With ``streaming`` the batches go through the :class:`~.streaming.StreamingExecutor` (copies and
        transfers of neighbouring batches overlap each batch's GPU work; the same frames as the serial path);
        otherwise each is :meth:`process_frames`'.  ``stop`` (a ``threading.Event``): set it to end early; a
        failed or abandoned streaming run sets it.

        ``planes`` (a :class:`~.yuv.Planes`): the frames are ``3H/2 x W`` I420 arrays in that form (a video's
        decoded planes, :meth:`video_planes_for`), converted to RGB after the upload and back before the
        download; the results come in the same form (frames without a face as given).
        """
        if self._source is None:
            raise InputSpecError("no source face: call set_source(image) first")
        if planes is not None:
            return self._plane_executor(planes).run(batches, stop)
        if not self.streaming:
            return self._serial_batches(batches, stop)
        return self.executor.run(batches, stop)

    def _serial_batches(self, batches: Iterable, stop) -> Iterator[list[np.ndarray]]:
        from .streaming import as_arrays

        for batch in batches:
            if stop is not None and stop.is_set():
                return
            yield self.process_frames(as_arrays(batch))

    @property
    def executor(self):
        """The pipeline's :class:`~.streaming.StreamingExecutor` (made on first use; its ring is kept)."""
        if self._executor is None:
            from .streaming import StreamingExecutor

            self._executor = StreamingExecutor(self._compute_batch, self.device, fallback=self.process_frames,
                                               check=self._check_frames)
        return self._executor

    def _compute_batch(self, x8: torch.Tensor):
        if self._source is None:
            raise InputSpecError("no source face: call set_source(image) first")
        return self._compute(x8)

    def codec_threads(self) -> dict:
        """How a video's codec threads run beside this pipeline (:func:`~.video.transcode`'s ``codec_nice`` and
        ``encoder_threads``): on CUDA nicer than the thread that drives the GPU, and libx264 on 3/4 of the cores;
        on a CPU as the codecs choose."""
        if self.device.type != "cuda":
            return {}
        from .video import GPU_CODEC_NICE, gpu_encoder_threads

        return {"codec_nice": GPU_CODEC_NICE, "encoder_threads": gpu_encoder_threads()}

    # --- frames as YUV 4:2:0 planes ---------------------------------------------------------------
    def video_planes_for(self, src: str | Path, dst: str | Path = "out.mp4", codec: str | None = None):
        """The :class:`~.yuv.Planes` in which the video ``src``'s frames travel when written to ``dst`` (see
        ``video_planes``), or None: RGB frames."""
        wanted = self.video_planes if self.video_planes is not None else self.device.type == "cuda"
        if not wanted:
            return None
        from .video import video_planes

        return video_planes(src, Path(dst).suffix, codec)

    def _plane_executor(self, planes):
        from functools import partial

        from .streaming import StreamingExecutor

        ex = self._plane_executors.get(planes)
        if ex is None:
            ex = self._plane_executors[planes] = StreamingExecutor(
                partial(self._compute_planes, planes), self.device, fallback=partial(self._planes_fallback, planes),
                check=self._check_planes)
        return ex

    def _compute_planes(self, planes, x: torch.Tensor):
        """:meth:`_compute` of I420 frames on the device: converted to RGB, and the changed frames back."""
        from .yuv import i420_to_rgb, rgb_to_i420

        with self._t("transfer"):
            x8 = i420_to_rgb(x, planes)
        out, touched = self._compute_batch(x8)
        if out is None:
            return None, []
        with self._t("transfer"):
            return rgb_to_i420(out, planes), touched

    def _planes_fallback(self, planes, frames: list[np.ndarray]) -> list[np.ndarray]:
        """The serial path for I420 frames the ring cannot hold (frames of several sizes): frame by frame."""
        from .yuv import i420_to_rgb, rgb_to_i420

        out = []
        for f in frames:
            rgb = i420_to_rgb(torch.from_numpy(np.ascontiguousarray(f))[None], planes)[0].numpy()
            res = self.process_frames([rgb])[0]
            out.append(f if res is rgb else rgb_to_i420(torch.from_numpy(np.ascontiguousarray(res))[None],
                                                        planes)[0].numpy())
        return out

    @staticmethod
    def _check_planes(frames) -> None:
        from .yuv import check_i420, frame_height

        for f in frames:
            why = check_i420(f.shape, f.dtype)
            if why is not None:
                raise InputSpecError(f"frames: {why}")
            if frame_height(f.shape[0]) < 8 or f.shape[1] < 8:
                raise InputSpecError(f"frame of {f.shape[1]}x{frame_height(f.shape[0])} pixels is too small")

    def _enhance(self, work: torch.Tensor, kps: torch.Tensor, frames: list[int]) -> None:
        stage = self.stages["enhancer"]
        spec = stage.spec
        size = int(spec.input_size[0])
        with self._t("align"):
            crops, affine, rois = self._crops(work, kps, spec.template or FFHQ_512, size, frames)
        with self._t("enhance"):
            out = stage.run({spec.input_names[0]: align.normalize(crops, spec.preprocess)})[spec.output_names[0]]
            out01 = self._output01(stage, out).to(self.device)
        with self._t("blend"):
            self._paste(work, out01, affine, frames, rois)

    @property
    def last_faces(self) -> list[dict]:
        """The faces swapped in the last batch: frame index, 5 landmarks, crop -> frame affine, crop size."""
        if self._last is None:
            return []
        kps, affine, index, size = self._last
        return [{"frame": int(b), "landmarks": kps[i].cpu(), "affine": affine[i].cpu(), "crop_size": size}
                for i, b in enumerate(index.tolist())]

    @staticmethod
    def _host(frame) -> np.ndarray:
        if isinstance(frame, torch.Tensor):
            return frame.cpu().numpy()
        return np.asarray(frame)

    # --- files ----------------------------------------------------------------------------------
    def process_image(self, src: str | Path, dst: str | Path) -> dict:
        """Swap faces in the image ``src`` and write ``dst`` (same or another image format), atomically."""
        from .media import is_image_path, read_image, write_image

        if not is_image_path(dst):
            raise MediaError(f"output {dst} must be an image file (.png, .jpg, ...) for the image target {src}")
        image = read_image(src, "target image")
        before = dict(self.stats)
        t0 = time.perf_counter()
        out = self.process_frame(image)
        write_image(dst, out)
        faces = self.stats["faces_swapped"] - before["faces_swapped"]
        return {"input": str(src), "output": str(dst), "frames": 1, "width": image.shape[1], "height": image.shape[0],
                "faces_swapped": faces, "frames_without_faces": 0 if faces else 1,
                "seconds": round(time.perf_counter() - t0, 3)}

    def process_video(self, src: str | Path, dst: str | Path, progress: bool = True, **encode) -> dict:
        """Swap faces in every frame of ``src`` and write ``dst`` with the same frames, rate, size and audio.

        ``encode`` goes to :func:`ffexport.pipeline.video.transcode` (``crf``, ``preset``, ``codec``,
        ``codec_nice``, ``encoder_threads``: :meth:`codec_threads` by default,
        ``queue_size``).  Frames without a face pass through unchanged.  With ``batch="auto"`` the batch is
        chosen for this video first (:func:`~.autobatch.choose_batch`, on its first frames); the statistics
        record the batch (``batch``, and ``batch_auto``: how it was chosen) and the path (``executor``), and on
        CUDA how the threads waited for the GPU (``cuda_wait``: asleep, unless $FFEXPORT_CUDA_WAIT says otherwise;
        :func:`~.device.cuda_wait`).
        """
        from functools import partial

        from .video import transcode

        if self._source is None:
            raise InputSpecError("no source face: call set_source(image) first")
        choice = self.choose_batch(src) if self.auto_batch else None
        batch = choice["batch"] if choice else self.batch
        self._warm_call_sizes(batch)
        before = dict(self.stats)
        encode = {**self.codec_threads(), **encode}
        # threads that wait for the GPU sleep, leaving their cores to the codecs (pipeline.device.cuda_wait)
        with asleep_while_running() as wait:
            if self.streaming:
                planes = self.video_planes_for(src, dst, encode.get("codec"))
                stream = self.process_batches if planes is None else partial(self.process_batches, planes=planes)
                stats = transcode(src, dst, stream=stream, batch=batch, progress=progress, planes=planes, **encode)
            else:
                stats = transcode(src, dst, self.process_frames, batch=batch, progress=progress, **encode)
        if self.device.type == "cuda":
            stats["cuda_wait"] = wait
        with_faces = self.stats["frames_with_faces"] - before["frames_with_faces"]
        stats.update(faces_swapped=self.stats["faces_swapped"] - before["faces_swapped"],
                     frames_with_faces=with_faces, frames_without_faces=stats["frames"] - with_faces,
                     batch=batch, batch_auto=choice, executor="streaming" if self.streaming else "serial")
        return stats

    def choose_batch(self, src: str | Path | None = None) -> dict:
        """``batch="auto"``'s choice for the video ``src`` (:func:`~.autobatch.choose_batch`: on a GPU one probe
        call on its first frames)."""
        from .autobatch import PROBE_FRAMES, choose_batch

        frames = []
        if self.device.type == "cuda" and src is not None:
            from .video import first_frames

            frames = first_frames(src, PROBE_FRAMES)
        return choose_batch(self, frames)

    def process(self, src: str | Path, dst: str | Path, progress: bool = True, **encode) -> dict:
        """An image or a video, by the target's suffix."""
        from .media import is_image_path

        if is_image_path(src):
            return self.process_image(src, dst)
        return self.process_video(src, dst, progress=progress, **encode)

