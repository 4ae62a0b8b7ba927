"""Video frames as YUV 4:2:0 planes (I420) between the codecs and the device, converted to RGB on the device.

A decoded H.264 frame is 8-bit YUV 4:2:0: a full-size luma plane and two chroma planes of half the width and
height.  PyAV hands it over as one ``3H/2 x W`` uint8 array (Y, then U, then V, each plane's rows packed; what
``frame.to_ndarray(format="yuv420p")`` returns and ``VideoFrame.from_ndarray(..., format="yuv420p")`` takes), half
the bytes of the ``H x W x 3`` RGB frame.  Converting on the device instead of with FFmpeg's swscale on the
host saves the two host conversions (decode side and encode side, one core each) and halves every host copy
and transfer of a frame; frames the pipeline does not change go back to the encoder as they were decoded.

The conversion follows the frame's colour tags, like swscale does for the RGB path: the BT.709 matrix for
frames tagged BT.709, BT.601 otherwise (tagged BT.601 or untagged, swscale's default); limited range
(16-235 / 16-240) unless the frame says full range.  Chroma is repeated to 2 x 2 pixels on the way in (what
swscale's unscaled converter does) and averaged over 2 x 2 pixels on the way out, so chroma the pipeline did
not touch comes back unchanged (up to the RGB frame's rounding to uint8).

Used by the streaming executor on CUDA (:meth:`~.pipeline.Pipeline.process_video`); the functions also run
on the CPU (tests compare them with PyAV's own conversions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# FFmpeg's AVColorSpace values that name a matrix this module converts with
_BT709 = 1
_UNSPECIFIED = 2
_BT601 = (5, 6)  # BT470BG, SMPTE170M
# AVColorRange: 0 unspecified, 1 MPEG (limited), 2 JPEG (full)
_FULL = 2
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


@dataclass(frozen=True)
class Planes:
    """How a video's I420 frames map to RGB: ``matrix`` (``bt601`` | ``bt709``) and the range."""

    matrix: str = "bt601"
    full_range: bool = False

    @classmethod
    def of_tags(cls, colorspace, color_range) -> "Planes | None":
        """The conversion for frames with these FFmpeg tags (ints or PyAV enums); None for a matrix this module
        does not convert (BT.2020 and others: such videos take the RGB path)."""
        cs, rng = int(colorspace or 0), int(color_range or 0)
        if cs == _BT709:
            matrix = "bt709"
        elif cs in (_UNSPECIFIED, 0, *_BT601):
            matrix = "bt601"
        else:
            return None
        return cls(matrix, rng == _FULL)

    @property
    def name(self) -> str:
        return f"i420 {self.matrix} {'full' if self.full_range else 'limited'} range"

    @property
    def colorspace(self) -> int:
        """The FFmpeg colorspace tag of frames in this form."""
        return _BT709 if self.matrix == "bt709" else _BT601[0]

    @property
    def color_range(self) -> int:
        return _FULL if self.full_range else 1

    def _coefficients(self):
        kr, kb = _KR_KB[self.matrix]
        y_off, y_scale, c_scale = (0.0, 255.0, 255.0) if self.full_range else (16.0, 219.0, 224.0)
        return kr, kb, 1.0 - kr - kb, y_off, y_scale, c_scale


def i420_rows(height: int) -> int:
    """Rows of the ``rows x W`` I420 array of a frame ``height`` pixels high."""
    return height * 3 // 2


def frame_height(rows: int) -> int:
    """The frame height of an I420 array with ``rows`` rows."""
    return rows * 2 // 3


def check_i420(shape, dtype) -> str | None:
    """Why an array of this shape and dtype is not one I420 frame (None when it is)."""
    shape = tuple(shape)
    try:
        kind = np.dtype(dtype).name
    except TypeError:  # a torch dtype
        kind = str(dtype).replace("torch.", "")
    if kind != "uint8" or len(shape) != 2:
        return f"expected a 3H/2 x W uint8 I420 frame, got {list(shape)} {dtype}"
    rows, w = shape
    if rows % 3 or frame_height(rows) % 2 or w % 2:
        return f"an I420 frame needs an even width and height, got {list(shape)} (a {w} x {rows * 2 / 3:g} frame)"
    return None


def i420_to_rgb(x: torch.Tensor, planes: Planes) -> torch.Tensor:
    """``B x 3H/2 x W`` uint8 I420 frames -> ``B x H x W x 3`` uint8 RGB, on ``x``'s device."""
    b, rows, w = x.shape
    h = frame_height(rows)
    kr, kb, kg, y_off, y_scale, c_scale = planes._coefficients()
    flat = x.reshape(b, -1)
    y = flat[:, : h * w].reshape(b, h, w).float().sub_(y_off).div_(y_scale)
    c = flat[:, h * w:].reshape(b, 2, h // 2, 1, w // 2, 1).float().sub_(128.0).div_(c_scale)
    c = c.expand(b, 2, h // 2, 2, w // 2, 2).reshape(b, 2, h, w)  # each chroma sample on its 2 x 2 pixels
    cb, cr = c[:, 0], c[:, 1]
    r = y + (2.0 * (1.0 - kr)) * cr
    bl = y + (2.0 * (1.0 - kb)) * cb
    g = (y - kr * r - kb * bl) / kg
    return torch.stack((r, g, bl), dim=-1).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def rgb_to_i420(x: torch.Tensor, planes: Planes) -> torch.Tensor:
    """``B x H x W x 3`` uint8 RGB frames (even H and W) -> ``B x 3H/2 x W`` uint8 I420, on ``x``'s device."""
    b, h, w, _ = x.shape
    kr, kb, kg, y_off, y_scale, c_scale = planes._coefficients()
    f = x.float().div_(255.0)

    def luma(rgb):  # weighted channels (no weights tensor to copy to the device on every call)
        return kr * rgb[..., 0] + kg * rgb[..., 1] + kb * rgb[..., 2]

    y = luma(f).mul_(y_scale).add_(y_off)
    sub = f.reshape(b, h // 2, 2, w // 2, 2, 3).mean(dim=(2, 4))  # the 2 x 2 average that each chroma sample takes
    ys = luma(sub)
    cb = (sub[..., 2] - ys).div_(2.0 * (1.0 - kb)).mul_(c_scale).add_(128.0)
    cr = (sub[..., 0] - ys).div_(2.0 * (1.0 - kr)).mul_(c_scale).add_(128.0)
    out = torch.empty((b, i420_rows(h), w), dtype=torch.uint8, device=x.device)
    flat = out.view(b, -1)
    q = (h // 2) * (w // 2)
    for dst, src in ((flat[:, : h * w], y), (flat[:, h * w: h * w + q], cb), (flat[:, h * w + q:], cr)):
        dst.copy_(src.reshape(b, -1).round_().clamp_(0, 255))
    return out
