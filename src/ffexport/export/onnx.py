"""PyTorch -> ONNX with fixed opset, named IO and a dynamic batch axis, then a parity proof.

The TorchScript-based exporter is used: it behaves the same on torch 2.11 and
2.13 and needs no onnxscript.  The same model and inputs give a byte-identical
file (no timestamps or paths are written into the graph).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .._lazy import require
from ..errors import InputSpecError, ModelLoadError
from ..fsutil import atomic_path, check_overwrite, ensure_writable_dir, sha256_file, staging
from ..manifest import Manifest, artifact_dir, locked, new_record

FP32_ONNX = "fp32.onnx"
PRODUCER = "ffexport"


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's deprecation chatter for this call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*feature will be removed.*")
        yield


def opset_range() -> tuple[int, int]:
    """The opsets torch's TorchScript exporter (the one ffexport uses) can write."""
    try:
        from torch.onnx import _constants as c

        return int(c.ONNX_MIN_OPSET), int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", c.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):
        return 7, 20


def check_opset(opset) -> None:
    """One line, before any work, for an opset the exporter cannot write."""
    lo, hi = opset_range()
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise InputSpecError(f"opset {opset!r}: torch's exporter writes opsets {lo} to {hi}; pass --opset in that "
                             "range (default 17)")


