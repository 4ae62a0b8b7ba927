"""configs/pipeline.yaml drives `ffexport swap`: settings read and checked once, flags over the file, bad values
one line, and the defaults the same as Pipeline()'s."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from ffexport.errors import ConfigError, InputSpecError
from ffexport.pipeline.settings import PipelineSettings, load_pipeline_settings

from helpers.media import astronaut

from conftest import REPO


def _config(tmp_path, text: str, name: str = "cfg"):
    d = tmp_path / name
    d.mkdir()
    (d / "pipeline.yaml").write_text(textwrap.dedent(text))
    return d


CHEAP = """\
    modules: {encoder: iresnet18, generator: identity}
    precision: fp16
    stages: {mtcnn_pnet: {precision: fp32}, blender: {backend: torch}}
    blend: poisson
    detect_max_side: 640
    """


def test_the_repository_file_is_the_built_in_default():
    """Every value configs/pipeline.yaml sets is the default, so `swap` behaves the same with or without it."""
    from ffexport import specs

    s = load_pipeline_settings(REPO / "configs")
    assert s.source == str(REPO / "configs" / "pipeline.yaml") and s.config_dir == REPO / "configs"
    default = PipelineSettings()
    for name in ("backend", "precision", "stage_backends", "stage_precisions", "detector", "detect_max_side",
                 "blend", "enhance", "enhance_faces_per_call", "landmarks68", "device"):
        assert getattr(s, name) == getattr(default, name), name
    assert s.modules == {m: specs.default_variant(m) for m in s.modules}


def test_settings_defaults_are_the_pipeline_constructor_defaults(tmp_path):
    from ffexport.pipeline.pipeline import Pipeline

    empty = tmp_path / "empty"
    empty.mkdir()
    s = load_pipeline_settings(empty)  # a folder without pipeline.yaml: the built-in defaults
    assert s == PipelineSettings(config_dir=empty) and s.source == "built-in defaults"
    params = inspect.signature(Pipeline).parameters
    for name, value in PipelineSettings().pipeline_kwargs().items():
        assert value == params[name].default or (not value and params[name].default is None), name


def test_the_file_drives_the_pipeline_swap_builds(tmp_path):
    """Blend, precision (default and per stage), variants and detection size from the file reach the pipeline."""
    from ffexport.cli.swap import swap_settings
    from ffexport.pipeline.pipeline import Pipeline

    cfg = _config(tmp_path, CHEAP)
    s = swap_settings(cfg)
    assert (s.blend, s.precision, s.detect_max_side, s.source) == ("poisson", "fp16", 640, str(cfg / "pipeline.yaml"))
    with Pipeline.from_settings(s, out=tmp_path / "artifacts") as pipe:
        assert pipe.blend_mode == "poisson" and pipe.generator_name == "identity"
        assert pipe.detector.kind == "mtcnn" and pipe.detector.max_side == 640
        got = {d["module"]: (d["backend"], d["precision"]) for d in pipe.describe()}
    assert got == {"mtcnn_pnet/facenet-pytorch": ("torch", "fp32"), "mtcnn_rnet/facenet-pytorch": ("torch", "fp16"),
                   "mtcnn_onet/facenet-pytorch": ("torch", "fp16"), "encoder/iresnet18": ("torch", "fp16"),
                   "generator/inswapper-128": ("torch", "fp32"),  # the identity stage (the default spec's IO)
                   "blender/box-feather": ("torch", "fp16")}


def test_the_enhancer_runs_at_most_enhance_faces_per_call_faces_a_call_with_the_same_result(tmp_path):
    """The enhancer's activations are most of the pipeline's device memory: the file caps its call, and a capped
    stage gives what one call of every face gives."""
    import torch

    from ffexport.pipeline.pipeline import Pipeline

    cfg = _config(tmp_path, """\
        modules: {encoder: iresnet18, generator: identity, enhancer: gfpgan-lite}
        enhance: true
        enhance_faces_per_call: 2
        """)
    s = load_pipeline_settings(cfg)
    assert s.enhance_faces_per_call == 2 and s.pipeline_kwargs()["enhance_faces_per_call"] == 2
    with Pipeline.from_settings(s, out=tmp_path / "artifacts") as pipe:
        stage = pipe.stages["enhancer"]
        assert stage.max_batch == 2
        calls = []
        infer = stage.runner.infer
        stage.runner.infer = lambda feeds: calls.append(len(next(iter(feeds.values())))) or infer(feeds)
        name = stage.spec.input_names[0]
        x = torch.rand(3, 3, *stage.spec.input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        capped = stage.run({name: x})
        stage.max_batch = None
        whole = stage.run({name: x})
    assert calls == [2, 1, 3]
    out = stage.spec.output_names[0]
    torch.testing.assert_close(capped[out], whole[out], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "4"])
def test_pipeline_refuses_a_bad_enhance_faces_per_call_in_one_line_before_building_anything(tmp_path, value):
    from ffexport.pipeline.pipeline import Pipeline

    with pytest.raises(InputSpecError) as err:
        Pipeline(enhance=True, enhance_faces_per_call=value, out=tmp_path / "artifacts")
    assert str(err.value) == f"enhance_faces_per_call must be a whole number >= 1, got {value!r}"
    assert not (tmp_path / "artifacts").exists()


def test_flags_override_the_file(tmp_path):
    from ffexport.cli.swap import swap_settings

    cfg = _config(tmp_path, CHEAP)
    s = swap_settings(cfg, blend="box", generator="simswap-256-lite", variants=["encoder=iresnet34"],
                      detect_max_side=0, enhance=True, device="cuda:1")
    assert (s.blend, s.detect_max_side, s.enhance, s.device) == ("box", 0, True, "cuda:1")
    assert dict(s.modules) == {"encoder": "iresnet34", "generator": "simswap-256-lite"}
    assert s.pipeline_kwargs()["detect_max_side"] is None  # 0: never scale
    # --precision is every stage's: the file's per-stage precisions go; --stage still sets one
    s = swap_settings(cfg, precision="fp32", stages=["encoder=ort:int8"])
    assert s.precision_of("mtcnn_pnet") == s.precision_of("blender") == "fp32"
    assert (s.backend_of("encoder"), s.precision_of("encoder")) == ("ort", "int8")
    assert s.backend_of("blender") == "torch" and s.pipeline_kwargs()["precision"] == {"default": "fp32",
                                                                                       "encoder": "int8"}
    # without --precision the file's per-stage choices stay under the flag's --stage
    s = swap_settings(cfg, stages=["generator=ort"])
    assert s.precision_of("mtcnn_pnet") == "fp32" and s.precision_of("encoder") == "fp16"
    assert s.backend_of("generator") == "ort" and s.backend_of("encoder") == "torch"
    with pytest.raises(InputSpecError, match="^unknown module 'gen'; valid: "):
        swap_settings(cfg, stages=["gen=ort"])


@pytest.mark.parametrize("text, expected", [
    ("blend: fancy\n", "blend: unknown blend mode 'fancy'; valid: box, poisson"),
    ("blnd: box\n", "unknown key 'blnd'; valid: modules, backend, precision, stages, detector, detect_max_side"),
    ("precision: fp8\n", "precision: unknown precision 'fp8'; valid: fp16, fp32, int8"),
    ("backend: onnx\n", "backend: unknown backend 'onnx'; valid: compile, ort, torch, trt"),
    ("stages: {generator: {backend: trt, precision: 16}}\n",
     "stages.generator.precision: precision must be a name, one of fp16, fp32, int8; got 16 (int)"),
    ("stages: {generator: {prec: fp16}}\n", "stages.generator: unknown key 'prec'; valid: backend, precision"),
    ("stages: {gen: {backend: ort}}\n", "stages.gen: unknown module 'gen'; valid: blender, detector,"),
    ("modules: {encoder: iresnet7}\n", "modules.encoder: unknown variant of encoder 'iresnet7'; valid: iresnet100,"),
    ("modules: [encoder]\n", "modules must map module -> variant"),
    ("detector: yolo\n", "detector: unknown detector 'yolo'; valid: auto, mtcnn, retinaface"),
    ("enhance: maybe\n", "enhance: enhance must be true or false, got 'maybe'"),
    ("detect_max_side: -5\n", "detect_max_side: detect_max_side must be a whole number of pixels >= 0"),
    ("enhance_faces_per_call: 0\n", "enhance_faces_per_call: enhance_faces_per_call must be a whole number >= 1, got 0"),
    ("enhance_faces_per_call: two\n", "enhance_faces_per_call: enhance_faces_per_call must be a whole number >= 1"),
    ("device: tpu\n", "device: unsupported device 'tpu'; use cpu, cuda or cuda:N"),
    ("- a list\n", "expected a mapping of settings at the top level, got list"),
    ("blend: [box\n", "not valid YAML"),
])
def test_a_bad_value_is_one_line_naming_file_key_and_valid_values(tmp_path, text, expected):
    cfg = _config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_pipeline_settings(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{cfg / 'pipeline.yaml'}: ") and expected in msg and "\n" not in msg, msg


def test_cli_swap_reads_the_file_and_reports_a_bad_one_in_one_line(capsys, tmp_path):
    """`swap --config-dir`: a bad file fails before anything is built; a good one picks the modules that run."""
    from PIL import Image

    from ffexport.cli.main import main

    face = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(face)
    bad = _config(tmp_path, "blend: fancy\n", "bad")
    code = main(["swap", "-s", str(face), "-t", str(face), "-o", str(tmp_path / "x.png"), "--config-dir", str(bad)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and err == [f"error: {bad / 'pipeline.yaml'}: blend: unknown blend mode 'fancy'; "
                                 "valid: box, poisson"], err
    good = _config(tmp_path, "modules: {encoder: iresnet18, generator: identity}\nblend: poisson\n", "good")
    code = main(["swap", "-s", str(face), "-t", str(face), "-o", str(tmp_path / "o.png"), "--config-dir", str(good),
                 "--out", str(tmp_path / "artifacts"), "--quiet", "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    stats = json.loads(cap.out)
    assert stats["faces_swapped"] == 1 and (tmp_path / "o.png").is_file()
    modules = [s["module"] for s in stats["stages"]]
    assert "encoder/iresnet18" in modules and "identity" in [s["source"].split()[0] for s in stats["stages"]]
    assert not (tmp_path / "x.png").exists()
