"""Small ONNX graph helpers shared by the passes: loading with one-line errors, op counts,
IO checks, metadata, and running a model with its intermediate tensors exposed."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from .._lazy import require
from ..errors import ModelLoadError

FP16_MAX = 65504.0
_KEEP_META_PREFIX = "ffexport."


def load(path: str | Path):
    """The ModelProto of ``path``; a one-line :class:`ModelLoadError` when it is not a readable ONNX model."""
    onnx = require("onnx", "reading ONNX models")
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"ONNX model {p} does not exist or is not a file")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError, truncated files, external data missing...
        raise ModelLoadError(f"{p} is not a readable ONNX model ({type(exc).__name__}): "
                             "pass an .onnx file written by torch.onnx.export or `ffexport onnx`") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{p} holds no graph nodes: pass a real ONNX model")
    return model


def last_initializer(model, name: str | None = None):
    """The array of ``model``'s last initializer when no node reads it (and it is called ``name``), else None."""
    numpy_helper = require("onnx.numpy_helper")
    if not model.graph.initializer:
        return None
    last = model.graph.initializer[-1]
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    if last.name in used or (name is not None and last.name != name):
        return None
    return numpy_helper.to_array(last)


def op_counts(model) -> dict[str, int]:
    c = collections.Counter(n.op_type for n in model.graph.node)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def io_dims(model) -> dict[str, list]:
    """name -> dims (int or dim_param string or None) of every graph input and output."""
    out = {}
    for v in (*model.graph.input, *model.graph.output):
        dims = []
        for d in v.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out[v.name] = dims
    return out


def graph_inputs(model) -> list:
    """The real inputs (initializers listed as inputs in old IR versions excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def dynamic_axes_lost(parent, child, spec=None) -> list[str]:
    """'name[axis]' of every axis that must stay symbolic but the child made fixed or dropped.

    Must stay symbolic: every symbolic axis of the parent's inputs and every axis the
    spec declares dynamic (batch, height ...).  Other output axes may become fixed:
    the exporter sometimes names an axis it could not resolve (even 'batch' for an
    image height), and simplification resolving it is an improvement."""
    pd, cd = io_dims(parent), io_dims(child)
    need = {(i.name, k) for i in graph_inputs(parent) for k, d in enumerate(pd.get(i.name, [])) if isinstance(d, str)}
    if spec is not None:
        need |= {(name, k) for name, axes in spec.dynamic_axes.items() for k in axes}
    lost = []
    for name, k in sorted(need):
        got = cd.get(name)
        if name in pd and (got is None or len(got) <= k or not isinstance(got[k], str)):
            lost.append(f"{name}[{k}]")
    return lost


def copy_metadata(src, dst, extra: Mapping[str, str] | None = None) -> None:
    """Give ``dst`` the ``ffexport.*`` metadata of ``src`` (other tools' chatter dropped) plus ``extra``."""
    keep = {p.key: p.value for p in src.metadata_props if p.key.startswith(_KEEP_META_PREFIX)}
    keep.update(extra or {})
    del dst.metadata_props[:]
    for k, v in sorted(keep.items()):
        e = dst.metadata_props.add()
        e.key, e.value = k, v
    dst.producer_name = src.producer_name or dst.producer_name
    dst.producer_version = src.producer_version or dst.producer_version


def save(model, path: str | Path) -> None:
    onnx = require("onnx")
    onnx.save(model, str(path))


def node_output_names(model) -> list[str]:
    """Every tensor a node of ``model`` produces, in graph order."""
    names = []
    for n in model.graph.node:
        for o in n.output:
            if o:
                names.append(o)
    return names


def _chunks(names: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(names), size):
        yield names[i:i + size]


def run_exposed(models: Mapping[str, object], feeds: list[Mapping[str, "object"]], names: Iterable[str],
                chunk: int = 96) -> Iterator[tuple[str, list[dict]]]:
    """Run each of ``models`` (label -> ModelProto) with the tensors ``names`` exposed as outputs.

    Yields ``(label_of_chunk, per_feed)`` where ``per_feed[i][label]`` is the dict
    tensor name -> numpy array of model ``label`` on feed ``i``.  Tensors are
    exposed ``chunk`` at a time (one session per model per chunk), so peak
    memory is bounded by one chunk of intermediates, not the whole graph.
    Names a model does not have are skipped for that model.
    """
    onnx = require("onnx")
    from ..backends.ort import ort_session

    names = list(dict.fromkeys(names))
    for part in _chunks(names, chunk):
        sessions = {}
        for label, model in models.items():
            m = onnx.ModelProto()
            m.CopyFrom(model)
            have = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
            del m.graph.output[:]
            wanted = [n for n in part if n in have]
            for n in wanted:
                m.graph.output.append(onnx.ValueInfoProto(name=n))
            if not wanted:
                continue
            m.graph.ClearField("value_info")  # let onnxruntime infer the exposed tensors' types
            sessions[label] = (session_from_proto(m, ort_session), wanted)
        per_feed = []
        for feed in feeds:
            arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in feed.items()}
            row = {}
            for label, (sess, wanted) in sessions.items():
                want_in = {i.name for i in sess.get_inputs()}
                outs = sess.run(wanted, {k: v for k, v in arrays.items() if k in want_in})
                row[label] = dict(zip(wanted, outs))
            per_feed.append(row)
        yield ",".join(part[:1]), per_feed
        del sessions


def has_qdq(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def session_from_proto(model, ort_session):
    """An onnxruntime session for an in-memory model (written to a temp file: protos > 2 GB cannot be
    serialised in one piece, and ort_session gives the one-line load errors).  A Q/DQ model runs as its
    operators define it (``ort_session(qdq_reference=True)``), the same on every CPU."""
    import tempfile

    onnx = require("onnx")
    with tempfile.TemporaryDirectory(prefix="ffexport-exposed-") as d:
        p = Path(d) / "model.onnx"
        onnx.save(model, str(p))
        return ort_session(p, qdq_reference=has_qdq(model))
