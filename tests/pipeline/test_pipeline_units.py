"""Pipeline building blocks: Poisson solve, ROI paste == full-frame paste, detectors, contract checks, media errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ffexport import specs
from ffexport.errors import ArtifactError, MediaError, RuntimeUnavailableError

from helpers.media import astronaut, make_video


# --- Poisson ------------------------------------------------------------------------------

def test_dst_solver_is_exact_on_harmonic_and_random_borders():
    from ffexport.pipeline.poisson import solve_laplace_dirichlet

    yy, xx = torch.meshgrid(torch.arange(17.0), torch.arange(23.0), indexing="ij")
    linear = (2 * xx - 3 * yy + 1)[None].double()  # harmonic: must be reproduced from its border alone
    border = linear.clone()
    border[..., 1:-1, 1:-1] = 1e6  # interior values must be ignored
    assert torch.allclose(solve_laplace_dirichlet(border), linear, atol=1e-9)
    b = torch.randn(2, 3, 12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = solve_laplace_dirichlet(b)
    lap = u[..., :-2, 1:-1] + u[..., 2:, 1:-1] + u[..., 1:-1, :-2] + u[..., 1:-1, 2:] - 4 * u[..., 1:-1, 1:-1]
    assert lap.abs().max() < 1e-10
    for ring in (u[..., 0, :] - b[..., 0, :], u[..., -1, :] - b[..., -1, :], u[..., :, 0] - b[..., :, 0]):
        assert ring.abs().max() == 0


def test_poisson_blend_takes_colour_from_the_target_and_detail_from_the_crop():
    from ffexport.pipeline.poisson import poisson_blend

    rng = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 64, 64, generator=rng)
    # a crop with the target's detail but a colour cast: gradient-domain blending removes the cast
    cast = target + torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    assert (poisson_blend(cast, target) - target).abs().max() < 1e-5
    other = torch.rand(2, 3, 64, 64, generator=rng)
    out = poisson_blend(other, target)
    assert torch.equal(out[..., 0, :], target[..., 0, :]) or (out[..., 0, :] - target[..., 0, :]).abs().max() < 1e-5
    gx = lambda t: t[..., 1:-1, 2:] - t[..., 1:-1, 1:-1]  # noqa: E731
    assert (gx(out) - gx(other)).abs().mean() < (gx(target) - gx(other)).abs().mean() / 2


# --- paste back on a region of interest ----------------------------------------------------

def _torch_blender():
    """The blender module and a torch FP32 stage running it."""
    from ffexport.backends.torch import TorchRunner
    from ffexport.models import build_model
    from ffexport.pipeline.stages import Stage

    spec = specs.get("blender")
    model = build_model(spec)
    return model, Stage(spec, TorchRunner(model, spec=spec), "torch", "fp32")


def _paste_random_crops(frames, kps, index, seed, blender, mask):
    """Seeded random 128-px crops pasted at the faces ``kps`` of ``frames[index]``: (pasted frames, crops, crop ->
    frame affines)."""
    from ffexport.pipeline.paste import paste
    from ffexport.vision import align

    _, M = align.align_crop(frames, kps, specs.get("generator").template, 128, image_index=index)
    crops = torch.rand(kps.shape[0], 3, 128, 128, generator=torch.Generator().manual_seed(seed))
    affine = align.invert_affine(M.double()).float()
    work = frames.clone()
    paste(work, crops, affine, index, blender, mask)
    return work, crops, affine


def test_roi_paste_equals_full_frame_blend():
    """The pipeline blends on the face's region only: it must equal the blender on the whole frame."""
    model, blender = _torch_blender()
    mask = torch.tensor([0.3, 0.05, 0.1, 0.0, 0.1])
    frame = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float()
    kps = torch.tensor([[[203.0, 101.0], [246.0, 103.0], [224.0, 129.0], [202.0, 139.0], [245.0, 141.0]],
                        [[403.0, 401.0], [446.0, 395.0], [424.0, 429.0], [402.0, 439.0], [445.0, 441.0]]])
    index = torch.zeros(2, dtype=torch.long)
    work, crops, affine = _paste_random_crops(frame, kps, index, 0, blender, mask)
    full = frame / 255.0
    for f in range(2):  # faces composite one after the other
        full = model(full, crops[f:f + 1], affine[f:f + 1], mask[None])
    expected = (full * 255).round().clamp(0, 255)
    assert (work - expected).abs().max() <= 1.0  # float rounding of the ROI offset can flip a .5
    assert (work != expected).float().mean() < 1e-3
    changed = (work != frame).any(1)[0]
    assert changed.sum() > 1000  # both faces were pasted


