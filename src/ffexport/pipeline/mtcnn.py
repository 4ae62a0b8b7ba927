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

Two forms of the same cascade: the variable-size one keeps exactly the candidates that pass each stage (the
host reads their count at every pyramid level and stage), and the fixed-shape one (``capacity``, the pipeline's
choice on a GPU) keeps each image's best candidates in buffers of fixed size with masks, so the device never
waits for the host until the final faces are read, once per batch.  A batch that overflows a buffer is detected
again by the variable-size cascade: both give the same faces.
:class:`MTCNN` reports in the pipeline's convention instead (pixel centres at integer coordinates).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..vision.mtcnn import (MAX_SUPERSAMPLE, AreaPyramid, batched_nms, bucket, crop_boxes, masked_nms, normalise,
                            regress, square)
from ..vocab import TORCH_BACKENDS
from .detectors import MTCNN_MAX_SIDE, MTCNN_MODULES
from .device import from_host, wait_for

if TYPE_CHECKING:
    from .stages import Stage

Net = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]
Faces = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (N, 4), points (N, 5, 2), scores (N,)

CELL, STRIDE = 12, 2  # P-Net window and step in pyramid pixels
MAX_CANDIDATES = 4096  # per pyramid level, highest scores first (bounds the NxN NMS matrix)
# the fixed-shape cascade runs the pyramid levels' NMS together, images x levels at most this many a call
# (each an N x N overlap matrix of a level's buffer): all levels at once for one image, level by level from 16 up
NMS_ROWS = 16
# runs of the fixed-shape cascade before its graph is captured: onnxruntime's nets run a new input shape on a shared
# session (which tells the output shapes), then on a session of that shape's own (cuDNN's algorithm choice), then
# on the output buffers the capture binds
WARM_RUNS = 3
# "0": the cascade is never captured in a CUDA graph (to compare); anything else: it is wherever its nets allow
GRAPH_ENV = "FFEXPORT_MTCNN_GRAPH"


@dataclass(frozen=True)
class Capacity:
    """The candidate buffers of the fixed-shape cascade, per image: the ``level`` best P-Net windows of each
    pyramid level, ``pool`` of those across levels into their NMS, ``refine`` candidates into R-Net, ``output``
    into O-Net (the most faces an image can have), and the NMS ``rounds``.  A batch that overflows one of them (or whose NMS needs more rounds) is
    detected again by the variable-size cascade, so the faces never depend on them: only the speed does."""

    level: int = 512
    pool: int = 1024
    refine: int = 256
    output: int = 64
    rounds: int = 16


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, m]]`` for ``x`` ``(B, K, ...)`` and ``index`` ``(B, M)``: ``(B, M, ...)``."""
    shape = index.shape + x.shape[2:]
    return torch.gather(x, 1, index.reshape(*index.shape, *([1] * (x.ndim - 2))).expand(shape))


@lru_cache(maxsize=256)
def _level_bins(n_in: int, n_out: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return AreaPyramid._bins(n_in, n_out, torch.device(device))


class Pyramid(AreaPyramid):
    """:class:`~ffexport.vision.mtcnn.AreaPyramid` with each level's bins made once per frame and level size, not
    at every call (a dozen small kernels less per level, which is most of what a pyramid level costs for one
    frame on a GPU), and the integral image's column sums taken along the rows of its transpose: a scan along
    the outer axis runs a thread per column, a few thousand threads for one frame (~0.3 ms on an H200), the
    inner one a warp per row.  The same levels: the sums differ only in float64 rounding (none for whole pixel
    values)."""

    def __init__(self, images: torch.Tensor, integral: bool | None = None):
        super().__init__(images, integral=False)
        if images.is_cuda if integral is None else integral:
            s = images.double().cumsum(-1).transpose(-1, -2).contiguous().cumsum(-1).transpose(-1, -2)
            self._sums = F.pad(s, (1, 0, 1, 0))  # _sums[..., y, x]: the sum of images[..., :y, :x]

    @staticmethod
    def _bins(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        return _level_bins(int(n_in), int(n_out), str(device))

    def bins(self, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """A level's rows' and columns' first and last inputs ``(y0, y1, x0, x1)`` (kept per size)."""
        (h, w), device = self.images.shape[-2:], self.images.device
        return (*self._bins(h, size[0], device), *self._bins(w, size[1], device))


