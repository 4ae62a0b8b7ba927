"""End to end: the trained detector finds real faces; ``swap`` on images and videos with torch and
onnxruntime on CPU preserves frames, rate, size and audio; the identity round trip returns the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffexport import specs

from helpers.media import astronaut, make_video, no_face_image, psnr, read_video, view_points

# small real variants (see the specs marked ci=True); the generator's seeded output is noise, as expected
VARIANTS = {"encoder": "iresnet18"}
GENERATOR = "simswap-256-lite"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    from PIL import Image

    Image.fromarray(astronaut()).save(d / "astronaut.png")
    Image.fromarray(astronaut()).save(d / "astronaut.jpg", quality=95)
    Image.fromarray(no_face_image()).save(d / "coffee.jpg", quality=95)
    return {"dir": d, "face_png": d / "astronaut.png", "face_jpg": d / "astronaut.jpg", "noface": d / "coffee.jpg",
            "video": make_video(d / "pan.mp4", frames=24, size=(240, 320), fps=24),
            "short": make_video(d / "short.mp4", frames=8, size=(240, 320), fps=30),
            "noface_video": make_video(d / "coffee.mp4", frames=6, size=(240, 320), fps=24,
                                       source=no_face_image((400, 500)))}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """This module's artifact folder: the ort stages export into it on demand (once per module)."""
    return tmp_path_factory.mktemp("pipeline_artifacts")


def _pipeline(backend, out, **kw):
    from ffexport.pipeline.pipeline import Pipeline

    kw.setdefault("generator", GENERATOR)
    return Pipeline(backend=backend, variants=VARIANTS, out=out, **kw)


@pytest.fixture(scope="module")
def identity(artifacts):
    with _pipeline("torch", artifacts, generator="identity", batch=4) as pipe:
        pipe.set_source(astronaut())
        yield pipe


# --- the trained detector ------------------------------------------------------------------

def test_mtcnn_finds_the_astronaut_and_her_face_in_every_video_frame(media):
    from ffexport.pipeline.detectors import MTCNN_MODULES, Detector, make_detector
    from ffexport.pipeline.stages import make_stage

    det = make_detector("mtcnn", {m: make_stage(specs.get(m), "torch") for m in MTCNN_MODULES})
    assert isinstance(det, Detector) and det.kind == "mtcnn" and list(det.stages) == list(MTCNN_MODULES)
    boxes, points, scores = det.detect(torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float())[0]
    assert len(boxes) == 1 and scores[0] > 0.99
    x1, y1, x2, y2 = boxes[0].tolist()
    assert 170 < x1 < 195 and 50 < y1 < 75 and 255 < x2 < 280 and 160 < y2 < 190  # her face
    le, re, nose, lm, rm = points[0].tolist()
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0] and le[1] < nose[1] < lm[1]
    frames, info = read_video(media["video"])
    assert info["frames"] == 24
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    found = [f for i in range(0, 24, 8) for f in det.detect(x[i:i + 8])]
    for i, (b, p, s) in enumerate(found):
        assert len(b) == 1 and s[0] > 0.95, f"frame {i}: {len(b)} faces"
        expected = view_points(points[0].numpy(), (512, 512), i / 23, (240, 320))
        assert np.abs(p[0].numpy() - expected).max() < 3.0, f"frame {i}: landmarks off"


# --- images ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_swap_image(backend, media, artifacts, tmp_path):
    from ffexport.models.blender import warp_crop, box_mask

    with _pipeline(backend, artifacts) as pipe:
        assert all(s.backend == backend for s in pipe.stages.values())
        pipe.set_source(media["face_jpg"])
        out_path = tmp_path / "swapped.png"
        stats = pipe.process_image(media["face_png"], out_path)
        face = pipe.last_faces[0]
    from PIL import Image

    out = np.asarray(Image.open(out_path))
    img = astronaut()
    assert stats["faces_swapped"] == 1 and out.shape == img.shape and out.dtype == np.uint8
    # the frame-space mask of the pasted face: outside it, pixels are the input's, bit for bit
    affine = face["affine"][None]
    _, xc, yc = warp_crop(torch.zeros(1, 3, face["crop_size"], face["crop_size"]), affine, *img.shape[:2])
    m = box_mask(xc, yc, face["crop_size"], face["crop_size"], torch.tensor([[0.3, 0, 0, 0, 0]]))[0].numpy()
    outside = m == 0
    assert outside.mean() > 0.8
    assert np.array_equal(out[outside], img[outside])
    inside = m > 0.99
    assert np.abs(out[inside].astype(int) - img[inside]).mean() > 10  # the (seeded) swap did change the face


