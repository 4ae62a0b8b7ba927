"""A Triton Inference Server model repository from the artifacts already built: ``ffexport triton``.

One model per module (``<repository>/<module>/config.pbtxt`` and ``1/model.onnx`` or ``1/model.plan``), its
inputs and outputs from the spec's IO contract checked against the artifact itself (the ONNX graph, or the
engine's build record), its data types from the artifact (an FP16 ONNX may keep FP32 IO or not), its batch
size from the module's TensorRT batch profile (``configs/<module>.yaml``), dynamic batching, one GPU instance
and a warm-up request.  The artifact is hard-linked into the repository where both lie on one filesystem, else
copied.

With the encoder and the generator in it, the repository also holds the part of the per-face chain Triton can
run without custom code (no Python backend, no BLS):

* ``identity_latent``: a small ONNX graph ffexport writes: the encoder's raw embedding -> the generator's
  ``source``, i.e. ``normalize(embedding)``, and for a generator whose spec says ``source_transform: emap`` (the
  inswapper layout) ``normalize(normalize(embedding) @ emap)``, ``emap`` read from the generator's own ONNX
  artifact.  The encoder's graph ends at the raw embedding and the generator's begins at the transformed latent:
  fed straight from one to the other, the generator would get the wrong identity;
* ``source_latent`` (ensemble): source face crop -> encoder -> identity_latent -> latent, once per source;
* ``face_swap`` (ensemble): source crop + target crop -> encoder -> identity_latent -> generator -> swapped crop.

Detection (decoding, NMS, the MTCNN cascade), the alignment warps and the paste-back stay with the client (or a
BLS model): see the README's "Serving with Triton".

The repository is built in a temporary folder beside it and renamed into place; an existing non-empty folder is
replaced only with ``force``, and only when ffexport wrote it (its ``.ffexport-triton.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .._lazy import require
from ..errors import ArtifactError, OutputExistsError, UnknownNameError
from ..manifest import Manifest, artifact_dir
from ..vocab import FP32_ONNX, PRECISION_ONNX, PRECISIONS, RUNNABLE_ONNX, SIM_ONNX, engine_name

TRITON_BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan"}
VERSION = "1"  # the one model version each model folder holds
MARKER = ".ffexport-triton.json"  # what ffexport wrote, and from which artifacts (Triton reads only folders)

LATENT_MODEL = "identity_latent"
SOURCE_ENSEMBLE = "source_latent"
SWAP_ENSEMBLE = "face_swap"
_NORM_EPS = 1e-12  # the pipeline's L2 normalisation: x / max(||x||, eps)

# Triton's data types for ONNX element types, TensorRT data types and spec dtypes
_ONNX_TYPES = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16", "DOUBLE": "TYPE_FP64",
               "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
               "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64",
               "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING"}
_TRT_TYPES = {"float": "TYPE_FP32", "half": "TYPE_FP16", "bf16": "TYPE_BF16", "int8": "TYPE_INT8",
              "int32": "TYPE_INT32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_SPEC_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
               "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
               "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_FLOATS = {"TYPE_FP32", "TYPE_FP16", "TYPE_BF16", "TYPE_FP64"}
_ONNX_OF = {"TYPE_FP32": "FLOAT", "TYPE_FP16": "FLOAT16", "TYPE_BF16": "BFLOAT16", "TYPE_FP64": "DOUBLE"}


@dataclass(frozen=True)
class Tensor:
    """One input or output as Triton sees it: ``dims`` has every axis (the batch axis included), -1 where
    dynamic; a batching model's config lists ``dims[1:]``."""

    name: str
    data_type: str  # TYPE_FP32, TYPE_FP16, ...
    dims: tuple[int, ...]


