"""`ffexport triton`: a Triton model repository written from small real artifacts by the real command.

Every config.pbtxt is parsed into Triton's own ``ModelConfig`` protobuf (tritonclient's ``model_config_pb2``, loaded
from its file: tritonclient is installed without grpc, so ``tritonclient.grpc`` does not import), and the
``face_swap`` ensemble is run step by step with onnxruntime, following its own input/output maps over the repository's
model files, against the pipeline's computation (encoder, L2 normalisation, the inswapper source transform, generator).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers.cli import one_line
from ffexport.cli.main import main

ENCODER, GENERATOR = ("encoder", "iresnet18"), ("generator", "inswapper-128-small")  # the emap (inswapper) layout


def _model_config_pb2():
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient is not installed (the test extra has it)")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    loader = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _configs(repo: Path) -> dict:
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    out = {}
    for f in sorted(repo.glob("*/config.pbtxt")):
        cfg = text_format.Parse(f.read_text(), pb2.ModelConfig())
        assert cfg.name == f.parent.name
        out[cfg.name] = cfg
    return out


def _io(tensors) -> list[tuple[str, str, list[int]]]:
    pb2 = _model_config_pb2()
    return [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _export(spec, out: Path, **kw) -> Path:
    from ffexport.export.onnx import export_module
    from ffexport.manifest import artifact_dir

    path = artifact_dir(out, spec) / "fp32.onnx"
    return path if path.is_file() else export_module(spec, out, samples=2, **kw).path


def _ffexport(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "FFEXPORT_CONFIGS": str(REPO / "configs")}
    return subprocess.run([sys.executable, "-m", "ffexport", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("triton-configs")
    (d / "encoder.yaml").write_text(f"variant: {ENCODER[1]}\nbatch: {{min: 1, opt: 2, max: 4}}\n")
    (d / "generator.yaml").write_text(f"variant: {GENERATOR[1]}\n")
    shutil.copy(REPO / "configs" / "blender.yaml", d / "blender.yaml")  # the frame and crop ranges
    (d / "mtcnn_onet.yaml").write_text("fp16: {keep_io_types: false, keep_fp32: []}\n")
    return d


@pytest.fixture(scope="module")
def fp32_repo(exported_small, session_artifacts, config_dir, tmp_path_factory):
    """encoder, generator (inswapper layout) and blender at FP32: the command run once, in process."""
    from ffexport import specs

    exported_small("encoder")
    exported_small("blender")
    _export(specs.get(*GENERATOR), session_artifacts)
    repo = tmp_path_factory.mktemp("fp32-repo") / "model_repository"
    assert main(["triton", "--repository", str(repo), "--out", str(session_artifacts), "--precision", "fp32",
                 "--module", "encoder,generator,blender", "--config-dir", str(config_dir)]) == 0
    return repo


@pytest.fixture(scope="module")
def onet_out(exported_small, tmp_path_factory) -> Path:
    """A private artifact root holding a copy of mtcnn_onet's FP32 export (its FP16 and engines go there)."""
    _, path = exported_small("mtcnn_onet")
    out = tmp_path_factory.mktemp("onet-artifacts")
    shutil.copytree(path.parent, out / path.parent.name)
    return out


def test_every_config_parses_as_triton_model_config(fp32_repo):
    cfgs = _configs(fp32_repo)
    assert set(cfgs) == {"encoder", "generator", "blender", "identity_latent", "source_latent", "face_swap"}
    for name in ("encoder", "generator", "blender", "identity_latent"):
        assert cfgs[name].platform == "onnxruntime_onnx"
        assert (fp32_repo / name / "1" / "model.onnx").is_file()
        kind = _model_config_pb2().ModelInstanceGroup.Kind.Name
        assert [(kind(g.kind), g.count) for g in cfgs[name].instance_group] == [("KIND_GPU", 1)]
    for name in ("source_latent", "face_swap"):
        assert cfgs[name].platform == "ensemble" and (fp32_repo / name / "1").is_dir()
    marker = json.loads((fp32_repo / ".ffexport-triton.json").read_text())
    assert marker["models"]["encoder"]["spec"] == "encoder/iresnet18" and marker["precision"] == "fp32"


