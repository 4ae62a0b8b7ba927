"""FP16: an FP16 ONNX whose numerically fragile nodes stay FP32, chosen by parity, not by hope.

Which nodes stay FP32, and why (each is listed in the manifest):

* ``block list``: ops the spec marks fragile (``spec.fp16_block_ops``: InstanceNorm,
  Resize, reductions, Softmax, Pow/Exp/Sqrt ...; the spec says why, ``fp16_block_reason``: the blender keeps all
  of its arithmetic, pixel coordinates and a blend of float32 frames), plus onnxconverter-common's own
  default block list (ops onnxruntime has no FP16 kernel for);
* ``not float math``: nodes outside the set of float ops the converter handles
  safely, or that compute shapes, indices or types (Shape, Range, Cast, Where ...);
* ``overflow``: nodes producing or consuming a tensor whose magnitude on the real
  inputs exceeds half the FP16 maximum (65504) in the FP32 model, and nodes whose
  weights exceed it;
* ``converter``: nodes around which the converter wrote an invalid graph;
* ``parity``: when the FP16 model misses its gate, the nodes that add the most
  error themselves (:mod:`ffexport.passes.proof.sensitivity`) are kept in FP32, 1, 2,
  4 ... at a time, until the gate passes (at most ``MAX_ROUNDS`` rounds; then the
  pass fails and the previous artifact stays).

Before any of that, instance normalisations written out as reductions (``d = x - mean(x)`` times
``1 / sqrt(mean(d * d) + eps)``, how torch exports a norm built from ``mean``/``rsqrt``: 7-8 nodes, the
two ReduceMeans and the Sqrt on the default block list) become one ``InstanceNormalization`` node each
(:func:`ffexport.passes.graph.fuse_instance_norms`; the same arithmetic, recorded under ``fused``).  Kept
in FP32, such a norm then costs one Cast in and one Cast out instead of a pair around each reduction, Sqrt
and the FP16 nodes between them; a spec that leaves InstanceNormalization off its block list runs it in FP16
(onnxruntime's CUDA kernel keeps the statistics in FP32), with no Cast at all.  Nodes named in
``keep_nodes`` keep their pattern unfused.

After each conversion three kinds of Cast the converter writes are undone (``casts_undone`` in the record): a Cast
read only by Shape nodes (a shape is the same in either precision); a float32 -> float16 -> float32 round trip
between two nodes kept in FP32 (a rounding the FP16 emulation that gates the artifact does not assume, and two
kernels); and, with ``keep_io_types``, a Cast that turns a float32 output of the IO contract into float16 where a
kept node ends the graph (MTCNN's Softmax), which broke the contract.  On small nets, whose calls are mostly launch
cost, each Cast was a kernel per call.

Converter choice: onnxconverter-common's ``convert_float_to_float16`` (Olive and
onnxruntime's own ``transformers.float16`` derive from it).  onnxruntime's copy was
tried too: on this project's graphs it writes duplicate Cast node names for
shared constants (an invalid model) for the detector, landmarker and enhancer.
onnxconverter-common fails on graphs that mix index math into float ops (the
landmarker's in-graph argmax decode, the blender's Range/Cast) unless those
nodes are kept out of the conversion, which is what the ``not float math`` rule
does; the stale ``value_info`` it leaves is dropped so onnxruntime re-infers types.
"""

from __future__ import annotations

import collections
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .._lazy import require
from ..errors import ModelLoadError, ParityError
from ..fsutil import atomic_path
from . import graph
from .proof import sensitivity
from .proof.fp16_emulate import emulate

MAX_ROUNDS = 7
PROFILE_FEEDS = 2
OVERFLOW_LIMIT = graph.FP16_MAX / 2  # 2x headroom over what the calibration faces showed
_CONVERTER_RETRIES = 16

# float ops that onnxconverter-common converts correctly and that have a meaning in FP16
FP16_OPS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Ceil", "Clip", "Concat", "Conv", "ConvTranspose",
    "DepthToSpace", "Div", "Einsum", "Elu", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements",
    "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "GridSample", "HardSigmoid", "HardSwish", "Identity",
    "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "MatMul", "MaxPool", "Mean",
    "Mul", "Neg", "Pad", "Pow", "PRelu", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "Selu", "Sigmoid", "Slice", "Softmax", "Softplus",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose", "Unsqueeze",
    "Upsample",
})


