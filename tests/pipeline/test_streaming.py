"""The streaming executor on a CPU: the serial path's frames bit for bit, a ring that bounds what is in flight,
failures raised as they were with every thread ended, and ``--batch auto``."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from ffexport.errors import InputSpecError, MediaError, ModelLoadError

from helpers.media import astronaut, make_video, no_face_image, read_video
from helpers.pipeline import fail_on_call

WATCHDOG_S = 120.0  # a run that hangs fails the test instead of the suite


def _within(fn, seconds: float = WATCHDOG_S):
    """``fn()`` in a thread of its own; fails if it has not returned after ``seconds`` (no hang)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test's thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _our_threads(wait: float = 5.0) -> list[str]:
    """Names of ffexport's threads still alive (after up to ``wait`` seconds for them to end)."""
    end = time.monotonic() + wait
    while True:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("ffexport-") and t.is_alive()]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.05)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=6, size=(120, 160), fps=24)
    frames, _ = read_video(path)
    return path, frames


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from ffexport.pipeline.pipeline import Pipeline

    with Pipeline(backend="torch", variants={"encoder": "iresnet18"}, generator="identity", batch=3,
                  out=tmp_path_factory.mktemp("artifacts")) as p:
        p.set_source(astronaut())
        yield p


def _serial(pipe, batches):
    return [pipe.process_frames(b) for b in batches]


def test_streaming_gives_the_serial_paths_frames_bit_for_bit(pipe, clip):
    from ffexport.pipeline.streaming import SLOTS

    _, frames = clip
    blank = no_face_image((120, 160))
    big = np.ascontiguousarray(np.pad(frames[0], ((0, 8), (0, 8), (0, 0))))
    batches = [frames[:3], [frames[3], blank, frames[4]], [frames[5], big], [], [frames[2]]]
    before = dict(pipe.stats)
    serial = _serial(pipe, batches)
    mid = dict(pipe.stats)
    streamed = _within(lambda: list(pipe.process_batches(batches)))
    after = dict(pipe.stats)
    assert [len(b) for b in streamed] == [len(b) for b in batches]
    for s_batch, t_batch, batch in zip(serial, streamed, batches):
        for s, t, f in zip(s_batch, t_batch, batch):
            assert t.dtype == np.uint8 and t.shape == f.shape and np.array_equal(s, t)
    assert streamed[1][1] is blank  # a frame without a face comes back as given
    assert sum(not np.array_equal(t, f) for b, tb in zip(batches, streamed) for t, f in zip(tb, b)) >= 7
    assert {k: mid[k] - before[k] for k in mid} == {k: after[k] - mid[k] for k in mid}
    ring = pipe.executor.ring
    assert ring.peak_in_use <= SLOTS and ring.allocations <= SLOTS and ring.in_use == 0
    assert not _our_threads()


def test_the_ring_bounds_the_batches_between_the_source_and_the_compute_function():
    from ffexport.pipeline.streaming import SLOTS, StreamingExecutor

    pulled = computed = worst = 0

    def source():
        nonlocal pulled
        for i in range(12):
            pulled += 1
            yield [np.full((16, 24, 3), i, np.uint8), np.zeros((16, 24, 3), np.uint8)]

    def compute(x8):
        nonlocal computed, worst
        worst = max(worst, pulled - computed)
        time.sleep(0.02)  # a slow device: the source is far ahead if nothing holds it back
        computed += 1
        return x8[:1] + 1, [0]

    ex = StreamingExecutor(compute, "cpu", fallback=lambda frames: frames)
    out = _within(lambda: list(ex.run(source())))
    assert [int(b[0][0, 0, 0]) for b in out] == list(range(1, 13))
    assert all(np.array_equal(b[1], np.zeros((16, 24, 3), np.uint8)) for b in out)
    # the batch in the compute function, SLOTS - 1 filled and waiting, one taken from the source awaiting a slot
    assert worst <= SLOTS + 1
    assert ex.ring.allocations <= SLOTS and ex.ring.peak_in_use <= SLOTS and ex.ring.in_use == 0


def test_a_stage_failure_is_raised_as_it_was_and_every_thread_ends(pipe, clip, monkeypatch, tmp_path):
    path, frames = clip
    calls = fail_on_call(monkeypatch, pipe.stages["blender"], 2, "blender: execution failed: boom")
    batches = [frames[i:i + 2] for i in range(0, 6, 2)]
    with pytest.raises(ModelLoadError) as serial:
        _serial(pipe, batches)
    calls["n"] = 0
    with pytest.raises(ModelLoadError) as streamed:
        _within(lambda: list(pipe.process_batches(batches)))
    assert str(streamed.value) == str(serial.value) == "blender: execution failed: boom"
    assert not _our_threads()
    calls["n"] = 0
    dst = tmp_path / "out.mp4"
    with pytest.raises(ModelLoadError, match="^blender: execution failed: boom$"):
        _within(lambda: pipe.process_video(path, dst, progress=False))
    assert not _our_threads() and not dst.exists()
    monkeypatch.undo()
    # the executor runs again after a failure (with a fresh ring)
    again = _within(lambda: list(pipe.process_batches(batches[:1])))
    assert all(np.array_equal(a, b) for a, b in zip(again[0], pipe.process_frames(batches[0])))


