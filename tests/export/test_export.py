"""PyTorch -> ONNX export of every registered module, with its parity proof and manifest."""

from __future__ import annotations

import json

import pytest

from conftest import small_spec
from ffexport import specs


def test_every_module_has_a_test():
    untested = sorted(m for m in specs.modules() if not any(specs.get(m, v).ci for v in specs.variants(m)))
    assert not untested, f"modules registered without a variant marked ci=True (the one CI tests): {untested}"


@pytest.mark.parametrize("module", specs.modules())
def test_export_with_parity(module, exported_small):
    import onnx

    spec, path = exported_small(module)
    model = onnx.load(str(path), load_external_data=False)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    inputs = [i for i in model.graph.input]
    assert [i.name for i in inputs] == spec.input_names
    assert [o.name for o in model.graph.output] == spec.output_names
    for t, vi in zip((*spec.inputs, *spec.outputs), (*inputs, *model.graph.output)):
        dims = vi.type.tensor_type.shape.dim
        assert len(dims) == len(t.shape), t.name
        for want, d in zip(t.shape, dims):
            if isinstance(want, str):
                assert d.dim_param == want, (t.name, want, d)
            else:
                assert d.dim_value == want, (t.name, want, d)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ffexport.spec"] == spec.key
    assert json.loads(meta["ffexport.contract"]) == spec.contract()

    manifest = json.loads((path.parent / "manifest.json").read_text())
    rec = manifest["artifacts"]["fp32.onnx"]
    assert manifest["module"] == spec.module and manifest["variant"] == spec.variant
    assert rec["parity"]["passed"] and rec["parity"]["samples"] >= 1
    assert rec["parity"]["metrics"]["max_abs"], "max abs error recorded per output"
    for tool in ("torch", "onnx", "onnxruntime"):
        assert tool in rec["versions"]
    assert len(rec["sha256"]) == 64 and rec["options"]["opset"] == 17
    assert rec["duration_s"] is not None
    if spec.task == "embedding":
        assert rec["parity"]["metrics"]["cosine_min"]["embedding"] > 0.9999
    if spec.task == "image":
        assert min(rec["parity"]["metrics"]["psnr_db"].values()) >= 60


def test_dynamic_batch_runs_at_batch_3(exported_small):
    import torch

    from ffexport.backends.ort import OrtRunner
    from ffexport.models import build_model

    spec, path = exported_small("encoder")
    x = torch.randn(3, 3, 112, 112).clamp(-1, 1)
    with OrtRunner(path, spec=spec) as r:
        got = r.infer({"input": x})["embedding"]
    want = build_model(spec)(x)
    assert got.shape == (3, 512)
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.9999


def test_export_is_byte_identical(tmp_path):
    from ffexport.export.onnx import export_module

    spec = small_spec("encoder")
    a = export_module(spec, tmp_path / "a", samples=1).path.read_bytes()
    b = export_module(spec, tmp_path / "b", samples=1).path.read_bytes()
    assert a == b


def test_fixed_batch_export(tmp_path):
    import onnx

    from ffexport.export.onnx import export_module

    res = export_module(small_spec("blender"), tmp_path, batch=2, samples=1)
    g = onnx.load(str(res.path)).graph
    assert g.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert g.input[0].type.tensor_type.shape.dim[2].dim_param == "height"  # frame size stays dynamic
    assert res.record["options"]["batch"] == "2"


@pytest.mark.parametrize("spec", [s for s in specs.all_specs()], ids=lambda s: s.key)
def test_every_variant_builds(spec):
    """Every registered variant instantiates with its seeded weights, deterministically."""
    import torch

    from ffexport.models import build_model

    model = build_model(spec)
    assert isinstance(model, torch.nn.Module) and not model.training
    if spec.module != "blender":
        assert sum(p.numel() for p in model.parameters()) > 0


def test_checkpoint_round_trip(tmp_path):
    import torch

    from ffexport.cli.main import main
    from ffexport.models import build_model

    spec = small_spec("encoder")
    model = build_model(spec, seed=7)
    ckpt = tmp_path / "r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, ckpt)
    code = main(["onnx", "--module", "encoder", "--variant", spec.variant, "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "out"), "--parity-samples", "1"])
    assert code == 0
    rec = json.loads((tmp_path / "out" / "encoder.iresnet18" / "manifest.json").read_text())["artifacts"]["fp32.onnx"]
    assert rec["inputs"]["checkpoint_sha256"] and rec["parity"]["passed"]