def _float_math(node, stats: dict, other_dtypes: dict) -> bool:
    """A float computation: a listed op whose outputs are all float32 and that reads a float32 tensor.

    ``stats`` gives node outputs' dtypes (from an FP32 run); ``other_dtypes`` those of
    initializers, Constant outputs and graph inputs."""
    if node.op_type not in FP16_OPS:
        return False
    outs = [o for o in node.output if o]
    if not outs or any(stats.get(o) is None or stats[o].dtype != "float32" for o in outs):
        return False
    return any((stats[i].dtype if i in stats else other_dtypes.get(i)) == "float32" for i in node.input if i)


def _initializer_info(model) -> tuple[dict[str, str], dict[str, float]]:
    """name -> dtype and name -> largest magnitude of the float initializers."""
    numpy_helper = require("onnx.numpy_helper")
    import numpy as np

    dtypes, amax = {}, {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        dtypes[init.name] = str(arr.dtype)
        if arr.dtype == np.float32 and arr.size:
            amax[init.name] = float(np.abs(arr).max())
    for n in model.graph.node:  # Constant nodes hold initializers too
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    dtypes[n.output[0]] = str(arr.dtype)
    return dtypes, amax


def _convert(model, keep_io_types: bool, block_ops: Sequence[str], block_nodes: set[str]):
    onnx = require("onnx")
    occ = require("onnxconverter_common.float16", "FP16 conversion")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m16 = occ.convert_float_to_float16(m, keep_io_types=keep_io_types, op_block_list=list(block_ops),
                                           node_block_list=sorted(block_nodes), max_finite_val=graph.FP16_MAX)
    m16.graph.ClearField("value_info")  # the converter leaves stale float32 entries; onnxruntime re-infers
    tidied = _tidy_casts(m16, model, keep_io_types)
    graph.copy_metadata(model, m16)
    return m16, _summarise([str(w.message) for w in caught]), tidied


def _tidy_casts(m16, parent, keep_io_types: bool) -> dict:
    """Undo three kinds of Cast the converter writes around nodes it keeps in FP32 (in place):

    * a Cast read only by Shape nodes (the converter casts the input of a node it keeps in FP32, and Shape is kept:
      it computes a shape, not a value): the Shape nodes read the uncast tensor, whose shape is the same;
    * a float32 -> float16 -> float32 round trip (the converter treats a tensor between two nodes it keeps in FP32
      as float16 and casts it down and up again): the second node reads the float32 tensor, as the FP16
      emulation that gates the artifact assumes; the one change to what is computed is a rounding less;
    * with ``keep_io_types``, a graph output that the parent declares float32 but the converter made float16 (it
      happens where a kept node, e.g. a Softmax on the block list, ends the graph: the converter casts its float32
      result back to float16): the output is the kept node's float32 result again, as the IO contract says, and
      the Cast goes; where the tensor before that Cast is float16, the Cast turns to float32 instead.

    Returns how many of each were undone."""
    onnx = require("onnx")
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    g = m16.graph
    outputs = {o.name for o in g.output}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    drop = []
    for n in g.node:
        users = consumers.get(n.output[0], []) if n.op_type == "Cast" else []
        if users and n.output[0] not in outputs and all(u.op_type == "Shape" for u in users):
            for u in users:
                u.input[0] = n.input[0]
            drop.append(n)
    shape_casts = len(drop)
    # without types (shape inference cannot run: a proto over 2 GB), only the rule that needs none applies
    dtype = {name: t for name, (t, _dims) in graph.tensor_types(m16).items()}
    dtype.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:  # Constant outputs: their value's type
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    dtype[n.output[0]] = a.t.data_type
    round_trips = 0
    for n in g.node:  # float32 -> float16 -> float32 between two nodes kept in FP32: the kept node reads the float32
        if n.op_type != "Cast" or _cast_to(n) != FLOAT16 or dtype.get(n.input[0]) != FLOAT:
            continue
        back = [u for u in consumers.get(n.output[0], []) if u.op_type == "Cast" and _cast_to(u) == FLOAT
                and u.output[0] not in outputs and u not in drop]
        for u in back:
            consumers[n.input[0]].extend(_rename_reads(consumers.get(u.output[0], []), u.output[0], n.input[0]))
            drop.append(u)
            round_trips += 1
        if back and n.output[0] not in outputs and all(u in drop for u in consumers.get(n.output[0], [])):
            drop.append(n)
    output_casts = 0
    if keep_io_types:
        declared = {o.name: o.type.tensor_type.elem_type for o in parent.graph.output}
        wrong = [o for o in g.output if declared.get(o.name) == FLOAT and o.type.tensor_type.elem_type == FLOAT16]
        if wrong:
            producer = {t: n for n in g.node for t in n.output}
            for o in wrong:
                cast = producer.get(o.name)
                if cast is None or cast.op_type != "Cast" or cast in drop:
                    continue  # not the converter's pattern: the contract check downstream reports it
                src = cast.input[0]
                if dtype.get(src) == FLOAT and src not in outputs and src in producer:
                    _rename_reads(g.node, src, o.name)  # the float32 tensor takes the output's name
                    p = producer[src]
                    p.output[list(p.output).index(src)] = o.name
                    drop.append(cast)
                else:
                    for a in cast.attribute:
                        if a.name == "to":
                            a.i = FLOAT
                o.type.tensor_type.elem_type = FLOAT
                output_casts += 1
    for n in drop:
        g.node.remove(n)
    return {"shape_casts": shape_casts, "round_trips": round_trips, "output_casts": output_casts}


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _rename_reads(nodes, old: str, new: str) -> list:
    """Make each of ``nodes`` that reads tensor ``old`` read ``new`` instead; the nodes changed."""
    changed = []
    for n in nodes:
        for k, i in enumerate(n.input):
            if i == old:
                n.input[k] = new
                if not changed or changed[-1] is not n:
                    changed.append(n)
    return changed


def _summarise(messages: list[str]) -> list[str]:
    """The converter warns once per clamped initializer value; count them instead."""
    tiny = sum("truncated to 1e-07" in m or "truncated to -1e-07" in m for m in messages)
    big = sum("truncated to 65504" in m or "truncated to -65504" in m for m in messages)
    rest = [m.splitlines()[0][:200] for m in messages if "truncated to" not in m]
    out = []
    if tiny:
        out.append(f"{tiny} initializer values below 1e-07 in magnitude raised to +/-1e-07 (FP16 subnormal range)")
    if big:
        out.append(f"{big} initializer values beyond 65504 clamped to +/-65504")
    return out + sorted(set(rest))[:10]


_NODE_IN_ERROR = re.compile(r"node \(([^)]+)\)|node name \(([^)]+)\)|Node \(([^)]+)\)")


def fp16(src: str | Path, dst: str | Path, judge, *, keep_io_types: bool = True,
         block_ops: Sequence[str] | None = None, keep_nodes: Sequence[str] = (),
         progress: Callable[[str], None] | None = None) -> dict:
    """Write the FP16 version of ``src`` to ``dst``; return the pass's record fields.

    Raises :class:`ParityError` (``dst`` untouched) when no mix of FP32 nodes
    within ``MAX_ROUNDS`` rounds passes the module's FP16 gates.
    """
    occ = require("onnxconverter_common.float16", "FP16 conversion")
    say = progress or (lambda _m: None)
    src, dst = Path(src), Path(dst)
    model = graph.load(src)
    names = {n.name for n in model.graph.node}
    if len(names) != len(model.graph.node) or "" in names:
        model = _name_nodes(model)
    unknown = set(keep_nodes) - {n.name for n in model.graph.node}
    if unknown:
        from ..errors import InputSpecError

        raise InputSpecError(f"nodes to keep in FP32 not in {src.name}: {', '.join(sorted(unknown)[:5])}")
    spec_ops = tuple(block_ops if block_ops is not None else judge.spec.fp16_block_ops)
    lib_ops = tuple(sorted(set(occ.DEFAULT_OP_BLOCK_LIST) - set(spec_ops)))
    model, fused = graph.fuse_instance_norms(model, keep=keep_nodes)
    if fused:
        say(f"{len(fused)} instance normalisations written as reductions fused into InstanceNormalization nodes")
    say("profiling FP32 value ranges on real inputs")
    stats = sensitivity.profile(model, judge.feeds[:PROFILE_FEEDS])
    init_dtype, init_amax = _initializer_info(model)
    for i in graph.graph_inputs(model):
        if i.type.tensor_type.elem_type == 1:
            init_dtype[i.name] = "float32"

    kept: dict[str, dict] = {}

    def keep(node, reason: str, detail: str) -> None:
        if node.name not in kept:
            kept[node.name] = {"node": node.name, "op": node.op_type, "reason": reason, "detail": detail}

    consumers = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    for n in model.graph.node:
        if n.name in keep_nodes:
            keep(n, "requested", "listed in configs/ (fp16.keep_fp32)")
        elif n.op_type in spec_ops:
            why = judge.spec.fp16_block_reason if n.op_type in judge.spec.fp16_block_ops else "listed in fp16.block_ops"
            keep(n, "block list", f"{n.op_type}: {why} (spec fp16_block_ops)")
        elif n.op_type in lib_ops:
            keep(n, "block list", f"{n.op_type}: no FP16 kernel in onnxruntime (onnxconverter-common's block list)")
        elif not _float_math(n, stats, init_dtype):
            keep(n, "not float math", f"{n.op_type} computes shapes, indices or types, or is outside the "
                                      "converter's float op set")
    for n in model.graph.node:
        big = [(o, stats[o].absmax) for o in n.output if o in stats and stats[o].absmax > OVERFLOW_LIMIT]
        for tensor, amax in big:
            detail = f"'{tensor}' reaches {amax:.4g} in FP32 on real inputs (FP16 max 65504, kept with 2x headroom)"
            keep(n, "overflow", detail)
            for c in consumers[tensor]:
                keep(c, "overflow", f"reads {detail}")
        heavy = [(i, init_amax[i]) for i in n.input if init_amax.get(i, 0.0) > graph.FP16_MAX]
        if heavy:
            keep(n, "overflow", f"weight '{heavy[0][0]}' reaches {heavy[0][1]:.4g} (FP16 max 65504)")

    def is_float(t: str) -> bool:
        return (stats[t].dtype if t in stats else init_dtype.get(t)) == "float32"

    rounds: list[dict] = []
    work = tempfile.TemporaryDirectory(prefix="ffexport-fp16-")
    emu_path = Path(work.name) / "emulated.onnx"
    with work, atomic_path(dst) as tmp:
        for rnd in range(MAX_ROUNDS + 1):
            m16, notes, tidied = _convert_valid(model, keep_io_types, spec_ops + lib_ops, kept, say)
            lost = graph.dynamic_axes_lost(model, m16, judge.spec)
            if lost:
                raise ModelLoadError(f"FP16 conversion of {src.name} fixed the dynamic axes {', '.join(lost)}")
            graph.save(m16, tmp)
            fp16_nodes = {n.name for n in model.graph.node} - set(kept)
            emu = emulate(model, fp16_nodes, is_float)
            graph.save(emu, emu_path)
            say(f"FP16 round {rnd + 1}: parity with {len(kept)} nodes in FP32")
            parity = judge.compare(emu_path, src, "fp16")
            cpu = judge.compare(tmp, src, "fp16")
            judge.forget(tmp)
            judge.forget(emu_path)
            parity = _combine(parity, cpu)
            rounds.append({"round": rnd + 1, "fp32_nodes": len(kept), "passed": parity["passed"],
                           "gates": _gate_values(parity)})
            if parity["passed"]:
                break
            if rnd == MAX_ROUNDS:
                _fail(judge, parity, src, dst, len(kept), rounds)
            say(f"FP16 round {rnd + 1} failed: ranking nodes by the error they add")
            ranked = sensitivity.rank_nodes(model, emu, judge.feeds[:PROFILE_FEEDS], fp16_nodes)
            if not ranked:
                _fail(judge, parity, src, dst, len(kept), rounds)
            for s in ranked[: 2 ** rnd]:
                kept[s.node] = {"node": s.node, "op": s.op, "reason": "parity", "round": rnd + 1,
                                "detail": f"FP16 missed the gate; this node {s.detail()}"}
    counts = collections.Counter(k["reason"] for k in kept.values())
    return {
        "converter": f"onnxconverter-common {_version('onnxconverter-common')} convert_float_to_float16 "
                     "(ffexport pre-blocks non-float nodes; see ffexport.passes.fp16)",
        "keep_io_types": keep_io_types,
        "nodes": len(model.graph.node),
        "fp16_nodes": len(model.graph.node) - len(kept),
        "kept_fp32_counts": dict(counts),
        "kept_fp32": sorted(kept.values(), key=lambda k: (_REASON_ORDER.get(k["reason"], 9), k["node"])),
        "converter_notes": notes[:10],
        "casts_undone": dict(tidied, rule="Casts the converter wrote around nodes kept in FP32: read only by Shape "
                                           "nodes, float32 -> float16 -> float32 round trips between two kept "
                                           "nodes, and a float32 output of the IO contract turned float16 "
                                           "(ffexport.passes.fp16._tidy_casts)"),
        "fused": _fused_record(fused, kept),
        "rounds": rounds,
        "parity": parity,
    }


def _fused_record(fused: list[dict], kept: dict) -> dict:
    """What the instance-norm fusion did, each new node with the precision it runs at (and why)."""
    for f in fused:
        k = kept.get(f["node"])
        f["precision"] = "fp32" if k else "fp16"
        f["why"] = (f"kept in FP32 ({k['reason']}: {k['detail']})" if k else
                    "FP16 input and output, statistics in FP32: onnxruntime's CUDA kernel takes the mean and "
                    "variance of FP16 data in float (cuDNN batch-norm statistics), the arithmetic the FP16 "
                    "emulation that gates this artifact assumes")
    return {"count": len(fused), "op": "InstanceNormalization",
            "rule": "d = x - mean(x), y = d / sqrt(mean(d * d) + eps), both means over the axes after the "
                    "channel axis, written out as ReduceMean, Sub, Mul (or Pow), ReduceMean, Add, Sqrt and Div "
                    "(or Reciprocal, Mul) nodes, rewritten into one InstanceNormalization (scale 1, bias 0, "
                    "epsilon eps); the node counts, kept_fp32 and the parity rounds are those of the fused graph",
            "nodes": fused}


_REASON_ORDER = {"overflow": 0, "parity": 1, "converter": 2, "requested": 3, "block list": 4, "not float math": 5}


def _convert_valid(model, keep_io_types, block_ops, kept: dict, say):
    """Convert; where onnxruntime rejects the result, keep the node it names in FP32 and convert again."""
    from ..backends.ort import ort_session

    by_name = {n.name: n for n in model.graph.node}
    for _ in range(_CONVERTER_RETRIES):
        m16, notes, tidied = _convert(model, keep_io_types, block_ops, set(kept))
        try:
            graph.session_from_proto(m16, ort_session)
            return m16, notes, tidied
        except ModelLoadError as exc:
            names = [g for m in _NODE_IN_ERROR.finditer(str(exc)) for g in m.groups() if g]
            culprit = next((by_name[n] for n in names if n in by_name and n not in kept), None)
            if culprit is None:
                raise ModelLoadError(f"the FP16 conversion wrote a model onnxruntime rejects: {exc}") from exc
            say(f"converter wrote an invalid graph at {culprit.name}: keeping it in FP32")
            kept[culprit.name] = {"node": culprit.name, "op": culprit.op_type, "reason": "converter",
                                  "detail": str(exc).split(": ", 1)[-1][:200]}
    raise ModelLoadError("the FP16 converter kept writing invalid models; see the kept nodes in the manifest")


def _combine(emulated: dict, cpu: dict) -> dict:
    """The gating record is the FP16-storage emulation's (see fp16_emulate); the artifact as
    onnxruntime's CPU kernels run it must pass too, and is recorded beside it."""
    emulated = dict(emulated)
    for side in ("vs_parent", "vs_torch"):
        if emulated.get(side):
            emulated[side] = dict(emulated[side], candidate=emulated[side]["candidate"].replace(
                "emulated.onnx (onnxruntime CPU)", "FP16 storage emulation of the FP16 graph"))
    emulated["gated_on"] = "FP16 storage emulation and the FP16 artifact on onnxruntime CPU"
    emulated["onnxruntime_cpu"] = {"vs_parent": cpu["vs_parent"], "vs_torch": cpu["vs_torch"],
                                   "note": "onnxruntime's CPU kernels compute FP16 ops in FP32 (weights rounded only)"}
    emulated["passed"] = emulated["passed"] and cpu["passed"]
    return emulated


def _gate_values(parity: dict) -> dict:
    out = {}
    for side in ("vs_parent", "vs_torch"):
        rec = parity.get(side)
        if rec:
            out[side] = {g["metric"]: g["value"] for g in rec["gates"]}
    return out


def _fail(judge, parity, src, dst, n_kept, rounds):
    which = parity["vs_parent"] if not parity["vs_parent"]["passed"] else parity["vs_torch"]
    bad = next(g for g in which["gates"] if not g["passed"])
    raise ParityError(f"FP16 of {src.name} still fails {bad['metric']} {bad['op']} {bad['threshold']:g} on "
                      f"'{bad['output']}' ({bad['value']:.4g}) after {len(rounds)} round{'s' * (len(rounds) != 1)} "
                      f"with {n_kept} nodes in FP32; {dst.name} left as it was")


def _name_nodes(model):
    """Give unnamed or duplicate-named nodes unique names (node lists refer to nodes by name)."""
    onnx = require("onnx")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    seen: set[str] = set()
    for i, n in enumerate(m.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    return m


def _version(dist: str) -> str:
    from .._lazy import version_of

    return version_of(dist) or "?"
