"""Video in, video out, with decoding, GPU work and encoding overlapped (PyAV; its wheels bundle FFmpeg).

    decode thread --(bounded queue)--> caller's frame function (main thread) --(bounded queue)--> encode thread

or, with a stream function (the pipeline's streaming executor, :mod:`.streaming`), in the middle::

    --(bounded queue)--> upload thread (page-locked ring, copy stream) --> GPU work (main thread)
                     --> download (copy stream) --(bounded queue)--> encode thread

Frames travel as RGB ``H x W x 3`` arrays, or, with ``planes`` (a :class:`~.yuv.Planes`, what
:func:`planes_for` says a video allows), as the decoder's own YUV 4:2:0 planes (``3H/2 x W`` I420 arrays,
no conversion on the host: the stream function converts them on the device, see :mod:`.yuv`), written back
with the input's colour tags.

Every queue is bounded, so memory stays flat however long the video is.  The
audio stream is copied packet for packet (no re-encode), interleaved with the
video by the encoder thread from a second reader of the input.  Frame count,
frame rate and resolution are preserved.  The output is written to a temporary
file beside the final name and renamed only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .._lazy import require
from ..errors import MediaError
from ..fsutil import atomic_path
from .queues import END as _END
from .queues import Failure as _Failure
from .queues import put as _put
from .yuv import Planes

# how much lower than the caller's the decode and encode threads' scheduling priority is (Linux niceness, per
# thread, inherited by the threads a codec starts when it opens).  0 by default; beside a GPU pipeline
# (Pipeline.process_video on CUDA) GPU_CODEC_NICE, and libx264 on 3/4 of the cores (gpu_encoder_threads): the
# codecs' worker threads take every idle core, and the thread that drives the GPU must not wait behind them
# (file to file +9-24 % on the H200 host, benchmarks/NOTES.md, session 8)
CODEC_NICE = 0
GPU_CODEC_NICE = 10


def gpu_encoder_threads() -> int:
    """libx264's threads beside a GPU pipeline: 3/4 of this machine's cores (libx264's own choice is 1.5 per
    core), the rest left to the decoder and the pipeline's threads."""
    return max(1, (os.cpu_count() or 4) * 3 // 4)


# batches of results the encoder's queue holds: the GPU work of the next batches goes on while the encoder works
# through the last ones (one batch: the two take turns; measured in benchmarks/NOTES.md, session 8)
OUT_BATCHES = 3
# encode-only runs of each form in codec_ceiling; the fastest is the ceiling (the strictest)
CEILING_RUNS = 2

# container suffix -> (FFmpeg muxer, video encoders in order of preference)
CONTAINERS = {
    ".mp4": ("mp4", ("libx264", "h264", "mpeg4")),
    ".m4v": ("mp4", ("libx264", "h264", "mpeg4")),
    ".mov": ("mov", ("libx264", "h264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "h264", "mpeg4")),
    ".avi": ("avi", ("mpeg4", "libx264")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
}

ProcessFn = Callable[[list[np.ndarray]], Sequence[np.ndarray]]
# batches of frames (and a stop event the function sets when it fails) -> each batch's frames, in order
StreamFn = Callable[[Iterable[list[np.ndarray]], threading.Event], Iterator[Sequence[np.ndarray]]]


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int | None  # from the container header; may be absent
    codec: str
    audio_codec: str | None
    duration_s: float | None
    pix_fmt: str | None = None  # the decoded frames' pixel format
    colorspace: int = 0  # FFmpeg's AVColorSpace / AVColorRange tags of the first frame
    color_range: int = 0


# FFmpeg's AVColorSpace tags -> swscale's matrix for them (PyAV's Colorspace names)
_SWS_MATRIX = {1: "itu709", 4: "fcc", 5: "itu601", 6: "itu601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_FULL_RANGE = 2  # AVColorRange JPEG


@dataclass(frozen=True)
class RgbColour:
    """How the RGB path writes a video's frames back: RGB -> YUV with the input's matrix and range, and the
    input's tags on the frames and the stream (the decoder's RGB conversion follows the tags: the encoder's must
    too, or a player shows the colours shifted)."""

    colorspace: int
    color_range: int

    @property
    def matrix(self) -> str:
        return _SWS_MATRIX[self.colorspace]


def rgb_colour(info: VideoInfo) -> RgbColour | None:
    """The RGB path's colour for ``info``'s frames; None for untagged frames (swscale's default, BT.601 limited
    range, both ways, and no tag written)."""
    if info.colorspace not in _SWS_MATRIX:
        return None
    return RgbColour(info.colorspace, _FULL_RANGE if info.color_range == _FULL_RANGE else 1)


def planes_for(info: VideoInfo, encoder_pix_fmt: str | None = "yuv420p") -> Planes | None:
    """The I420 form of ``info``'s frames when they can travel as planes: 8-bit 4:2:0 (``yuv420p``), even width
    and height, a matrix :mod:`.yuv` converts, and an encoder that takes ``yuv420p``; else None (RGB)."""
    if info.pix_fmt != "yuv420p" or encoder_pix_fmt != "yuv420p" or info.width % 2 or info.height % 2:
        return None
    return Planes.of_tags(info.colorspace, info.color_range)


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip()
    return s.splitlines()[0][:200] if s else type(exc).__name__


def open_input(path: str | Path):
    """An opened PyAV input container with a video stream, or a one-line :class:`MediaError`."""
    av = require("av", "reading videos")
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"video {p} does not exist or is not a file")
    if p.stat().st_size == 0:
        raise MediaError(f"video {p} is empty (0 bytes)")
    try:
        c = av.open(str(p))
    except av.FFmpegError as exc:
        raise MediaError(f"cannot read video {p}: {_first_line(exc)}") from exc
    if not c.streams.video:
        c.close()
        raise MediaError(f"{p} has no video stream")
    return c


def probe(path: str | Path) -> VideoInfo:
    """Stream facts of ``path``; decodes the first frame so an unsupported codec fails here, in one line."""
    av = require("av", "reading videos")
    p = Path(path)
    with open_input(p) as c:
        v = c.streams.video[0]
        name = v.codec_context.name if v.codec_context is not None else "?"
        try:
            first = next(iter(c.decode(v)), None)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode video {p} (codec {name}): {_first_line(exc)}") from exc
        if first is None:
            raise MediaError(f"video {p} has no frames")
        fps = v.average_rate or v.guessed_rate or v.base_rate
        if not fps:
            raise MediaError(f"video {p} has no frame rate")
        a = c.streams.audio[0] if c.streams.audio else None
        dur = float(c.duration / 1_000_000) if c.duration else None
        return VideoInfo(p, first.width, first.height, Fraction(fps), int(v.frames) or None, name,
                         a.codec_context.name if a is not None else None, dur, first.format.name,
                         int(getattr(first, "colorspace", 0) or 0), int(getattr(first, "color_range", 0) or 0))


def first_frames(path: str | Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of ``path`` as RGB uint8 arrays (fewer when the video is shorter)."""
    av = require("av", "reading videos")
    frames: list[np.ndarray] = []
    with open_input(path) as c:
        try:
            for frame in c.decode(c.streams.video[0]):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= n:
                    break
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode video {path}: {_first_line(exc)}") from exc
    return frames


# --- threads ----------------------------------------------------------------------------------

def lower_priority(step: int) -> int:
    """Lower the calling thread's scheduling priority by ``step`` (Linux niceness, a thread's own, inherited by
    the threads it starts: a codec opened afterwards in this thread runs its workers at the same niceness).
    Returns the niceness now (0 where this is not supported: nothing changed)."""
    if step <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return 0
    try:
        tid = threading.get_native_id()
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(step))
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return nice
    except OSError:
        return 0


def _pixels(frame, planes: Planes | None) -> np.ndarray:
    """A decoded frame as an RGB array, or as its I420 planes (a copy of the planes, no conversion)."""
    return frame.to_ndarray(format="yuv420p" if planes is not None else "rgb24")


def _frame(av, arr: np.ndarray, form: Planes | RgbColour | None, pix_fmt: str = "yuv420p"):
    """An array as a PyAV frame to encode: I420 planes (``form`` a :class:`Planes`) with their colour tags; RGB
    converted to ``pix_fmt`` with an :class:`RgbColour`'s matrix and range, and tagged; or RGB as it is (the
    encoder converts it, BT.601 limited range, untagged)."""
    if isinstance(form, Planes):
        frame = av.VideoFrame.from_ndarray(arr, format="yuv420p")
    else:
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
        if form is None:
            return frame
        frame = frame.reformat(format=pix_fmt, dst_colorspace=form.matrix, dst_color_range=form.color_range)
    frame.colorspace, frame.color_range = form.colorspace, form.color_range
    return frame


class _Reader(threading.Thread):
    """Decodes frames (RGB, or I420 with ``planes``) into a bounded queue: ``(array, time_s)``, then ``_END`` or
    ``_Failure``."""

    def __init__(self, path: Path, out: queue.Queue, stop: threading.Event, planes: Planes | None = None,
                 nice: int = 0):
        super().__init__(name="ffexport-decode", daemon=True)
        self.path, self.out, self.stop, self.planes, self.nice = path, out, stop, planes, nice

    def run(self) -> None:
        lower_priority(self.nice)
        try:
            with open_input(self.path) as c:
                v = c.streams.video[0]
                v.thread_type = "AUTO"
                for frame in c.decode(v):
                    if not _put(self.out, (_pixels(frame, self.planes), frame.time), self.stop):
                        return
            _put(self.out, _END, self.stop)
        except BaseException as exc:  # handed to the main thread, which raises it
            _put(self.out, _Failure(exc), self.stop)


class _Writer(threading.Thread):
    """Encodes frames from a bounded queue and interleaves the input's audio packets, copied unchanged."""

    def __init__(self, container, vstream, fps: Fraction, src: Path, astream, inq: queue.Queue,
                 stop: threading.Event, form: Planes | RgbColour | None = None, nice: int = 0):
        super().__init__(name="ffexport-encode", daemon=True)
        self.c, self.vs, self.fps, self.src, self.as_ = container, vstream, fps, src, astream
        self.form, self.nice = form, nice  # the frames' form and colour (_frame)
        self.inq, self.stop = inq, stop
        self.error: BaseException | None = None
        self.frames = 0
        self.audio_packets = 0
        self._last_pts = -1
        # where the encoder's time went (a run's stream facts): when its first frame came, how long it then sat
        # with nothing to encode, how long it converted, encoded and muxed, and this thread's own CPU time
        self.first_at: float | None = None
        self.starved_s = self.busy_s = self.thread_cpu_s = 0.0

    def facts(self, t0: float) -> dict:
        """Where this encoder's time went, in seconds: its first frame after ``t0`` (the run's start), then
        waiting for frames (``starved_s``), converting, encoding and muxing (``busy_s``), and the CPU time of
        this thread (not of the codec's own threads)."""
        return {"first_frame_s": None if self.first_at is None else round(self.first_at - t0, 3),
                "starved_s": round(self.starved_s, 3), "busy_s": round(self.busy_s, 3),
                "thread_cpu_s": round(self.thread_cpu_s, 3)}

    def _audio_packets(self):
        if self.as_ is None:
            return iter(())
        c = open_input(self.src)
        self._audio_in = c
        return (p for p in c.demux(c.streams.audio[0]) if p.dts is not None and p.size)

    def _mux_audio_until(self, t: float | None) -> None:
        """Mux the copied audio packets that start before ``t`` seconds (all of them when ``t`` is None)."""
        while self._pending is not None:
            p = self._pending
            if t is not None and float(p.dts * p.time_base) > t:
                return
            p.stream = self.as_
            self.c.mux(p)
            self.audio_packets += 1
            self._pending = next(self._apk, None)

    def _mux_video(self, packets) -> None:
        for p in packets:
            if p.dts is not None:
                self._mux_audio_until(float(p.dts * p.time_base))
            self.c.mux(p)

    def run(self) -> None:
        av = require("av")
        lower_priority(self.nice)  # before the first encode opens the encoder and it starts its threads
        self._audio_in = None
        try:
            self._apk = self._audio_packets()
            self._pending = next(self._apk, None)
            tb = Fraction(self.fps.denominator, self.fps.numerator)
            while True:
                asked = time.perf_counter()
                try:
                    item = self.inq.get(timeout=0.1)
                except queue.Empty:
                    if self.first_at is not None:
                        self.starved_s += time.perf_counter() - asked
                    if self.stop.is_set():
                        return
                    continue
                got = time.perf_counter()
                if self.first_at is not None:
                    self.starved_s += got - asked
                elif item is not _END:
                    self.first_at = got
                if item is _END:
                    break
                arr, t = item
                frame = _frame(av, arr, self.form, self.vs.pix_fmt)
                pts = round(t * self.fps) if t is not None else self._last_pts + 1
                pts = max(pts, self._last_pts + 1)
                frame.pts, frame.time_base = pts, tb
                self._last_pts = pts
                self._mux_video(self.vs.encode(frame))
                self.frames += 1
                self.busy_s += time.perf_counter() - got
            got = time.perf_counter()
            self._mux_video(self.vs.encode())
            self._mux_audio_until(None)
            self.busy_s += time.perf_counter() - got
        except BaseException as exc:
            self.error = exc
            self.stop.set()
        finally:
            self.thread_cpu_s = time.thread_time()
            if self._audio_in is not None:
                self._audio_in.close()


# --- output setup -----------------------------------------------------------------------------

def _encoder_for(suffix: str, codec: str | None) -> tuple[str, str]:
    av = require("av", "writing videos")
    if suffix not in CONTAINERS:
        raise MediaError(f"cannot write video with suffix {suffix or '(none)'}; use one of {', '.join(CONTAINERS)}")
    fmt, prefs = CONTAINERS[suffix]
    for name in ((codec,) if codec else prefs):
        try:
            av.Codec(name, "w")
            return fmt, name
        except Exception:
            continue
    raise MediaError(f"no video encoder for {suffix} in this FFmpeg build (tried {', '.join((codec,) if codec else prefs)})")


def _encoder_pix_fmt(encoder: str, info: VideoInfo) -> str:
    even = info.width % 2 == 0 and info.height % 2 == 0
    return "yuv420p" if even or encoder not in ("libx264",) else "yuv444p"


def _add_video_stream(out, encoder: str, info: VideoInfo, crf: int, preset: str,
                      colour: Planes | RgbColour | None = None, threads: int | None = None):
    vs = out.add_stream(encoder, rate=info.fps)
    vs.width, vs.height = info.width, info.height
    vs.pix_fmt = _encoder_pix_fmt(encoder, info)
    if colour is not None:  # the frames keep the input's colour: say so in the stream
        vs.codec_context.colorspace, vs.codec_context.color_range = colour.colorspace, colour.color_range
    vs.codec_context.time_base = Fraction(info.fps.denominator, info.fps.numerator)
    if encoder == "libx264":
        vs.options = {"crf": str(crf), "preset": preset, **({"threads": str(threads)} if threads else {})}
    elif encoder.startswith("libvpx"):
        vs.options = {"crf": str(crf), "b": "0"}
    else:  # mpeg4 and other bitrate-driven encoders: generous bitrate for near-transparent quality
        vs.bit_rate = int(max(2_000_000, info.width * info.height * float(info.fps) * 0.4))
    return vs


def _add_audio_copy(out, src: Path, suffix: str):
    with open_input(src) as c:
        if not c.streams.audio:
            return None
        a = c.streams.audio[0]
        name = a.codec_context.name
        if name not in out.supported_codecs:
            raise MediaError(f"the audio codec of {src} ({name}) cannot be copied into a {suffix} file; "
                             f"write .mkv or .mov instead")
        return out.add_stream_from_template(a)


def _progress(enabled: bool):
    """A rich progress bar on stderr: frames done / total, frames per second, elapsed and remaining time."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[fps]} fps"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def _get(q: queue.Queue, reader: threading.Thread, writer: "_Writer", dst: Path, stop: threading.Event | None = None):
    """The next decoded item; fails at once (instead of waiting forever) when the encoder has failed; ``_END``
    when ``stop`` is set."""
    while True:
        if stop is not None and stop.is_set():
            return _END
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if writer.error is not None:
                raise MediaError(f"encoding {dst} failed: {_first_line(writer.error)}") from writer.error
            if not reader.is_alive() and q.empty():
                raise MediaError("the video decoder stopped without finishing")


def _batches(q: queue.Queue, reader, writer, src: Path, dst: Path, batch: int, stop: threading.Event | None = None):
    """Lists of up to ``batch`` decoded ``(frame, time)`` items, until the end of the video (or ``stop``)."""
    items: list = []
    while True:
        item = _get(q, reader, writer, dst, stop)
        if isinstance(item, _Failure):
            if isinstance(item.exc, MediaError):
                raise item.exc
            raise MediaError(f"decoding {src} failed near frame {writer.frames + len(items)}: "
                             f"{_first_line(item.exc)}") from item.exc
        if item is _END:
            if items:
                yield items
            return
        items.append(item)
        if len(items) == batch:
            yield items
            items = []


def video_planes(src: str | Path, suffix: str = ".mp4", codec: str | None = None) -> Planes | None:
    """:func:`planes_for` the video ``src`` written as ``suffix`` (with ``codec``)."""
    info = probe(src)
    return planes_for(info, _encoder_pix_fmt(_encoder_for(suffix.lower(), codec)[1], info))


def _check_results(items: list, results: Sequence[np.ndarray]) -> None:
    if len(results) != len(items):
        raise RuntimeError(f"frame function returned {len(results)} frames for {len(items)}")
    for (arr, _), res in zip(items, results):
        if res.shape != arr.shape or res.dtype != np.uint8:
            raise RuntimeError(f"frame function changed a frame from {arr.shape} uint8 to {res.shape} {res.dtype}")


# --- the loop ---------------------------------------------------------------------------------

def _processed(q: queue.Queue, reader, writer, src: Path, dst: Path, batch: int, stop: threading.Event,
               process: ProcessFn | None, stream: StreamFn | None):
    """``(items, results)`` per batch of decoded items: ``process`` in this thread, or ``stream`` over the batches
    (which it reads in a thread of its own; their items wait here, in order, for their results)."""
    if stream is None:
        for items in _batches(q, reader, writer, src, dst, batch):
            yield items, process([a for a, _ in items])
        return
    waiting: deque = deque()

    def frames():
        for items in _batches(q, reader, writer, src, dst, batch, stop):
            waiting.append(items)
            yield [a for a, _ in items]

    results = stream(frames(), stop)
    try:
        for res in results:
            yield waiting.popleft(), res
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def codec_ceiling(src: str | Path, crf: int = 18, preset: str = "veryfast", codec: str | None = None,
                  suffix: str = ".mp4", runs: int = CEILING_RUNS, rgb: bool = True) -> dict:
    """What the host's codecs alone do on ``src``: decode it into memory (timed, decoder threads as in
    :func:`transcode`), then encode those frames with :func:`transcode`'s encoder and settings into a
    temporary file (timed: the encode-only ceiling a file-to-file run is compared with).  Keeps every frame in
    memory: for benchmark clips.

    Both forms a file-to-file run can hand the codecs are measured: RGB frames (the decoder's and the encoder's
    swscale conversions included: ``decode_only_rgb_fps``, ``encode_only_rgb_fps``) and, when the video can
    travel as planes (:func:`planes_for`), its I420 planes (no conversion: ``decode_only_fps``,
    ``encode_only_fps``, the encoder alone).  ``encode_only_fps`` is the strictest ceiling the video allows:
    the planes' when there are planes, else the RGB frames'.  Each form is encoded ``runs`` times and the
    fastest run counts (``encode_only*_runs`` lists them all: a host's codec speed varies from run to run;
    ``encode_only*_cpu_cores``, the cores the process kept busy in each).  ``rgb=False`` skips the RGB form when
    there are planes (the ``*_rgb`` keys are then absent); without planes it is the only form and always measured.
    """
    import tempfile

    av = require("av", "measuring the codecs")
    src = Path(src)
    info = probe(src)
    fmt, encoder = _encoder_for(suffix, codec)
    planes = planes_for(info, _encoder_pix_fmt(encoder, info))
    tb = Fraction(info.fps.denominator, info.fps.numerator)
    res: dict = {"width": info.width, "height": info.height, "decoder": info.codec, "encoder": encoder,
                 "preset": preset if encoder == "libx264" else None, "crf": crf,
                 "planes": None if planes is None else planes.name}
    forms = ([("_rgb", None)] if rgb or planes is None else []) + ([("", planes)] if planes is not None else [])
    with tempfile.TemporaryDirectory(prefix="ffexport-ceiling-") as tmp:
        for tag, form in forms:
            t0 = time.perf_counter()
            with open_input(src) as c:
                v = c.streams.video[0]
                v.thread_type = "AUTO"
                frames = [_pixels(f, form) for f in c.decode(v)]
            decode_s = time.perf_counter() - t0
            n = res["frames"] = len(frames)
            speeds, cores = [], []
            written = form or rgb_colour(info)  # as transcode writes them
            for _ in range(max(1, int(runs))):
                t0, cpu0 = time.perf_counter(), time.process_time()
                with av.open(str(Path(tmp) / f"ceiling{tag}{suffix}"), "w", format=fmt) as out:
                    vs = _add_video_stream(out, encoder, info, crf, preset, written)
                    for i, arr in enumerate(frames):
                        frame = _frame(av, arr, written, vs.pix_fmt)
                        frame.pts, frame.time_base = i, tb
                        out.mux(vs.encode(frame))
                    out.mux(vs.encode())
                encode_s = time.perf_counter() - t0
                speeds.append(round(n / encode_s, 2) if encode_s > 0 else None)
                cores.append(round((time.process_time() - cpu0) / encode_s, 2) if encode_s > 0 else None)
            res[f"decode_only{tag}_fps"] = round(n / decode_s, 2) if decode_s > 0 else None
            res[f"encode_only{tag}_fps"] = max((v for v in speeds if v), default=None)
            res[f"encode_only{tag}_runs"] = speeds
            res[f"encode_only{tag}_cpu_cores"] = cores  # the process's CPU seconds a second, per run
            del frames
    if planes is None:  # the RGB form is the strictest there is
        for key in ("decode_only", "encode_only"):
            res[f"{key}_fps"] = res[f"{key}_rgb_fps"]
        res["encode_only_runs"], res["encode_only_cpu_cores"] = res["encode_only_rgb_runs"], res["encode_only_rgb_cpu_cores"]
    return res


def transcode(src: str | Path, dst: str | Path, process: ProcessFn | None = None, *, stream: StreamFn | None = None,
              batch: int = 1, progress: bool = True, queue_size: int = 8, crf: int = 18, preset: str = "veryfast",
              codec: str | None = None, planes: Planes | None = None, codec_nice: int = CODEC_NICE,
              encoder_threads: int | None = None) -> dict:
    """Decode ``src``, pass frames (lists of up to ``batch`` RGB arrays) through ``process``, encode to ``dst``.

    ``planes`` (:func:`video_planes`' answer for ``src`` and ``dst``): the frames are the decoder's I420 planes
    instead (``3H/2 x W`` arrays, returned in the same form), written with the input's colour tags.
    ``codec_nice``: the decode and encode threads (and the codecs' own) run this much nicer than the caller
    (:func:`lower_priority`).  ``encoder_threads``: libx264's threads (None: its own choice, 1.5 per core).

    ``stream`` instead of ``process``: a function of the iterable of batches (consumed in a thread of its
    own) and the run's stop event, yielding each batch's frames in order (the pipeline's streaming executor).
    Returns stream facts and throughput, and where the time went: ``cpu_cores`` (the process's CPU seconds a
    second, the codecs' threads included), ``results_waited_s`` (processed frames waiting for room in the
    encoder's queue: the encoder behind) and ``encoder`` (:meth:`_Writer.facts`: its first frame, the time it
    sat with nothing to encode).  On any failure ``dst`` is left as it was.
    """
    if (process is None) == (stream is None):
        raise TypeError("transcode takes a frame function (process) or a stream function (stream), one of them")
    av = require("av", "writing videos")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise MediaError(f"output {dst} is the input video; choose another output path")
    info = probe(src)
    fmt, encoder = _encoder_for(dst.suffix.lower(), codec)
    if planes is not None and planes_for(info, _encoder_pix_fmt(encoder, info)) is None:
        raise MediaError(f"{src} cannot travel as YUV 4:2:0 planes into {dst.suffix} ({info.pix_fmt}, "
                         f"{info.width}x{info.height}); use RGB frames")
    batch = max(1, int(batch))
    stop = threading.Event()
    frames_in: queue.Queue = queue.Queue(maxsize=max(queue_size, batch))
    frames_out: queue.Queue = queue.Queue(maxsize=max(queue_size, OUT_BATCHES * batch))
    t0, cpu0 = time.perf_counter(), time.process_time()
    n = 0
    blocked = 0.0  # the time results waited for room in the encoder's queue (the encoder behind)
    with atomic_path(dst) as tmp:
        try:
            out = av.open(str(tmp), "w", format=fmt)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot write {dst}: {_first_line(exc)}") from exc
        reader = writer = None
        try:
            form = planes or rgb_colour(info)  # what the frames are and the colour they are written with
            vs = _add_video_stream(out, encoder, info, crf, preset, form, encoder_threads)
            astream = _add_audio_copy(out, src, dst.suffix.lower())
            reader = _Reader(src, frames_in, stop, planes, codec_nice)
            writer = _Writer(out, vs, info.fps, src, astream, frames_out, stop, form, codec_nice)
            reader.start()
            writer.start()
            with _progress(progress) as bar, contextlib.closing(
                    _processed(frames_in, reader, writer, src, dst, batch, stop, process, stream)) as done:
                task = bar.add_task(f"swap {src.name}", total=info.frames, fps="-")
                for items, results in done:
                    _check_results(items, results)
                    handed = time.perf_counter()
                    if not all(_put(frames_out, (res, t), stop) for (_, t), res in zip(items, results)):
                        break
                    blocked += time.perf_counter() - handed
                    n += len(items)
                    el = time.perf_counter() - t0
                    bar.update(task, advance=len(items), fps=f"{n / el:.1f}" if el > 0 else "-")
            if writer.error is None:
                _put(frames_out, _END, stop)
            writer.join()
            if writer.error is not None:
                raise MediaError(f"encoding {dst} failed: {_first_line(writer.error)}") from writer.error
            out.close()
            if writer.frames != n:
                raise MediaError(f"encoding {dst}: {writer.frames} frames written for {n} decoded")
        except BaseException:
            stop.set()
            for th in (reader, writer):
                if th is not None and th.is_alive():
                    th.join(timeout=10)
            try:
                out.close()
            except Exception:
                pass
            raise
        finally:
            stop.set()
            if reader is not None:
                reader.join(timeout=10)
    seconds = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    return {"input": str(src), "output": str(dst), "frames": n, "width": info.width, "height": info.height,
            "fps": float(info.fps), "fps_fraction": f"{info.fps.numerator}/{info.fps.denominator}",
            "video_codec": encoder, "audio_codec": info.audio_codec,
            "frames_as": "rgb24" if planes is None else planes.name, "audio_packets": writer.audio_packets,
            "codec_nice": codec_nice, "encoder_threads": encoder_threads,
            "seconds": round(seconds, 3), "throughput_fps": round(n / seconds, 2) if seconds > 0 else None,
            "cpu_cores": round(cpu_s / seconds, 2) if seconds > 0 else None, "results_waited_s": round(blocked, 3),
            "encoder": writer.facts(t0)}
