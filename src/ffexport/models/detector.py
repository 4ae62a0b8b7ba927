"""RetinaFace (MobileNet-0.25 + FPN + SSH) with insightface-layout outputs.

Parameter names and shapes follow the public mobilenet0.25 RetinaFace
checkpoint (``mobilenet0.25_Final.pth``): ``body.stage1..3`` (the MobileNetV1
trunk kept under ``body`` by an IntermediateLayerGetter), ``fpn.output1..3`` /
``fpn.merge1..2``, ``ssh1..3`` and the per-level ``ClassHead.i`` /
``BboxHead.i`` / ``LandmarkHead.i`` 1x1 convolutions.  A real checkpoint
therefore loads with ``strict=True``.

Two conventions differ between that checkpoint and our ONNX contract
(``specs/detector.py``), and both conversions live inside the graph:

* Input.  The checkpoint was trained on BGR pixels minus (104, 117, 123);
  our input is BGR ``(p - 127.5) / 128``.  The graph first recovers
  ``p = x * 128 + 127.5`` and subtracts the training means, one Mul and one
  Add: ``x * 128 + (127.5 - mean_c)`` (exact in float32: 128 is a power of
  two), so a real checkpoint sees exactly what it was trained on.
* Outputs.  The heads regress SSD-style offsets against prior boxes of side
  ``m`` centred at ``((x + 0.5) * s, (y + 0.5) * s)`` with variances
  (0.1, 0.2); we emit insightface distances from the anchor centre
  ``(x * s, y * s)`` in stride units (see :func:`_to_insightface`).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .bn_statistics import measure_batchnorm_statistics, randomize_bn_affine, synthetic_images

STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))  # prior box sides per level, pixels; 2 anchors per location
VARIANCES = (0.1, 0.2)
TRAIN_MEAN_BGR = (104.0, 117.0, 123.0)
INPUT_MEAN, INPUT_STD = 127.5, 128.0  # our contract: (p - 127.5) / 128


# --- building blocks (layouts as in the public checkpoint: Sequential(conv, bn[, act])) -------------

def _conv_bn(cin: int, cout: int, stride: int = 1, leaky: float | None = 0.0, k: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 + BN + act, then pointwise 1x1 + BN + act (indices 0-5)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.LeakyReLU(leaky, inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(leaky, inplace=True),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25 trunk; returns the stride 8, 16 and 32 feature maps (64, 128, 256 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(  # stride 8
            _conv_bn(3, 8, 2, leaky=0.1),
            _conv_dw(8, 16, 1), _conv_dw(16, 32, 2), _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])  # stride 16
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))  # stride 32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out: int, leaky: float) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, leaky=leaky, k=1)
        self.output2 = _conv_bn(in_channels[1], out, leaky=leaky, k=1)
        self.output3 = _conv_bn(in_channels[2], out, leaky=leaky, k=1)
        self.merge1 = _conv_bn(out, out, leaky=leaky)
        self.merge2 = _conv_bn(out, out, leaky=leaky)

    def forward(self, c1, c2, c3):
        p3 = self.output3(c3)
        # every level is exactly half the previous one for inputs divisible by 32
        p2 = self.merge2(self.output2(c2) + F.interpolate(p3, scale_factor=2.0, mode="nearest"))
        p1 = self.merge1(self.output1(c1) + F.interpolate(p2, scale_factor=2.0, mode="nearest"))
        return p1, p2, p3


class SSH(nn.Module):
    """Context module: 3x3 | 5x5 (two 3x3) | 7x7 (three 3x3) branches, concatenated, ReLU."""

    def __init__(self, cin: int, cout: int, leaky: float) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, leaky=None)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, leaky=None)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, leaky=None)  # lower-case x, as in the checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(self.conv7X7_2(b5))], 1))


class _Head(nn.Module):
    """1x1 conv predicting ``k`` values per anchor; named ``conv1x1`` as in the checkpoint."""

    def __init__(self, cin: int, anchors: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.conv1x1 = nn.Conv2d(cin, anchors * k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, A*k, H, W) -> (B, H*W*A, k): anchors row-major over (y, x), A per location
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.k)


def _to_insightface(loc: torch.Tensor, landm: torch.Tensor, m_over_s: torch.Tensor):
    """Prior-encoded regressions -> insightface distances, in stride units.

    With prior centre ``c_p = (x + 0.5) * s``, insightface anchor centre
    ``c_a = x * s`` and prior side ``m``:

        box centre   c = c_p + loc_xy * 0.1 * m           half size  h = m * exp(loc_wh * 0.2) / 2
        distances    left = (c_a - (c - h)) / s = h/s - (c - c_a)/s,   right = (c - c_a)/s + h/s
        with         (c - c_a) / s = 0.5 + loc_xy * 0.1 * m / s        (same for y: top, bottom)
        keypoint     (k - c_a) / s = 0.5 + landm * 0.1 * m / s

    Only ``m / s`` per anchor is needed (no per-location table), so the same
    graph serves any input size divisible by 32.  ``loc``: (B, L, A, 4),
    ``landm``: (B, L, A, 10), ``m_over_s``: (A, 1).
    """
    v0, v1 = VARIANCES
    centre = 0.5 + loc[..., :2] * (v0 * m_over_s)          # (c - c_a) / s, (x, y)
    half = 0.5 * m_over_s * torch.exp(loc[..., 2:] * v1)    # half width, half height / s
    bbox = torch.cat([half - centre, centre + half], dim=-1)  # left, top, right, bottom
    kps = 0.5 + landm * (v0 * m_over_s)
    return bbox, kps


class RetinaFace(nn.Module):
    def __init__(self, strides=STRIDES, min_sizes=MIN_SIZES, out_channels: int = 64) -> None:
        super().__init__()
        self.strides = tuple(strides)
        anchors = len(min_sizes[0])
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.body = MobileNetV1Body()
        self.fpn = FPN((64, 128, 256), out_channels, leaky)
        self.ssh1 = SSH(out_channels, out_channels, leaky)
        self.ssh2 = SSH(out_channels, out_channels, leaky)
        self.ssh3 = SSH(out_channels, out_channels, leaky)
        self.ClassHead = nn.ModuleList(_Head(out_channels, anchors, 2) for _ in self.strides)
        self.BboxHead = nn.ModuleList(_Head(out_channels, anchors, 4) for _ in self.strides)
        self.LandmarkHead = nn.ModuleList(_Head(out_channels, anchors, 10) for _ in self.strides)
        # Constants, not parameters: non-persistent, so state dicts stay those of the public checkpoint.
        # input: x * 128 + (127.5 - mean_bgr) == (BGR pixel) - mean_bgr
        shift = torch.tensor([INPUT_MEAN - m for m in TRAIN_MEAN_BGR]).view(1, 3, 1, 1)
        self.register_buffer("input_scale", torch.tensor(INPUT_STD), persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)
        for s, sizes in zip(self.strides, min_sizes):  # prior sides in stride units, one row per anchor
            self.register_buffer(f"prior_size_{s}", torch.tensor([[m / s] for m in sizes]), persistent=False)

    def forward(self, x: torch.Tensor):
        x = x * self.input_scale + self.input_shift
        feats = self.fpn(*self.body(x))
        feats = (self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2]))
        scores, boxes, points = [], [], []
        for i, (s, f) in enumerate(zip(self.strides, feats)):
            m_over_s = getattr(self, f"prior_size_{s}")
            a = m_over_s.shape[0]
            cls = self.ClassHead[i](f)
            loc = self.BboxHead[i](f).reshape(f.shape[0], -1, a, 4)
            landm = self.LandmarkHead[i](f).reshape(f.shape[0], -1, a, 10)
            bbox, kps = _to_insightface(loc, landm, m_over_s)
            # P(face), box distances, keypoints: (B * N, k), batch-major, as insightface's files emit them
            scores.append(F.softmax(cls, dim=-1)[..., 1:].reshape(-1, 1))
            boxes.append(bbox.reshape(-1, 4))
            points.append(kps.reshape(-1, 10))
        return (*scores, *boxes, *points)


def _init_seeded(model: RetinaFace, size: tuple[int, int]) -> None:
    """Seeded weights with trained-like activations (see ``bn_statistics``).

    Head convolutions get small weights so the seeded scores stay near 0.5
    and boxes near the prior size, instead of saturating.
    """
    randomize_bn_affine(model)
    with torch.no_grad():
        for heads in (model.ClassHead, model.BboxHead, model.LandmarkHead):
            for h in heads:
                nn.init.normal_(h.conv1x1.weight, 0.0, 0.05)
                nn.init.normal_(h.conv1x1.bias, 0.0, 0.05)
    lo, hi = (0.0 - INPUT_MEAN) / INPUT_STD, (255.0 - INPUT_MEAN) / INPUT_STD
    measure_batchnorm_statistics(model, synthetic_images(1, size, (lo, hi)))


def build(spec, **kwargs) -> RetinaFace:
    """RetinaFace-mnet0.25 for ``spec`` (``specs.detector``); seeded weights."""
    model = RetinaFace(**kwargs)
    expected = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in model.strides]
    if list(spec.output_names) != expected:
        raise ValueError(f"{spec.key}: builder emits {expected}, spec declares {spec.output_names}")
    _init_seeded(model, tuple(spec.input_size or (640, 640)))
    return model
