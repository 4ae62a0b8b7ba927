"""Small stand-ins for the face-swap ONNX files people download, written without ffexport.

Each function below builds a tiny seeded torch network, exports it with torch's
TorchScript-based ONNX exporter (opset 17) and, where needed, edits the graph with the
``onnx`` package so that the file has the *interface* of a well-known public model: the
same input/output names, shapes, value ranges and quirks.  The weights are random (or
planted), so the files are small (well under 2 MB) and quick to write; what the tests get
from them is "a foreign ONNX file ffexport did not write".  Nothing here imports ffexport.

Layouts
-------
``scrfd``       insightface's face detectors (SCRFD ``det_10g.onnx``, ``scrfd_2.5g*.onnx``,
                the buffalo packs).  Input ``input.1`` ``[1, 3, H, W]`` (H, W dynamic),
                RGB ``(x - 127.5) / 128``.  Outputs are per-stride, flattened anchor lists
                WITHOUT a batch axis and with numeric names: scores (8, 16, 32), box
                distances (8, 16, 32), then keypoint offsets (8, 16, 32).  Two anchors per
                cell; anchor centre of cell (row i, col j) is ``(j*s, i*s)``; box =
                centre -/+ distance*s; keypoint = centre + offset*s.
``arcface``     insightface's recognition model (``w600k_r50.onnx``): input ``input.1``
                ``[1, 3, 112, 112]`` RGB ``(x - 127.5) / 127.5`` done by the caller (the
                graph starts with a Conv, no Sub/Mul, which is how insightface decides the
                normalisation), one raw (not L2-normalised) 512-d output named ``683``.
``inswapper``   insightface's ``inswapper_128.onnx``: inputs ``target`` ``[1, 3, 128, 128]``
                RGB in [0, 1] and ``source`` ``[1, 512]`` (the ArcFace embedding already
                multiplied by the ``emap`` matrix and normalised by the caller); output
                ``output`` in [0, 1].  The 512x512 ``emap`` matrix is stored as the LAST
                graph initializer and used by no node (insightface reads
                ``graph.initializer[-1]``).  ``overflow=True`` adds an intermediate whose
                magnitude exceeds the FP16 range (65504) on ordinary inputs.
``simswap``     FaceFusion's SimSwap export (``simswap_256.onnx``): like inswapper but the
                source is the plain L2-normalised ArcFace embedding, no emap, size 256.
``gfpgan``      GFPGAN / GPEN face restorers as FaceFusion ships them: ``input`` ->
                ``output``, ``[1, 3, 512, 512]`` RGB in [-1, 1] (tanh output).
``fan2d4``      FaceFusion's ``2dfan4.onnx`` 68-point landmarker: ``input`` ``[1, 3, 256,
                256]`` in [0, 1]; outputs ``landmarks`` ``[1, 68, 3]`` (x, y in 64x64 heatmap
                cells, score) decoded in-graph from ``heatmaps`` ``[1, 68, 64, 64]``.
``classifier``  not a face model at all (``data`` -> ``prob`` ``[1, 1000]`` softmax), for
                error-path tests.  ``scrfd(keypoints=False)`` is "a detector without keypoint
                outputs"; ``arcface`` passed as a generator is "an encoder in the wrong slot".

Planted detection (``scrfd(face=...)``)
---------------------------------------
``face = (box_xyxy, kps_5x2)`` in pixels of the 640x640 letterboxed input.  The head for
the stride chosen from the box size (8 below 64 px, 16 below 256 px, else 32) gets, at
anchor 0 of the cell nearest the box centre, a score logit of about +10 and box/keypoint
values that decode exactly to ``face`` (the conv term is masked out there); every other
anchor of every stride has a logit of about -16 (onnxruntime's Sigmoid clamps at -18, so a
lower bias would hide the input-dependent term).  The conv heads, scaled by 1e-2 (scores)
and 1e-3 (boxes, keypoints), still add a small input-dependent term everywhere else, so
the graph depends on its input.  Without ``face`` the heads are random (He init) with a
-4 score bias: almost every score is below 0.5, a handful of anchors may pass.

:func:`public_set` plants the face of ``calibration/astronaut.json`` (512x512 image).
ffexport letterboxes top-left with zero padding (``vision.align.letterbox``): a 512x512
frame is resized to 640x640, scale 640/512 = 1.25, no offset, and a point maps as
``p_640 = p_512 * 1.25`` (the same mapping ffexport's ``unletterbox_points`` inverts; the
half-pixel shift of bilinear resizing is ignored, as ffexport does).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

__all__ = ["scrfd", "arcface", "inswapper", "simswap", "gfpgan", "fan2d4", "classifier",
           "public_set", "astronaut_face_640", "ASTRONAUT_JSON", "DET_OUTPUT_NAMES"]

ASTRONAUT_JSON = Path(__file__).resolve().parents[2] / "calibration" / "astronaut.json"

# det_10g.onnx's output names: scores 8/16/32, boxes 8/16/32, keypoints 8/16/32
DET_OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
_STRIDES = (8, 16, 32)
# planted detector logits: the face's anchor / every other anchor.  Not below -16:
# onnxruntime's Sigmoid clamps its input to [-18, 18], which would flatten the small
# input-dependent term of the non-face anchors into a constant.
_ON_LOGIT, _OFF_LOGIT = 10.0, -16.0


# ---------------------------------------------------------------------------------------
# export plumbing

def _rename_values(model, mapping: dict[str, str]) -> None:
    """Rename graph values (inputs, outputs, node references, value_info) in place."""
    g = model.graph
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    clash = set(mapping.values()) & (taken - set(mapping))
    if clash:
        raise ValueError(f"names already used in the graph: {sorted(clash)}")
    for n in g.node:
        n.input[:] = [mapping.get(v, v) for v in n.input]
        n.output[:] = [mapping.get(v, v) for v in n.output]
    for vi in [*g.input, *g.output, *g.value_info]:
        vi.name = mapping.get(vi.name, vi.name)


def _drop_initializer_identities(model) -> None:
    """The exporter deduplicates equal parameters and re-creates them with Identity nodes
    (which then open the graph); store each copy as its own initializer instead."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]), n.output[0]))
        else:
            keep.append(n)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def _export(module, args, path, input_names, output_names, dynamic_axes=None, edit=None) -> Path:
    """TorchScript export (opset 17) to memory, optional ``edit(model)``, check, save.

    TorchScript refuses numeric value names (``'448'``), so outputs are exported under
    placeholder names and renamed in the ONNX graph afterwards.
    """
    import onnx
    import torch

    module.eval()
    tmp_out = [f"_out{k}_" if name.isdigit() else name for k, name in enumerate(output_names)]
    rename = {t: n for t, n in zip(tmp_out, output_names) if t != n}
    if dynamic_axes:
        back = {n: t for t, n in rename.items()}
        dynamic_axes = {back.get(k, k): v for k, v in dynamic_axes.items()}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17,
                          input_names=list(input_names), output_names=tmp_out,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    _drop_initializer_identities(model)
    if rename:
        _rename_values(model, rename)
    if edit is not None:
        edit(model)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _build(seed: int, factory):
    """``factory()`` under ``torch.manual_seed(seed)`` without disturbing the global RNG."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


# ---------------------------------------------------------------------------------------
# 1. SCRFD / RetinaFace (insightface det_10g layout)

def _scrfd_module(keypoints: bool, face):
    import torch
    from torch import nn

    plant = None
    if face is not None:
        box = np.asarray(face[0], dtype=np.float64).reshape(4)
        kps = np.asarray(face[1], dtype=np.float64).reshape(5, 2)
        side = max(box[2] - box[0], box[3] - box[1])
        s = 8 if side < 64 else 16 if side < 256 else 32
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        n = 640 // s
        j, i = int(np.clip(round(cx / s), 0, n - 1)), int(np.clip(round(cy / s), 0, n - 1))
        ax, ay = j * s, i * s
        dist = np.array([ax - box[0], ay - box[1], box[2] - ax, box[3] - ay]) / s
        off = (kps - np.array([ax, ay])).reshape(10) / s
        plant = {"stride": s, "i": i, "j": j, "box": dist, "kps": off}

    class SCRFD(nn.Module):
        def __init__(self):
            super().__init__()
            act = nn.ReLU
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), act(), nn.Conv2d(16, 16, 3, 2, 1), act(),
                                      nn.Conv2d(16, 24, 3, 2, 1), act())            # stride 8
            self.down16 = nn.Sequential(nn.Conv2d(24, 24, 3, 2, 1), act())         # stride 16
            self.down32 = nn.Sequential(nn.Conv2d(24, 24, 3, 2, 1), act())         # stride 32
            self.score = nn.ModuleList(nn.Conv2d(24, 2 * 1, 3, 1, 1) for _ in _STRIDES)
            self.bbox = nn.ModuleList(nn.Conv2d(24, 2 * 4, 3, 1, 1) for _ in _STRIDES)
            self.kps = nn.ModuleList(nn.Conv2d(24, 2 * 10, 3, 1, 1) for _ in _STRIDES) if keypoints else None
            with torch.no_grad():
                for conv in self.modules():  # He init keeps activations O(1) through the body
                    if isinstance(conv, nn.Conv2d):
                        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                        conv.bias.uniform_(-0.1, 0.1)
                for conv in [*self.bbox, *(self.kps or [])]:
                    conv.weight.mul_(1e-3 if plant is not None else 0.1)
                    conv.bias.mul_(1e-3 if plant is not None else 0.1)
                for conv in self.score:
                    conv.weight.mul_(1e-2 if plant is not None else 1.0)
                    conv.bias.fill_(_OFF_LOGIT if plant is not None else -4.0)
            if plant is not None:
                # per-channel planted values / selectors for anchor 0 of the planted cell
                self.register_buffer("p_score", torch.tensor([_ON_LOGIT - _OFF_LOGIT, 0.0]).view(1, 2, 1, 1))
                sel = lambda c: torch.cat([torch.ones(c), torch.zeros(c)]).view(1, 2 * c, 1, 1)  # noqa: E731
                val = lambda v: torch.cat([torch.tensor(v, dtype=torch.float32),  # noqa: E731
                                           torch.zeros(len(v))]).view(1, 2 * len(v), 1, 1)
                self.register_buffer("sel_box", sel(4))
                self.register_buffer("val_box", val(plant["box"]))
                self.register_buffer("sel_kps", sel(10))
                self.register_buffer("val_kps", val(plant["kps"]))

        @staticmethod
        def _flat(x, c):
            return x.permute(0, 2, 3, 1).reshape(-1, c)

        def _cell_mask(self, feat):
            # (1, 1, h, w) float: 1 at the planted cell; index maps made with CumSum so the
            # graph stays valid for any (dynamic) input size
            ones = torch.ones_like(feat[:, :1])
            ys = ones.cumsum(2) - 1.0
            xs = ones.cumsum(3) - 1.0
            return ((ys - plant["i"]).abs() < 0.5).float() * ((xs - plant["j"]).abs() < 0.5).float()

        def forward(self, x):
            f8 = self.stem(x)
            f16 = self.down16(f8)
            f32 = self.down32(f16)
            scores, boxes, kpss = [], [], []
            for k, (s, f) in enumerate(zip(_STRIDES, (f8, f16, f32))):
                sc, bb = self.score[k](f), self.bbox[k](f)
                kp = self.kps[k](f) if keypoints else None
                if plant is not None and s == plant["stride"]:
                    m = self._cell_mask(f)
                    sc = sc + m * self.p_score
                    mb = m * self.sel_box
                    bb = bb * (1.0 - mb) + mb * self.val_box
                    if keypoints:
                        mk = m * self.sel_kps
                        kp = kp * (1.0 - mk) + mk * self.val_kps
                scores.append(torch.sigmoid(self._flat(sc, 1)))
                boxes.append(self._flat(bb, 4))
                if keypoints:
                    kpss.append(self._flat(kp, 10))
            return (*scores, *boxes, *kpss)

    return SCRFD()


def scrfd(path, *, keypoints: bool = True, size: int | None = None, face=None) -> Path:
    """insightface SCRFD detector layout (see module docstring); 9 outputs, or 6 without keypoints.

    ``size=None``: H and W are dim_params ``'?'``; else a fixed ``size`` x ``size`` input.
    ``face=(box_xyxy, kps_5x2)`` plants one detection (pixels of a 640x640 input).
    """
    import torch

    net = _build(10, lambda: _scrfd_module(keypoints, face))
    n = 640 if size is None else size
    names = DET_OUTPUT_NAMES[:9 if keypoints else 6]
    dyn = {"input.1": {2: "?", 3: "?"}} if size is None else None

    def edit(model) -> None:
        # declare (anchors, C) with a readable symbol instead of the exporter's placeholders
        for k, out in enumerate(model.graph.output):
            dims = out.type.tensor_type.shape.dim
            stride, width = _STRIDES[k % 3], (1, 4, 10)[k // 3]
            if size is None:
                dims[0].Clear()
                dims[0].dim_param = f"anchors_{stride}"
            dims[1].Clear()
            dims[1].dim_value = width

    return _export(net, (torch.zeros(1, 3, n, n),), path, ["input.1"], names, dyn, edit=edit)


# ---------------------------------------------------------------------------------------
# 2. ArcFace (insightface w600k_r50 layout)

def arcface(path, *, batch_dynamic: bool = False) -> Path:
    """insightface ArcFace layout: ``input.1`` [1|None, 3, 112, 112] -> ``683`` [1|None, 512] (raw)."""
    import torch
    from torch import nn

    def make():
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.PReLU(32),      # 56
            nn.Conv2d(32, 48, 3, 2, 1), nn.BatchNorm2d(48), nn.PReLU(48),      # 28
            nn.Conv2d(48, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.PReLU(64),      # 14
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 512), nn.BatchNorm1d(512))

    net = _build(20, make)
    dyn = {"input.1": {0: "None"}, "683": {0: "None"}} if batch_dynamic else None
    return _export(net, (torch.zeros(1, 3, 112, 112),), path, ["input.1"], ["683"], dyn)


# ---------------------------------------------------------------------------------------
# 3./4. identity-conditioned generators (inswapper_128, SimSwap)

def _swapper_module(width: int, blocks: int, overflow: bool):
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Swapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(width, width, 3, 2, 1), nn.LeakyReLU(0.2))  # /4
            self.pre = nn.Conv2d(width, width, 3, 1, 1)
            self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, 1, 1) for _ in range(blocks))
            self.style = nn.ModuleList(nn.Linear(512, 2 * width) for _ in range(blocks))
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, 1, 1),
                                    nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2, mode="nearest"),
                                    nn.Conv2d(width, 3, 3, 1, 1))

        def forward(self, target, source):
            h = F.instance_norm(self.pre(self.down(target)))
            if overflow:
                # (h * 1e3)^2 is ~1e6 for unit-variance features: past FP16's 65504; scaled
                # back it is just 0.1 * h^2, so the FP32 result stays well in range
                big = (h * 1e3) * (h * 1e3)
                h = h + big * 1e-7
            for conv, style in zip(self.convs, self.style):
                gamma, beta = style(source).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
                h = h + F.leaky_relu(F.instance_norm(conv(h)) * (1.0 + gamma) + beta, 0.2)
            return torch.sigmoid(self.up(h) + 2.0 * (target - 0.5))

    return Swapper()


def inswapper(path, *, emap: bool = True, overflow: bool = False) -> Path:
    """insightface inswapper_128 layout: ``target`` [1,3,128,128] + ``source`` [1,512] -> ``output``.

    ``emap``: a 512x512 float32 initializer ``emap`` stored last and used by no node.
    ``overflow``: an intermediate exceeds 65504 in magnitude on ordinary inputs.
    """
    import onnx
    from onnx import numpy_helper
    import torch

    net = _build(30, lambda: _swapper_module(32, 2, overflow))

    def edit(model: onnx.ModelProto) -> None:
        if emap:
            init = model.graph.initializer
            assert all(t.name != "emap" for t in init)
            mat = (np.random.RandomState(31).standard_normal((512, 512)) / np.sqrt(512.0)).astype(np.float32)
            init.append(numpy_helper.from_array(mat, "emap"))

    args = (torch.rand(1, 3, 128, 128), torch.randn(1, 512))
    return _export(net, args, path, ["target", "source"], ["output"], edit=edit)


def simswap(path, *, size: int = 256) -> Path:
    """FaceFusion SimSwap layout: ``target`` [1,3,size,size] + ``source`` [1,512] -> ``output`` [0,1]."""
    import torch

    net = _build(40, lambda: _swapper_module(24, 2, False))
    args = (torch.rand(1, 3, size, size), torch.nn.functional.normalize(torch.randn(1, 512), dim=1))
    return _export(net, args, path, ["target", "source"], ["output"])


# ---------------------------------------------------------------------------------------
# 5. GFPGAN / GPEN restorer

def gfpgan(path, *, size: int = 512) -> Path:
    """GFPGAN/GPEN layout: ``input`` [1,3,size,size] in [-1,1] -> ``output`` same shape, tanh."""
    import torch
    from torch import nn

    class Restorer(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(16, 24, 3, 2, 1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(24, 24, 3, 2, 1), nn.LeakyReLU(0.2),      # /8
                                      nn.Conv2d(24, 24, 3, 1, 1), nn.LeakyReLU(0.2),
                                      nn.Upsample(scale_factor=8, mode="bilinear", align_corners=False),
                                      nn.Conv2d(24, 3, 3, 1, 1))

        def forward(self, x):
            return torch.tanh(self.body(x) * 0.3 + x * 1.5)

    net = _build(50, Restorer)
    return _export(net, (torch.rand(1, 3, size, size) * 2 - 1,), path, ["input"], ["output"])


# ---------------------------------------------------------------------------------------
# 6. 2DFAN4 landmarker (FaceFusion layout)

def fan2d4(path, *, scores: bool = True) -> Path:
    """FaceFusion 2dfan4 layout: ``input`` [1,3,256,256] in [0,1] -> ``landmarks`` [1,68,3]
    (x, y in 64x64 heatmap cells, peak value) and ``heatmaps`` [1,68,64,64]; only ``heatmaps``
    when ``scores`` is False."""
    import torch
    from torch import nn

    class FAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),      # 64x64
                                      nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
                                      nn.Conv2d(32, 68, 3, 1, 1), nn.Sigmoid())

        def forward(self, x):
            hm = self.body(x)
            if not scores:
                return hm
            flat = hm.flatten(2)                                   # (1, 68, 4096)
            val, idx = flat.max(dim=2)
            xs = torch.remainder(idx, 64).float()
            ys = torch.div(idx, 64, rounding_mode="floor").float()
            return torch.stack([xs, ys, val], dim=2), hm

    net = _build(60, FAN)
    names = ["landmarks", "heatmaps"] if scores else ["heatmaps"]
    return _export(net, (torch.rand(1, 3, 256, 256),), path, ["input"], names)


# ---------------------------------------------------------------------------------------
# 7. the wrong kind of model

def classifier(path) -> Path:
    """An ImageNet-style classifier: ``data`` [1,3,224,224] -> ``prob`` [1,1000] (softmax)."""
    import torch
    from torch import nn

    def make():
        return nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1000), nn.Softmax(dim=1))

    net = _build(70, make)
    return _export(net, (torch.rand(1, 3, 224, 224),), path, ["data"], ["prob"])


# ---------------------------------------------------------------------------------------

def astronaut_face_640(json_path: Path | str = ASTRONAUT_JSON) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's box (4,) and landmarks (5, 2) mapped onto the 640x640 letterbox (x 1.25)."""
    info = json.loads(Path(json_path).read_text())
    scale = 640.0 / 512.0  # 512x512 image, top-left letterbox, no padding offset
    return np.asarray(info["box"], np.float64) * scale, np.asarray(info["landmarks"], np.float64) * scale


def public_set(folder) -> dict[str, Path]:
    """One file of each layout under ``folder``; the detector has the astronaut's face planted.

    Keys: detector, encoder, generator (inswapper), simswap, enhancer, landmarker, classifier.
    """
    folder = Path(folder)
    return {
        "detector": scrfd(folder / "det_10g.onnx", face=astronaut_face_640()),
        "encoder": arcface(folder / "w600k_r50.onnx"),
        "generator": inswapper(folder / "inswapper_128.onnx"),
        "simswap": simswap(folder / "simswap_256.onnx"),
        "enhancer": gfpgan(folder / "gfpgan_1.4.onnx"),
        "landmarker": fan2d4(folder / "2dfan4.onnx"),
        "classifier": classifier(folder / "classifier.onnx"),
    }