def test_batched_paste_keeps_the_order_of_overlapping_faces_and_calls_the_blender_once_per_round():
    """Faces of several frames in one blender call; two overlapping faces of a frame pasted one after the other."""
    from ffexport.pipeline.paste import _rounds

    model, blender = _torch_blender()
    calls = []
    run = blender.run
    blender.run = lambda feeds: calls.append(feeds["frame"].shape[0]) or run(feeds)
    mask = torch.tensor([0.3, 0.0, 0.0, 0.0, 0.0])
    photo = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float()
    frames = torch.cat([photo, photo.flip(-1), photo.flip(-2)])
    face = torch.tensor([[203.0, 101.0], [246.0, 103.0], [224.0, 129.0], [202.0, 139.0], [245.0, 141.0]])
    kps = torch.stack([face, face + 20.0, face + torch.tensor([150.0, 250.0]), face * 1.5 + 30.0])
    index = torch.tensor([0, 0, 1, 2])  # faces 0 and 1 overlap in frame 0
    work, crops, affine = _paste_random_crops(frames, kps, index, 1, blender, mask)
    expected = frames / 255.0
    for f, b in enumerate(index.tolist()):  # one face after another, on whole frames
        expected[b:b + 1] = model(expected[b:b + 1], crops[f:f + 1], affine[f:f + 1], mask[None])
    expected = (expected * 255).round().clamp(0, 255)
    assert (work - expected).abs().max() <= 1.0 and (work != expected).float().mean() < 1e-3
    assert calls == [3, 1]  # faces 0, 2 and 3 together, then face 1 over face 0
    assert _rounds([(0, 0, 10, 10), (5, 5, 15, 15), (0, 0, 10, 10), (20, 20, 30, 30)], [0, 0, 1, 0]) == [[0, 2, 3], [1]]


def test_rois_cover_the_mask_and_respect_the_minimum_size():
    from ffexport.models.blender import box_mask, warp_crop
    from ffexport.pipeline.paste import MIN_ROI, mask_rois

    mask = (0.3, 0.1, 0.0, 0.05, 0.0)
    # a tiny face near the border, a large rotated one, one half outside the frame, one fully outside
    affine = torch.tensor([[[0.2, 0.0, 2.0], [0.0, 0.2, 3.0]],
                           [[1.5, -0.4, 80.0], [0.4, 1.5, 40.0]],
                           [[1.0, 0.0, -60.0], [0.0, 1.0, 150.0]],
                           [[1.0, 0.0, 900.0], [0.0, 1.0, 900.0]]])
    h, w = 300, 400
    rois = mask_rois(affine, 128, mask, h, w)
    _, xc, yc = warp_crop(torch.zeros(4, 3, 128, 128), affine, h, w)
    m = box_mask(xc, yc, 128, 128, torch.tensor([mask] * 4))
    for f, (x0, y0, x1, y1) in enumerate(rois[:3]):
        assert x1 - x0 >= MIN_ROI and y1 - y0 >= MIN_ROI and 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert m[f][~inside].max() == 0 and m[f][inside].max() > 0
    x0, y0, x1, y1 = rois[3]
    assert x1 <= x0 or y1 <= y0  # outside the frame: nothing to paste


# --- crops ---------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [[0, 1, 2], [0, 0, 1, 2], [1, 2, 2], [0, 2], [2, 2, 2, 2, 0]],
                         ids=["one-a-frame", "two-in-the-first", "none-in-the-first", "a-frame-without",
                              "a-crowd-frame-by-frame"])
