"""Bring your own model: export any ``torch.nn.Module`` factory with explicit input specs.

``--model package.module:factory`` names a callable that returns the module;
``--input name:1x3x112x112[:float32]`` gives each input.  The parity check
is the same raw-tensor check the registered modules fall back to: inputs of
image shape (N, 3, H, W) are real photographs scaled to [-1, 1], others are
seeded normal noise (the record says which).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .._lazy import require
from ..errors import InputSpecError
from ..fsutil import check_overwrite, ensure_writable_dir, staging
from ..manifest import Manifest, locked, new_record
from ..specs.base import BATCH, ModuleSpec, TensorSpec, gates
from .onnx import FP32_ONNX, export_onnx
from .parity import check_parity

_DTYPES = ("float32", "float16", "int64", "int32")
# ASCII digits only (\d would take any script's), at most 9 per dimension (int() refuses thousands)
_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.\-]*):(?P<shape>[0-9]{1,9}(?:x[0-9]{1,9})*)(?::(?P<dtype>\w+))?$")
BYO_GATES = {"fp32": gates(("rel_err", "<=", 1e-4),), "fp16": gates(("rel_err", "<=", 1e-2),),
             "int8": gates(("rel_err", "<=", 0.1),)}


@dataclass(frozen=True)
class InputArg:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


def parse_input_spec(text: str) -> InputArg:
    """``name:1x3x112x112`` or ``name:1x3x112x112:float16``."""
    m = _SPEC_RE.match(text.strip())
    if not m:
        raise InputSpecError(f"bad --input {text!r}: expected name:DIMxDIMx... such as input:1x3x112x112 "
                             "(optionally :float32|float16|int64|int32)")
    dtype = m["dtype"] or "float32"
    if dtype not in _DTYPES:
        raise InputSpecError(f"bad --input {text!r}: dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    shape = tuple(int(d) for d in m["shape"].split("x"))
    if any(d == 0 for d in shape):
        raise InputSpecError(f"bad --input {text!r}: dimensions must be positive")
    return InputArg(m["name"], shape, dtype)


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def load_factory(ref: str):
    """Import ``package.module:factory`` and call it; it must return a torch.nn.Module."""
    torch = require("torch")
    if ":" not in ref:
        raise InputSpecError(f"bad --model {ref!r}: expected package.module:factory")
    mod_name, attr = ref.split(":", 1)
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current folder's modules are importable
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputSpecError(f"--model {ref}: cannot import {mod_name} ({exc})") from exc
    except SyntaxError as exc:
        raise InputSpecError(f"--model {ref}: {mod_name} has a syntax error ({Path(exc.filename or '?').name}, line "
                             f"{exc.lineno}: {exc.msg}); fix the file and run again") from exc
    except Exception as exc:  # the module's own code failed while importing
        raise InputSpecError(f"--model {ref}: importing {mod_name} raised {_said(exc)}") from exc
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputSpecError(f"--model {ref}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    try:
        model = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    except Exception as exc:  # the user's factory failed: its own message, one line
        raise InputSpecError(f"--model {ref}: the factory raised {_said(exc)}") from exc
    if not isinstance(model, torch.nn.Module):
        raise InputSpecError(f"--model {ref}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def byo_spec(name: str, inputs: list[InputArg], output_names: list[str], dynamic_batch: bool) -> ModuleSpec:
    def dims(shape):
        return (BATCH, *shape[1:]) if dynamic_batch else tuple(shape)

    ins = tuple(TensorSpec(i.name, dims(i.shape), i.dtype, example={BATCH: i.shape[0]}) for i in inputs)
    outs = tuple(TensorSpec(n, (BATCH,) if dynamic_batch else ()) for n in output_names)
    return ModuleSpec(module=name, variant="byo", summary="bring-your-own model", inputs=ins, outputs=outs,
                      builder="", task="raw", gates=BYO_GATES, fallback_gates=BYO_GATES)


def _example(inp: InputArg, index: int):
    """A real photograph for image-shaped float inputs, seeded noise otherwise."""
    torch = require("torch")
    g = torch.Generator().manual_seed(1234 + index)
    if inp.dtype.startswith("int"):
        return torch.randint(0, 8, inp.shape, generator=g, dtype=getattr(torch, inp.dtype)), "seeded integers"
    if len(inp.shape) == 4 and inp.shape[1] == 3 and min(inp.shape[2:]) >= 16:
        from ..faces import builtin_faces

        faces = builtin_faces()
        imgs = []
        for b in range(inp.shape[0]):
            rgb = faces[(index + b) % len(faces)].rgb
            t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
            t = torch.nn.functional.interpolate(t, size=inp.shape[2:], mode="bilinear", align_corners=False)
            imgs.append(t / 127.5 - 1.0)
        return torch.cat(imgs).to(getattr(torch, inp.dtype)), "face photographs scaled to [-1, 1]"
    return torch.randn(inp.shape, generator=g).to(getattr(torch, inp.dtype)), "seeded normal noise"


def export_byo(model_ref: str, input_specs: list[str], *, out: str | Path = "artifacts", name: str | None = None,
               output_names: list[str] | None = None, dynamic_batch: bool = True, opset: int = 17,
               force: bool = False, samples: int = 3) -> tuple[Path, dict]:
    """Export a user's model factory to ``<out>/<name>/fp32.onnx`` with a parity record."""
    torch = require("torch")
    if not input_specs:
        raise InputSpecError("--model needs at least one --input name:DIMxDIM... spec")
    inputs = [parse_input_spec(s) for s in input_specs]
    if len({i.name for i in inputs}) != len(inputs):
        raise InputSpecError("--input names must be unique")
    model = load_factory(model_ref)
    name = name or model_ref.split(":")[-1].split(".")[-1]
    folder = ensure_writable_dir(Path(out) / name)
    final = folder / FP32_ONNX
    check_overwrite(final, force)
    t0 = time.time()

    feeds, kinds = [], {}
    for s in range(samples):
        feed = {}
        for i, inp in enumerate(inputs):
            feed[inp.name], kinds[inp.name] = _example(inp, s * len(inputs) + i)
        feeds.append(feed)
    try:
        with torch.no_grad():
            probe = model(*[feeds[0][i.name] for i in inputs])
    except Exception as exc:
        raise InputSpecError(f"--model {model_ref} does not run on the given --input shapes: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    n_out = 1 if isinstance(probe, torch.Tensor) else len(probe)
    output_names = output_names or (["output"] if n_out == 1 else [f"output_{k}" for k in range(n_out)])
    if len(output_names) != n_out:
        raise InputSpecError(f"--output-names gives {len(output_names)} names but the model returns {n_out} outputs")
    spec = byo_spec(name, inputs, output_names, dynamic_batch)
    axes = {t.name: {0: BATCH} for t in (*spec.inputs, *spec.outputs)} if dynamic_batch else {}
    meta = {"ffexport.spec": f"{name}/byo", "ffexport.contract": json.dumps(spec.contract(), sort_keys=True),
            "ffexport.model": model_ref}

    from ..backends.ort import OrtRunner
    from ..backends.torch import TorchRunner

    with locked(folder), staging(final) as tmp:
        check_overwrite(final, force)  # again: another process may have written it while we waited
        manifest = Manifest.load(folder)  # a corrupt manifest fails here, before anything is replaced
        export_onnx(model, feeds[0], tmp, input_names=[i.name for i in inputs], output_names=output_names,
                    dynamic_axes=axes, opset=opset, metadata=meta, force=True)
        ref = TorchRunner(model, spec=spec, name="torch fp32")
        cand = OrtRunner(tmp, spec=spec, name=FP32_ONNX)
        with ref, cand:
            parity = check_parity(spec, ref.infer, cand.infer, feeds, precision="fp32",
                                  reference_label="torch fp32 (eager, CPU)",
                                  candidate_label=f"{FP32_ONNX} (onnxruntime CPU)",
                                  inputs_label="; ".join(f"{k}: {v}" for k, v in kinds.items()))
        manifest.data.update({"module": name, "variant": "byo", "contract": spec.contract(), "model": model_ref})
        rec = new_record(tmp, name=final.name, pass_name="export", parent=None, started=t0, parity=parity,
                         inputs={"model": model_ref},
                         key={"model": model_ref, "inputs": input_specs, "opset": opset,
                              "dynamic_batch": dynamic_batch},
                         options={"opset": opset, "dynamic_batch": dynamic_batch,
                                  "inputs": [f"{i.name}:{'x'.join(map(str, i.shape))}:{i.dtype}" for i in inputs],
                                  "outputs": output_names, "exporter": "torch.onnx.export (TorchScript)"})
        manifest.commit(FP32_ONNX, tmp, rec)
    return final, rec