@dataclass
class Model:
    """One model of the repository and what it was made from."""

    name: str
    kind: str  # "module" | "latent" (the identity_latent graph) | "ensemble"
    platform: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int  # 0: the model does not batch (its dims are full shapes)
    config: str = ""  # the config.pbtxt text
    artifact: Path | None = None  # the artifact served (a module)
    spec_key: str | None = None
    precision: str | None = None  # the artifact's precision (a module runs FP32 where it has nothing to quantise)
    file: Path | None = None  # where it lies in the repository, once written
    placed: str = ""  # "hard link" | "copy" | "written" | "" (an ensemble has no file)
    preferred: tuple[int, ...] = ()  # dynamic batching's preferred batch sizes
    # input name -> {min, opt, max} shapes: the engine's optimization profile, or for an ONNX the one the trt pass
    # would build (its opt shapes are the warm-up's; at FP16 the onnxruntime TensorRT accelerator gets it)
    profile: dict | None = None
    steps: list = field(default_factory=list)  # an ensemble's (model, {its input: tensor}, {its output: tensor})
    notes: list[str] = field(default_factory=list)
    payload: bytes | None = field(default=None, repr=False)  # the identity_latent graph
    extra_files: tuple[str, ...] = field(default=(), repr=False)  # external-data files beside the ONNX artifact


@dataclass
class Repository:
    path: Path
    backend: str
    precision: str
    models: list[Model]
    notes: list[str] = field(default_factory=list)

    def model(self, name: str) -> Model:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------

def write_repository(repository: str | Path, *, out: str | Path = "artifacts", precision: str = "fp16",
                     backend: str = "onnxruntime", modules: str | Sequence[str] = "all", config_dir=None,
                     force: bool = False) -> Repository:
    """Write a Triton model repository at ``repository`` from the artifacts under ``out`` and return it.

    ``modules``: "all", "a,b" or a list of module names (each at the variant ``configs/`` names).  Every
    artifact must exist already: a missing one is one :class:`ArtifactError` line naming the files and the
    command that builds them, and nothing is written.  ``backend`` "tensorrt" serves the
    ``<precision>.tensorrt.engine`` files (TensorRT-RTX engines cannot be loaded by Triton's TensorRT backend
    and are refused).  An existing non-empty ``repository`` is replaced only with ``force`` and only when
    ffexport wrote it.
    """
    repo = Path(repository)
    _check_names(precision, backend)
    _check_destination(repo, force)
    plan = plan_repository(out=out, precision=precision, backend=backend, modules=modules, config_dir=config_dir)
    plan.path = repo
    _write(plan, Path(out))
    return plan


def plan_repository(*, out: str | Path = "artifacts", precision: str = "fp16", backend: str = "onnxruntime",
                    modules: str | Sequence[str] = "all", config_dir=None) -> Repository:
    """Everything :func:`write_repository` would write, read and checked from the artifacts, nothing written."""
    from .. import specs
    from ..config import resolve_spec

    _check_names(precision, backend)
    names = specs.resolve_modules(modules) if isinstance(modules, str) else [
        n for m in modules for n in specs.resolve_modules(m)]
    if not names:
        raise UnknownNameError("module", "", specs.modules())
    chosen = [resolve_spec(n, None, None, config_dir) for n in dict.fromkeys(names)]
    out = Path(out)
    found, missing, rtx = {}, [], []
    for spec in chosen:
        path, problem = _find_artifact(spec, precision, backend, out)
        if problem == "missing":
            missing.append((spec, path))
        elif problem == "rtx":
            rtx.append((spec, path))
        else:
            found[spec.module] = (spec, path)
    if missing or rtx:
        raise ArtifactError(_missing_line(missing, rtx, precision, backend, out, config_dir))
    models = [_module_model(spec, spec.stage_precision(precision), backend, path, out, config_dir)
              for spec, path in found.values()]
    repo = Repository(Path(), backend, precision, models)
    repo.models += _chain(found, {m.name: m for m in models}, backend, repo.notes)
    for m in repo.models:
        m.config = config_text(m, backend=backend)
    return repo


def _check_names(precision: str, backend: str) -> None:
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    if backend not in TRITON_BACKENDS:
        raise UnknownNameError("Triton backend", backend, TRITON_BACKENDS)