def test_batch_crops_equal_the_frame_by_frame_crops(frames):
    """crop_faces (one grid_sample over slots laid out on the host, or frame by frame for a crowd) against
    align_crop's per-frame crops: the same crops and matrices, for every layout of faces in frames."""
    from ffexport.pipeline.crops import MAX_SLOT_WASTE, crop_faces, slots
    from ffexport.specs.templates import ARCFACE_128
    from ffexport.vision import align

    g = torch.Generator().manual_seed(len(frames))
    images = torch.rand(3, 3, 96, 120, generator=g) * 255
    base = torch.tensor(ARCFACE_128.scaled(128)) * 0.5 + torch.tensor([20.0, 10.0])
    kps = torch.stack([base + torch.rand(1, 2, generator=g) * 20 for _ in frames])
    index = torch.tensor(frames)
    want, want_m = align.align_crop(images, kps, ARCFACE_128, 128, image_index=index)
    got, got_m = crop_faces(images, kps, ARCFACE_128, 128, frames)
    assert torch.equal(got_m, want_m) and got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4)
    k, pos = slots(frames)
    assert len(set(pos)) == len(frames) and all(p // k == b for p, b in zip(pos, frames))
    crowd = images.shape[0] * k > MAX_SLOT_WASTE * len(frames)
    assert crowd == (frames == [2, 2, 2, 2, 0])


# --- detectors ----------------------------------------------------------------------------

def test_retinaface_answers_the_detector_protocol_in_frame_pixels():
    """RetinaFace on a stage the caller built: per frame boxes (N, 4), 5 points (N, 5, 2), scores (N,), best first,
    in frame pixels: the canvas decoding (seeded weights: a low threshold gives boxes) mapped back by the letterbox."""
    from ffexport.pipeline.detectors import Detector, detector_modules, make_detector
    from ffexport.pipeline.stages import make_stage
    from ffexport.vision import align
    from ffexport.vision.retinaface import detect_postprocess

    stages = {m: make_stage(specs.get(m), "torch") for m in detector_modules("retinaface")}
    try:
        det = make_detector("retinaface", stages, score_threshold=0.05)
        assert isinstance(det, Detector) and det.kind == "retinaface" and dict(det.stages) == stages
        frame = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float()[..., :, :384]  # 512 x 384: padded
        found = det.detect(torch.cat([frame, frame.flip(-1)]))
        assert len(found) == 2
        for boxes, points, scores in found:
            n = boxes.shape[0]
            assert n > 0 and boxes.shape == (n, 4) and points.shape == (n, 5, 2) and scores.shape == (n,)
            assert bool((scores[:-1] >= scores[1:]).all()) and scores.min() >= 0.05
        spec = stages["detector"].spec
        canvas, scale, pad = align.letterbox(frame, 640)
        assert scale == 1.25 and pad == (0, 0)  # top-left, padded right: frame pixels are canvas pixels / 1.25
        raw = stages["detector"].run({spec.input_names[0]: align.normalize(canvas, spec.preprocess)})
        c_boxes, c_points, c_scores = detect_postprocess(raw, 0.05, 0.4, input_size=640)[0]
        boxes, points, scores = found[0]
        assert torch.allclose(boxes * scale, c_boxes, atol=1e-3) and torch.allclose(points * scale, c_points, atol=1e-3)
        # (two frames a call against one: a CPU convolution library may round differently by batch size; on the
        # GPU host's CPU, torch 2.11, one score differed in its fourth decimal)
        assert torch.allclose(scores, c_scores, atol=1e-4)
    finally:
        for s in stages.values():
            s.close()


def test_detector_factory_names_and_stages():
    from ffexport.errors import UnknownNameError
    from ffexport.pipeline.detectors import MTCNN_MODULES, detector_modules, make_detector, resolve_kind

    assert resolve_kind("auto") == "mtcnn" and resolve_kind("auto", has_detector_checkpoint=True) == "retinaface"
    assert resolve_kind("mtcnn", True) == "mtcnn" and detector_modules("mtcnn") == MTCNN_MODULES
    with pytest.raises(UnknownNameError, match="unknown detector 'yolo'; valid: auto, mtcnn, retinaface"):
        resolve_kind("yolo")
    with pytest.raises(ValueError, match="missing \\['mtcnn_rnet', 'mtcnn_onet'\\]"):
        make_detector("mtcnn", {"mtcnn_pnet": object()})


# --- artifacts and contracts ---------------------------------------------------------------

def test_contract_mismatch_is_one_line(exported_small, tmp_path):
    import onnx

    from ffexport.manifest import artifact_dir
    from ffexport.pipeline.stages import make_runner

    spec, path = exported_small("encoder")
    out = tmp_path / "artifacts"
    folder = artifact_dir(out, spec)
    folder.mkdir(parents=True)
    for name in ("fp32.onnx", "manifest.json"):  # the export alone (the shared folder may hold later steps)
        shutil.copy2(path.parent / name, folder / name)
    victim = folder / "fp32.onnx"
    assert make_runner(spec, "ort", out=out, build_missing=False).path == victim  # the good copy loads
    model = onnx.load(str(victim))
    for p in model.metadata_props:
        if p.key == "ffexport.contract":
            contract = json.loads(p.value)
            contract["inputs"][0]["shape"] = ["batch", 3, 128, 128]
            p.value = json.dumps(contract, sort_keys=True)
    onnx.save(model, str(victim))
    with pytest.raises(ArtifactError) as err:
        make_runner(spec, "ort", out=out, build_missing=False)
    msg = str(err.value)
    assert "IO contract does not match spec encoder/iresnet18" in msg and "inputs differs" in msg
    assert "\n" not in msg and "ffexport onnx" in msg


def test_missing_artifact_without_building_is_one_line(tmp_path):
    from ffexport.pipeline.stages import make_runner

    with pytest.raises(ArtifactError) as err:
        make_runner(specs.get("encoder", "iresnet18"), "ort", out=tmp_path, build_missing=False)
    assert "is missing" in str(err.value) and "ffexport onnx -m encoder" in str(err.value)
    assert "\n" not in str(err.value)


def test_cuda_without_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from ffexport.pipeline.device import check_device

    with pytest.raises(RuntimeUnavailableError, match="^CUDA requested but no GPU is available$"):
        check_device("cuda")


# --- media ------------------------------------------------------------------------------

def test_bad_videos_are_one_line(tmp_path):
    from ffexport.pipeline.video import probe

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    good = make_video(tmp_path / "good.mp4", frames=4, audio=False)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {empty: "is empty (0 bytes)", garbage: "cannot read video", truncated: "cannot read video",
             tmp_path / "missing.mp4": "does not exist"}
    for path, expected in cases.items():
        with pytest.raises(MediaError) as err:
            probe(path)
        assert expected in str(err.value) and "\n" not in str(err.value), (path.name, str(err.value))
    info = probe(good)
    assert (info.width, info.height, info.fps, info.audio_codec) == (320, 240, 24, None)


def test_image_io_round_trip_and_errors(tmp_path):
    from ffexport.pipeline.media import content_hash, read_image, write_image

    img = astronaut()
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)
    assert content_hash(img) == content_hash(read_image(tmp_path / "a.png")) != content_hash(img[::-1])
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MediaError, match="cannot read image"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(MediaError, match="unknown image suffix"):
        write_image(tmp_path / "a.xyz", img)
    assert not list(tmp_path.glob(".*.part"))