def test_identity_image_is_bit_exact_outside_the_mask(identity, media, tmp_path):
    img = astronaut()
    out = identity.process_frame(img)
    face = identity.last_faces[0]
    from ffexport.models.blender import box_mask, warp_crop

    _, xc, yc = warp_crop(torch.zeros(1, 3, 128, 128), face["affine"][None], *img.shape[:2])
    m = box_mask(xc, yc, 128, 128, torch.tensor([[0.3, 0, 0, 0, 0]]))[0].numpy()
    assert np.array_equal(out[m == 0], img[m == 0])
    assert psnr(out, img) > 35  # inside: only the resampling of the crop round trip
    assert identity.process_frame(no_face_image()) is not None


def test_source_embedding_is_cached_by_content(identity):
    img = astronaut()
    a = identity.set_source(img)
    b = identity.set_source(img.copy())
    assert a is b
    c = identity.set_source(np.ascontiguousarray(img[:, ::-1]))  # another image: another entry
    assert c is not a and torch.allclose(a.norm(), torch.tensor(1.0))
    identity.set_source(img)


def test_face_selection_largest_and_reference(identity):
    img = astronaut()
    two = np.zeros((512, 768, 3), np.uint8)
    two[:, :512], two[128:384, 512:] = img, img[::2, ::2]  # the astronaut, and a half-size copy of her
    centres = {}
    try:
        for mode in ("all", "largest"):
            identity.faces = mode
            identity.process_frame(two)
            centres[mode] = [f["landmarks"][:, 0].mean().item() for f in identity.last_faces]
        assert len(centres["all"]) == 2 and len(centres["largest"]) == 1 and centres["largest"][0] < 512
        identity.faces = "reference"
        identity.set_reference(img)
        for threshold, expected in ((0.4, 1), (1.01, 0)):
            identity.reference_threshold = threshold
            before = identity.stats["faces_swapped"]
            out = identity.process_frame(img)
            assert identity.stats["faces_swapped"] - before == expected
            if not expected:
                assert np.array_equal(out, img)
    finally:
        identity.faces, identity.reference_threshold = "all", 0.4


# --- videos ------------------------------------------------------------------------------

def _same_streams(src, dst, stats):
    a, ia = read_video(src)
    b, ib = read_video(dst)
    assert len(b) == len(a) == stats["frames"]
    assert (ib["width"], ib["height"], ib["fps"]) == (ia["width"], ia["height"], ia["fps"])
    assert ib["audio"] is not None and ib["audio"]["codec"] == ia["audio"]["codec"]
    assert ib["audio"]["bytes"] == ia["audio"]["bytes"]  # the audio stream is copied unchanged
    assert abs(ib["audio"]["duration_s"] - ia["audio"]["duration_s"]) < 0.01
    return a, b


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_swap_video(backend, media, artifacts, tmp_path):
    with _pipeline(backend, artifacts, batch=4, timing=True) as pipe:
        pipe.set_source(media["face_jpg"])
        dst = tmp_path / "swapped.mp4"
        stats = pipe.process_video(media["short"], dst, progress=False)
        timings = dict(pipe.timings)
    a, b = _same_streams(media["short"], dst, stats)
    assert stats["faces_swapped"] == stats["frames_with_faces"] == 8 and stats["frames_without_faces"] == 0
    assert all(psnr(x, y) < 40 for x, y in zip(a, b))  # every frame got a (noise) face
    assert {"detect", "align", "swap", "blend", "transfer"} <= set(timings)
    assert "cuda_wait" not in stats and stats["encoder"]["busy_s"] > 0  # (no GPU to wait for)


def test_identity_round_trip_video(identity, media, tmp_path):
    a, _ = read_video(media["video"])
    # the pipeline alone (no codec): only the crop resampling round trip inside the masks
    frames = identity.process_frames(a)
    assert min(psnr(x, y) for x, y in zip(a, frames)) > 40
    dst = tmp_path / "identity.mp4"
    stats = identity.process_video(media["video"], dst, progress=False)
    a, b = _same_streams(media["video"], dst, stats)
    assert stats["faces_swapped"] == 24
    worst = min(psnr(x, y) for x, y in zip(a, b))
    assert worst > 35, worst  # x264 at the default CRF 18 dominates: a plain re-encode gives ~36.7 dB


def test_video_without_faces_passes_through(identity, media, tmp_path):
    dst = tmp_path / "noface.mp4"
    stats = identity.process_video(media["noface_video"], dst, progress=False)
    assert stats["frames"] == stats["frames_without_faces"] == 6 and stats["faces_swapped"] == 0
    a, b = _same_streams(media["noface_video"], dst, stats)
    assert min(psnr(x, y) for x, y in zip(a, b)) > 35


# --- the command line ----------------------------------------------------------------------

