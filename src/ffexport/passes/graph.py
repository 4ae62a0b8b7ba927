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


# --- instance normalisation written out as reductions -------------------------------------------

def _const_values(model) -> dict:
    """tensor name -> numpy array of every initializer and Constant node output (a ``value`` tensor or a float)."""
    numpy_helper = require("onnx.numpy_helper")
    import numpy as np

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type != "Constant" or not n.output:
            continue
        for a in n.attribute:
            if a.name == "value":
                out[n.output[0]] = numpy_helper.to_array(a.t)
            elif a.name == "value_float":
                out[n.output[0]] = np.array(a.f, dtype=np.float32)
    return out


def tensor_types(model) -> dict[str, tuple[int, list]]:
    """name -> (elem_type, dims) of every tensor ONNX shape inference can type; {} when it cannot run (a model
    over 2 GB, an op it does not know)."""
    onnx = require("onnx")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is an optimisation here: no types, no fusion
        return {}
    out = {}
    g = inferred.graph
    for vi in (*g.input, *g.value_info, *g.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        out[vi.name] = (t.elem_type, [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                      for d in t.shape.dim])
    return out


def _reduce_axes(node, consts) -> list[int] | None:
    """A ReduceMean's axes, from its attribute (opset < 18) or its constant second input (opset 18)."""
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1]:
        arr = consts.get(node.input[1])
        return None if arr is None else [int(v) for v in arr.reshape(-1)]
    return None  # no axes: every axis, not an instance norm