def test_module_configs_follow_the_spec_the_artifact_and_the_batch_profile(fp32_repo):
    import onnx

    cfgs = _configs(fp32_repo)
    enc, gen, blend = cfgs["encoder"], cfgs["generator"], cfgs["blender"]
    # the encoder's batch profile comes from its config (1:2:4), the others' from their spec (1:1:8)
    assert (enc.max_batch_size, list(enc.dynamic_batching.preferred_batch_size)) == (4, [2, 4])
    assert (gen.max_batch_size, list(gen.dynamic_batching.preferred_batch_size)) == (8, [8])
    assert _io(enc.input) == [("input", "TYPE_FP32", [3, 112, 112])]
    assert _io(enc.output) == [("embedding", "TYPE_FP32", [512])]
    assert _io(gen.input) == [("target", "TYPE_FP32", [3, 128, 128]), ("source", "TYPE_FP32", [512])]
    assert _io(gen.output) == [("output", "TYPE_FP32", [3, 128, 128])]
    assert _io(blend.input)[0] == ("frame", "TYPE_FP32", [3, -1, -1]) and _io(blend.output)[0][2] == [3, -1, -1]
    assert not enc.optimization.execution_accelerators.gpu_execution_accelerator  # FP32: no TensorRT accelerator
    # warm-up at batch 1 and the largest, the dynamic axes at the trt profile's opt sizes (configs/blender.yaml)
    assert [w.batch_size for w in enc.model_warmup] == [1, 4]
    assert {k: list(v.dims) for k, v in blend.model_warmup[0].inputs.items()} == {
        "frame": [3, 720, 1280], "crop": [3, 128, 128], "affine": [2, 3], "mask": [5]}
    assert all(v.random_data for w in blend.model_warmup for v in w.inputs.values())
    # the served file is the artifact itself, and its graph says what the config says
    for name, cfg in (("encoder", enc), ("generator", gen), ("blender", blend)):
        model = onnx.load(str(fp32_repo / name / "1" / "model.onnx"), load_external_data=False)
        assert [i.name for i in model.graph.input] == [t.name for t in cfg.input]
        assert [o.name for o in model.graph.output] == [t.name for t in cfg.output]
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["ffexport.spec"].split("/")[0] == name


def test_ensembles_map_real_models_and_tensors(fp32_repo):
    cfgs = _configs(fp32_repo)
    for name in ("source_latent", "face_swap"):
        ens = cfgs[name]
        assert 0 < ens.max_batch_size <= min(cfgs[s.model_name].max_batch_size for s in ens.ensemble_scheduling.step)
        known = {t.name: (t.data_type, list(t.dims)) for t in ens.input}
        for step in ens.ensemble_scheduling.step:
            model = cfgs[step.model_name]
            inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
            outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
            assert set(step.input_map) == set(inputs)  # every input of the model fed, nothing else
            for model_input, tensor in step.input_map.items():
                assert known[tensor] == inputs[model_input], (name, step.model_name, model_input)
            for model_output, tensor in step.output_map.items():
                known[tensor] = outputs[model_output]
        for t in ens.output:
            assert known[t.name] == (t.data_type, list(t.dims))
    assert [s.model_name for s in cfgs["face_swap"].ensemble_scheduling.step] == [
        "encoder", "identity_latent", "generator"]


def test_face_swap_ensemble_computes_what_the_pipeline_computes(fp32_repo):
    """The ensemble's steps run over the repository's files reproduce encoder -> normalize -> emap -> generator."""
    import onnxruntime as ort
    import torch

    from ffexport import specs
    from ffexport.faces.feeds import source_transform, transform_source

    cfg = _configs(fp32_repo)["face_swap"]
    rng = np.random.default_rng(0)
    tensors = {"source_crop": rng.uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32),
               "target_crop": rng.uniform(0, 1, (2, 3, 128, 128)).astype(np.float32)}
    sessions = {}

    def run(model: str, feeds: dict) -> dict:
        if model not in sessions:
            sessions[model] = ort.InferenceSession(str(fp32_repo / model / "1" / "model.onnx"),
                                                   providers=["CPUExecutionProvider"])
        names = [o.name for o in sessions[model].get_outputs()]
        return dict(zip(names, sessions[model].run(names, feeds)))

    for step in cfg.ensemble_scheduling.step:
        got = run(step.model_name, {k: tensors[v] for k, v in step.input_map.items()})
        tensors.update({v: got[k] for k, v in step.output_map.items()})
    swapped = tensors["swapped_crop"]

    emb = torch.from_numpy(run("encoder", {"input": tensors["source_crop"]})["embedding"])
    latent = transform_source(torch.nn.functional.normalize(emb, dim=1), source_transform(specs.get(*GENERATOR)))
    want = run("generator", {"target": tensors["target_crop"], "source": latent.numpy()})["output"]
    assert swapped.shape == (2, 3, 128, 128)
    np.testing.assert_allclose(swapped, want, atol=1e-4)
    # without the latent graph (the raw embedding straight into the generator) the identity would be another one
    raw = run("generator", {"target": tensors["target_crop"], "source": emb.numpy()})["output"]
    assert np.abs(raw - want).max() > 1e-3