def test_video_copy_preserves_frames_rate_size_and_audio(tmp_path):
    """transcode with a pass-through frame function: same frames (codec tolerance), rate, size, audio packets."""
    from ffexport.pipeline.video import transcode

    from helpers.media import psnr, read_video

    src = make_video(tmp_path / "in.mp4", frames=10, size=(180, 240), fps=25)
    stats = transcode(src, tmp_path / "out.mkv", lambda frames: frames, batch=3, progress=False)
    a, ia = read_video(src)
    b, ib = read_video(tmp_path / "out.mkv")
    assert stats["frames"] == len(b) == len(a) == 10
    assert (ib["width"], ib["height"], ib["fps"]) == (ia["width"], ia["height"], ia["fps"]) == (240, 180, 25)
    assert ib["audio"]["codec"] == ia["audio"]["codec"] == "aac"
    assert ib["audio"]["bytes"] == ia["audio"]["bytes"]  # copied, not re-encoded
    # Matroska stores times in milliseconds: each packet duration rounds by up to 1 ms
    assert abs(ib["audio"]["duration_s"] - ia["audio"]["duration_s"]) <= 1e-3 * ia["audio"]["packets"]
    assert min(psnr(x, y) for x, y in zip(a, b)) > 35
    # where the run's time went: the encoder's first frame, its idle and busy time inside the run
    enc = stats["encoder"]
    assert 0 < enc["first_frame_s"] < stats["seconds"]
    assert enc["busy_s"] > 0 and enc["starved_s"] >= 0 and enc["thread_cpu_s"] > 0
    assert enc["first_frame_s"] + enc["starved_s"] + enc["busy_s"] <= stats["seconds"] + 0.01
    assert stats["cpu_cores"] > 0 and 0 <= stats["results_waited_s"] <= stats["seconds"]