# ---------------------------------------------------------------------------------------------
# Finding and reading the artifacts
# ---------------------------------------------------------------------------------------------

def _find_artifact(spec, precision: str, backend: str, out: Path) -> tuple[Path, str]:
    """(the artifact, "") or (the file wanted, "missing" | "rtx")."""
    folder = artifact_dir(out, spec)
    p = spec.stage_precision(precision)
    if backend == "onnxruntime":
        for name in RUNNABLE_ONNX[p]:
            if (folder / name).is_file():
                return folder / name, ""
        return folder / PRECISION_ONNX[p], "missing"
    want = folder / engine_name(p, "tensorrt")
    if want.is_file():
        return want, ""
    rtx = folder / engine_name(p, "tensorrt_rtx")
    return (rtx, "rtx") if rtx.is_file() else (want, "missing")


def _missing_line(missing, rtx, precision: str, backend: str, out: Path, config_dir) -> str:
    """One line: every file missing (or built by TensorRT-RTX) and the one command that builds them all."""
    def command(pairs) -> str:
        mods = ",".join(dict.fromkeys(s.module for s, _ in pairs))
        tail = (f" --out {out}" if out != Path("artifacts") else "") + (
            f" --config-dir {config_dir}" if config_dir else "")
        if backend == "onnxruntime":
            return f"`ffexport optimize --module {mods} --precision {precision}{tail}`"
        return (f"`ffexport trt --module {mods} --precision {precision}{tail} --flavor tensorrt` on a GPU like the "
                "serving one, with the TensorRT version of the tritonserver image")

    parts = []
    if missing:
        files = ", ".join(str(p) for _, p in missing)
        parts.append(f"missing {files}: build {'it' if len(missing) == 1 else 'them'} with {command(missing)}")
    if rtx:
        files = ", ".join(str(p) for _, p in rtx)
        parts.append(f"{files} {'was' if len(rtx) == 1 else 'were'} built by TensorRT-RTX, whose engines Triton's "
                     f"TensorRT backend cannot load: build TensorRT engines with {command(rtx)}, or serve the ONNX "
                     "artifacts with --backend onnxruntime")
    return "; ".join(parts)


def _onnx_graph_io(path: Path):
    """(inputs, outputs, the model proto) of an ONNX file; each tensor (name, Triton type, dims with int,
    str or None per axis); weights stay on disk when the file keeps them outside."""
    onnx = require("onnx", "reading ONNX artifacts")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(exc).__name__}): rebuild it") from None
    inits = {i.name for i in model.graph.initializer}

    def one(v):
        tt = v.type.tensor_type
        kind = onnx.TensorProto.DataType.Name(tt.elem_type)
        if kind not in _ONNX_TYPES:
            raise ArtifactError(f"{path}: {v.name} is {kind}, which Triton has no data type for")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                for d in tt.shape.dim]
        return v.name, _ONNX_TYPES[kind], dims

    return ([one(v) for v in model.graph.input if v.name not in inits], [one(v) for v in model.graph.output],
            model)


def _external_files(model) -> tuple[str, ...]:
    """The external-data files an ONNX model's initializers point at (relative to the model)."""
    names = []
    for t in model.graph.initializer:
        if t.data_location == 1:  # TensorProto.EXTERNAL
            names += [e.value for e in t.external_data if e.key == "location"]
    return tuple(dict.fromkeys(names))