@lru_cache(maxsize=256)
def _level_scales(scales: tuple[tuple[float, float], ...], device: str) -> torch.Tensor:
    """``(L, 4)`` float32 divisors ``sx, sy, sx, sy`` that take pyramid levels' pixels to the image's, on
    ``device``, made once per frame size (a CUDA graph being captured cannot copy from the host).  A tensor, not
    a number: eager torch divides by a tensor with IEEE rounding, and so does inductor under
    :func:`eager_rounding`'s options, while by a number each multiplies by a reciprocal rounded its own way."""
    return torch.tensor([[sx, sy, sx, sy] for sx, sy in scales], dtype=torch.float32, device=device)


def _area_level(sums: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor,
                x1: torch.Tensor) -> torch.Tensor:
    """:meth:`AreaPyramid.level`'s arithmetic (float64) as a function of tensors, for inductor: the level from the
    integral image ``sums`` and the level's bins (:meth:`Pyramid.bins`), four gathers."""
    top, bottom = sums.index_select(-2, y0), sums.index_select(-2, y1)
    total = (bottom.index_select(-1, x1) - bottom.index_select(-1, x0)
             - top.index_select(-1, x1) + top.index_select(-1, x0))
    return total / ((y1 - y0)[:, None] * (x1 - x0)[None, :]).double()


def eager_rounding() -> dict[str, bool]:
    """inductor's options under which compiled arithmetic rounds as eager torch's does on a GPU: divisions of
    tensors rounded to nearest (Triton's ``/`` is an approximate division, ~1 ulp off) and no multiply-adds fused
    into one rounding.  ``{}`` where this torch has neither option.

    The cascade's choices are sensitive to the last bit: an FP16 score one step below 1.0 against another at 1.0
    decides which of a face's near-tied candidates is kept, a box several pixels away (``benchmarks/NOTES.md``,
    #12 session 12).  Divisions by a number are not covered (inductor multiplies by a reciprocal): the cascade
    divides by tensors where it matters (:func:`_level_scales`)."""
    from torch._inductor import config

    names = config.get_config_copy()
    wanted = ("emulate_precision_casts", "eager_numerics.division_rounding", "emulate_divison_rounding")
    return {k: True for k in wanted if k in names}