def test_a_slow_encoder_makes_results_wait_and_a_slow_frame_function_starves_it(tmp_path):
    """The stream facts tell which side held a run back: a frame function slower than the encoder leaves the
    encoder waiting for frames; an encoder slower than the frame function makes the results wait for it."""
    import time

    from ffexport.pipeline import video

    src = make_video(tmp_path / "in.mp4", frames=12, size=(120, 160), fps=25)

    def slow(frames):
        time.sleep(0.1)
        return frames

    starved = video.transcode(src, tmp_path / "a.mp4", slow, batch=2, progress=False)
    # 6 calls of 100 ms, the first before the encoder starts: ~0.5 s with nothing to encode (2 tiny frames a call)
    assert starved["encoder"]["starved_s"] > 0.1 * 3
    assert starved["results_waited_s"] < 0.05
    real = video._Writer._mux_video

    def slow_mux(self, packets):
        time.sleep(0.04)
        return real(self, packets)

    video._Writer._mux_video = slow_mux
    try:
        behind = video.transcode(src, tmp_path / "b.mp4", lambda f: f, batch=2, progress=False, queue_size=2)
    finally:
        video._Writer._mux_video = real
    # 12 frames for a queue of 6, 40 ms each: ~0.24 s of results waiting
    assert behind["results_waited_s"] > 0.04 * 3
    assert behind["encoder"]["busy_s"] >= 0.04 * 12


def test_how_threads_wait_for_the_gpu(monkeypatch):
    """Spinning unless a run asks for sleeping waits (a video's transcode), also when such runs overlap in
    several threads; $FFEXPORT_CUDA_WAIT, when set, chooses for every run; an unknown value is ignored with a
    warning; off CUDA wait_for returns at once."""
    import importlib
    import threading

    import torch

    from ffexport.pipeline import device

    try:
        monkeypatch.delenv("FFEXPORT_CUDA_WAIT", raising=False)
        d = importlib.reload(device)
        assert d.cuda_wait() == "spin"
        with d.asleep_while_running() as mode:
            assert mode == d.cuda_wait() == "block"
        assert d.cuda_wait() == "spin"
        # two runs in two threads, the first to start ending first: the other still sleeps until it ends
        first_in, second_in, first_out, seen = threading.Event(), threading.Event(), threading.Event(), []

        def first():
            with d.asleep_while_running():
                first_in.set()
                second_in.wait(5)
            first_out.set()

        def second():
            first_in.wait(5)
            with d.asleep_while_running():
                second_in.set()
                first_out.wait(5)
                seen.append(d.cuda_wait())
            seen.append(d.cuda_wait())

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen == ["block", "spin"]
        for value, expected in (("spin", "spin"), (" BLOCK ", "block")):
            monkeypatch.setenv("FFEXPORT_CUDA_WAIT", value)
            d = importlib.reload(device)
            assert d.cuda_wait() == expected
            with d.asleep_while_running() as mode:
                assert mode == d.cuda_wait() == expected  # the environment's choice holds
        monkeypatch.setenv("FFEXPORT_CUDA_WAIT", "yield")
        with pytest.warns(UserWarning, match="FFEXPORT_CUDA_WAIT='yield' is not one of spin, block; ignored"):
            assert importlib.reload(device).cuda_wait() == "spin"
        assert device.wait_for(torch.device("cpu")) is None
    finally:
        monkeypatch.delenv("FFEXPORT_CUDA_WAIT", raising=False)
        importlib.reload(device)