def _engine_io(spec, path: Path, precision: str):
    """(inputs, outputs, record) of a TensorRT engine from its build record in the folder's manifest, after
    checking that the record describes this very file and that TensorRT (not TensorRT-RTX) built it."""
    from ..fsutil import sha256_file

    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"ftrt":
        what = "a TensorRT-RTX engine" if magic == b"vtrt" else "no TensorRT engine"
        raise ArtifactError(f"{path} is {what}: build it with `ffexport trt --module {spec.module} --precision "
                            f"{precision} --flavor tensorrt`")
    rec = Manifest.load(path.parent).get(path.name)
    if not rec or not (rec.get("io") or {}).get("inputs"):
        raise ArtifactError(f"{path} has no build record in {path.parent / 'manifest.json'}: rebuild it with "
                            f"`ffexport trt --module {spec.module} --precision {precision} --flavor tensorrt --force`")
    if rec.get("sha256") != sha256_file(path):
        raise ArtifactError(f"{path} changed since its build record: rebuild it with `ffexport trt --module "
                            f"{spec.module} --precision {precision} --flavor tensorrt --force`")

    def one(t):
        kind = str(t.get("dtype", "")).lower()
        if kind not in _TRT_TYPES:
            raise ArtifactError(f"{path}: {t['name']} is {kind}, which Triton has no data type for")
        return t["name"], _TRT_TYPES[kind], [d if d >= 0 else None for d in t["shape"]]

    return [one(t) for t in rec["io"]["inputs"]], [one(t) for t in rec["io"].get("outputs", [])], rec


def _tensors(spec_tensors, file_tensors, path: Path, what: str) -> tuple[Tensor, ...]:
    """The spec's tensors checked against the file's: the same names in the same order, the same rank, fixed
    sizes that agree; the data type is the file's (a float spec may be served as FP16)."""
    want = [t.name for t in spec_tensors]
    have = [t[0] for t in file_tensors]
    if want != have:
        raise ArtifactError(f"{path}: its {what} {have} are not the spec's {want}: rebuild the artifact")
    out = []
    for t, (name, kind, dims) in zip(spec_tensors, file_tensors):
        spec_kind = _SPEC_TYPES.get(t.dtype, "")
        if kind != spec_kind and not (kind in _FLOATS and spec_kind in _FLOATS):
            raise ArtifactError(f"{path}: {name} is {kind}, the spec says {t.dtype}")
        if len(dims) != len(t.shape):
            raise ArtifactError(f"{path}: {name} has {len(dims)} axes, the spec says {len(t.shape)} ({list(t.shape)})")
        merged = []
        for axis, (s, d) in enumerate(zip(t.shape, dims)):
            if isinstance(s, int) and isinstance(d, int) and s != d:
                raise ArtifactError(f"{path}: {name} axis {axis} is {d}, the spec says {s}")
            merged.append(s if isinstance(s, int) else d if isinstance(d, int) else -1)
        out.append(Tensor(name, kind, tuple(merged)))
    return tuple(out)


def _batching(spec, inputs, outputs) -> bool:
    """True when every input and output has the spec's batch axis first and the artifact keeps it dynamic: only
    then can Triton batch (and split) requests.  A detector whose outputs are (batch x anchors, k) rows, or an
    artifact exported with a fixed batch, is served with max_batch_size 0 and full shapes."""
    return (all(t.has_batch for t in (*spec.inputs, *spec.outputs))
            and all(t.dims and t.dims[0] == -1 for t in (*inputs, *outputs)))


