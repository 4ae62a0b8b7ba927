"""End-to-end benchmark: the reference pipeline and the naive baseline on the same real frames.

Frames are made from the calibration photographs: each frame shows ``faces``
photographs side by side, each panned and zoomed a little from frame to frame
(like a camera on a face), scaled to the benchmark resolution (1080p by
default).  They are made and decoded into memory before any timing; a second
run takes the same frames from an H.264 file through
:meth:`~ffexport.pipeline.pipeline.Pipeline.process_video`, so decoding and
encoding are included.  The source identity is a photograph that is not in the
frames.

Per run: frames per second over the timed frames (``batch`` frames per call, the
results back on the host), frame latency percentiles (a frame's latency is its
call's), peak device memory, and
which path ran (``executor``): ``streaming`` (the pipeline's streaming executor,
the default: the timed calls go through it as one stream, so copies and
transfers of neighbouring calls overlap; a call's latency runs from its hand-off
to the executor to its frames on the host) or ``serial`` (``streaming: false``
in the settings' pipeline.yaml: one synchronised call after the other), and
the per-stage breakdown from a separate pass with the pipeline's synchronising
stage timers (those synchronisations cost a little, so stages add up to a
little more than an untimed frame).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

RESOLUTIONS = {"240p": (240, 426), "360p": (360, 640), "480p": (480, 854), "720p": (720, 1280),
               "1080p": (1080, 1920), "1440p": (1440, 2560), "2160p": (2160, 3840), "4k": (2160, 3840)}
STAGES = ("detect", "align", "encode", "swap", "enhance", "blend", "transfer")


def parse_resolution(text: str) -> tuple[int, int]:
    """``1080p`` or ``1920x1080`` -> (height, width)."""
    from ..errors import InputSpecError

    t = str(text).strip().lower()
    if t in RESOLUTIONS:
        return RESOLUTIONS[t]
    w, sep, h = t.partition("x")
    if sep and w.isdigit() and h.isdigit() and int(w) >= 32 and int(h) >= 32:
        return int(h), int(w)
    raise InputSpecError(f"--resolution {text!r}: use one of {', '.join(RESOLUTIONS)} or WIDTHxHEIGHT (e.g. 1920x1080)")


# --- frames -------------------------------------------------------------------------------------

def photographs(calib: str | Path | None):
    """The un-augmented face photographs of ``calib`` (all of them if none is marked), or the built-in face."""
    import warnings

    from ..faces import FaceDataWarning, builtin_face, load_face_folder

    if calib is None:
        return [builtin_face()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaceDataWarning)
        faces = load_face_folder(calib, min_images=1)
    base = [f for f in faces if "_aug" not in Path(f.path).stem]
    return sorted(base or faces, key=lambda f: Path(f.path).name)


def cast(calib, faces_per_frame: int):
    """(target photographs, source photograph): the source is the last photograph, never a target."""
    photos = photographs(calib)
    source = photos[-1]
    targets = photos[:-1] or photos
    return [targets[i % len(targets)] for i in range(max(1, faces_per_frame))], source


def _view(face, t: float, hw: tuple[int, int]) -> np.ndarray:
    """Frame ``t`` in [0, 1) of a slow pan and zoom loop over ``face`` (its face kept in view), resized to ``hw``."""
    import cv2

    H, W = face.size
    h, w = hw
    aspect = w / h
    x0, y0, x1, y1 = (float(v) for v in face.box)
    fw, fh = x1 - x0, y1 - y0
    zoom = 1.0 + 0.25 * (0.5 - 0.5 * math.cos(2 * math.pi * t))
    ch = min(H, W / aspect) / zoom
    ch = min(max(ch, 1.6 * fh, 1.6 * fw / aspect), H, W / aspect)
    cw = ch * aspect
    cx = (x0 + x1) / 2 + 0.12 * cw * math.sin(2 * math.pi * t)
    cy = (y0 + y1) / 2 + 0.06 * ch * math.cos(2 * math.pi * t)
    cx = min(max(cx, cw / 2), W - cw / 2)
    cy = min(max(cy, ch / 2), H - ch / 2)
    # crop box (cx +- cw/2, cy +- ch/2) -> output pixels, as one affine map (sub-pixel pan, no jitter)
    sx, sy = w / cw, h / ch
    M = np.array([[sx, 0.0, (0.5 - (cx - cw / 2)) * sx - 0.5], [0.0, sy, (0.5 - (cy - ch / 2)) * sy - 0.5]])
    return cv2.warpAffine(face.rgb, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def make_frames(targets, n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """``n`` RGB uint8 frames of size ``hw``, ``len(targets)`` faces side by side in each."""
    h, w = hw
    k = len(targets)
    edges = [round(i * w / k) for i in range(k + 1)]
    frames = []
    for i in range(n):
        t = i / n
        tiles = [_view(face, (t + j / k) % 1.0, (h, edges[j + 1] - edges[j])) for j, face in enumerate(targets)]
        frames.append(np.ascontiguousarray(np.concatenate(tiles, axis=1)))
    return frames


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 30, audio: bool = True, crf: int = 18) -> Path:
    """An H.264 mp4 of ``frames`` (PyAV, libx264 ``veryfast`` at ``crf``) with an AAC track (a 440 Hz tone)
    unless ``audio`` is false, written atomically."""
    from fractions import Fraction

    from .._lazy import require
    from ..fsutil import atomic_path

    av = require("av", "the decode/encode-included pipeline benchmark")
    path = Path(path)
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"crf": str(crf), "preset": "veryfast"}
            tone = add_tone_stream(out) if audio else None  # every stream is added before the first packet
            for i, arr in enumerate(frames):
                f = av.VideoFrame.from_ndarray(arr, format="rgb24")
                f.pts, f.time_base = i, Fraction(1, fps)
                out.mux(vs.encode(f))
            out.mux(vs.encode())
            if tone is not None:
                write_tone(out, tone, len(frames) / fps)
    return path


def add_tone_stream(out, codec: str = "aac", rate: int = 44100):
    """A mono audio stream of ``codec`` in the PyAV output ``out`` (add it before the first packet is muxed)."""
    a = out.add_stream(codec, rate=rate)
    a.layout = "mono"
    return a


def write_tone(out, a, seconds: float) -> None:
    """``seconds`` of a 440 Hz tone encoded into the stream ``a`` of ``out`` (from :func:`add_tone_stream`)."""
    from fractions import Fraction

    from .._lazy import require

    av = require("av", "writing audio")

    rate = a.codec_context.sample_rate
    fmt = a.codec_context.format.name
    chunk = a.codec_context.frame_size or 1024
    n = int(rate * seconds)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(n) / rate)).astype(np.float32)
    for start in range(0, n, chunk):
        block = tone[None, start:start + chunk]
        if fmt.startswith("s16"):
            block = (block * 32767).astype(np.int16)
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=fmt, layout="mono")
        f.sample_rate, f.pts, f.time_base = rate, start, Fraction(1, rate)
        out.mux(a.encode(f))
    out.mux(a.encode())


def frame_set(cfg: dict):
    """(frames, source image) of a run, identical in every process of the same benchmark."""
    targets, source = cast(cfg.get("calib"), int(cfg.get("faces", 1)))
    return make_frames(targets, int(cfg["frames"]), tuple(cfg["hw"])), source.rgb


# --- measurement --------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _timed_frames(process, calls, device: str) -> tuple[list[float], float]:
    """Milliseconds of each call of ``process`` (one batch of frames each, results back on the host), and the
    seconds of all of them."""
    lat = []
    _sync(device)
    t_all = time.perf_counter()
    for frames in calls:
        t0 = time.perf_counter()
        process(frames)
        _sync(device)
        lat.append((time.perf_counter() - t0) * 1000.0)
    return lat, time.perf_counter() - t_all


def _timed_stream(pipe, calls, device: str) -> tuple[list[float], float]:
    """The calls through the pipeline's streaming executor, as one stream: milliseconds of each from its hand-off
    to the executor to its frames on the host (calls overlap, so a call's time includes its wait behind the
    ones before), and the seconds of all of them."""
    handed: list[float] = []

    def source():
        for frames in calls:
            handed.append(time.perf_counter())  # in the executor's upload thread, as it takes the call
            yield frames

    lat = []
    _sync(device)
    t_all = time.perf_counter()
    for i, _frames in enumerate(pipe.process_batches(source())):
        lat.append((time.perf_counter() - handed[i]) * 1000.0)
    _sync(device)
    return lat, time.perf_counter() - t_all


def _fill_calls(pipe) -> int:
    """The calls that fill a streaming pipeline's ring and its downloads in flight: after as many, its calls
    allocate no page-locked memory."""
    return pipe.executor.slots + pipe.executor.depth + 1


def _warm_up(pipe, calls, n: int, streaming: bool) -> int:
    """``n`` untimed calls (through the streaming executor: at least :func:`_fill_calls`); returns the calls
    made."""
    if streaming:
        n = max(n, _fill_calls(pipe))
        for _ in pipe.process_batches(calls[i % len(calls)] for i in range(n)):
            pass
        return n
    for i in range(n):
        pipe.process_frames(calls[i % len(calls)])
    return n


def batches(frames: list, batch: int) -> list[list]:
    """``frames`` in calls of ``batch`` frames (a last, shorter call is left out: every call is alike)."""
    return [frames[i:i + batch] for i in range(0, len(frames) - batch + 1, batch)]


def compile_seconds(pipe) -> dict[str, float]:
    """Seconds each compiled stage spent compiling (the first call of each input shape), by module, and the
    detector's cascade making its CUDA graphs (``detector``: one per input shape, its compiled steps included)."""
    out = {}
    for module, stage in getattr(pipe, "stages", {}).items():
        seen = getattr(stage.runner, "compile_s", None)
        if seen:
            out[module] = round(sum(seen.values()), 3)
    captured = getattr(getattr(getattr(pipe, "detector", None), "cascade", None), "capture_s", None)
    if captured:
        out["detector"] = round(sum(captured.values()), 3)
    return out