def test_latent_graph_casts_fp16_io_and_matches_the_pipeline_transform():
    import onnxruntime as ort
    import torch

    from ffexport.artifacts.triton import latent_graph
    from ffexport.faces.feeds import transform_source

    emap = np.linalg.qr(np.random.default_rng(1).normal(size=(512, 512)))[0].astype(np.float32)
    emb = np.random.default_rng(2).normal(size=(3, 512)).astype(np.float16)
    sess = ort.InferenceSession(latent_graph(512, emap, "FLOAT16", "FLOAT16"), providers=["CPUExecutionProvider"])
    got = sess.run(["latent"], {"embedding": emb})[0]
    assert got.dtype == np.float16
    unit = torch.nn.functional.normalize(torch.from_numpy(emb.astype(np.float32)), dim=1)
    np.testing.assert_allclose(got.astype(np.float32), transform_source(unit, torch.from_numpy(emap)).numpy(),
                               atol=2e-3)


def test_fp16_takes_data_types_from_the_file_and_asks_for_the_tensorrt_accelerator(onet_out, config_dir, tmp_path):
    from ffexport import specs
    from ffexport.artifacts.optimize import Settings, optimize

    optimize(specs.get("mtcnn_onet"), "fp16", Settings(out=onet_out, config_dir=config_dir, parity_samples=2))
    repo = tmp_path / "repo"
    assert main(["triton", "--repository", str(repo), "--out", str(onet_out), "--module", "mtcnn_onet",
                 "--config-dir", str(config_dir)]) == 0
    cfg = _configs(repo)["mtcnn_onet"]
    # keep_io_types: false in this config folder: the FP16 artifact's inputs and outputs are FP16
    assert _io(cfg.input) == [("input", "TYPE_FP16", [3, 48, 48])]
    assert [t[1] for t in _io(cfg.output)] == ["TYPE_FP16"] * 3
    assert [w.inputs["input"].data_type for w in cfg.model_warmup] == [cfg.input[0].data_type] * 2
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert (acc.parameters["trt_profile_min_shapes"], acc.parameters["trt_profile_max_shapes"]) == (
        "input:1x3x48x48", "input:8x3x48x48")


def test_a_fixed_batch_axis_serves_full_shapes_without_batching(tmp_path):
    from ffexport import specs

    out = tmp_path / "arts"
    _export(specs.get("mtcnn_onet"), out, batch=1)
    repo = tmp_path / "repo"
    assert main(["triton", "--repository", str(repo), "--out", str(out), "--module", "mtcnn_onet",
                 "--precision", "fp32"]) == 0
    cfg = _configs(repo)["mtcnn_onet"]
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert _io(cfg.input) == [("input", "TYPE_FP32", [1, 3, 48, 48])]
    assert _io(cfg.output)[0] == ("prob", "TYPE_FP32", [1, 2])
    assert [(w.batch_size, list(w.inputs["input"].dims)) for w in cfg.model_warmup] == [(1, [1, 3, 48, 48])]