def _module_model(spec, precision: str, backend: str, path: Path, out: Path, config_dir) -> Model:
    from ..passes.trt import resolve_profile
    from ..errors import InputSpecError
    from .engines import trt_options

    notes: list[str] = []
    extra: tuple[str, ...] = ()
    if backend == "onnxruntime":
        ins, outs, proto = _onnx_graph_io(path)
        extra = _external_files(proto)
        meta = {p.key: p.value for p in proto.metadata_props}
        if meta.get("ffexport.spec") and meta["ffexport.spec"] != spec.key:
            raise ArtifactError(f"{path} was made for {meta['ffexport.spec']}, not {spec.key}: rebuild it")
        opts = trt_options(spec, config_dir, out=out)
        batch = tuple(opts.batch) or tuple(spec.batch_profile)
        try:
            profile = resolve_profile({n: d for n, _, d in ins}, batch=batch, dims=dict(opts.dims), spec=spec)[0]
        except InputSpecError as exc:  # a dynamic axis without a range: no profile, no warm-up
            profile = None
            notes.append(f"no warm-up ({exc})")
    else:
        ins, outs, rec = _engine_io(spec, path, precision)
        batch = tuple((rec.get("options") or {}).get("batch") or spec.batch_profile)
        profile = rec.get("profile") or {}
        notes.append(f"engine built by TensorRT {rec.get('trt_version', '?')} for compute capability "
                     f"{','.join(rec.get('target_cc') or ['?'])}: serve it with a tritonserver image of that TensorRT "
                     "version on such a GPU")
    inputs = _tensors(spec.inputs, ins, path, "inputs")
    outputs = _tensors(spec.outputs, outs, path, "outputs")
    if profile is not None and not profile:  # every axis fixed: the shapes are the profile
        profile = {t.name: {"min": list(t.dims), "opt": list(t.dims), "max": list(t.dims)} for t in inputs}
    batched = _batching(spec, inputs, outputs)
    _, opt, hi = (int(v) for v in batch)
    model = Model(name=spec.module, kind="module", platform=PLATFORMS[backend], inputs=inputs, outputs=outputs,
                  max_batch_size=hi if batched else 0, artifact=path, spec_key=spec.key, precision=precision,
                  preferred=tuple(sorted({opt, hi} - {1})) if batched else (), profile=profile, notes=notes,
                  extra_files=extra)
    if not batched:
        why = ("its outputs have no batch axis of their own" if not all(t.has_batch for t in spec.outputs)
               else "its batch axis is fixed")
        notes.append(f"max_batch_size 0 ({why}): requests carry full shapes and are not batched by Triton")
    return model


# ---------------------------------------------------------------------------------------------
# The encoder -> generator chain
# ---------------------------------------------------------------------------------------------

def _chain(found: Mapping, models: Mapping[str, Model], backend: str, notes: list[str]) -> list[Model]:
    """identity_latent and the two ensembles, when the encoder and the generator are both served and batch."""
    if "encoder" not in models or "generator" not in models:
        if "encoder" in models or "generator" in models:
            notes.append("no ensembles: they need both the encoder and the generator")
        return []
    enc, gen = models["encoder"], models["generator"]
    gen_spec = found["generator"][0]
    if not (enc.max_batch_size and gen.max_batch_size):
        notes.append("no ensembles: the encoder and the generator must both batch (a dynamic batch axis)")
        return []
    embedding = enc.outputs[0]
    target, source = gen.inputs[0], gen.inputs[1]
    if embedding.dims[1:] != source.dims[1:] or len(source.dims) != 2:
        notes.append(f"no ensembles: the encoder's {embedding.name} {list(embedding.dims[1:])} does not fit the "
                     f"generator's {source.name} {list(source.dims[1:])}")
        return []
    n = source.dims[1]
    emap = _emap(gen_spec, found["generator"][1], n) if gen_spec.source_transform == "emap" else None
    batch = min(enc.max_batch_size, gen.max_batch_size)
    latent = Model(LATENT_MODEL, "latent", PLATFORMS["onnxruntime"],
                   (Tensor("embedding", embedding.data_type, (-1, n)),),
                   (Tensor("latent", source.data_type, (-1, n)),), batch, placed="written",
                   notes=[("normalize(normalize(embedding) @ emap), emap from the generator's ONNX" if emap is not None
                           else "normalize(embedding)") + f" in FP32 ({gen_spec.key}'s source)"])
    latent.payload = latent_graph(n, emap, _ONNX_OF.get(embedding.data_type, "FLOAT"),
                                   _ONNX_OF.get(source.data_type, "FLOAT"))
    src_in = Tensor("source_crop", enc.inputs[0].data_type, enc.inputs[0].dims)
    encode = (enc.name, {enc.inputs[0].name: "source_crop"}, {embedding.name: "embedding"})
    source_ens = Model(SOURCE_ENSEMBLE, "ensemble", "ensemble", (src_in,),
                       (Tensor("latent", source.data_type, (-1, n)),), batch,
                       steps=[encode, (LATENT_MODEL, {"embedding": "embedding"}, {"latent": "latent"})],
                       notes=["source face crop -> the generator's source latent: once per source identity"])
    swap = Model(SWAP_ENSEMBLE, "ensemble", "ensemble",
                 (src_in, Tensor("target_crop", target.data_type, target.dims)),
                 (Tensor("swapped_crop", gen.outputs[0].data_type, gen.outputs[0].dims),), batch,
                 steps=[encode, (LATENT_MODEL, {"embedding": "embedding"}, {"latent": "latent"}),
                        (gen.name, {target.name: "target_crop", source.name: "latent"},
                         {gen.outputs[0].name: "swapped_crop"})],
                 notes=["source crop + target crop -> swapped crop (encoder, identity_latent, generator)"])
    if backend == "tensorrt":
        latent.notes.append("served by the onnxruntime backend (a few vector operations)")
    return [latent, source_ens, swap]


