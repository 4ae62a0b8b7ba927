"""MTCNN's three cascade networks (P-Net, R-Net, O-Net) with trained weights.

Parameter names and shapes follow facenet-pytorch's ``PNet``/``RNet``/``ONet``
(``conv1``, ``prelu1``, ... ``conv4_1``/``conv4_2`` for P-Net; ``dense4``,
``dense5_1``/``dense5_2`` for R-Net; ``dense5``, ``dense6_1``..``dense6_3`` for
O-Net), so its ``data/{pnet,rnet,onet}.pt`` load with ``strict=True``.  Those
files are the original MTCNN weights converted to PyTorch; this is the one
module whose *default* weights are trained rather than seeded.

Conventions of those weights (checked against facenet-pytorch's detector code):

* input is RGB, ``(x - 127.5) / 128``, in the usual ``B x 3 x H x W`` layout
  (no width/height transpose is needed: the conversion folded the Caffe
  models' transposed orientation into the convolution kernels);
* the dense layers were converted from the transposed Caffe layout, so the
  feature map is flattened in ``(W, H, C)`` order before ``dense4``/``dense5``;
* outputs: face probability as a 2-way softmax over channel 1 (index 1 =
  face), box regression ``(dx1, dy1, dx2, dy2)`` in units of the window size,
  and (O-Net) landmarks as 5 x-fractions followed by 5 y-fractions of the box.

Outputs are returned in the spec's order (``prob``, ``reg``[, ``landmarks``]).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, MissingDependencyError

FACENET_PIN = "facenet-pytorch==2.6.0"
NETS = ("pnet", "rnet", "onet")


def _conv_prelu(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, k), nn.PReLU(cout)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Flatten ``B x C x H x W`` in the (W, H, C) order the converted dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 windows at stride 2."""

    output_names = ("prob", "reg")

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    output_names = ("prob", "reg")

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return torch.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box refinement and 5 landmarks."""

    output_names = ("prob", "reg", "landmarks")

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


_CLASSES = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def facenet_weights_path(net: str) -> Path:
    """``data/<net>.pt`` of the installed facenet-pytorch wheel, found without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / "data" / f"{net}.pt"
        if path.is_file():
            return path
    where = f" (looked in {locations[0]}/data)" if locations else ""
    raise MissingDependencyError(
        f"MTCNN's trained {net} weights come from facenet-pytorch, which is not installed{where}: "
        f"pip install --no-deps {FACENET_PIN}")


def load_trained(model: nn.Module, net: str) -> nn.Module:
    path = facenet_weights_path(net)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        model.load_state_dict(sd, strict=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load MTCNN {net} weights from {path}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}") from exc
    return model


def build(spec, net: str, weights: str = "facenet-pytorch") -> nn.Module:
    """The ``net`` (pnet | rnet | onet) of ``spec``; ``weights="facenet-pytorch"`` (default) loads the
    trained weights from the installed wheel, ``weights="seeded"`` keeps PyTorch's seeded init."""
    if net not in _CLASSES:
        raise ValueError(f"{spec.key}: unknown MTCNN net {net!r}; valid: {', '.join(NETS)}")
    model = _CLASSES[net]()
    n_out = 3 if net == "onet" else 2
    if len(spec.outputs) != n_out:
        raise ValueError(f"{spec.key}: {net} emits {n_out} outputs, spec declares {spec.output_names}")
    if weights not in ("facenet-pytorch", "seeded"):
        raise ValueError(f"{spec.key}: weights must be 'facenet-pytorch' or 'seeded', got {weights!r}")
    if weights == "facenet-pytorch" and not next(model.parameters()).is_meta:  # meta: shapes only, no data
        load_trained(model, net)
    return model.eval()
