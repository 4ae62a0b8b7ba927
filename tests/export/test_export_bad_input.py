"""Each bad input of `ffexport onnx` is one clear line, a non-zero exit, and no half-written file."""

from __future__ import annotations

import hashlib
from pathlib import Path


from ffexport.cli.main import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]


def _no_partials(folder: Path):
    assert not list(folder.rglob("*.part")), list(folder.rglob("*.part"))


def test_unknown_module_lists_valid(capsys, tmp_path):
    assert main(["onnx", "--module", "encodr", "--out", str(tmp_path)]) == 1
    line = _one_line(capsys)
    assert "unknown module 'encodr'" in line and "encoder" in line and "generator" in line


def test_unknown_variant_lists_valid(capsys, tmp_path):
    assert main(["onnx", "--module", "encoder", "--variant", "r51", "--out", str(tmp_path)]) == 1
    line = _one_line(capsys)
    assert "r51" in line and "iresnet50" in line and "iresnet18" in line


def test_unreadable_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["onnx", "--module", "encoder", "--variant", "iresnet18", "--checkpoint", str(bad),
                 "--out", str(tmp_path / "o")]) == 1
    assert "bad.pth is not a PyTorch checkpoint" in _one_line(capsys)
    assert not (tmp_path / "o").exists()  # read before any folder is made


def test_missing_checkpoint(capsys, tmp_path):
    assert main(["onnx", "--module", "encoder", "--checkpoint", str(tmp_path / "nope.pth"),
                 "--out", str(tmp_path)]) == 1
    assert "does not exist" in _one_line(capsys)


def test_mismatched_checkpoint_names_keys(capsys, tmp_path):
    import torch

    from ffexport import specs
    from ffexport.models import build_model

    sd = build_model(specs.get("encoder", "iresnet18")).state_dict()
    sd.pop("fc.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["features.weight"] = torch.zeros(7)
    ckpt = tmp_path / "mismatch.pt"
    torch.save(sd, ckpt)
    assert main(["onnx", "--module", "encoder", "--variant", "iresnet18", "--checkpoint", str(ckpt),
                 "--out", str(tmp_path)]) == 1
    line = _one_line(capsys)
    assert "missing 1: fc.weight" in line and "unexpected 1: extra.weight" in line
    assert "mis-shaped 1: features.weight (7,) vs (512,)" in line


def test_bad_input_spec(capsys, tmp_path):
    assert main(["onnx", "--model", "json:loads", "--input", "x:1xthree", "--out", str(tmp_path)]) == 1
    assert "bad --input 'x:1xthree'" in _one_line(capsys)


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["onnx", "--module", "blender", "--out", str(blocker / "sub")]) == 1
    assert "cannot create output folder" in _one_line(capsys)


def test_existing_artifact_needs_force(capsys, tmp_path, exported_small):
    spec, path = exported_small("blender")
    out = path.parent.parent
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["onnx", "--module", "blender", "--out", str(out)]) == 1
    assert "already exists; pass --force" in _one_line(capsys)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    _no_partials(out)


def test_failed_gate_keeps_previous_artifact(capsys, tmp_path, monkeypatch):
    """A parity failure fails the command and leaves the last good artifact untouched."""
    from ffexport.export.onnx import export_module
    from ffexport import specs

    spec = specs.get("encoder", "iresnet18")
    good = export_module(spec, tmp_path, samples=1).path
    before = good.read_bytes()
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "encoder.yaml").write_text("variant: iresnet18\ngates:\n  fp32: {cosine_min: 1.5}\n")
    code = main(["onnx", "--module", "encoder", "--out", str(tmp_path), "--force", "--parity-samples", "1",
                 "--config-dir", str(cfg)])
    assert code == 1
    line = _one_line(capsys)
    assert "parity failed" in line and "output 'embedding' cosine_min" in line and ">= 1.5" in line
    assert good.read_bytes() == before
    _no_partials(tmp_path)


def test_byo_model_export(tmp_path, monkeypatch, capsys):
    import json

    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)\n"
        "        self.head = torch.nn.Linear(8, 4)\n"
        "    def forward(self, image, scale):\n"
        "        y = torch.relu(self.conv(image)).mean((2, 3))\n"
        "        return self.head(y) * scale, y\n"
        "def make():\n"
        "    return Net()\n")
    monkeypatch.chdir(tmp_path)
    code = main(["onnx", "--model", "my_models:make", "--input", "image:1x3x64x64", "--input", "scale:1x4",
                 "--output-names", "logits,features", "--out", "arts"])
    assert code == 0, capsys.readouterr().err
    man = json.loads((tmp_path / "arts" / "make" / "manifest.json").read_text())
    rec = man["artifacts"]["fp32.onnx"]
    assert rec["parity"]["passed"] and "face photographs" in rec["parity"]["inputs"]
    assert rec["options"]["outputs"] == ["logits", "features"]

    import onnx

    g = onnx.load(str(tmp_path / "arts" / "make" / "fp32.onnx")).graph
    assert [i.name for i in g.input] == ["image", "scale"]
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    assert main(["onnx", "--model", "my_models:nothing", "--input", "image:1x3x64x64", "--out", "arts"]) == 1
    assert "has no attribute 'nothing'" in _one_line(capsys)
    assert main(["onnx", "--model", "my_models:make", "--input", "image:1x3x64x64", "--out", "arts2"]) == 1
    assert "does not run on the given --input shapes" in _one_line(capsys)