def _emap(spec, artifact: Path, n: int):
    """The generator's source transform: the unused last initializer of its ONNX (the served one, or for an
    engine the ONNX it was built from, then the FP32 ones)."""
    numpy_helper = require("onnx.numpy_helper")
    onnx = require("onnx")
    folder = artifact.parent
    candidates = [artifact] if artifact.suffix == ".onnx" else []
    rec = Manifest.load(folder).get(artifact.name) or {}
    parent = (rec.get("parent") or {}).get("file")
    candidates += [folder / f for f in (parent, SIM_ONNX, FP32_ONNX) if f and (folder / f).is_file()]
    for path in dict.fromkeys(candidates):
        model = onnx.load(str(path), load_external_data=False)
        if not model.graph.initializer:
            continue
        last = model.graph.initializer[-1]
        used = {i for node in model.graph.node for i in node.input}
        if last.name in used:
            continue
        arr = numpy_helper.to_array(last, base_dir=str(folder)).astype("float32")
        if arr.shape == (n, n):
            return arr
    raise ArtifactError(f"{spec.key}: its source goes through emap, but none of {[str(c) for c in candidates]} "
                        f"ends with an unused {n}x{n} initializer: re-export it with `ffexport optimize --module "
                        f"{spec.module} --force`")


def latent_graph(n: int, emap=None, in_type: str = "FLOAT", out_type: str = "FLOAT", opset: int = 17) -> bytes:
    """The identity_latent ONNX graph: ``embedding`` (batch x n) -> ``latent`` = normalize(embedding), then
    with ``emap`` normalize(latent @ emap); FP32 inside, ``in_type`` / ``out_type`` (ONNX type names) outside.
    normalize(x) is x / max(||x||, 1e-12), as the pipeline computes it."""
    onnx = require("onnx", "writing the identity_latent graph")
    np = require("numpy")
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [h.make_node("Cast", ["embedding"], ["x0"], to=tp.FLOAT)]
    inits = [onnx.numpy_helper.from_array(np.array(_NORM_EPS, dtype=np.float32), "eps")]

    def normalize(x: str, y: str, tag: str) -> None:
        nodes.extend([h.make_node("ReduceL2", [x], [f"norm{tag}"], axes=[1], keepdims=1),
                      h.make_node("Max", [f"norm{tag}", "eps"], [f"clamped{tag}"]),
                      h.make_node("Div", [x, f"clamped{tag}"], [y])])

    normalize("x0", "unit", "0")
    last = "unit"
    if emap is not None:
        inits.append(onnx.numpy_helper.from_array(np.asarray(emap, dtype=np.float32), "emap"))
        nodes.append(h.make_node("MatMul", ["unit", "emap"], ["mapped"]))
        normalize("mapped", "unit1", "1")
        last = "unit1"
    nodes.append(h.make_node("Cast", [last], ["latent"], to=getattr(tp, out_type)))
    graph = h.make_graph(nodes, LATENT_MODEL,
                         [h.make_tensor_value_info("embedding", getattr(tp, in_type), ["batch", n])],
                         [h.make_tensor_value_info("latent", getattr(tp, out_type), ["batch", n])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="ffexport")
    model.ir_version = min(model.ir_version, 8)  # readable by every onnxruntime a tritonserver image ships
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---------------------------------------------------------------------------------------------
# config.pbtxt
# ---------------------------------------------------------------------------------------------

class _Enum(str):
    """A protobuf enum value: written bare."""


class _Msg(list):
    """A protobuf message: (field, value) pairs in order; a field may repeat."""


def _scalar(v) -> str:
    if isinstance(v, _Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=True)


def _text(msg: _Msg, depth: int = 0) -> list[str]:
    pad, lines = "  " * depth, []
    for key, value in msg:
        if isinstance(value, _Msg):
            lines += [f"{pad}{key} {{", *_text(value, depth + 1), f"{pad}}}"]
        elif isinstance(value, list):  # a repeated message field
            for item in value:
                lines += [f"{pad}{key} {{", *_text(item, depth + 1), f"{pad}}}"]
        elif isinstance(value, tuple):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def _io(t: Tensor, batched: bool) -> _Msg:
    dims = t.dims[1:] if batched else t.dims
    msg = _Msg([("name", t.name), ("data_type", _Enum(t.data_type)), ("dims", tuple(dims) or (1,))])
    if not dims:  # a batch of scalars: Triton wants one dim, the model none
        msg.append(("reshape", _Msg([("shape", ())])))
    return msg


def _shapes(profile: Mapping, key: str) -> str:
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in p[key])}" for name, p in profile.items())