def _stand_in_engine(folder: Path, precision: str, flavor: str, magic: bytes, batch=(1, 2, 4)) -> Path:
    """No TensorRT 10/11 can build here (CI has TensorRT-RTX only, whose engines Triton cannot load): an engine file
    with the right magic and the build record `ffexport trt` writes beside it, IO as TensorRT reports it."""
    from ffexport.manifest import Manifest, new_record

    path = folder / f"{precision}.{flavor}.engine"
    path.write_bytes(magic + bytes(60))
    shapes = {"min": [batch[0], 3, 48, 48], "opt": [batch[1], 3, 48, 48], "max": [batch[2], 3, 48, 48]}
    io = {"inputs": [{"name": "input", "dtype": "float", "shape": [-1, 3, 48, 48], "profile": shapes}],
          "outputs": [{"name": n, "dtype": "float", "shape": [-1, k]} for n, k in (("prob", 2), ("reg", 4),
                                                                                  ("landmarks", 10))]}
    rec = new_record(path, pass_name="trt", parent=folder / "fp32.onnx", parity=None,
                     options={"precision": precision, "flavor": flavor, "batch": list(batch)}, flavor=flavor,
                     trt_version="10.13.0", target_cc=["9.0"], profile={"input": shapes}, io=io)
    Manifest.load(folder).put(path.name, rec)
    return path


def test_tensorrt_backend_serves_the_engine_with_its_profile(onet_out, tmp_path):
    _stand_in_engine(onet_out / "mtcnn_onet", "fp32", "tensorrt", b"ftrt")
    repo = tmp_path / "repo"
    assert main(["triton", "--repository", str(repo), "--out", str(onet_out), "--module", "mtcnn_onet",
                 "--precision", "fp32", "--backend", "tensorrt"]) == 0
    cfg = _configs(repo)["mtcnn_onet"]
    assert cfg.platform == "tensorrt_plan" and (repo / "mtcnn_onet" / "1" / "model.plan").is_file()
    assert cfg.max_batch_size == 4 and list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert _io(cfg.output) == [("prob", "TYPE_FP32", [2]), ("reg", "TYPE_FP32", [4]), ("landmarks", "TYPE_FP32", [10])]
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 1, res
    return one_line(res, *needles)


def test_a_missing_artifact_is_one_line_naming_file_and_command_and_writes_nothing(tmp_path):
    (tmp_path / "arts").mkdir()
    before = _tree(tmp_path)
    _one_line(_ffexport(["triton", "--repository", "model_repository", "--out", "arts", "--module",
                         "encoder,generator"], tmp_path),
              "missing arts/encoder/fp16.onnx, arts/generator/fp16.onnx",
              "`ffexport optimize --module encoder,generator --precision fp16 --out arts`")
    assert _tree(tmp_path) == before


def test_an_rtx_engine_is_refused_in_one_line(onet_out, tmp_path):
    _stand_in_engine(onet_out / "mtcnn_onet", "fp16", "tensorrt_rtx", b"vtrt")
    before = _tree(tmp_path)
    _one_line(_ffexport(["triton", "--repository", "repo", "--out", str(onet_out), "--module", "mtcnn_onet",
                         "--backend", "tensorrt"], tmp_path),
              "fp16.tensorrt_rtx.engine was built by TensorRT-RTX", "--flavor tensorrt", "--backend onnxruntime")
    assert _tree(tmp_path) == before


def test_an_existing_repository_is_replaced_only_with_force_and_only_when_ffexport_wrote_it(onet_out, tmp_path,
                                                                                           capsys):
    repo = tmp_path / "repo"
    args = ["triton", "--repository", str(repo), "--out", str(onet_out), "--module", "mtcnn_onet", "--precision",
            "fp32"]
    assert main(args) == 0
    (repo / "mtcnn_onet" / "config.pbtxt").write_text("# edited\n")
    capsys.readouterr()
    assert main(args) == 1
    assert "pass --force" in capsys.readouterr().err
    assert (repo / "mtcnn_onet" / "config.pbtxt").read_text() == "# edited\n"
    assert main([*args, "--force"]) == 0
    assert _configs(repo)["mtcnn_onet"].max_batch_size == 8
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folder left beside it

    mine = tmp_path / "mine"
    (mine / "my_model").mkdir(parents=True)
    capsys.readouterr()
    assert main(["triton", "--repository", str(mine), *args[3:], "--force"]) == 1
    assert "not written by `ffexport triton`" in capsys.readouterr().err
    assert _tree(mine) == ["my_model"]
