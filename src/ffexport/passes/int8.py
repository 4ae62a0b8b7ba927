"""INT8: a Q/DQ ONNX from onnxruntime's static quantizer, calibrated on real faces, in TensorRT's form.

The form (checked by :func:`inspect_qdq` and recorded in the manifest):

* QuantizeLinear/DequantizeLinear pairs (``QuantFormat.QDQ``): the same file runs on
  onnxruntime (which fuses them into integer kernels) and is what TensorRT builds
  strongly typed INT8 engines from;
* symmetric INT8 activations and weights: every zero point is 0;
* per-channel weight scales (Conv axis 0, ConvTranspose axis 1, Gemm/MatMul the output
  axis), weights stored as INT8 initializers feeding a DequantizeLinear;
* biases left in float (``QuantizeBias: False``): TensorRT fuses them itself.

Calibration streams real faces through the module's own preprocessing
(:mod:`ffexport.passes.proof.calib`) into onnxruntime's calibrator a few samples at a
time (one at a time for the histogram methods, whose calibrator would otherwise
keep every intermediate tensor of every sample), then the tensor ranges are
cached so the fallback rounds re-quantize without re-calibrating.

When the result misses the module's INT8 gate, the nodes that add the most error
themselves (:mod:`ffexport.passes.proof.sensitivity`) are excluded from quantization,
1, 2, 4 ... at a time, for at most ``MAX_ROUNDS`` rounds; each is recorded with
its reason.  A graph without weighted ops (the blender) has nothing worth
quantizing: ``int8.onnx`` is then its FP32 graph and the record says so.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from ..fsutil import final_name
from .._lazy import require
from ..errors import CalibrationError, InputSpecError, ModelLoadError, ParityError
from ..fsutil import atomic_path
from . import graph
from .proof import sensitivity

METHODS = ("minmax", "entropy", "percentile")
MAX_ROUNDS = 8  # 1 + 2 + ... + 128 = 255 nodes at most
PROFILE_FEEDS = 2
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# What is quantized by default: the weighted ops (their weights, inputs and outputs), which is where
# INT8 pays and where TensorRT wants Q/DQ.  Quantizing every op onnxruntime can (Add, Mul, Concat,
# Relu ...) was measured on this project's modules (benchmarks/results/cpu/NOTES.md): less accurate
# everywhere (AdaIN / instance-norm arithmetic in INT8 costs the generator most) and no faster on the
# CPU.  configs/<module>.yaml int8.op_types overrides it.
DEFAULT_OP_TYPES = WEIGHTED_OPS
# The extra options that give TensorRT's Q/DQ form (see the module docstring).
EXTRA_OPTIONS = {
    "ActivationSymmetric": True,     # zero point 0 for activations
    "WeightSymmetric": True,         # zero point 0 for weights
    "QuantizeBias": False,           # biases stay float
    "AddQDQPairToWeight": False,     # weights stored INT8 -> DequantizeLinear (4x smaller; TensorRT reads it)
    "DedicatedQDQPair": False,       # shared Q/DQ per tensor (see configs int8.dedicated_qdq_pair)
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
}


def _method(name: str):
    qz = require("onnxruntime.quantization", "INT8 quantization")
    table = {"minmax": qz.CalibrationMethod.MinMax, "entropy": qz.CalibrationMethod.Entropy,
             "percentile": qz.CalibrationMethod.Percentile}
    if name not in table:
        from ..errors import UnknownNameError

        raise UnknownNameError("calibration method", name, table)
    return table[name]


def weighted_nodes(model) -> list:
    """Nodes of a weighted op type whose weight is a constant (something INT8 makes cheaper)."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in consts]


class _Chunk:
    """At most ``size`` samples of ``reader`` (a CalibrationDataReader), then None."""

    def __init__(self, first, reader, size: int):
        self.first, self.reader, self.left = first, reader, size
        self.given = 0

    def get_next(self):
        if self.left <= 0:
            return None
        self.left -= 1
        if self.first is not None:
            item, self.first = self.first, None
        else:
            item = self.reader.get_next()
        self.given += item is not None
        return item

    def __iter__(self):  # some calibrators iterate the reader
        return iter(self.get_next, None)