def _warmup(m: Model) -> list[_Msg]:
    """A warm-up request per batch size (1 and the largest; a model that does not batch: one, of the full opt
    shape) at the profile's opt shape, random data (Triton skips a warm-up of batch size 0)."""
    profile = m.profile
    if not profile or any(t.name not in profile for t in m.inputs):
        return []
    batched = m.max_batch_size > 0
    sizes = sorted({1, m.max_batch_size}) if batched else [1]
    out = []
    for b in sizes:
        inputs = []
        for t in m.inputs:
            shape = [int(d) for d in profile[t.name]["opt"]]
            dims = tuple(shape[1:] if batched else shape) or (1,)
            data = ("random_data", True) if t.data_type in _FLOATS else ("zero_data", True)
            inputs.append(_Msg([("key", t.name), ("value", _Msg([("data_type", _Enum(t.data_type)), ("dims", dims),
                                                                 data]))]))
        label = f"{m.name} batch {b}" if batched else f"{m.name} at the opt shapes"
        out.append(_Msg([("name", label), ("batch_size", b), ("count", 1),
                         ("inputs", inputs)]))
    return out


def config_text(m: Model, *, backend: str = "onnxruntime") -> str:
    """The config.pbtxt of ``m`` (Triton's ModelConfig in protobuf text format)."""
    from .. import __version__

    batched = m.max_batch_size > 0
    head = [f"# written by ffexport {__version__} (`ffexport triton`)"]
    if m.artifact is not None:
        head.append(f"# from {m.artifact} ({m.spec_key}, {m.precision})")
    head += [f"# {note}" for note in m.notes]
    msg = _Msg([("name", m.name), ("platform", m.platform), ("max_batch_size", m.max_batch_size),
                ("input", [_io(t, batched) for t in m.inputs]), ("output", [_io(t, batched) for t in m.outputs])])
    if m.kind == "ensemble":
        steps = [_Msg([("model_name", name), ("model_version", -1),
                       ("input_map", [_Msg([("key", k), ("value", v)]) for k, v in ins.items()]),
                       ("output_map", [_Msg([("key", k), ("value", v)]) for k, v in outs.items()])])
                 for name, ins, outs in m.steps]
        msg.append(("ensemble_scheduling", _Msg([("step", steps)])))
        return "\n".join(head + _text(msg)) + "\n"
    if batched:
        dyn = _Msg([("preferred_batch_size", m.preferred)] if m.preferred else [])
        dyn.append(("max_queue_delay_microseconds", 100))
        msg.append(("dynamic_batching", dyn))
    msg.append(("instance_group", [_Msg([("count", 1), ("kind", _Enum("KIND_GPU"))])]))
    if m.kind == "module" and backend == "onnxruntime" and m.precision == "fp16":
        params = [("precision_mode", "FP16")]
        dynamic = {t.name: m.profile[t.name] for t in m.inputs if -1 in t.dims and t.name in (m.profile or {})}
        if dynamic:  # one TensorRT engine for the module's whole batch (and frame size) range, built at load
            params += [(f"trt_profile_{k}_shapes", _shapes(dynamic, k)) for k in ("min", "opt", "max")]
        acc = _Msg([("name", "tensorrt"), ("parameters", [_Msg([("key", k), ("value", v)]) for k, v in params])])
        msg.append(("optimization", _Msg([("execution_accelerators",
                                           _Msg([("gpu_execution_accelerator", [acc])]))])))
    warm = _warmup(m)
    if warm:
        msg.append(("model_warmup", warm))
    return "\n".join(head + _text(msg)) + "\n"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _check_destination(repo: Path, force: bool) -> None:
    if repo.exists() and not repo.is_dir():
        raise OutputExistsError(f"{repo} is a file, not a folder: choose another --repository")
    if repo.is_dir() and any(repo.iterdir()):
        if not force:
            raise OutputExistsError(f"{repo} is not empty: pass --force to replace it (its content is removed), "
                                    "or choose another --repository")
        if not (repo / MARKER).is_file():
            raise OutputExistsError(f"{repo} was not written by `ffexport triton` (no {MARKER} in it): --force "
                                    "replaces only a repository ffexport wrote; remove it yourself or choose another")


