"""Frames as YUV 4:2:0 planes: the device conversions against FFmpeg's (swscale, through PyAV), the tags that
choose them, and a video through the pipeline as planes against the same video as RGB frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffexport.errors import InputSpecError, MediaError
from ffexport.pipeline.yuv import Planes, check_i420, i420_to_rgb, rgb_to_i420

from helpers.media import astronaut, make_video, no_face_image, psnr, read_video

av = pytest.importorskip("av", reason="PyAV (ffexport[video]) is not installed on this host")

# (colorspace, color_range) tags -> the conversion: untagged and BT.601 alike (swscale's default), BT.709,
# limited and full range
TAGS = [((2, 0), Planes("bt601", False)), ((5, 1), Planes("bt601", False)), ((6, 1), Planes("bt601", False)),
        ((1, 1), Planes("bt709", False)), ((1, 2), Planes("bt709", True)), ((2, 2), Planes("bt601", True))]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """One decoded frame of a real H.264 clip (the astronaut)."""
    path = make_video(tmp_path_factory.mktemp("yuv") / "clip.mp4", frames=3, size=(240, 320), audio=False)
    with av.open(str(path)) as c:
        return next(c.decode(c.streams.video[0]))


@pytest.mark.parametrize("tags,planes", TAGS)
def test_conversions_match_ffmpegs_for_each_tag(decoded, tags, planes):
    assert Planes.of_tags(*tags) == planes
    frame = decoded
    frame.colorspace, frame.color_range = tags
    i420 = frame.to_ndarray(format="yuv420p")
    ours = i420_to_rgb(torch.from_numpy(i420)[None], planes)[0].numpy()
    theirs = frame.to_ndarray(format="rgb24")
    d = np.abs(ours.astype(int) - theirs.astype(int))
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    assert d.max() <= 3 and d.mean() < 1.5, (d.max(), d.mean())  # swscale's fixed point rounds differently
    # back to planes: swscale's conversion of the same RGB frame, and the decoded planes themselves
    back = rgb_to_i420(torch.from_numpy(ours)[None], planes)[0].numpy()
    rgb_frame = av.VideoFrame.from_ndarray(ours, format="rgb24")
    theirs_back = rgb_frame.reformat(format="yuv420p", dst_colorspace=tags[0],
                                     dst_color_range=tags[1] or None).to_ndarray()
    assert back.shape == i420.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - theirs_back.astype(int)).mean() < 1.0
    # a round trip keeps the planes (up to the RGB frame's rounding and clipping out of gamut)
    assert np.abs(back.astype(int) - i420.astype(int)).mean() < 0.1


def test_tags_and_shapes_that_do_not_travel_as_planes(tmp_path):
    from ffexport.pipeline.video import planes_for, probe

    assert Planes.of_tags(9, 1) is None  # BT.2020: the RGB path (swscale) converts those
    assert check_i420((360, 320), np.uint8) is None
    assert "even" in check_i420((361, 320), np.uint8) and "even" in check_i420((360, 321), np.uint8)
    assert "uint8" in check_i420((240, 320, 3), np.uint8) and "uint8" in check_i420((360, 320), np.float32)
    info = probe(make_video(tmp_path / "a.mp4", frames=2, size=(120, 160), audio=False))
    assert planes_for(info) == Planes("bt601", False) and planes_for(info, "yuv444p") is None
    info709 = probe(make_video(tmp_path / "b.mp4", frames=2, size=(120, 160), audio=False, colorspace=1))
    assert planes_for(info709) == Planes("bt709", False)
    info444 = probe(make_video(tmp_path / "c.mp4", frames=2, size=(120, 160), audio=False, pix_fmt="yuv444p"))
    assert info444.pix_fmt == "yuv444p" and planes_for(info444) is None


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from ffexport.pipeline.pipeline import Pipeline

    with Pipeline(backend="torch", variants={"encoder": "iresnet18"}, generator="identity", batch=3,
                  video_planes=True, out=tmp_path_factory.mktemp("artifacts")) as p:
        p.set_source(astronaut())
        yield p


def test_batches_of_planes_are_the_rgb_batches_converted(pipe, decoded):
    planes = Planes("bt709", False)
    face = np.ascontiguousarray(decoded.to_ndarray(format="yuv420p"))
    blank = rgb_to_i420(torch.from_numpy(no_face_image((240, 320)))[None], planes)[0].numpy()
    batches = [[face, blank], [face.copy()]]
    got = list(pipe.process_batches(batches, planes=planes))
    assert got[0][1] is blank  # a frame without a face comes back as it was decoded
    for batch, res in zip(batches, got):
        rgb = i420_to_rgb(torch.from_numpy(np.stack(batch)), planes).numpy()
        want = pipe.process_frames(list(rgb))
        for w, r, f in zip(want, res, batch):
            assert r.shape == f.shape and r.dtype == np.uint8
            expect = rgb_to_i420(torch.from_numpy(np.ascontiguousarray(w))[None], planes)[0].numpy()
            assert r is f or np.array_equal(r, expect)
    assert not np.array_equal(got[1][0], face)  # the face was pasted
    with pytest.raises(InputSpecError, match="I420"):
        list(pipe.process_batches([[np.zeros((240, 320, 3), np.uint8)]], planes=planes))


def test_a_video_through_the_pipeline_as_planes_matches_the_rgb_path(pipe, tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=8, size=(120, 160), colorspace=1)
    assert pipe.video_planes_for(src) == Planes("bt709", False)
    planes_stats = pipe.process_video(src, tmp_path / "planes.mp4", progress=False)
    pipe.video_planes = False
    try:
        assert pipe.video_planes_for(src) is None
        rgb_stats = pipe.process_video(src, tmp_path / "rgb.mp4", progress=False)
    finally:
        pipe.video_planes = True
    assert planes_stats["frames_as"] == "i420 bt709 limited range" and rgb_stats["frames_as"] == "rgb24"
    assert planes_stats["faces_swapped"] == rgb_stats["faces_swapped"] >= 8
    a, ia = read_video(tmp_path / "planes.mp4")
    b, ib = read_video(tmp_path / "rgb.mp4")
    frames, isrc = read_video(src)
    assert ia["frames"] == ib["frames"] == 8 and ia["audio"]["bytes"] == isrc["audio"]["bytes"]
    for x, y, f in zip(a, b, frames):  # each a re-encode of the input (identity generator): as close as the RGB path
        assert psnr(x, f) > 30.0 and psnr(x, f) >= psnr(y, f) - 0.5, (psnr(x, f), psnr(y, f))
    with av.open(str(tmp_path / "planes.mp4")) as c:
        first = next(c.decode(c.streams.video[0]))
        assert int(first.colorspace) == 1  # the output keeps the input's colour tag


@pytest.mark.parametrize("colorspace,color_range", [(1, 1), (1, 2), (5, 2)])
def test_the_rgb_path_writes_the_inputs_colour(tmp_path, colorspace, color_range):
    """The RGB path (the CPU's, and the GPU's for videos that do not travel as planes) converts the frames back
    with the input's matrix and range and tags them so: a player that reads the tags sees the input's colours.
    (It used to write BT.601 limited range, untagged, whatever the input: a player that takes untagged HD video
    for BT.709 showed a colour cast.)"""
    from ffexport.pipeline.video import transcode

    src = make_video(tmp_path / "in.mp4", frames=4, size=(120, 160), audio=False, colorspace=colorspace,
                     color_range=color_range)
    stats = transcode(src, tmp_path / "out.mp4", list, progress=False)
    assert stats["frames_as"] == "rgb24"
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        fa, fb = next(a.decode(a.streams.video[0])), next(b.decode(b.streams.video[0]))
        cc = b.streams.video[0].codec_context
        assert (int(fb.colorspace), int(fb.color_range)) == (colorspace, color_range)
        assert (int(cc.colorspace), int(cc.color_range)) == (colorspace, color_range)
    ra, rb = fa.to_ndarray(format="rgb24"), fb.to_ndarray(format="rgb24")  # each read by its own tags
    assert psnr(rb, ra) > 30.0, psnr(rb, ra)  # a re-encode (crf 18) of a small textured clip
    assert np.abs(rb.reshape(-1, 3).mean(0) - ra.reshape(-1, 3).mean(0)).max() < 2.0  # no colour cast


def test_planes_only_where_the_video_allows_and_not_by_default_on_a_cpu(pipe, tmp_path):
    from ffexport.pipeline.pipeline import Pipeline
    from ffexport.pipeline.video import transcode

    src444 = make_video(tmp_path / "c.mp4", frames=2, size=(120, 160), audio=False, pix_fmt="yuv444p")
    assert pipe.video_planes_for(src444) is None
    with pytest.raises(MediaError, match="cannot travel as YUV 4:2:0 planes"):
        transcode(src444, tmp_path / "x.mp4", list, planes=Planes(), progress=False)
    assert not (tmp_path / "x.mp4").exists()
    src = make_video(tmp_path / "d.mp4", frames=2, size=(120, 160), audio=False)
    cpu = Pipeline.__new__(Pipeline)  # the choice alone: the CPU default (video_planes None) keeps RGB frames
    cpu.video_planes, cpu.device = None, torch.device("cpu")
    assert cpu.video_planes_for(src) is None


def test_the_codec_ceiling_measures_both_forms(tmp_path):
    from ffexport.pipeline.video import codec_ceiling

    c = codec_ceiling(make_video(tmp_path / "e.mp4", frames=6, size=(120, 160)))
    assert c["frames"] == 6 and c["planes"] == "i420 bt601 limited range"
    for key in ("decode_only_fps", "encode_only_fps", "decode_only_rgb_fps", "encode_only_rgb_fps"):
        assert c[key] > 0
    for key in ("encode_only_cpu_cores", "encode_only_rgb_cpu_cores"):  # one figure per encode run
        assert len(c[key]) == len(c["encode_only_runs"]) and all(v > 0 for v in c[key])
    once = codec_ceiling(tmp_path / "e.mp4", runs=1, rgb=False)  # the planes alone, one run (the video row's rounds)
    assert once["encode_only_fps"] > 0 and len(once["encode_only_runs"]) == 1 and "encode_only_rgb_fps" not in once
    c444 = codec_ceiling(make_video(tmp_path / "f.mp4", frames=4, size=(120, 160), pix_fmt="yuv444p"), rgb=False)
    assert c444["planes"] is None and c444["encode_only_fps"] == c444["encode_only_rgb_fps"]  # RGB: the only form
    assert c444["encode_only_runs"] == c444["encode_only_rgb_runs"]


def test_codec_threads_options(tmp_path, pipe):
    """The codec threads' niceness and libx264's thread count reach the codecs and the statistics; on a CPU the
    pipeline leaves both to the codecs."""
    import os
    import threading

    from ffexport.pipeline.video import lower_priority, transcode

    assert pipe.codec_threads() == {}  # a CPU pipeline: as the codecs choose
    box = {}

    def probe_thread():
        box["nice"] = lower_priority(3)
        box["now"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=probe_thread)
    t.start()
    t.join()
    assert box["nice"] == box["now"] == os.getpriority(os.PRIO_PROCESS, 0) + 3  # that thread alone
    src = make_video(tmp_path / "g.mp4", frames=4, size=(120, 160))
    stats = transcode(src, tmp_path / "h.mp4", list, progress=False, codec_nice=5, encoder_threads=2)
    assert stats["frames"] == 4 and stats["codec_nice"] == 5 and stats["encoder_threads"] == 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == box["now"] - 3  # the caller's own priority is unchanged