def calibrate(model_path: Path, reader, method: str, op_types: Sequence[str] | None, workdir: Path,
              say: Callable[[str], None]):
    """Tensor ranges of ``model_path`` over every sample of ``reader``, streamed in small chunks."""
    require("onnxruntime.quantization", "INT8 calibration")
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    histogram = method != "minmax"
    options = {"symmetric": True}
    if method == "percentile":
        options["percentile"] = 99.999
    calibrator = create_calibrator(Path(model_path), list(op_types or []), augmented_model_path=str(workdir / "aug.onnx"),
                                   calibrate_method=_method(method), extra_options=options)
    chunk = 1 if histogram else 8
    n = 0
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram collector prints per call
        while True:
            first = reader.get_next()
            if first is None:
                break
            part = _Chunk(first, reader, chunk)
            calibrator.collect_data(part)
            n += part.given
            say(f"calibrated on {n} samples")
        if n == 0:
            raise CalibrationError("no calibration samples could be built")
        ranges = calibrator.compute_data()
    del calibrator
    cache = workdir / "ranges.json"
    save_tensors_data(ranges, cache)
    return cache, n


def pre_process(src: Path, dst: Path) -> str:
    """Shape inference for the quantizer (no graph rewrites: node names stay the parent's)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    src, dst = Path(src).resolve(), Path(dst).resolve()
    try:
        # when symbolic shape inference gives up, onnxruntime dumps its partial model (and its weights
        # as a uuid-named .data file) into the working directory: run it from a scratch directory
        with tempfile.TemporaryDirectory(prefix="ffexport-shape-") as scratch, contextlib.chdir(scratch):
            for kw, label in (({}, "onnxruntime quant_pre_process (symbolic + ONNX shape inference)"),
                              ({"skip_symbolic_shape": True}, "onnxruntime quant_pre_process (ONNX shape inference)")):
                try:
                    quant_pre_process(str(src), str(dst), skip_optimization=True, **kw)
                    return label
                except Exception:  # symbolic shape inference fails on some graphs; the next option is tried
                    continue
    finally:
        quiet.setLevel(level)
    dst.write_bytes(src.read_bytes())
    return "none (shape inference failed; the quantizer infers what it can)"


def _quantize(pre: Path, out: Path, cache: Path, method: str, exclude: set[str], op_types, extra: dict) -> None:
    qz = require("onnxruntime.quantization", "INT8 quantization")
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on every call
    try:
        qz.quantize_static(str(pre), str(out), calibration_data_reader=None, quant_format=qz.QuantFormat.QDQ,
                           op_types_to_quantize=list(op_types) if op_types else None, per_channel=True,
                           reduce_range=False, activation_type=qz.QuantType.QInt8, weight_type=qz.QuantType.QInt8,
                           nodes_to_exclude=sorted(exclude), calibrate_method=_method(method),
                           extra_options=dict(extra), calibration_cache_path=str(cache))
    finally:
        logger.setLevel(level)


def unquantize_inputs(qmodel, nodes: set[str]) -> int:
    """Make ``nodes`` read float tensors: rewire each input that comes through Q -> DQ to the tensor the
    Q reads, then drop Q/DQ nodes left without consumers.  Returns the number of inputs rewired.

    onnxruntime's quantizer skips an excluded node's weights and output, but wires *every* consumer of
    a quantized tensor to its DequantizeLinear, so without this an excluded node still computes on
    INT8-rounded inputs and excluding it barely changes the error."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    rewired = 0
    for n in qmodel.graph.node:
        if n.name not in nodes:
            continue
        for k, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            n.input[k] = q.input[0]
            rewired += 1
    if rewired:
        _drop_dead_qdq(qmodel)
    return rewired


def _drop_dead_qdq(model) -> None:
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def quantized_nodes(qmodel, names: set[str]) -> set[str]:
    """Nodes of ``names`` that read a DequantizeLinear output in ``qmodel`` (i.e. run in INT8)."""
    dq_out = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in qmodel.graph.node if n.name in names and any(i in dq_out for i in n.input)}