def _build(cfg: dict):
    """The reference Pipeline or the naive baseline, as ``cfg['kind']`` says."""
    variants = dict(cfg.get("variants") or {})
    if cfg["kind"] == "naive":
        from .naive import NaivePipeline

        return NaivePipeline(cfg["backend"], cfg["precision"], cfg["device"], out=cfg["artifacts"],
                             variants=variants, enhance=cfg.get("enhance", True))
    from ..pipeline.pipeline import Pipeline
    from ..pipeline.settings import load_pipeline_settings

    # configs/pipeline.yaml as `swap` runs it (detector, blend, variants ...), with the row's choices over it
    settings = load_pipeline_settings(cfg.get("config_dir")).override(
        modules=variants, backend=cfg["backend"], precision=cfg["precision"], device=cfg["device"],
        enhance=cfg.get("enhance", True))
    return Pipeline.from_settings(settings, out=cfg["artifacts"], build_missing=False, batch=int(cfg.get("batch", 1)),
                                  timing=False)  # the artifacts were prepared (and checked) before any timing


def measure(cfg: dict) -> dict:
    """One end-to-end run (``cfg['kind']``: ``pipeline`` or ``naive``)."""
    from .memory import MemoryProbe

    device = cfg["device"]
    probe = MemoryProbe(device)
    import torch

    from .._lazy import require
    from .prepare import set_tf32
    from .timing import stats

    set_tf32(cfg.get("tf32", False))
    if cfg.get("threads") and not device.startswith("cuda"):
        torch.set_num_threads(int(cfg["threads"]))
        require("cv2", "the pipeline benchmark").setNumThreads(int(cfg["threads"]))
    if device.startswith("cuda"):
        torch.zeros(1, device=device)
        probe.context_ready()
    frames, source = frame_set(cfg)
    probe.reset_peaks()
    t0 = time.perf_counter()
    pipe = _build(cfg)
    load_s = time.perf_counter() - t0
    naive = cfg["kind"] == "naive"
    batch = 1 if naive else max(1, int(cfg.get("batch", 1)))
    streaming = not naive and bool(getattr(pipe, "streaming", False))
    try:
        pipe.set_source(source)
        n_timed = int(cfg.get("naive_frames") or len(frames)) if naive else len(frames)
        calls = batches(frames[:n_timed], batch)
        if not calls:
            from ..errors import InputSpecError

            raise InputSpecError(f"--frames {len(frames)} is fewer than the pipeline batch {batch}")
        warmed = _warm_up(pipe, calls, int(cfg.get("warmup", 2)), streaming)
        ring = {"slots": pipe.executor.slots, "depth": pipe.executor.depth} if streaming else None
        compiled = compile_seconds(pipe)
        before = dict(pipe.stats)
        if streaming:
            lat, seconds = _timed_stream(pipe, calls, device)
        else:
            lat, seconds = _timed_frames(pipe.process_frames, calls, device)
        n = sum(len(c) for c in calls)
        swapped = pipe.stats["faces_swapped"] - before["faces_swapped"]
        recompiled = {m: round(s - compiled.get(m, 0.0), 3) for m, s in compile_seconds(pipe).items()
                      if s > compiled.get(m, 0.0)}
        stage_calls = calls[: max(1, int(cfg.get("stage_frames") or n) // batch)]
        stages = _stage_breakdown(pipe, stage_calls, naive)
        memory = probe.read()
        # a file-to-file run decodes its own frames: the timed frames (6 GB at 1024 frames of 1080p) are let go
        frames = calls = stage_calls = None
        video = _video_run(pipe, cfg) if (not naive and cfg.get("video")) else None
        facts = pipe.describe()
        cascade = getattr(pipe.detector, "cascade", None) if not naive else None
        fallbacks = getattr(cascade, "fallbacks", None)
        detector_graph = getattr(cascade, "graph_state", "")
    finally:
        pipe.close()
    timer = (f"perf_counter, per call of {batch} frame(s) from its hand-off to the streaming executor to its "
             "frames on the host (calls overlap)" if streaming
             else f"perf_counter, synchronised per call of {batch} frame(s)")
    row = {"status": "ok", "load_s": round(load_s, 3), "frames": n, "batch": batch,
           "executor": "streaming" if streaming else "serial",
           "warmup": warmed, "fps": round(n / seconds, 3) if seconds > 0 else None,
           # a frame waits for its whole batch: its latency is the call's
           "frame_latency_ms": stats(lat), "faces_swapped_per_frame": round(swapped / max(n, 1), 3),
           # the stage timers synchronise the device: measured on the serial path, whichever executor ran
           "stages_ms": stages, "stages_executor": "serial", "memory": memory, "video": video, "stages": facts,
           "timer": timer}
    if ring is not None:
        row["streaming"] = ring
    if compiled or recompiled:
        row["compile_s"] = compiled  # in the warm-up calls, apart from the timed ones
        row["compile_s_while_timed"] = recompiled  # new input shapes met while timing (included in the FPS)
    if fallbacks is not None:
        row["detector_fallbacks"] = fallbacks
    if detector_graph:
        row["detector_graph"] = detector_graph
    return row


def _stage_breakdown(pipe, calls, naive: bool) -> dict:
    """Mean milliseconds per frame in each stage (a separate pass with the stage timers on)."""
    frames = [f for c in calls for f in c]
    if not frames:
        return {}
    pipe.timing = True
    pipe.reset_timings()
    for c in calls:
        pipe.process_frames(c)
    pipe.timing = False
    # the naive baseline's host<->device copies happen inside each stage: it has no transfer stage of its own
    names = tuple(s for s in STAGES if not (naive and s == "transfer"))
    out = {s: round(pipe.timings.get(s, 0.0) * 1000.0 / len(frames), 3) for s in names}
    extra = {k: round(v * 1000.0 / len(frames), 3) for k, v in pipe.timings.items() if k not in STAGES}
    out.update(extra)
    return out


def passthrough_run(pipe, src: str | Path, dst: str | Path, batch: int | None = None) -> dict:
    """``src`` to ``dst`` through the same decode and encode threads and queues as ``pipe.process_video``, in the
    form its frames travel in, with no pipeline work: the floor of the video path itself."""
    from ..pipeline.video import transcode

    return transcode(src, dst, list, batch=batch or pipe.batch, progress=False,
                     planes=pipe.video_planes_for(src, dst) if pipe.streaming else None, **pipe.codec_threads())


WARM_VIDEO_FRAMES = 64  # the video row's untimed first video: at least this many frames (fewer in a shorter clip)


def warm_video(pipe, src: str | Path, tmp: str | Path) -> dict:
    """An untimed file-to-file run of ``src``'s first frames (written as ``src`` is: H.264 with an AAC track) through
    ``pipe``, as the rows of frames in memory warm up before they are timed: a pipeline's first video sets up what
    its video path uses (the streaming executor of its frames' form, its ring and threads, the CUDA graphs and the
    compiled shapes these threads meet, the codecs).  At least :data:`WARM_VIDEO_FRAMES` frames, and enough calls
    to fill the executor's ring and downloads in flight.  Returns its frames and seconds."""
    from ..pipeline.video import first_frames

    t0 = time.perf_counter()
    n = WARM_VIDEO_FRAMES
    if pipe.streaming:
        n = max(n, _fill_calls(pipe) * pipe.batch)
    clip = write_video(first_frames(src, n), Path(tmp) / "warm.mp4")
    stats = pipe.process_video(clip, Path(tmp) / "warm-out.mp4", progress=False)
    return {"frames": stats["frames"], "seconds": round(time.perf_counter() - t0, 3)}


VIDEO_ROUNDS = 3  # the video row's rounds of encode-only then file to file; the round of the median fraction counts


def _video_run(pipe, cfg: dict) -> dict:
    """The same frames from an H.264 file with audio, through decode -> pipeline -> encode (audio copied), compared
    with the host's codecs alone on that file in the same process.  First an untimed video through the pipeline
    (:func:`warm_video`) and a file-to-file run that does nothing to the frames (the video path's own floor); then
    ``cfg['video_rounds']`` rounds (default :data:`VIDEO_ROUNDS`), each an encode-only run of the file's frames (the
    ceiling: :func:`~ffexport.pipeline.video.codec_ceiling`, the first round also the RGB form and decode-only)
    followed at once by a file-to-file run.

    A host's codec speed drifts between runs by as much as the pipeline costs it (benchmarks/NOTES.md, session 16:
    two encode-only runs of one process 77 and 107 FPS), so each file-to-file run is compared with the encode-only
    run just before it, and the row is the round whose fraction is the median (the lower one of an even count):
    its ``fps``, ``encode_only_fps`` and ``of_encode_only`` come from that round, every round is listed under
    ``rounds``, and ``of_fastest_encode_only`` compares its ``fps`` with the fastest encode-only run of all rounds
    (the strictest reading)."""
    import tempfile

    from ..pipeline.video import codec_ceiling
    from .timing import median_index

    src = cfg["video"]
    if not src or not Path(src).is_file():
        return {"status": "not_runnable", "reason": cfg.get("video_reason") or "no input video was made"}
    n = max(1, int(cfg.get("video_rounds") or VIDEO_ROUNDS))
    rounds: list[tuple[dict, dict]] = []  # (the round's figures, its file-to-file statistics)
    with tempfile.TemporaryDirectory(prefix="ffexport-bench-") as tmp:
        warm = warm_video(pipe, src, tmp)
        passthrough = passthrough_run(pipe, src, Path(tmp) / "passthrough.mp4")
        first: dict = {}
        for i in range(n):
            ceiling = codec_ceiling(src, runs=1, rgb=i == 0)
            first = first or ceiling
            stats = pipe.process_video(src, Path(tmp) / "out.mp4", progress=False)
            fps, top = stats.get("throughput_fps"), ceiling.get("encode_only_fps")
            rounds.append(({"encode_only_fps": top, "fps": fps,
                            "of_encode_only": round(fps / top, 3) if fps and top else None,
                            "encoder_busy_s": (stats.get("encoder") or {}).get("busy_s"),
                            "cpu_cores": stats.get("cpu_cores"),
                            "encode_only_cpu_cores": (ceiling.get("encode_only_cpu_cores") or [None])[0]},
                           stats))
    k = median_index([r[0]["of_encode_only"] or 0.0 for r in rounds], upper=False)
    chosen, stats = rounds[k]
    fps, top = chosen["fps"], chosen["encode_only_fps"]
    tops = [r[0]["encode_only_fps"] for r in rounds if r[0]["encode_only_fps"]]
    return {"status": "ok", "frames": stats["frames"], "seconds": stats["seconds"], "warmup": warm,
            "fps": fps, "codec": stats.get("video_codec"), "audio_codec": stats.get("audio_codec"),
            "audio_packets": stats.get("audio_packets"),
            "faces_swapped": stats.get("faces_swapped"), "executor": stats.get("executor"),
            "batch": stats.get("batch"), "encode_only_fps": top, "decode_only_fps": first.get("decode_only_fps"),
            "preset": first.get("preset"), "passthrough_fps": passthrough.get("throughput_fps"),
            "frames_as": stats.get("frames_as"), "encode_only_rgb_fps": first.get("encode_only_rgb_fps"),
            "codec_nice": stats.get("codec_nice"), "encoder_threads": stats.get("encoder_threads"),
            "rounds": [r[0] for r in rounds], "round": k,
            "encode_only_runs": tops,
            "decode_only_rgb_fps": first.get("decode_only_rgb_fps"),
            "cpu_cores": stats.get("cpu_cores"), "results_waited_s": stats.get("results_waited_s"),
            "encoder": stats.get("encoder"), "cuda_wait": stats.get("cuda_wait"),
            "passthrough_cpu_cores": passthrough.get("cpu_cores"),
            "passthrough_encoder": passthrough.get("encoder"),
            "encode_only_cpu_cores": chosen["encode_only_cpu_cores"],
            "of_encode_only": chosen["of_encode_only"],
            "of_fastest_encode_only": round(fps / max(tops), 3) if fps and tops else None,
            "of_encode_only_rgb": (round(fps / first["encode_only_rgb_fps"], 3)
                                   if fps and first.get("encode_only_rgb_fps") else None)}