def _cli(capsys, *args):
    from ffexport.cli.main import main

    code = main(["swap", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, [l for l in cap.err.splitlines() if l.strip()]


def test_cli_swap_image_and_video(capsys, media, artifacts, tmp_path):
    common = ["--variant", "encoder=iresnet18", "--generator", GENERATOR, "--out", artifacts, "--quiet"]
    code, out, err = _cli(capsys, "--source", media["face_jpg"], "--target", media["face_png"],
                          "--output", tmp_path / "o.jpg", "--backend", "ort", *common)
    assert code == 0, err
    assert "swapped 1 face(s) in 1/1 frame(s)" in out and (tmp_path / "o.jpg").is_file()
    code, out, err = _cli(capsys, "--source", media["face_jpg"], "--target", media["short"],
                          "--output", tmp_path / "o.mp4", "--batch", "4", *common)
    assert code == 0, err
    assert "swapped 8 face(s) in 8/8 frame(s)" in out
    code, out, err = _cli(capsys, "--source", media["face_jpg"], "--target", media["noface"],
                          "--output", tmp_path / "n.jpg", *common, "--generator", "identity")
    assert code == 0 and err == [f"note: no face found in {media['noface']}: written unchanged"], err


def test_cli_bad_inputs_are_one_line(capsys, media, tmp_path):
    fast = ["--variant", "encoder=iresnet18", "--generator", "identity", "--quiet"]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01 not a video" * 100)
    cases = [
        (["--source", media["noface"], "--target", media["face_png"], "--output", tmp_path / "a.png"],
         f"no face found in {media['noface']}"),
        (["--source", media["face_jpg"], "--target", empty, "--output", tmp_path / "b.mp4"],
         f"video {empty} is empty (0 bytes)"),
        (["--source", media["face_jpg"], "--target", garbage, "--output", tmp_path / "c.mp4"],
         f"cannot read video {garbage}"),
        (["--source", media["face_jpg"], "--target", media["face_png"], "--output", tmp_path / "d.png",
          "--faces", f"reference:{media['noface']}"], f"no face found in {media['noface']}"),
        (["--source", media["face_jpg"], "--target", media["face_png"], "--output", tmp_path / "e.mp4"],
         "must be an image file like the target"),
        (["--source", media["face_jpg"], "--target", media["face_png"], "--output", tmp_path / "f.png",
          "--generator", "nope"], "unknown variant of generator 'nope'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--source", media["face_jpg"], "--target", media["face_png"], "--output",
                       tmp_path / "g.png", "--device", "cuda"], "CUDA requested but no GPU is available"))
    for args, expected in cases:
        code, out, err = _cli(capsys, *fast, *args)
        assert code == 1 and len(err) == 1 and expected in err[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4", "garbage.mp4"]  # nothing written


def test_video_memory_does_not_grow_with_length(identity, tmp_path):
    """Bounded queues between decode, GPU work and encode: five times the frames, about the same peak."""
    import tracemalloc

    peaks = {}
    warm = make_video(tmp_path / "warm.mp4", frames=4, size=(120, 160), fps=24)
    identity.process_video(warm, tmp_path / "warm_out.mp4", progress=False)  # one-time allocations
    for n in (12, 60):
        src = make_video(tmp_path / f"len{n}.mp4", frames=n, size=(120, 160), fps=24)
        tracemalloc.start()
        try:
            stats = identity.process_video(src, tmp_path / f"out{n}.mp4", progress=False)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert stats["frames"] == n
    frame = 120 * 160 * 3
    # 48 more frames held anywhere would add >= 48 * 57.6 KB = 2.8 MB (and 4x that as float32)
    assert peaks[60] < peaks[12] + 16 * frame, peaks


def test_cli_undecodable_codec_and_unwritable_suffix_are_one_line(capsys, media, tmp_path):
    """A stream FFmpeg knows but cannot decode, and an output container it cannot write: one line, no file."""
    from fractions import Fraction

    import av

    bad = tmp_path / "bad_codec.mkv"
    with av.open(str(bad), "w", format="matroska") as out:
        s = out.add_stream("mpeg4", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(5):  # packets that claim MPEG-4 Part 2 and hold noise
            p = av.Packet(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, 24)
            out.mux(p)
    fast = ["--variant", "encoder=iresnet18", "--generator", "identity", "--quiet", "--source", media["face_jpg"]]
    for args, expected in (
            (["--target", bad, "--output", tmp_path / "o1.mp4"], f"cannot decode video {bad} (codec mpeg4)"),
            (["--target", media["short"], "--output", tmp_path / "o2.xyz"], "cannot write video with suffix .xyz")):
        code, out, err = _cli(capsys, *fast, *args)
        assert code == 1 and len(err) == 1 and expected in err[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_codec.mkv"]