def _pad_to(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` ``(B, K, ...)`` padded with zeros (False) to ``k`` along its second axis (itself when it has ``k``)."""
    if x.shape[1] == k:
        return x
    return F.pad(x, (0, 0) * (x.ndim - 2) + (0, k - x.shape[1]))


def _squares(rows: torch.Tensor) -> torch.Tensor:
    """Rows ``(B, K, 8)`` of a box and its regression: the regressed boxes grown to squares, ``(B, K, 4)``."""
    n = rows.shape[0]
    return square(regress(rows[..., :4].reshape(-1, 4), rows[..., 4:].reshape(-1, 4))).reshape(n, -1, 4)


def _best(score: torch.Tensor, keep: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(B, min(k, K))`` of the highest-scoring kept candidates (kept ones first, by score, stable) and
    whether an image has more than ``k`` kept (``(B,)``)."""
    ranked = score.float().masked_fill(~keep, float("-inf"))
    k = min(k, ranked.shape[1])
    idx = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :k]
    return idx, keep.sum(1) > k


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
                 pad_batches: bool = False, capacity: Capacity | None = None, cuda_graphs: bool = False,
                 channels_last: bool = False, compile_steps: bool = False):
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
        # fixed-shape cascade (no host read-back before the final faces); None: the variable-size cascade only
        self.capacity = capacity
        self.fallbacks = 0  # batches the fixed-shape cascade handed to the variable-size one (overflow)
        # the fixed-shape cascade captured as one CUDA graph per input shape (nets that torch runs on the device)
        self.cuda_graphs = bool(cuda_graphs) and capacity is not None
        # the nets' inputs channels-last (NHWC): for nets whose weights are (Stage.channels_last)
        self.channels_last = bool(channels_last)
        self._graphs: dict[tuple, tuple] = {}
        self.graph_off = ""  # why the cascade stopped capturing graphs ("" while it does or never tried)
        self.capture_s: dict[str, float] = {}  # input shape -> seconds its graph took to make (compiling included)
        # the fixed-shape cascade's arithmetic between the nets (pyramid levels, windows, NMS, crops) through
        # torch.compile: inductor fuses each step's few dozen small kernels into a few (the nets stay as they are)
        self.compile_steps = bool(compile_steps) and capacity is not None
        self.eager_rounding = True  # the compiled steps round as the eager ones (False: inductor's fast defaults)
        self._compiled: dict[str, Callable] = {}

    @property
    def graph_state(self) -> str:
        """Whether the cascade runs as CUDA graphs: "on", "off: why" after a failed capture, "off"; "" where it never
        captures (on a CPU, or without fixed-size buffers)."""
        if self.capacity is None or self.device.type != "cuda":
            return ""
        if self.cuda_graphs:
            return "on"
        return f"off: {self.graph_off}" if self.graph_off else "off"

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
            if self.channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            out = net({"input": chunk})
            parts.append({k: v[:m].to(self.device) for k, v in out.items()})
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _step(self, name: str) -> Callable:
        """The cascade's method ``name``, through torch.compile when ``compile_steps`` (compiled once per input
        shape, or once for every shape after the second: torch's automatic dynamic shapes), rounding as eager
        torch does unless ``eager_rounding`` is False (:func:`eager_rounding`)."""
        if not self.compile_steps:
            return getattr(self, name)
        if name not in self._compiled:
            self._compiled[name] = torch.compile(getattr(self, name), dynamic=None,
                                                 options=eager_rounding() if self.eager_rounding else None)
        return self._compiled[name]

    @staticmethod
    def _level_input(sums, y0, y1, x0, x1) -> torch.Tensor:
        """P-Net's input for a level of the integral image ``sums``: the area averages, normalised."""
        return normalise(_area_level(sums, y0, y1, x0, x1).float())

    def _pnet_outputs(self, images: torch.Tensor):
        """P-Net on each pyramid level: ``((sx, sy), outputs)``, ``sx, sy`` the level's scale against the images."""
        h, w = images.shape[-2:]
        pyramid = Pyramid(images)
        for s in self.scales(h, w):
            sh, sw = max(CELL, math.ceil(h * s)), max(CELL, math.ceil(w * s))
            if pyramid._sums is None:  # on a CPU: F.interpolate
                x = normalise(pyramid.level((sh, sw)))
            else:
                x = self._step("_level_input")(pyramid._sums, *pyramid.bins((sh, sw)))
            yield (sw / w, sh / h), self._run(self.pnet, x)

    def _pnet_levels(self, images: torch.Tensor):
        """P-Net on each pyramid level: ``((sx, sy), prob (B, h, w), reg (B, 4, h, w))``."""
        for scale, out in self._pnet_outputs(images):
            yield scale, out["prob"][:, 1].float(), out["reg"].float()

    def _propose(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid: square candidate boxes, their scores and image indices."""
        boxes, scores, index = [], [], []
        for (sx, sy), prob, reg in self._pnet_levels(images):
            b, i, j = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
            if b.numel() == 0:
                continue
            score = prob[b, i, j]
            if score.numel() > MAX_CANDIDATES:
                top = torch.topk(score, MAX_CANDIDATES).indices
                b, i, j, score = b[top], i[top], j[top], score[top]
            x1, y1 = (STRIDE * j).float(), (STRIDE * i).float()
            box = torch.stack([x1, y1, x1 + CELL, y1 + CELL], 1)  # the level's pixels (see _level_windows)
            keep = batched_nms(box, score, b, self.nms_thresholds[0])  # regression waits until after NMS
            box = box[keep] / _level_scales(((sx, sy),), str(box.device))[0]
            boxes.append(torch.cat([box, reg[b[keep], :, i[keep], j[keep]]], 1))
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
        out = self._run(self.rnet, normalise(crop_boxes(images, boxes, 24, index, MAX_SUPERSAMPLE)), pad=True)
        score = out["prob"][:, 1].float()
        ok = score > self.thresholds[1]
        boxes, score, index, reg = boxes[ok], score[ok], index[ok], out["reg"][ok].float()
        keep = batched_nms(boxes, score, index, self.nms_thresholds[2])
        return square(regress(boxes[keep], reg[keep])), score[keep], index[keep]

    def _output(self, images, boxes, index):
        """O-Net: final scores, boxes and landmarks."""
        out = self._run(self.onet, normalise(crop_boxes(images, boxes, 48, index, MAX_SUPERSAMPLE)), pad=True)
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

    # the fixed-shape cascade ------------------------------------------------------------------
    # Its arithmetic is in steps (methods of tensors, called through :meth:`_step`), the nets between them.

    def _level_windows(self, prob, reg, cap: Capacity):
        """A pyramid level's ``cap.level`` best P-Net windows: rows ``(B, k, 8)`` (the box in the level's pixels,
        then the regression), scores ``(B, k)`` (highest first), live mask, and whether an image may have more live
        windows than kept (None when the level has no more than ``k``).

        The boxes stay in the level's pixels, whole numbers, through the level's NMS: P-Net's windows are 12 px
        on a 2-px grid, so two of them 4 px apart overlap by exactly the threshold (0.5), and in image pixels (a
        division by the level's scale) the rounding of that division would decide whether one suppresses the
        other: eager torch and inductor round it differently.  :meth:`_pool` scales them to image pixels."""
        prob, gw = prob[:, 1].float(), prob.shape[-1]
        flat = prob.flatten(1)
        k = min(cap.level, flat.shape[1])
        score, cell = flat.topk(k, dim=1)  # highest first
        live = score >= self.thresholds[0]
        full = live[:, -1] if k < flat.shape[1] else None  # the k-th best passed: more may have
        i, j = torch.div(cell, gw, rounding_mode="floor"), cell % gw
        x1, y1 = (STRIDE * j).float(), (STRIDE * i).float()
        box = torch.stack([x1, y1, x1 + CELL, y1 + CELL], -1)
        r = torch.gather(reg.float().flatten(2), 2, cell[:, None, :].expand(-1, 4, -1)).transpose(1, 2)
        return torch.cat([box, r], -1), score, live, full

    @staticmethod
    def _stack_levels(levels):
        """The levels' rows, scores and live masks padded to one buffer size: ``(B, L, K, ...)`` (padding is
        never live)."""
        k = max(lv[1].shape[1] for lv in levels)
        return tuple(torch.stack([_pad_to(lv[part], k) for lv in levels], 1) for part in range(3))

    @staticmethod
    def _nms(rows, scores, live, threshold: float, mode: str, rounds: int):
        """:func:`~ffexport.vision.mtcnn.masked_nms` on the boxes of ``rows`` ``(B, K, D)``: the rows and scores
        by score, highest first, which of them are kept, and whether the fixed point settled, per image."""
        order, keep, settled = masked_nms(rows[..., :4], scores, live, threshold, mode=mode, rounds=rounds)
        return _take(rows, order), torch.gather(scores, 1, order), keep, settled

    def _pool(self, rows, scores, valid, scales, cap: Capacity):
        """The levels' kept windows (rows ``(B, L * K, 8)``, level by level, boxes in the levels' pixels) pooled in
        image pixels (divided by ``scales`` ``(L, 4)``, :func:`_level_scales`): the ``cap.pool`` best, NMS across
        levels, the ``cap.refine`` best as regressed square boxes ``(B, R, 4)``, their scores and mask, and whether
        an image overflowed or its NMS did not settle."""
        n, count = rows.shape[0], scales.shape[0]
        levels = rows.reshape(n, count, -1, 8)
        rows = torch.cat([levels[..., :4] / scales[None, :, None, :], levels[..., 4:]], -1).reshape(n, -1, 8)
        idx, over = _best(scores, valid, cap.pool)
        rows, scores, valid = _take(rows, idx), torch.gather(scores, 1, idx), torch.gather(valid, 1, idx)
        rows, scores, keep, settled = self._nms(rows, scores, valid, self.nms_thresholds[1], "union", cap.rounds)
        idx, over2 = _best(scores, keep, cap.refine)
        rows, scores, keep = _take(rows, idx), torch.gather(scores, 1, idx), torch.gather(keep, 1, idx)
        return _squares(rows), scores, keep, over | over2 | ~settled

    def _propose_fixed(self, images: torch.Tensor, cap: Capacity):
        """P-Net over the pyramid on fixed buffers: ``(B, R, 4)`` boxes, scores, valid mask, and the images whose
        buffers overflowed or whose NMS did not settle.

        Each level's best windows are padded to one buffer size and the levels' NMS run together, a few levels a
        call (:data:`NMS_ROWS`): at a small batch the fixed point's rounds are a few launches for the whole pyramid
        instead of a few per level; padding is never valid, so the faces are the same as level by level."""
        n = images.shape[0]
        levels, scales = [], []
        bad = torch.zeros(n, dtype=torch.bool, device=images.device)
        for scale, out in self._pnet_outputs(images):
            scales.append(scale)
            levels.append(self._step("_level_windows")(out["prob"], out["reg"], cap))
            if levels[-1][3] is not None:
                bad |= levels[-1][3]
        if not levels:
            return None
        rows, scores, live = self._step("_stack_levels")([lv[:3] for lv in levels])  # (B, L, K, ...)
        count, k = rows.shape[1:3]
        per_call = max(1, NMS_ROWS // n)
        kept_rows, kept_scores, valid = [], [], []
        for a in range(0, count, per_call):
            m = min(per_call, count - a)
            row, sc, keep, settled = self._step("_nms")(
                rows[:, a:a + m].reshape(n * m, k, 8), scores[:, a:a + m].reshape(n * m, k),
                live[:, a:a + m].reshape(n * m, k), self.nms_thresholds[0], "union", cap.rounds)
            bad |= ~settled.reshape(n, m).all(1)
            kept_rows.append(row.reshape(n, m * k, 8))
            kept_scores.append(sc.reshape(n, m * k))
            valid.append(keep.reshape(n, m * k))
        boxes, scores, keep, bad2 = self._step("_pool")(torch.cat(kept_rows, 1), torch.cat(kept_scores, 1),
                                                        torch.cat(valid, 1),
                                                        _level_scales(tuple(scales), str(images.device)), cap)
        return boxes, scores, keep, bad | bad2

    def _crops(self, images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        k = boxes.shape[1]
        return normalise(crop_boxes(images, boxes.reshape(-1, 4), size, supersample=MAX_SUPERSAMPLE,
                                    boxes_per_image=k))

    def _refined(self, prob, reg, boxes, valid, cap: Capacity):
        """R-Net's scores and regression applied: the ``cap.output`` best kept candidates as regressed square
        boxes, their mask, and whether an image overflowed or its NMS did not settle."""
        n, k = boxes.shape[:2]
        score = prob[:, 1].float().reshape(n, k)
        reg = reg.float().reshape(n, k, 4)
        live = valid & (score > self.thresholds[1])
        rows, score, keep, settled = self._nms(torch.cat([boxes, reg], -1), score, live, self.nms_thresholds[2],
                                               "union", cap.rounds)
        idx, over = _best(score, keep, cap.output)
        return _squares(_take(rows, idx)), torch.gather(keep, 1, idx), over | ~settled

    def _refine_fixed(self, images, boxes, valid, cap: Capacity):
        out = self._run(self.rnet, self._step("_crops")(images, boxes, 24))
        return self._step("_refined")(out["prob"], out["reg"], boxes, valid, cap)

    def _outputs(self, prob, reg, lm, boxes, valid, cap: Capacity):
        """O-Net's scores, regression and landmarks applied, the final NMS: boxes, points, scores (kept faces
        first, by score), face counts and whether an image's NMS did not settle."""
        n, k = boxes.shape[:2]
        score = prob[:, 1].float().reshape(n, k)
        reg, lm = reg.float().reshape(n, k, 4), lm.float().reshape(n, k, 10)
        live = valid & (score > self.thresholds[2])
        wh = boxes[..., 2:4] - boxes[..., 0:2]
        points = torch.stack([boxes[..., None, 0] + lm[..., :5] * wh[..., None, 0],
                              boxes[..., None, 1] + lm[..., 5:] * wh[..., None, 1]], -1)
        boxes = regress(boxes.reshape(-1, 4), reg.reshape(-1, 4)).reshape(n, k, 4)
        rows, score, keep, settled = self._nms(torch.cat([boxes, points.reshape(n, k, 10)], -1), score, live,
                                               self.nms_thresholds[3], "min", cap.rounds)
        # kept faces first, by score (the masked NMS's order is by score already: a stable partition)
        first = torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices
        rows = _take(rows, first)
        return (rows[..., :4], rows[..., 4:].reshape(n, k, 5, 2), torch.gather(score, 1, first), keep.sum(1),
                ~settled)

    def _output_fixed(self, images, boxes, valid, cap: Capacity):
        out = self._run(self.onet, self._step("_crops")(images, boxes, 48))
        return self._step("_outputs")(out["prob"], out["reg"], out["landmarks"], boxes, valid, cap)

    def _fixed(self, images: torch.Tensor, cap: Capacity):
        """The fixed-shape cascade's tensors: boxes, points, scores (kept faces first), face counts and the
        overflow flags, per image; None when the frames are too small for one pyramid level."""
        proposed = self._propose_fixed(images, cap)
        if proposed is None:
            return None
        boxes, _scores, valid, bad = proposed
        boxes, valid, bad2 = self._refine_fixed(images, boxes, valid, cap)
        boxes, points, scores, count, bad3 = self._output_fixed(images, boxes, valid, cap)
        return boxes, points, scores, torch.stack([count, (bad | bad2 | bad3).long()])

    def _replay(self, images: torch.Tensor, cap: Capacity):
        """:meth:`_fixed` as a CUDA graph, captured once per input shape, then replayed with one launch.  When the
        capture fails (a net's runner did something a capture does not allow), the cascade runs without graphs
        from then on and says why in ``graph_off``."""
        key = tuple(images.shape)
        if key not in self._graphs:
            t0 = time.perf_counter()
            static = images.clone()
            side = torch.cuda.Stream(images.device)
            side.wait_stream(torch.cuda.current_stream(images.device))
            with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN's algorithm choice, the allocator;
                for _ in range(WARM_RUNS):  # onnxruntime's session for each input shape and its output shapes)
                    self._fixed(static, cap)
            torch.cuda.current_stream(images.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    outs = self._fixed(static, cap)
            except Exception as exc:  # noqa: BLE001 - whatever a net's runner raised inside the capture
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                self.graph_off = f"the capture of {'x'.join(map(str, key))} failed: {first}"
                self.cuda_graphs = False
                torch.cuda.synchronize(images.device)
                return self._fixed(images, cap)
            self._graphs[key] = (graph, static, outs)
            torch.cuda.synchronize(images.device)
            self.capture_s["x".join(map(str, key))] = round(time.perf_counter() - t0, 3)
        graph, static, outs = self._graphs[key]
        static.copy_(images)
        graph.replay()
        return outs

    def _detect_fixed(self, images: torch.Tensor, cap: Capacity) -> list[Faces] | None:
        """The cascade on fixed-size buffers: the host reads the face counts once, at the end.  None when a
        buffer overflowed or an NMS did not settle (the caller runs the variable-size cascade)."""
        n = images.shape[0]
        graphed = self.cuda_graphs and images.is_cuda
        outs = self._replay(images, cap) if graphed else self._fixed(images, cap)
        graphed = graphed and self.cuda_graphs  # (a failed capture ran the cascade without a graph)
        if outs is None:
            return [(images.new_zeros(0, 4), images.new_zeros(0, 5, 2), images.new_zeros(0)) for _ in range(n)]
        boxes, points, scores, facts = outs
        wait_for(facts.device)
        facts = facts.cpu()  # the one read-back
        if bool(facts[1].any()):
            return None
        # a graph's outputs are overwritten by its next replay: the faces are copied out
        return [(boxes[b, :c].clone(), points[b, :c].clone(), scores[b, :c].clone()) if graphed else
                (boxes[b, :c], points[b, :c], scores[b, :c]) for b, c in enumerate(facts[0].tolist())]

    def detect(self, images: torch.Tensor) -> list[Faces]:
        """Faces per image of ``images`` (``B x 3 x H x W`` float RGB in [0, 255]).

        Returns, per image, ``(boxes (N, 4) xyxy, points (N, 5, 2), scores (N,))``
        sorted by score, highest first, on the detector's device.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected B x 3 x H x W RGB images, got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        if self.capacity is not None:
            faces = self._detect_fixed(images, self.capacity)
            if faces is not None:
                return faces
            self.fallbacks += 1
        return self._detect_variable(images)

    def _detect_variable(self, images: torch.Tensor) -> list[Faces]:
        """The cascade on variable-size candidate sets (the host reads each stage's count)."""
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
    (``None`` or 0: never); ``score_threshold`` is O-Net's (0.7 when None).  ``channels_last``: on a GPU, nets
    that torch runs inside the cascade's CUDA graph run channels-last (:meth:`Stage.channels_last`).

    On a GPU the cascade is captured in one CUDA graph per input shape when torch or onnxruntime run its nets
    (``$FFEXPORT_MTCNN_GRAPH=0``: never, to compare); ``cascade.graph_state`` says whether it is and, after a
    failed capture, why not (the benchmark's rows record it as ``detector_graph``)."""

    kind = "mtcnn"

    def __init__(self, stages: Mapping[str, Stage], device: torch.device | str = "cpu",
                 score_threshold: float | None = None, min_face: float = 20.0,
                 max_side: int | None = MTCNN_MAX_SIDE, channels_last: bool = True):
        self.stages: dict[str, Stage] = {m: stages[m] for m in MTCNN_MODULES}
        self.device = torch.device(device)
        self.max_side = max_side
        last = 0.7 if score_threshold is None else float(score_threshold)
        batch = [s.max_batch for s in self.stages.values() if s.max_batch]
        # onnxruntime on CUDA re-plans on every new input shape: give it a few batch sizes only
        pad = self.device.type == "cuda" and any(self.stages[m].backend == "ort" for m in MTCNN_MODULES[1:])
        # on a GPU the fixed-shape cascade (one read-back per batch); on a CPU the variable-size one does less work
        gpu = self.device.type == "cuda"
        capacity = Capacity() if gpu else None
        # nets that torch or onnxruntime run are captured with the cascade in one CUDA graph (compiled ones run
        # eager: a graph is not captured inside another; onnxruntime queues its runs on a stream ordered with the
        # capturing one, without host synchronisation: OrtRunner); TensorRT's runner is left out (not run here)
        torch_nets = all(s.backend in TORCH_BACKENDS for s in self.stages.values())
        graphs = gpu and all(s.backend in (*TORCH_BACKENDS, "ort") for s in self.stages.values()) and \
            os.environ.get(GRAPH_ENV, "").strip() != "0"
        nhwc = False
        # the compile backend's cascade: its arithmetic between the nets compiled too (inside the same graph)
        steps = graphs and all(s.backend == "compile" for s in self.stages.values())
        if graphs:
            for s in self.stages.values():
                # inside the cascade's graph the eager nets launch nothing the graph does not replay at once;
                # compiling them would cost a compilation per pyramid level and batch for little
                s.run_eager()
            nhwc = channels_last and torch_nets and all([s.channels_last() for s in self.stages.values()])
        self.cascade = MTCNNDetector(*self.stages.values(), device=self.device, thresholds=(0.6, 0.7, last),
                                     min_face=min_face, max_batch=min(batch) if batch else None, pad_batches=pad,
                                     capacity=capacity, cuda_graphs=graphs, channels_last=nhwc,
                                     compile_steps=steps)

    def detect(self, images: torch.Tensor) -> list[Faces]:
        """Per frame of ``images`` (``B x 3 x H x W`` float RGB in [0, 255]): boxes, 5 landmarks, scores."""
        h, w = images.shape[-2:]
        kx = ky = 1.0
        if self.max_side and max(h, w) > self.max_side:  # large frames: detect on a smaller copy
            k = self.max_side / max(h, w)
            size = (max(1, round(h * k)), max(1, round(w * k)))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            kx, ky = size[1] / w, size[0] / h
        scale = from_host([kx, ky], images.device, images.dtype)  # (new_tensor would wait for the device)
        # the cascade counts pixel j as [j, j + 1) (so coordinates scale by plain division);
        # ffexport's geometry puts the centre of pixel j at j
        return [((b.reshape(-1, 2, 2) / scale).reshape(-1, 4) - 0.5, p / scale - 0.5, s)
                for b, p, s in self.cascade.detect(images)]

    __call__ = detect
