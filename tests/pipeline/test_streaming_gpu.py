"""The streaming executor on a GPU (skipped without one): the serial path's frames bit for bit, with CUDA graphs
captured mid-stream for new batch shapes; failures raised as they were, threads ended; ``batch="auto"`` within
its bounds."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ffexport.errors import ModelLoadError

from helpers.media import _view, astronaut, no_face_image
from helpers.pipeline import fail_on_call

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

HW = (360, 640)


@pytest.fixture(scope="module")
def frames():
    img = astronaut()
    return [np.ascontiguousarray(_view(img, i / 15, HW)) for i in range(16)]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from ffexport.pipeline.pipeline import Pipeline

    with Pipeline(backend="torch", precision="fp16", device="cuda", batch=4,
                  out=tmp_path_factory.mktemp("artifacts")) as p:
        p.set_source(astronaut())
        yield p


def _batches(frames):
    blank = no_face_image(HW)
    big = np.ascontiguousarray(np.pad(frames[0], ((0, 16), (0, 16), (0, 0))))
    # a new batch shape in the middle of the stream (its CUDA graph is captured while uploads are in flight),
    # a frame without a face, frames of two sizes (the serial path's), and a last short batch
    return [frames[0:4], frames[4:8], [frames[8], blank, frames[9]], frames[10:14], [frames[14], big],
            frames[0:4], frames[15:16]]


def _same(a, b) -> bool:
    return all(len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def test_streaming_on_the_gpu_gives_the_serial_frames(pipe, frames):
    batches = _batches(frames)
    first = [pipe.process_frames(b) for b in batches]
    again = [pipe.process_frames(b) for b in batches]
    if not _same(first, again):
        pytest.skip("the serial path itself is not deterministic on this GPU")
    streamed = list(pipe.process_batches(batches))
    assert _same(first, streamed)
    streamed = list(pipe.process_batches(batches * 3))  # a longer stream: every slot reused several times
    assert _same(first * 3, streamed)
    ring = pipe.executor.ring
    assert ring.peak_in_use <= ring.size and ring.in_use == 0
    assert not [t for t in threading.enumerate() if t.name == "ffexport-upload" and t.is_alive()]


def test_threads_asleep_on_the_gpu_give_the_same_frames(pipe, frames, monkeypatch):
    """Sleeping waits (a video's transcode): the upload and download events, the serial path's download and
    the cascade's read-back wait asleep (blocking events); the frames are the spinning run's, bit for bit."""
    from ffexport.pipeline import device

    batches = _batches(frames)
    monkeypatch.setattr(device, "CUDA_WAIT_SET", "spin")
    spun = list(pipe.process_batches(batches))
    if not _same(spun, list(pipe.process_batches(batches))):
        pytest.skip("the streamed frames themselves are not deterministic on this GPU")
    monkeypatch.setattr(device, "CUDA_WAIT_SET", "block")
    assert device.cuda_event().query()  # a blocking event, not yet recorded
    slept = list(pipe.process_batches(batches))
    assert _same(spun, slept)


def test_a_failure_on_the_gpu_is_raised_and_the_executor_runs_again(pipe, frames, monkeypatch):
    fail_on_call(monkeypatch, pipe.stages["generator"], 3, "generator: execution failed: boom")
    batches = [frames[i:i + 4] for i in range(0, 16, 4)]
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(out=_run(pipe, batches)), daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the streaming run hung"
    assert isinstance(box["out"], ModelLoadError) and str(box["out"]) == "generator: execution failed: boom"
    monkeypatch.undo()
    assert _same([pipe.process_frames(b) for b in batches], list(pipe.process_batches(batches)))


def _run(pipe, batches):
    try:
        return list(pipe.process_batches(batches))
    except ModelLoadError as exc:
        return exc


def test_batch_auto_on_the_gpu(pipe, frames):
    from ffexport.pipeline.autobatch import MAX_BATCH, choose_batch

    before = dict(pipe.stats)
    choice = choose_batch(pipe, frames[:2])
    assert 1 <= choice["batch"] <= MAX_BATCH and choice["peak_mb_per_frame"] > 0 and choice["budget_mb"] > 0
    assert pipe.stats == before
    print("auto batch at", HW, choice)


def test_a_video_as_planes_on_the_gpu(pipe, tmp_path):
    """On CUDA a streamed video travels as YUV planes by default: the device conversions equal the CPU's (to
    one level of float rounding), and the written video is as close to its input as the RGB path's."""
    pytest.importorskip("av", reason="PyAV (ffexport[video]) is not installed on this host")
    from helpers.media import make_video, psnr, read_video

    from ffexport.pipeline.yuv import i420_to_rgb, rgb_to_i420

    src = make_video(tmp_path / "in.mp4", frames=12, size=HW, colorspace=1)
    planes = pipe.video_planes_for(src)
    assert planes is not None and planes.matrix == "bt709"
    rgb = torch.from_numpy(np.stack(read_video(src)[0][:4]))
    on_gpu = rgb_to_i420(rgb.cuda(), planes)
    assert (on_gpu.cpu().int() - rgb_to_i420(rgb, planes).int()).abs().max() <= 1
    assert (i420_to_rgb(on_gpu, planes).cpu().int() - i420_to_rgb(on_gpu.cpu(), planes).int()).abs().max() <= 1
    got = pipe.process_video(src, tmp_path / "planes.mp4", progress=False)
    pipe.video_planes = False
    try:
        ref = pipe.process_video(src, tmp_path / "rgb.mp4", progress=False)
    finally:
        pipe.video_planes = None
    assert got["frames_as"] == "i420 bt709 limited range" and ref["frames_as"] == "rgb24"
    from ffexport.pipeline import device

    # a video's threads waited for the GPU asleep, and the setting is back to spinning after it
    assert got["cuda_wait"] == ref["cuda_wait"] == (device.CUDA_WAIT_SET or "block")
    assert device.cuda_wait() == (device.CUDA_WAIT_SET or "spin")
    assert got["frames"] == ref["frames"] == 12 and got["faces_swapped"] >= 8
    a, b, f = read_video(tmp_path / "planes.mp4")[0], read_video(tmp_path / "rgb.mp4")[0], read_video(src)[0]
    assert np.mean([psnr(x, s) for x, s in zip(a, f)]) >= np.mean([psnr(y, s) for y, s in zip(b, f)]) - 0.5