def int8(src: str | Path, dst: str | Path, judge, reader_factory: Callable[[Sequence[str]], object], *,
         method: str = "minmax", exclude: Sequence[str] = (), op_types: Sequence[str] | None = None,
         dedicated_qdq_pair: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Write the INT8 Q/DQ version of ``src`` to ``dst``; return the pass's record fields.

    ``reader_factory(input_names)`` returns a fresh streaming calibration reader.
    Raises :class:`ParityError` (``dst`` untouched) when the INT8 gate still fails
    after ``MAX_ROUNDS`` rounds of exclusions.
    """
    onnx = require("onnx")
    say = progress or (lambda _m: None)
    src, dst = Path(src), Path(dst)
    model = graph.load(src)
    names = {n.name for n in model.graph.node}
    unknown = [n for n in exclude if n not in names]
    if unknown:
        sample = ", ".join(n.name for n in weighted_nodes(model)[:4])
        raise InputSpecError(f"--exclude {unknown[0]}: no node of that name in {src.name} (weighted nodes: {sample} ...)")
    method = method or "minmax"
    _method(method)
    op_types = list(op_types) if op_types else list(DEFAULT_OP_TYPES)
    extra = dict(EXTRA_OPTIONS, DedicatedQDQPair=bool(dedicated_qdq_pair))
    options = {"format": "QDQ", "activations": "int8 symmetric (zero point 0)",
               "weights": "int8 symmetric per-channel (zero point 0)", "bias": "float (QuantizeBias False)",
               "method": method, "op_types": op_types,
               "extra_options": extra}
    weighted = weighted_nodes(model)
    if not weighted:
        return _float_copy(src, dst, judge, model, options, [], say,
                           "no quantizable ops (no Conv/ConvTranspose/Gemm/MatMul with constant weights): int8.onnx is "
                           "the FP32 graph, nothing is quantized")

    excluded: dict[str, dict] = {n: {"node": n, "op": _op(model, n), "reason": "requested", "detail": "--exclude"}
                                 for n in exclude}
    # the nodes the options ask to quantize: weighted nodes of the requested op types
    wanted = {n.name for n in weighted if n.op_type in op_types}
    if wanted and not wanted - set(excluded):
        return _float_copy(src, dst, judge, model, options, sorted(excluded.values(), key=lambda e: e["node"]), say,
                           f"--exclude (or configs int8.exclude) names every one of the {len(wanted)} quantizable "
                           "nodes: int8.onnx is the FP32 graph, nothing is quantized")
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ffexport-int8-") as wd:
        work = Path(wd)
        pre = work / "pre.onnx"
        pre_label = pre_process(src, pre)
        pre_model = graph.load(pre)
        input_names = [i.name for i in graph.graph_inputs(pre_model)]
        say(f"calibrating ({method}) on real faces")
        cache, n_samples = calibrate(pre, reader_factory(input_names), method, op_types, work, say)
        with atomic_path(dst) as tmp:
            for rnd in range(MAX_ROUNDS + 1):
                q = work / f"q{rnd}.onnx"
                _quantize(pre, q, cache, method, set(excluded), op_types, extra)
                qmodel = onnx.load(str(q))
                unquantize_inputs(qmodel, set(excluded))
                live = quantized_nodes(qmodel, names)
                _check_quantized(src, wanted, live, excluded)
                lost = graph.dynamic_axes_lost(model, qmodel, judge.spec)
                if lost:
                    raise ModelLoadError(f"INT8 quantization of {src.name} fixed the dynamic axes {', '.join(lost)}")
                graph.copy_metadata(model, qmodel)
                graph.save(qmodel, tmp)
                say(f"INT8 round {rnd + 1}: parity with {len(excluded)} nodes excluded")
                parity = judge.compare(tmp, src, "int8")
                rounds.append({"round": rnd + 1, "excluded": len(excluded), "quantized": len(live & wanted),
                               "passed": parity["passed"],
                               "gates": {k: {g["metric"]: g["value"] for g in v["gates"]}
                                         for k, v in (("vs_parent", parity["vs_parent"]),
                                                      ("vs_torch", parity["vs_torch"])) if v}})
                if parity["passed"]:
                    break
                judge.forget(tmp)
                live -= set(excluded)
                ranked = sensitivity.rank_nodes(pre_model, qmodel, judge.feeds[:PROFILE_FEEDS], live) if live else []
                take = ranked[: min(2 ** rnd, len(live) - 1)]  # at least one node stays quantized
                if rnd == MAX_ROUNDS or not take:
                    raise ParityError(_failure(src, dst, parity, rounds, excluded, ranked, wanted))
                say(f"INT8 round {rnd + 1} failed: excluding the {len(take)} nodes that add most error")
                for s in take:
                    excluded[s.node] = {"node": s.node, "op": s.op, "reason": "parity", "round": rnd + 1,
                                        "detail": f"INT8 missed the gate; this node {s.detail()}"}
            kernels = cpu_kernel_parity(judge, tmp, src)
            judge.forget(tmp)
            qdq = inspect_qdq(qmodel)
    return {"quantized": True, "quantization": options, "pre_process": pre_label,
            "calibration_samples": n_samples, "weighted_nodes": len(weighted), "quantized_nodes": len(live & wanted),
            "excluded": sorted(excluded.values(), key=lambda e: (e["reason"] != "parity", e["node"])),
            "excluded_counts": dict(collections.Counter(e["reason"] for e in excluded.values())),
            "qdq": qdq, "rounds": rounds, "parity": parity, "onnxruntime_cpu_kernels": kernels}


def _float_copy(src: Path, dst: Path, judge, model, options: dict, excluded: list, say, note: str) -> dict:
    """``int8.onnx`` as the FP32 graph itself, proven like any INT8 artifact and recorded as not quantized."""
    say(note.split(":")[0])
    with atomic_path(dst) as tmp:
        tmp.write_bytes(src.read_bytes())
        parity = judge.compare(tmp, src, "int8")
        judge.forget(tmp)
        judge.require(parity, f"INT8 of {src.name}")
    return {"quantized": False, "note": note, "quantization": options, "excluded": excluded,
            "qdq": inspect_qdq(model), "rounds": [], "parity": parity, "calibration_samples": 0}


def _check_quantized(src: Path, wanted: set[str], live: set[str], excluded: dict) -> None:
    """Every node the options ask to quantize and nobody excluded must compute on Q/DQ inputs."""
    missing = sorted(wanted - live - set(excluded))
    if missing:
        raise ModelLoadError(f"onnxruntime's quantizer left {len(missing)} of the {len(wanted)} quantizable nodes of "
                             f"{src.name} in float without being asked ({', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''}): an INT8 artifact that is not what it says "
                             "was not written; report this with the model")


def _failure(src: Path, dst: Path, parity: dict, rounds: list, excluded: dict, ranked: list, wanted: set) -> str:
    """The one line of an INT8 gate that no exclusion search could meet, naming the nodes that hold the error."""
    which = parity["vs_parent"] if not parity["vs_parent"]["passed"] else parity["vs_torch"]
    bad = next(g for g in which["gates"] if not g["passed"])
    worst = [s for s in ranked if not s.graph_order][:3] or ranked[:3]
    holders = "; ".join(f"{s.node} ({s.op}: {s.detail()})" for s in worst) or "none stands out"
    return (f"INT8 of {src.name} still fails {bad['metric']} {bad['op']} {bad['threshold']:g} on '{bad['output']}' "
            f"({bad['value']:.4g}) after {len(rounds)} rounds with {len(excluded)} nodes kept in float "
            f"({len(wanted & set(excluded))} of its {len(wanted)} quantizable ones); the error is held by "
            f"{holders}; {dst.name} left as it was (keep more nodes in float with --exclude or configs "
            "int8.exclude, or loosen the module's int8 gate)")


def cpu_kernel_parity(judge, candidate: Path, parent: Path) -> dict:
    """What onnxruntime's fused INT8 CPU kernels give on this machine, against the parent: recorded, not gated.

    The gate judges the Q/DQ arithmetic the artifact defines (see :meth:`Judge.outputs`).  onnxruntime's
    fused CPU integer kernels depend on the CPU: without VNNI (AVX2, AVX-512F alone) VPMADDUBSW saturates
    16-bit sums of products of full-range INT8 weights, and even with VNNI they differed from the Q/DQ
    arithmetic on a seeded landmarker (benchmarks/results/int8-portability/).  Deployers of INT8 on
    onnxruntime's CPU provider should know what the file gives there."""
    from ..export.parity import check_parity
    from ..hostinfo import cpu_features

    cand = judge.outputs(candidate, qdq_reference=False)
    par = judge.outputs(parent)
    rec = check_parity(judge.spec, par.__getitem__, cand.__getitem__, range(len(judge.feeds)), precision="int8",
                       trained=judge.trained, raise_on_fail=False,
                       reference_label=f"{final_name(parent)} (onnxruntime CPU)",
                       candidate_label=f"{final_name(candidate)} (onnxruntime CPU integer kernels)",
                       inputs_label=judge.inputs_label)
    judge.forget(candidate)
    feats = cpu_features()
    return {"cpu": feats, "gated": False, "within_gate": rec["passed"],
            "metrics": {g["metric"]: g["value"] for g in rec["gates"]},
            "note": ("onnxruntime's fused integer kernels on this CPU, recorded, not gated: the gate judges the "
                     "Q/DQ arithmetic itself (what TensorRT computes). "
                     + ("This CPU has VNNI." if feats.get("vnni") else
                        "No VNNI here: VPMADDUBSW saturates 16-bit pair sums of full-range INT8 weights.")
                     )}


def _op(model, name: str) -> str:
    return next((n.op_type for n in model.graph.node if n.name == name), "?")


def inspect_qdq(model) -> dict:
    """The Q/DQ structure of ``model``: zero points, per-channel weights, float biases."""
    numpy_helper = require("onnx.numpy_helper")
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    nonzero, zp_types = [], collections.Counter()
    for n in qdq:
        if len(n.input) < 3 or not n.input[2]:
            nonzero.append(f"{n.name} (no zero point: uint8 by default)")
            continue
        zp = inits.get(n.input[2])
        if zp is None:
            nonzero.append(f"{n.name} (zero point not an initializer)")
            continue
        arr = numpy_helper.to_array(zp)
        zp_types[str(arr.dtype)] += 1
        if arr.any():
            nonzero.append(n.name)
    per_channel, per_tensor, float_w = [], [], []
    bias_float, bias_quant = 0, []
    for n in model.graph.node:
        if n.op_type not in WEIGHTED_OPS or len(n.input) < 2:
            continue
        w = producer.get(n.input[1])
        if w is None or w.op_type != "DequantizeLinear":
            if n.input[1] in inits:
                float_w.append(n.name)
            continue
        scale = inits.get(w.input[1])
        shape = list(scale.dims) if scale is not None else None
        has_axis = any(a.name == "axis" for a in w.attribute)
        (per_channel if shape is not None and len(shape) == 1 and has_axis else per_tensor).append(n.name)
        if n.op_type in ("Conv", "ConvTranspose", "Gemm") and len(n.input) > 2 and n.input[2]:
            b = producer.get(n.input[2])
            if n.input[2] in inits and inits[n.input[2]].data_type == 1:
                bias_float += 1
            elif b is not None and b.op_type == "DequantizeLinear":
                bias_quant.append(n.name)
    return {"quantize_linear": sum(n.op_type == "QuantizeLinear" for n in qdq),
            "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in qdq),
            "zero_point_dtypes": dict(zp_types), "nonzero_zero_points": nonzero,
            "weights_per_channel": len(per_channel), "weights_per_tensor": per_tensor,
            "weights_float": float_w, "biases_float": bias_float, "biases_quantized": bias_quant,
            "tensorrt_form": not nonzero and not per_tensor and not bias_quant and bool(per_channel)}