def _place(src: Path, dst: Path) -> str:
    """Hard-link ``src`` at ``dst`` (one filesystem), else copy it."""
    try:
        os.link(src, dst)
        return "hard link"
    except OSError:
        shutil.copyfile(src, dst)
        return "copy"


def _write(repo: Repository, out: Path) -> None:
    from ..fsutil import current_umask, ensure_writable_dir

    final = repo.path
    parent = ensure_writable_dir(Path(os.path.abspath(final)).parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        for m in repo.models:
            version = tmp / m.name / VERSION
            version.mkdir(parents=True)  # an ensemble too: Triton wants its version folder
            (tmp / m.name / "config.pbtxt").write_text(m.config)
            if m.kind == "module":
                name = MODEL_FILES["onnxruntime" if m.platform == PLATFORMS["onnxruntime"] else "tensorrt"]
                m.placed = _place(m.artifact, version / name)
                for extra in m.extra_files:
                    (version / extra).parent.mkdir(parents=True, exist_ok=True)
                    _place(m.artifact.parent / extra, version / extra)
                m.file = final / m.name / VERSION / name
            elif m.payload is not None:
                (version / MODEL_FILES["onnxruntime"]).write_bytes(m.payload)
                m.file = final / m.name / VERSION / MODEL_FILES["onnxruntime"]
        (tmp / MARKER).write_text(json.dumps(_marker(repo, out), indent=2) + "\n")
        _swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an old ``final`` is moved aside first and removed once the new one is there."""
    if not final.exists():
        os.rename(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=tmp.parent))
    os.rmdir(old)
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _marker(repo: Repository, out: Path) -> dict:
    from .. import __version__

    models = {}
    for m in repo.models:
        rec = {"kind": m.kind, "platform": m.platform, "max_batch_size": m.max_batch_size}
        if m.artifact is not None:
            mrec = Manifest.load(m.artifact.parent).get(m.artifact.name) or {}
            rec.update(spec=m.spec_key, precision=m.precision, artifact=str(m.artifact), placed=m.placed,
                       sha256=mrec.get("sha256"))
        models[m.name] = rec
    return {"ffexport": __version__, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "backend": repo.backend, "precision": repo.precision, "artifacts": str(out), "models": models,
            "notes": repo.notes}
