"""Real media for the pipeline tests: the astronaut photograph, and a short video made from it.

The video pans and zooms over the photograph (so every frame holds a real face at a
changing position and scale) and carries a sine-tone audio track; it is written with
PyAV into the test's temporary folder, nothing is downloaded.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ffexport.bench.e2e import add_tone_stream, write_tone


def astronaut() -> np.ndarray:
    """The astronaut photograph (512 x 512 RGB uint8; one face)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def no_face_image(size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A real photograph without a face: a crop of scikit-image's coffee cup."""
    from skimage import data

    img = data.coffee()
    h, w = size
    return np.ascontiguousarray(img[:h, -w:])


def view_box(in_hw: tuple[int, int], t: float, out_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The region of the photograph frame ``t`` shows: zooms in from 1.0 to 1.35 and pans as t goes 0 -> 1."""
    H, W = in_hw
    h, w = out_hw
    zoom = 1.0 + 0.35 * t
    # the widest crop with the output's aspect ratio, shrunk by the zoom
    ch = min(H, W * h / w) / zoom
    cw = ch * w / h
    cx = cw / 2 + (W - cw) * (0.25 + 0.3 * t)
    cy = ch / 2 + (H - ch) * (0.2 + 0.2 * math.sin(math.pi * t))
    return (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)


def view_points(points: np.ndarray, in_hw: tuple[int, int], t: float, out_hw: tuple[int, int]) -> np.ndarray:
    """Photograph pixel coordinates (centres at integers) -> coordinates in frame ``t``."""
    x0, y0, x1, y1 = view_box(in_hw, t, out_hw)
    h, w = out_hw
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    return np.stack([(points[..., 0] + 0.5 - x0) * sx - 0.5, (points[..., 1] + 0.5 - y0) * sy - 0.5], -1)


def _view(img: np.ndarray, t: float, out_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = out_hw
    box = view_box(img.shape[:2], t, out_hw)
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC, box=box))


def make_video(path: str | Path, frames: int = 24, size: tuple[int, int] = (240, 320), fps: int = 24,
               audio: bool = True, codec: str = "libx264", audio_codec: str = "aac",
               source: np.ndarray | None = None, pix_fmt: str = "yuv420p", colorspace: int | None = None,
               color_range: int | None = None) -> Path:
    """Write a pan-and-zoom video over ``source`` (default: the astronaut) with a 440 Hz tone; ``colorspace``
    and ``color_range``: FFmpeg's tags of the frames and the stream (e.g. 1, BT.709; 2, full range), the RGB
    frames converted with them."""
    av = pytest.importorskip("av", reason="PyAV (ffexport[video]) is not installed on this host")

    path = Path(path)
    img = astronaut() if source is None else source
    h, w = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = pix_fmt
        if colorspace is not None:
            vs.codec_context.colorspace = colorspace
        if color_range is not None:
            vs.codec_context.color_range = color_range
        if codec == "libx264":
            vs.options = {"crf": "12", "preset": "veryfast"}
        a_s = add_tone_stream(out, audio_codec) if audio else None
        for i in range(frames):
            arr = _view(img, i / max(frames - 1, 1), (h, w))
            f = av.VideoFrame.from_ndarray(arr, format="rgb24")
            if colorspace is not None or color_range is not None:
                f = f.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
                if colorspace is not None:
                    f.colorspace = colorspace
                if color_range is not None:
                    f.color_range = color_range
            f.pts = i
            f.time_base = Fraction(1, fps)
            out.mux(vs.encode(f))
        out.mux(vs.encode())
        if a_s is not None:
            write_tone(out, a_s, frames / fps)
    return path


def read_video(path: str | Path) -> tuple[list[np.ndarray], dict]:
    """All frames (RGB uint8) and the stream facts the tests compare."""
    av = pytest.importorskip("av", reason="PyAV (ffexport[video]) is not installed on this host")

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"width": v.codec_context.width, "height": v.codec_context.height,
                "fps": v.average_rate, "codec": v.codec_context.name}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        info["frames"] = len(frames)
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            pk = [p for p in c.demux(a) if p.size]
            info["audio"] = {"codec": a.codec_context.name, "packets": len(pk),
                             "bytes": [bytes(p) for p in pk],
                             "duration_s": float(sum(p.duration for p in pk) * a.time_base)}
        else:
            info["audio"] = None
    return frames, info


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