def test_failure_mid_video_leaves_no_output(tmp_path):
    from ffexport.pipeline.video import transcode

    src = make_video(tmp_path / "in.mp4", frames=12, audio=True)
    dst = tmp_path / "out.mp4"
    seen = []

    def explode(frames):
        seen.extend(frames)
        if len(seen) > 5:
            raise RuntimeError("boom")
        return frames

    with pytest.raises(RuntimeError, match="boom"):
        transcode(src, dst, explode, batch=2, progress=False)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_encoder_failure_is_one_line_and_leaves_no_output(tmp_path):
    from ffexport.pipeline.video import transcode

    src = make_video(tmp_path / "in.mp4", frames=6, audio=False)
    with pytest.raises(MediaError) as err:
        transcode(src, tmp_path / "out" / "o.mp4", lambda frames: frames, progress=False, preset="bogus")
    assert str(err.value).startswith(f"encoding {tmp_path / 'out' / 'o.mp4'} failed") and "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_call_sizes_are_powers_of_two_padded_or_split():
    from ffexport.pipeline.stages import call_sizes

    assert [call_sizes(n, 32) for n in (1, 2, 3, 5, 6, 7, 9, 12, 31, 33)] == [
        [1], [2], [4], [4, 1], [8], [8], [8, 1], [16], [32], [32, 1]]
    assert call_sizes(69, 8) == [8] * 8 + [4, 1] and call_sizes(70, 8) == [8] * 9
    for n in range(1, 200):  # every item gets a place, at most a quarter of a call is padding
        sizes = call_sizes(n, 32)
        assert sum(sizes) >= n and sum(sizes[:-1]) < n and all(s & (s - 1) == 0 and s <= 32 for s in sizes)
        assert sum(sizes) - n <= sizes[-1] // 4


def test_ort_cuda_stage_runs_large_convolutional_models_in_a_few_call_sizes():
    """A model in one onnxruntime CUDA session re-plans on every new batch: the stage calls it with a few
    batch sizes only (padded), each with a CUDA-graph session; one of variable item shape gets one item a call."""
    from types import SimpleNamespace

    from ffexport import specs
    from ffexport.pipeline.stages import ORT_CALL_CAP, Stage

    spec = specs.get("generator")
    fixed = {"target": [None, 3, 128, 128], "source": [None, 512]}

    def stage(backend, **kw):
        runner = SimpleNamespace(**{"device": "cuda", "convolutional": True, "shape_sessions": 1,
                                    "input_shapes": fixed, "cuda_graph": False, **kw})
        return Stage(spec, runner, backend, "fp32")

    s = stage("ort")
    assert (s.max_batch, s.call_sizes, s.runner.cuda_graph) == (ORT_CALL_CAP, True, True)
    assert stage("ort", input_shapes={"target": [None, 3, None, None]}).max_batch == 1  # a region per face
    assert stage("ort", shape_sessions=16).max_batch is None   # small models: a session per batch size
    assert stage("ort", convolutional=False).max_batch is None  # no cuDNN plans to redo
    assert stage("ort", device="cpu").max_batch is None
    assert stage("torch").max_batch is None
    assert stage("trt").max_batch == int(spec.batch_profile[2])
    calls = []

    class Runner:
        device, convolutional, shape_sessions, input_shapes, cuda_graph = "cuda", True, 1, fixed, False

        def infer(self, feeds):
            calls.append(feeds["target"].shape[0])
            return {"output": feeds["target"] * 2}

    s = Stage(spec, Runner(), "ort", "fp32")
    for n, want in ((1, [1]), (3, [4]), (9, [8, 1]), (0, [])):
        calls.clear()
        x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
        out = s.run({"target": x, "source": torch.zeros(n, 4)})
        assert calls == (want or [0]) and torch.equal(out["output"], x * 2)
    # every size calls of up to 6 items use is run until captured, once; inputs of the model's item shapes
    fixed.update(target=[None, 2], source=[None, 4])
    s.runner.device = "cpu"  # the warm-up's inputs go to the runner's device (this host may have no GPU)
    calls.clear()
    assert s.warm_call_sizes(6) == [1, 2, 4, 8] and calls == [1] * 3 + [2] * 3 + [4] * 3 + [8] * 3
    assert s.warm_call_sizes(9) == [16] and s.warm_call_sizes(5) == []
    s._warm.clear()
    calls.clear()
    assert s.warm_call_sizes(1) == [1, 2] and calls == [1] * 3 + [2] * 3  # a frame with two faces: a call of 2
    assert stage("torch").warm_call_sizes(8) == []