def export_onnx(model, example_inputs: Sequence | Mapping, path: str | Path, *, input_names: Sequence[str],
                output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
                opset: int = 17, metadata: Mapping[str, str] | None = None, force: bool = True,
                io_shapes: Mapping[str, Sequence[int | str]] | None = None,
                last_initializer: tuple[str, object] | None = None) -> Path:
    """Export any ``torch.nn.Module`` to ``path`` (atomically).

    ``example_inputs`` is a tuple in forward order or a dict name -> tensor in
    ``input_names`` order.  ``dynamic_axes`` maps a tensor name to {axis: dim_name}.
    ``metadata`` lands in the model's metadata_props (ffexport records its spec
    key and IO contract there so later steps can check the contract).
    ``io_shapes`` (name -> dims, str for a symbolic dim) overrides the shapes the
    exporter inferred for graph inputs/outputs: the spec, not shape inference,
    owns the contract (the parity run then proves the real shapes match).
    ``last_initializer`` (name, tensor) is stored as the graph's last initializer, used by no node (the
    public inswapper layout keeps its source transform ``emap`` there).
    """
    torch = require("torch", "exporting to ONNX")
    onnx = require("onnx", "exporting to ONNX")
    check_opset(opset)
    path = Path(path)
    check_overwrite(path, force)
    if isinstance(example_inputs, Mapping):
        missing = [n for n in input_names if n not in example_inputs]
        if missing:
            raise InputSpecError(f"example inputs lack {missing}")
        args = tuple(example_inputs[n] for n in input_names)
    else:
        args = tuple(example_inputs)
    if len(args) != len(input_names):
        raise InputSpecError(f"{len(args)} example inputs for {len(input_names)} input names {list(input_names)}")
    model = model.eval()
    buf = io.BytesIO()
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(model, args, buf, dynamo=False, opset_version=opset, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dict(dynamic_axes or {}),
                              do_constant_folding=True)
    except Exception as exc:
        line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"torch.onnx.export failed for {type(model).__name__}: {line}") from exc
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = PRODUCER
    proto.producer_version = __import__("ffexport").__version__
    del proto.metadata_props[:]
    for k, v in sorted((metadata or {}).items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    if io_shapes:
        _stamp_shapes(proto, io_shapes)
    if last_initializer is not None:
        set_last_initializer(proto, last_initializer[0], last_initializer[1].detach().cpu().numpy())
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return path


def set_last_initializer(model, name: str, array) -> None:
    """Store ``array`` as ``model``'s last initializer ``name`` (replacing one of that name), used by no node."""
    numpy_helper = require("onnx.numpy_helper")
    inits = model.graph.initializer
    for i in range(len(inits) - 1, -1, -1):
        if inits[i].name == name:
            del inits[i]
    inits.append(numpy_helper.from_array(array, name))


def torch_tensor():
    return require("torch").Tensor


def _stamp_shapes(proto, io_shapes: Mapping[str, Sequence[int | str]]) -> None:
    for vi in (*proto.graph.input, *proto.graph.output):
        dims = io_shapes.get(vi.name)
        if dims is None:
            continue
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            entry = shape.dim.add()
            if isinstance(d, str):
                entry.dim_param = d
            else:
                entry.dim_value = int(d)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (without loading its weights)."""
    onnx = require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model: {type(exc).__name__}") from exc
    return {p.key: p.value for p in proto.metadata_props}


# ---------------------------------------------------------------------------------------------
# Registered modules
# ---------------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    path: Path
    record: dict
    skipped: bool = False


def parity_feeds(spec, faces=None, samples: int = 4, batch: int = 1, emap=None) -> tuple[list[dict], str]:
    """Real inputs for ``spec``: its preprocessing applied to face photographs.

    ``faces`` is a list of FaceImage (default: the built-in astronaut photograph
    and seeded augmentations of it).
    """
    from ..faces import builtin_faces, module_feeds

    label = "built-in faces (astronaut photograph + augmentations)"
    if faces is None:
        faces = builtin_faces()
    else:
        label = f"{len(faces)} face images"
    faces = list(faces)[: max(samples * batch, 1)]
    feeds = list(module_feeds(spec, faces, batch=batch, drop_last=True, emap=emap))
    return feeds, f"{label}, {len(feeds)} feeds of batch {batch}"


def export_module(spec, out: str | Path = "artifacts", *, checkpoint: str | Path | None = None,
                  batch: str | int = "dynamic", force: bool = False, seed: int = 0, samples: int = 4,
                  faces=None, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export a registered module to ``<out>/<module>/fp32.onnx`` with its parity record in the manifest (both
    committed together, under the folder's lock)."""
    from ..models import build_model

    say = progress or (lambda _m: None)
    folder = artifact_dir(out, spec)
    final = folder / FP32_ONNX
    check_overwrite(final, force)
    t0 = time.time()
    say(f"{spec.key}: building torch model")
    model = build_model(spec, checkpoint=checkpoint, seed=seed)  # a bad checkpoint fails before any folder is made
    made = not folder.exists()
    ensure_writable_dir(folder)
    try:
        with locked(folder, say):
            check_overwrite(final, force)  # again: another process may have written it while we waited
            manifest = Manifest.load(folder)  # a corrupt manifest fails here, before the export replaces anything
            return _export_locked(spec, model, folder, final, manifest, checkpoint=checkpoint, batch=batch,
                                  seed=seed, samples=samples, faces=faces, say=say, t0=t0)
    except BaseException:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # the folder this export made, left empty by its failure
        raise


def _export_locked(spec, model, folder: Path, final: Path, manifest, *, checkpoint, batch, seed, samples, faces, say,
                   t0) -> ExportResult:
    from ..backends.ort import OrtRunner
    from ..backends.torch import TorchRunner
    from .parity import check_parity

    dynamic = batch == "dynamic"
    nb = 1 if dynamic else int(batch)
    if nb < 1:
        raise InputSpecError(f"--batch must be 'dynamic' or a positive integer, got {batch}")
    emap = getattr(model, "emap", None) if spec.source_transform == "emap" else None
    feeds, inputs_label = parity_feeds(spec, faces, samples=samples, batch=nb, emap=emap)
    if not feeds:
        raise InputSpecError(f"{spec.key}: no real inputs could be built for the parity check")
    axes = spec.dynamic_axes
    if not dynamic:  # fixed batch: keep other dynamic axes (frame size), drop the batch one
        axes = {n: {i: d for i, d in a.items() if d != "batch"} for n, a in axes.items()}
        axes = {n: a for n, a in axes.items() if a}
    metadata = {"ffexport.spec": spec.key, "ffexport.contract": json.dumps(spec.contract(), sort_keys=True)}
    say(f"{spec.key}: exporting (opset {spec.opset}, batch {batch})")
    trained = checkpoint is not None or spec.pretrained
    with staging(final) as tmp:
        io_shapes = {t.name: tuple(nb if (d == "batch" and not dynamic) else d for d in t.shape)
                     for t in (*spec.inputs, *spec.outputs)}
        last = ("emap", model.emap) if spec.source_transform == "emap" else None
        if last is not None and not isinstance(getattr(model, "emap", None), torch_tensor()):
            raise ModelLoadError(f"{spec.key}: its spec says the source goes through emap, but the torch model "
                                 "has no emap buffer")
        export_onnx(model, feeds[0], tmp, input_names=spec.input_names, output_names=spec.output_names,
                    dynamic_axes=axes, opset=spec.opset, metadata=metadata, force=True, io_shapes=io_shapes,
                    last_initializer=last)
        say(f"{spec.key}: parity torch vs onnxruntime on {len(feeds)} real inputs")
        ref = TorchRunner(model, spec=spec, name="torch fp32")
        cand = OrtRunner(tmp, spec=spec, name=FP32_ONNX)
        with ref, cand:
            parity = check_parity(spec, ref.infer, cand.infer, feeds, precision="fp32", trained=trained,
                                  reference_label="torch fp32 (eager, CPU)",
                                  candidate_label=f"{FP32_ONNX} (onnxruntime CPU)", inputs_label=inputs_label)
        manifest.set_module(spec)
        ckpt = ({"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint)} if checkpoint
                else {"checkpoint": None,
                      "weights": f"seeded (seed {seed})" if not trained else "trained (package weights)"})
        key = {"spec": spec.key, "opset": spec.opset, "batch": str(batch), "seed": seed,
               "checkpoint_sha256": ckpt.get("checkpoint_sha256")}
        rec = new_record(tmp, name=final.name, pass_name="export", parent=None, started=t0, parity=parity,
                         inputs=ckpt, key=key,
                         options={"variant": spec.variant, "opset": spec.opset, "batch": str(batch),
                                  "dynamic_axes": {n: {str(i): d for i, d in a.items()} for n, a in axes.items()},
                                  "exporter": "torch.onnx.export (TorchScript)"},
                         io=spec.contract())
        manifest.commit(FP32_ONNX, tmp, rec)
    return ExportResult(final, rec)