def test_source_and_frame_check_failures_are_the_callers(pipe, clip):
    _, frames = clip
    failure = MediaError("decoding clip.mp4 failed near frame 2: boom")

    def source():
        yield frames[:2]
        raise failure

    with pytest.raises(MediaError) as err:
        _within(lambda: list(pipe.process_batches(source())))
    assert err.value is failure
    bad = [frames[0], frames[1].astype(np.float32)]
    with pytest.raises(InputSpecError) as serial:
        pipe.process_frames(bad)
    with pytest.raises(InputSpecError) as streamed:
        _within(lambda: list(pipe.process_batches([frames[:2], bad])))
    assert str(streamed.value) == str(serial.value)
    assert not _our_threads()


# --- batch auto ------------------------------------------------------------------------------

def test_batch_auto_on_a_cpu_and_its_values():
    from ffexport.pipeline.autobatch import CPU_BATCH, choose_batch, parse_batch

    assert parse_batch("auto") == "auto" and parse_batch("8") == 8 and parse_batch(3) == 3
    for bad in ("0", "-1", "x", 0, True, 1.5):
        with pytest.raises(InputSpecError, match="positive whole number or auto"):
            parse_batch(bad)

    class CpuPipe:
        device = torch.device("cpu")

    assert choose_batch(CpuPipe(), [])["batch"] == CPU_BATCH


def test_batch_auto_on_a_gpu_fills_the_memory_budget(monkeypatch):
    """The GPU arithmetic with torch.cuda's memory figures stood in for: probe peak per frame, budget, cap."""
    from ffexport.pipeline import autobatch
    from ffexport.pipeline.streaming import DEPTH, SLOTS

    MB = 1024 * 1024
    mem = {"allocated": 1000 * MB, "peak": 0, "free": 9000 * MB}

    class GpuPipe:
        device = torch.device("cuda")

        def __init__(self):
            self.stats, self.timings, self._last = {"frames": 5}, {"swap": 1.0}, "kept"

        def process_frames(self, frames):
            self.stats["frames"] += len(frames)
            self.timings["swap"] += 1.0
            self._last = None
            mem["peak"] = mem["allocated"] + 300 * MB * len(frames)

    for name, fn in (("synchronize", lambda *a: None), ("reset_peak_memory_stats", lambda *a: None),
                     ("memory_allocated", lambda *a: mem["allocated"]),
                     ("max_memory_allocated", lambda *a: mem["peak"]),
                     ("memory_reserved", lambda *a: mem["allocated"] + 1000 * MB),
                     ("mem_get_info", lambda *a: (mem["free"], 80_000 * MB))):
        monkeypatch.setattr(torch.cuda, name, fn)
    frames = [np.zeros((1080, 1920, 3), np.uint8)] * 3
    p = GpuPipe()
    choice = autobatch.choose_batch(p, frames)
    per_frame = 300 + (SLOTS + DEPTH) * 1080 * 1920 * 3 / MB
    assert choice["probe_frames"] == autobatch.PROBE_FRAMES == 2
    assert choice["batch"] == int(0.5 * (9000 + 1000) // per_frame) and choice["budget_mb"] == 5000
    assert p.stats == {"frames": 5} and p.timings == {"swap": 1.0} and p._last == "kept"  # the probe leaves none
    mem["free"] = 200_000 * MB
    assert autobatch.choose_batch(p, frames)["batch"] == autobatch.MAX_BATCH
    mem["free"], mem["allocated"] = 0, 0
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 0)
    assert autobatch.choose_batch(p, frames)["batch"] == 1


def test_cli_swap_video_with_batch_auto(capsys, clip, tmp_path):
    from ffexport.cli.main import main

    path, _ = clip
    common = ["swap", "--source", str(tmp_path / "face.png"), "--target", str(path), "--variant",
              "encoder=iresnet18", "--generator", "identity", "--quiet", "--out", str(tmp_path / "artifacts")]
    from PIL import Image

    Image.fromarray(astronaut()).save(tmp_path / "face.png")
    assert main([*common, "--output", str(tmp_path / "a.mp4"), "--batch", "0"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--batch must be a positive whole number or auto, got '0'" in err[0], err
    code = main([*common, "--output", str(tmp_path / "b.mp4"), "--streaming"])  # --batch auto is the default
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "swapped 6 face(s) in 6/6 frame(s)" in cap.out and "batch 4 (auto)" in cap.out, cap.out


def test_the_streaming_setting_and_flag(tmp_path):
    """``streaming: false`` in pipeline.yaml (what `bench --pipeline --config-dir` reads) and --no-streaming pick
    the serial path; a value that is not true/false is one line."""
    from ffexport.cli.swap import swap_settings
    from ffexport.errors import ConfigError
    from ffexport.pipeline.settings import PipelineSettings, load_pipeline_settings

    assert PipelineSettings().streaming is True and PipelineSettings().pipeline_kwargs()["streaming"] is True
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "pipeline.yaml").write_text("streaming: false\n")
    s = load_pipeline_settings(d)
    assert s.streaming is False and s.pipeline_kwargs()["streaming"] is False
    assert swap_settings(d, streaming=True).streaming is True and swap_settings(d).streaming is False
    assert swap_settings(None, streaming=False).streaming is False
    (d / "pipeline.yaml").write_text("streaming: sometimes\n")
    with pytest.raises(ConfigError, match="streaming must be true or false"):
        load_pipeline_settings(d)