def _attr_int(node, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _scalar(consts, name: str, rank: int) -> float | None:
    """The value of a constant holding one number that broadcasts without raising the rank, else None."""
    arr = consts.get(name)
    if arr is None or arr.size != 1 or arr.ndim > rank or arr.dtype.kind not in "fi":
        return None
    return float(arr.reshape(-1)[0])


def fuse_instance_norms(model, keep: Iterable[str] = ()) -> tuple[object, list[dict]]:
    """Rewrite every instance normalisation written out as reductions into one ``InstanceNormalization`` node.

    Matches ``d = x - ReduceMean(x)``, ``y = d * (1 / Sqrt(ReduceMean(d * d) + eps))`` (also ``d / Sqrt(...)``,
    ``d * Reciprocal(Sqrt(...))``, ``Pow(d, 2)`` for the square): both means over every axis after the channel
    axis with ``keepdims``, ``x`` float32 of known rank and channel count, ``eps`` a constant, and no tensor
    inside the pattern read by anything else or leaving the graph.  That is InstanceNormalization with scale
    1, bias 0 and ``epsilon = eps``, the same arithmetic (it is how torch exports a norm written as
    ``x.mean()``/``rsqrt``).  Patterns holding a node named in ``keep`` are left alone.

    Returns ``(model, fused)``: ``model`` itself when nothing matched, else a rewritten copy; ``fused`` has one
    ``{"node", "epsilon", "channels", "replaces"}`` per new node (``replaces``: the names of the nodes it took
    the place of, in graph order).
    """
    onnx = require("onnx")
    numpy_helper = require("onnx.numpy_helper")
    import numpy as np

    g = model.graph
    consts = _const_values(model)
    types = tensor_types(model)
    if not types:
        return model, []
    all_nodes = list(g.node)  # one wrapper per node, held: identities below stay valid
    consumers: dict[str, list] = collections.defaultdict(list)
    for n in all_nodes:
        for t in dict.fromkeys(i for i in n.input if i):
            consumers[t].append(n)
    graph_outputs = {o.name for o in g.output}
    keep = set(keep)

    def only(tensor: str, op_types: tuple[str, ...]):
        """The single node reading ``tensor`` when it has one of ``op_types`` and ``tensor`` is no graph output."""
        readers = consumers.get(tensor, [])
        if tensor in graph_outputs or len(readers) != 1 or readers[0].op_type not in op_types:
            return None
        return readers[0]

    def spatial_mean(node, rank: int) -> bool:
        axes = _reduce_axes(node, consts)
        if axes is None or _attr_int(node, "keepdims", 1) != 1:
            return False
        return sorted(a % rank for a in axes) == list(range(2, rank))

    index = {id(n): k for k, n in enumerate(all_nodes)}
    groups = []
    used: set[int] = set()
    for r1 in all_nodes:
        if r1.op_type != "ReduceMean" or index[id(r1)] in used or not r1.input:
            continue
        x = r1.input[0]
        elem, dims = types.get(x, (0, []))
        rank = len(dims)
        if elem != onnx.TensorProto.FLOAT or rank < 3 or not isinstance(dims[1], int) or dims[1] <= 0:
            continue
        if not spatial_mean(r1, rank):
            continue
        sub = only(r1.output[0], ("Sub",))
        if sub is None or list(sub.input) != [x, r1.output[0]]:
            continue
        d = sub.output[0]
        readers = consumers.get(d, [])
        if d in graph_outputs or len(readers) != 2:
            continue
        sq = next((n for n in readers if (n.op_type == "Mul" and list(n.input) == [d, d]) or (
            n.op_type == "Pow" and n.input[0] == d and _scalar(consts, n.input[1], rank) == 2.0)), None)
        if sq is None:
            continue
        tail = next(n for n in readers if n is not sq)
        r2 = only(sq.output[0], ("ReduceMean",))
        if r2 is None or not spatial_mean(r2, rank):
            continue
        add = only(r2.output[0], ("Add",))
        if add is None:
            continue
        other = [i for i in add.input if i != r2.output[0]]
        eps = _scalar(consts, other[0], rank) if len(other) == 1 else None
        if eps is None or not eps >= 0.0:
            continue
        sqrt = only(add.output[0], ("Sqrt",))
        if sqrt is None:
            continue
        s = sqrt.output[0]
        inv = only(s, ("Div", "Reciprocal"))
        if inv is None:
            continue
        if inv.op_type == "Div" and list(inv.input) == [d, s]:
            nodes = [r1, sub, sq, r2, add, sqrt, inv]
        else:
            if inv.op_type == "Div" and (inv.input[1] != s or _scalar(consts, inv.input[0], rank) != 1.0):
                continue
            mul = only(inv.output[0], ("Mul",))
            if mul is None or sorted(mul.input) != sorted([d, inv.output[0]]):
                continue
            nodes = [r1, sub, sq, r2, add, sqrt, inv, mul]
        if nodes[-1] is not tail:
            continue
        at = [index[id(n)] for n in nodes]
        if keep.intersection(n.name for n in nodes) or used.intersection(at):
            continue
        used.update(at)
        groups.append((at, x, int(dims[1]), eps))
    if not groups:
        return model, []

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    taken = {n.name for n in g.node}
    init_names = {i.name for i in g.initializer}
    last_init = g.initializer[-1].name if g.initializer else None
    affine: dict[int, tuple[str, str]] = {}
    replace: dict[int, object] = {}  # index of the pattern's last node -> the new node
    drop: set[int] = set()
    fused = []
    for at, x, channels, eps in groups:
        nodes = [g.node[k] for k in at]
        if channels not in affine:
            names = []
            for kind, value in (("scale", 1.0), ("bias", 0.0)):
                name = f"ffexport.instance_norm.{kind}_{channels}"
                while name in init_names:
                    name += "_"
                init_names.add(name)
                g.initializer.append(numpy_helper.from_array(np.full(channels, value, np.float32), name))
                names.append(name)
            affine[channels] = (names[0], names[1])
        prefix = _common_scope([n.name for n in nodes])
        name, k = f"{prefix}InstanceNormalization", 1
        while name in taken:
            k += 1
            name = f"{prefix}InstanceNormalization_{k}"
        taken.add(name)
        replace[at[-1]] = onnx.helper.make_node("InstanceNormalization", [x, *affine[channels]],
                                                [nodes[-1].output[0]], name=name, epsilon=eps)
        drop.update(at)
        fused.append({"node": name, "epsilon": float(str(np.float32(eps))), "channels": channels,
                      "replaces": [n.name for n in nodes]})
    fed = {i for k in drop for i in g.node[k].input if i}  # eps and 1.0: drop them too if nothing else reads them
    new_nodes = [replace.get(k, n) for k, n in enumerate(g.node) if k in replace or k not in drop]
    still_read = {i for n in new_nodes for i in n.input} | {o.name for o in g.output}
    new_nodes = [n for n in new_nodes if not (n.op_type == "Constant" and n.output and n.output[0] in fed
                                              and n.output[0] not in still_read)]
    del g.node[:]
    g.node.extend(new_nodes)
    unread = [k for k, i in enumerate(g.initializer) if i.name in fed and i.name not in still_read]
    for k in reversed(unread):
        del g.initializer[k]
    _keep_last_initializer(g, last_init)
    return m, fused


def _common_scope(names: list[str]) -> str:
    """The longest scope ('/a/b/') all ``names`` share, '' when none."""
    import os

    prefix = os.path.commonprefix(names)
    return prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""


def _keep_last_initializer(g, name: str | None) -> None:
    """Move initializer ``name`` back to the end of the list (loaders read an inswapper's ``emap`` there)."""
    if name is None or g.initializer[-1].name == name:
        return
    onnx = require("onnx")
    for i in range(len(g.initializer) - 1, -1, -1):
        if g.initializer[i].name == name:
            t = onnx.TensorProto()
            t.CopyFrom(g.initializer[i])
            del g.initializer[i]
            g.initializer.append(t)
            return
