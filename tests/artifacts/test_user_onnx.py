"""Users' own ONNX models (``--onnx MODULE=PATH``): files in the public insightface / FaceFusion layouts, written
by a small exporter independent of ffexport (tests/helpers/public_layouts.py), run through ``swap``, ``optimize``,
``trt``, ``bench`` and ``report``; ffexport's own exports read back the same way give the native results; wrong
files are one line and exit 1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO
from ffexport.cli.main import main

from helpers.passes import one_line_error
from helpers import public_layouts as P

ASTRONAUT = REPO / "calibration" / "astronaut.jpg"
FAST = ["--samples", "4", "--parity-samples", "2"]


@pytest.fixture(scope="module")
def pub(tmp_path_factory):
    return P.public_set(tmp_path_factory.mktemp("public"))


def _record(out, folder, name="fp32.onnx"):
    return json.loads((out / folder / "manifest.json").read_text())["artifacts"][name]


def test_swap_runs_the_public_files(pub, tmp_path, capsys):
    """detector + encoder + inswapper-layout generator from the public layouts: one face swapped, every stage on
    onnxruntime from the adopted files, the adoption proven (outputs identical to the user's file)."""
    out, arts = tmp_path / "out.png", tmp_path / "arts"
    rc = main(["swap", "--onnx", f"detector={pub['detector']}", "--onnx", f"encoder={pub['encoder']}",
               "--onnx", f"generator={pub['generator']}", "-s", str(ASTRONAUT), "-t", str(ASTRONAUT), "-o", str(out),
               "--out", str(arts), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    stats = json.loads(captured.out)
    assert stats["faces_swapped"] == 1
    stages = {s["module"].split("/")[0]: s for s in stats["stages"]}
    assert stages["detector"]["module"] == "detector/onnx-det_10g"
    assert stages["generator"]["module"] == "generator/onnx-inswapper_128"
    for m in ("detector", "encoder", "generator"):
        assert stages[m]["backend"] == "ort", stages[m]
        rec = _record(arts, f"{m}.{stages[m]['module'].split('/')[1]}")
        assert rec["pass"] == "adopt" and rec["inputs"]["origin"] == "user"
        assert rec["inputs"]["sha256"] and rec["parity"]["passed"]
        assert max(rec["parity"]["max_abs_err"].values()) == 0.0
    assert out.is_file()


def test_swap_a_video_with_every_public_module(pub, tmp_path, capsys):
    """The issue's command on a video (with audio), plus the public enhancer and landmarker layouts."""
    from helpers.media import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=6, size=(240, 320), fps=24)
    out = tmp_path / "out.mp4"
    rc = main(["swap", *[a for m in ("detector", "encoder", "generator", "enhancer", "landmarker")
                         for a in ("--onnx", f"{m}={pub[m]}")], "--enhance", "--landmarks68",
               "-s", str(ASTRONAUT), "-t", str(clip), "-o", str(out), "--out", str(tmp_path / "arts"), "--json", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    stats = json.loads(captured.out)
    assert stats["frames"] == 6 and stats["faces_swapped"] == 6
    assert {s["module"] for s in stats["stages"]} >= {"enhancer/onnx-gfpgan_1.4", "landmarker/onnx-2dfan4"}
    assert out.is_file() and out.stat().st_size > 0


def test_inswapper_source_goes_through_the_files_emap(pub, tmp_path):
    """The generator is fed normalize(normalize(embedding) @ emap), emap read from the user's file, as insightface
    and FaceFusion feed it (computed here with numpy from the file itself)."""
    import onnx
    from onnx import numpy_helper

    from ffexport.artifacts.adopt import adopt_all
    from ffexport.pipeline.pipeline import Pipeline

    variants = adopt_all({"encoder": pub["encoder"], "generator": pub["generator"]}, tmp_path)
    emap = numpy_helper.to_array(onnx.load(str(pub["generator"])).graph.initializer[-1])
    with Pipeline(backend="ort", variants={"encoder": variants["encoder"]}, generator=variants["generator"],
                  out=tmp_path) as pipe:
        emb = pipe.set_source(str(ASTRONAUT)).numpy()
        from PIL import Image

        pipe.process_frame(np.asarray(Image.open(ASTRONAUT).convert("RGB")))
        latent = pipe._latent.numpy()
    want = emb / np.linalg.norm(emb) @ emap
    want /= np.linalg.norm(want)
    assert np.abs(latent - want).max() < 1e-5


def test_optimize_int8_fp16_and_report_on_public_files(pub, tmp_path, capsys):
    arts = tmp_path / "arts"
    users = [f"{m}={pub[m]}" for m in ("detector", "encoder", "generator", "landmarker", "enhancer")]
    args = [a for u in users for a in ("--onnx", u)]
    assert main(["optimize", *args, "--precision", "int8", "--calib", str(REPO / "calibration"), *FAST,
                 "--out", str(arts)]) == 0, capsys.readouterr().err
    assert main(["optimize", "--onnx", f"encoder={pub['encoder']}", "--onnx", f"generator={pub['generator']}",
                 "--precision", "fp16", "--parity-samples", "2", "--out", str(arts)]) == 0, capsys.readouterr().err
    for folder in ("detector.onnx-det_10g", "encoder.onnx-w600k_r50", "generator.onnx-inswapper_128",
                   "landmarker.onnx-2dfan4", "enhancer.onnx-gfpgan_1.4"):
        rec = _record(arts, folder, "int8.onnx")
        assert rec["parity"]["passed"] and rec["parity"]["vs_torch"] is None
        assert "its FP32 ONNX is the reference" in rec["parity"]["torch_reference"]
    import onnx

    for name in ("fp32.sim.onnx", "fp16.onnx", "int8.onnx"):  # loaders read emap from every artifact
        m = onnx.load(str(arts / "generator.onnx-inswapper_128" / name))
        assert m.graph.initializer[-1].name == "emap" and list(m.graph.initializer[-1].dims) == [512, 512]
    capsys.readouterr()
    assert main(["report", "--onnx", f"encoder={pub['encoder']}", "--out", str(arts), "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    files = {a["file"] for a in lineage[0]["artifacts"]}
    assert {"fp32.onnx", "fp32.sim.onnx", "fp16.onnx", "int8.onnx"} <= files


def test_fp16_of_a_swapper_that_overflows_keeps_the_culprits_fp32(tmp_path, capsys):
    """A public-layout generator whose activations exceed FP16's range: the FP16 artifact is proven on faces and
    the overflowing nodes stay FP32, listed as such."""
    src = P.inswapper(tmp_path / "inswapper_128_overflow.onnx", overflow=True)
    arts = tmp_path / "arts"
    assert main(["optimize", "--onnx", f"generator={src}", "--precision", "fp16", "--parity-samples", "2",
                 "--out", str(arts)]) == 0, capsys.readouterr().err
    rec = _record(arts, "generator.onnx-inswapper_128_overflow", "fp16.onnx")
    assert rec["parity"]["passed"]
    assert any(k["reason"] == "overflow" for k in rec["kept_fp32"]), rec["kept_fp32"]
    assert "overflow" in capsys.readouterr().out


def test_trt_builds_engines_from_public_files(pub, tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx")
    arts = tmp_path / "arts"
    assert main(["trt", "--onnx", f"encoder={pub['encoder']}", "--onnx", f"detector={pub['detector']}",
                 "--precision", "fp16", "--out", str(arts)]) == 0, capsys.readouterr().err
    for folder in ("encoder.onnx-w600k_r50", "detector.onnx-det_10g"):
        engines = list((arts / folder).glob("fp16.*.engine"))
        assert engines and engines[0].stat().st_size > 0
        assert _record(arts, folder, engines[0].name)["parent"]["file"] == "fp16.onnx"


def test_bench_rows_for_public_files(pub, tmp_path, capsys):
    arts, report = tmp_path / "arts", tmp_path / "report"
    rc = main(["bench", "--onnx", f"encoder={pub['encoder']}", "--onnx", f"generator={pub['generator']}",
               "--modules", "encoder,generator", "--backends", "ort,torch", "--precisions", "fp32", "--device", "cpu",
               "--iters", "3", "--warmup", "1", "--rotate", "1", "--out", str(arts), "--report", str(report),
               "--parity-samples", "2"])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((report / "results.json").read_text())["rows"]
    mine = {(r["module"], r["backend"]): r for r in rows if r["kind"] == "module"}
    for m, v in (("encoder", "onnx-w600k_r50"), ("generator", "onnx-inswapper_128")):
        ort = mine[(m, "ort")]
        assert ort["variant"] == v and ort["status"] == "ok", ort
        assert ort["parity"]["passed"]
        assert mine[(m, "torch")]["status"] != "ok" and "no torch form" in mine[(m, "torch")]["reason"]


@pytest.mark.parametrize("module,maker,expect", [
    ("detector", lambda p: P.classifier(p / "resnet.onnx"), "no detector layout matches"),
    ("generator", lambda p: P.arcface(p / "w600k_r50.onnx"), "in the arcface layout of the encoder"),
    ("detector", lambda p: P.scrfd(p / "scrfd_nokps.onnx", keypoints=False), "no keypoint outputs"),
    ("encoder", lambda p: P.inswapper(p / "inswapper_128.onnx"), "in the inswapper layout of the generator"),
])
def test_wrong_files_are_one_line(tmp_path, capsys, module, maker, expect):
    src = maker(tmp_path)
    rc = main(["optimize", "--onnx", f"{module}={src}", "--precision", "fp16", "--out", str(tmp_path / "arts")])
    assert rc == 1
    line = one_line_error(capsys)
    assert expect in line and src.name in line, line


def test_contract_file_for_an_unusual_file(pub, tmp_path, capsys):
    """--contract: a layout forced and the preprocessing spelled out; a contract with a bad key is one line."""
    contract = tmp_path / "simswap.yaml"
    contract.write_text("layout: simswap\npreprocess: {color: RGB, mean: [123.675, 116.28, 103.53], "
                        "std: [58.395, 57.12, 57.375]}\ntemplate: arcface_112_v1\n")
    from ffexport.artifacts.adopt import adopt

    spec = adopt("generator", pub["simswap"], tmp_path / "arts", contract)
    assert spec.preprocess.mean == (123.675, 116.28, 103.53) and spec.template.name == "arcface_112_v1"
    assert spec.source_transform == "" and spec.input_size == (256, 256)
    mapped = tmp_path / "arcface.yaml"  # every tensor named explicitly: recognition is skipped
    mapped.write_text("inputs: {input: input.1}\noutputs: {embedding: '683'}\n"
                      "preprocess: {color: BGR, mean: 127.5, std: 128}\n")
    enc = adopt("encoder", pub["encoder"], tmp_path / "arts", mapped)
    assert enc.preprocess.color == "BGR" and enc.preprocess.std == (128.0,) * 3
    rec = _record(tmp_path / "arts", f"encoder.{enc.variant}")
    assert rec["options"]["layout"] == "contract" and rec["parity"]["passed"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("layot: simswap\n")
    rc = main(["optimize", "--onnx", f"generator={pub['simswap']}", "--contract", f"generator={bad}",
               "--out", str(tmp_path / "arts")])
    assert rc == 1 and "unknown keys ['layot']" in one_line_error(capsys)


# --- our own exports: the public layouts, read back the same way ----------------------------------------------

def test_our_exports_are_in_the_public_layouts(exported_small, tmp_path):
    """What insightface's router and FaceFusion read: the detector's 9 2-D outputs in SCRFD order, the encoder's
    112 input and one 512 output, the generator's target/source inputs and emap as its last initializer."""
    from ffexport import specs
    from ffexport.artifacts import layouts as L
    from ffexport.export.onnx import export_module
    from ffexport.passes import graph

    want = {"detector": "scrfd", "encoder": "arcface", "enhancer": "gfpgan"}
    for module, layout in want.items():
        _, path = exported_small(module)
        g = L.read_graph(graph.load(path), path)
        if module == "detector":
            g.run_dims = {o.name: [d if isinstance(d, int) else 1 for d in o.dims] for o in g.outputs}
            assert all(len(o.dims) == 2 for o in g.outputs)  # (batch x anchors, k): insightface's RetinaFace reads it
            g.run_dims = {}
            import onnxruntime as ort

            s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outs = s.run(None, {"input": np.zeros((1, 3, 640, 640), np.float32)})
            g.run_dims = {o.name: list(v.shape) for o, v in zip(s.get_outputs(), outs)}
        assert L.recognise(module, g).layout == layout
    spec = specs.get("generator", "inswapper-128-small")
    path = export_module(spec, tmp_path, samples=1).path
    m = graph.load(path)
    assert m.graph.initializer[-1].name == "emap" and graph.last_initializer(m, "emap").shape == (512, 512)
    assert L.recognise("generator", L.read_graph(m, path)).layout == "inswapper"


def test_round_trip_gives_the_native_results(tmp_path):
    """An ffexport export read back through --onnx: identical outputs (the adoption's proof) and the same swapped
    image as the native onnxruntime path on the astronaut photograph."""
    from PIL import Image

    from ffexport.artifacts.adopt import adopt_all
    from ffexport.pipeline.pipeline import Pipeline

    frame = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    native_arts = tmp_path / "native"
    native = dict(backend="ort", variants={"encoder": "iresnet18"}, generator="inswapper-128-small")
    with Pipeline(out=native_arts, **native) as pipe:
        pipe.set_source(frame)
        want = pipe.process_frame(frame)
        assert pipe.stats["faces_swapped"] == 1
    users = {"encoder": native_arts / "encoder.iresnet18" / "fp32.onnx",
             "generator": native_arts / "generator.inswapper-128-small" / "fp32.onnx"}
    variants = adopt_all(users, tmp_path / "user")
    for m, v in variants.items():
        rec = _record(tmp_path / "user", f"{m}.{v}")
        assert max(rec["parity"]["max_abs_err"].values()) == 0.0
    with Pipeline(backend="ort", variants={"encoder": variants["encoder"]}, generator=variants["generator"],
                  out=tmp_path / "user") as pipe:
        pipe.set_source(frame)
        got = pipe.process_frame(frame)
    assert np.array_equal(got, want)


def test_our_blender_export_is_adopted_with_its_own_sizes(tmp_path):
    """The blender has no square image input (no public layout either): its own export is adopted as it is, the
    crop and frame axes kept, and proven on real faces (it once fed a 0x0 crop and had no preprocessing to record)."""
    from ffexport import specs
    from ffexport.artifacts.adopt import adopt
    from helpers.trt import export_spec_onnx

    native = specs.get("blender")
    spec = adopt("blender", export_spec_onnx(native, tmp_path / "blender.onnx"), tmp_path / "arts")
    assert spec.variant == "onnx-blender" and spec.input_names == native.input_names
    assert spec.input("crop").shape == native.input("crop").shape and spec.preprocess is None
    rec = _record(tmp_path / "arts", "blender.onnx-blender")
    assert rec["parity"]["passed"] and rec["key"]["adopt"]["preprocess"] is None
