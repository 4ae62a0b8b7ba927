"""A user's ONNX file as a module's FP32 artifact: ``--onnx MODULE=PATH``.

``adopt("detector", "det_10g.onnx")`` recognises the file's public layout
(:mod:`ffexport.artifacts.layouts`, or a ``--contract`` YAML for unusual files),
writes ``<out>/<module>.onnx-<name>/fp32.onnx`` -- the same graph with its inputs and
outputs named and shaped as the module's spec says (a reshape to the batched
detector outputs, the landmarker's point decode where the file has none) -- and
registers a spec for it (variant ``onnx-<name>``, ``origin`` saying where it came
from).  Everything downstream (simplify, FP16, INT8, engines, runners, the pipeline's
stages, benchmark rows) then works from that artifact; with no torch model behind
it, the FP32 file is the reference its FP16, INT8 and engines are proven against.

The record of ``fp32.onnx`` (pass ``adopt``) holds the user file's path and sha256,
the layout and the mapping, and the proof: the adopted graph run beside the
user's file on real faces, every mapped output compared (they must agree exactly).
A file already adopted with the same sha256 and mapping is reused as it is.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

from .._lazy import require
from ..errors import ArtifactError, ConfigError, InputSpecError
from ..fsutil import sha256_file, staging
from ..manifest import Manifest, locked, new_record
from ..vocab import FP32_ONNX
from . import layouts as L

PARITY_FACES = 2
MAX_ABS_ERR = 1e-5  # the adopted graph computes the file's outputs: only a reshape or a decode is added


def parse_module_paths(values, flag: str = "--onnx") -> dict[str, Path]:
    """``["detector=det.onnx", ...]`` -> {module: path}; each module once, each a registered module."""
    from .. import specs

    got: dict[str, Path] = {}
    for v in values or ():
        module, sep, path = str(v).partition("=")
        module = module.strip()
        if not sep or not module or not path:
            raise InputSpecError(f"{flag} {v}: give MODULE=PATH, e.g. {flag} detector=det_10g.onnx")
        specs.variants(module)  # an unknown module lists the valid ones
        if module in got:
            raise InputSpecError(f"{flag} names {module} twice")
        got[module] = Path(path)
    return got


def _variant(path: Path) -> str:
    stem = path.name[:-5] if path.name.endswith(".onnx") else path.stem
    return "onnx-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "model")


CONTRACT_KEYS = ("layout", "preprocess", "template", "inputs", "outputs", "source_transform", "trained")


def _load_contract(path: Path | None) -> dict:
    from ..config import read_mapping

    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputSpecError(f"--contract {p} does not exist or is not a file")
    return read_mapping(p, CONTRACT_KEYS, f"--contract {p}")


def _preprocess(value, where: str):
    from ..specs.base import Preprocess

    if not isinstance(value, dict) or value.get("color") not in ("RGB", "BGR"):
        raise ConfigError(f"{where}: preprocess needs color (RGB or BGR), mean and std (0..255 pixel units)")

    def three(x, name):
        vals = [float(v) for v in (x if isinstance(x, (list, tuple)) else [x] * 3)]
        if len(vals) != 3 or (name == "std" and any(v == 0 for v in vals)):
            raise ConfigError(f"{where}: preprocess {name} needs 1 or 3 numbers{' (non-zero)' if name == 'std' else ''}")
        return tuple(vals)

    return Preprocess(value["color"], three(value.get("mean", 0.0), "mean"), three(value.get("std", 1.0), "std"))


def _apply_contract(plan: L.Plan, contract: dict, where: str) -> L.Plan:
    from ..specs.templates import TEMPLATES

    if "preprocess" in contract:
        plan.preprocess = _preprocess(contract["preprocess"], where)
    if "template" in contract:
        if contract["template"] not in TEMPLATES:
            raise ConfigError(f"{where}: template {contract['template']!r} is not one of {', '.join(TEMPLATES)}")
        plan.notes.append(f"template {contract['template']} (from --contract)")
    if "source_transform" in contract:
        st = contract["source_transform"] or ""
        if st not in ("", "none", "emap"):
            raise ConfigError(f"{where}: source_transform is emap or none, got {st!r}")
        plan.source_transform = "" if st in ("", "none") else st
    return plan


def _plan_from_contract(module: str, g: L.Graph, base, contract: dict, where: str) -> L.Plan:
    """A plan spelled out by the contract: ``inputs`` and ``outputs`` map every spec name to the file's."""
    ins, outs = contract.get("inputs") or {}, contract.get("outputs") or {}
    file_in, file_out = {t.name for t in g.inputs}, {t.name for t in g.outputs}
    for kind, mapping, spec_names, file_names in (("inputs", ins, base.input_names, file_in),
                                                  ("outputs", outs, base.output_names, file_out)):
        if sorted(mapping) != sorted(spec_names):
            raise ConfigError(f"{where}: {kind} must map each of {spec_names} to the file's names, got {sorted(mapping)}")
        bad = [v for v in mapping.values() if v not in file_names]
        if bad:
            raise ConfigError(f"{where}: {kind} {bad} are not in {g.path.name} (it has {sorted(file_names)}); "
                              f"map each of {spec_names} to one of the file's {kind}")
    image = next((t for t in g.inputs if t.name in ins.values() and len(t.dims) == 4), None)
    size = (image.fixed(2) if image else None) or (base.input_size[0] if base.input_size else 0)
    pre = base.preprocess
    plan = L.Plan(module, "contract", dict(ins), {k: (v, None) for k, v in outs.items()}, int(size), pre,
                  source_transform=base.source_transform)
    for name, (their, _) in plan.outputs.items():
        want = base.outputs[base.output_names.index(name)]
        have = next(t for t in g.outputs if t.name == their)
        if len(have.dims) != len(want.shape):
            plan.outputs[name] = (their, [-1 if d == "batch" else d for d in want.shape])
    return plan


# --- the graph rewrite --------------------------------------------------------------------------

def _rename(model, mapping: dict[str, str]) -> None:
    if not mapping:
        return
    g = model.graph
    for n in g.node:
        n.input[:] = [mapping.get(x, x) for x in n.input]
        n.output[:] = [mapping.get(x, x) for x in n.output]
    for v in (*g.input, *g.output, *g.value_info):
        v.name = mapping.get(v.name, v.name)


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _const(helper, numpy_helper, name: str, values, dtype="int64"):
    import numpy as np

    return helper.make_node("Constant", [], [name], name=f"{name}_const",
                            value=numpy_helper.from_array(np.asarray(values, dtype=dtype), name))


def _rewrite(model, plan: L.Plan, spec) -> None:
    """Name and shape ``model``'s inputs and outputs as ``spec`` says (in place)."""
    onnx = require("onnx")
    helper, numpy_helper = onnx.helper, require("onnx.numpy_helper")
    g = model.graph
    direct = {their: ours for ours, (their, reshape) in plan.outputs.items() if reshape is None
              and not (plan.decode == "2dfan-points" and ours == "points")}
    mapping = {their: ours for ours, their in plan.inputs.items()}
    mapping.update(direct)
    # a tensor inside the graph already called like a spec name gets out of the way first
    taken = {x for n in g.node for x in (*n.input, *n.output)} | {v.name for v in (*g.input, *g.output)}
    clash = {n: f"{n}__file" for n in set(mapping.values()) & taken if n not in mapping}
    _rename(model, clash)
    mapping = {clash.get(k, k): v for k, v in mapping.items()}
    _rename(model, mapping)
    new_nodes = []
    for ours, (their, reshape) in plan.outputs.items():
        their = clash.get(their, their)
        if reshape is not None:
            new_nodes += [_const(helper, numpy_helper, f"{ours}__shape", reshape),
                          helper.make_node("Reshape", [their, f"{ours}__shape"], [ours], name=f"{ours}_to_spec")]
    opset = _opset(model)
    if plan.decode:
        heat = "heatmaps"
        if plan.decode == "2dfan-points":
            pts = clash.get(plan.outputs["points"][0], plan.outputs["points"][0])
            new_nodes += [_const(helper, numpy_helper, "points__start", [0]),
                          _const(helper, numpy_helper, "points__end", [2]),
                          _const(helper, numpy_helper, "points__axis", [2]),
                          helper.make_node("Slice", [pts, "points__start", "points__end", "points__axis"],
                                           ["points__xy"], name="points_xy"),
                          _const(helper, numpy_helper, "points__cell", [256.0 / L.HEATMAP], "float32"),
                          helper.make_node("Mul", ["points__xy", "points__cell"], ["points"], name="points_to_pixels")]
        else:
            n = L.HEATMAP
            new_nodes += [_const(helper, numpy_helper, "points__flat", [0, 68, n * n]),
                          helper.make_node("Reshape", [heat, "points__flat"], ["points__hm"], name="points_flat"),
                          helper.make_node("ArgMax", ["points__hm"], ["points__idx"], name="points_argmax",
                                           axis=2, keepdims=0),
                          _const(helper, numpy_helper, "points__n", n),
                          helper.make_node("Mod", ["points__idx", "points__n"], ["points__xi"], name="points_x"),
                          helper.make_node("Div", ["points__idx", "points__n"], ["points__yi"], name="points_y"),
                          _const(helper, numpy_helper, "points__ax", [2]),
                          helper.make_node("Unsqueeze", ["points__xi", "points__ax"], ["points__xu"], name="points_xu"),
                          helper.make_node("Unsqueeze", ["points__yi", "points__ax"], ["points__yu"], name="points_yu"),
                          helper.make_node("Concat", ["points__xu", "points__yu"], ["points__cells"],
                                           name="points_cells", axis=2),
                          helper.make_node("Cast", ["points__cells"], ["points__cf"], name="points_cast",
                                           to=onnx.TensorProto.FLOAT),
                          _const(helper, numpy_helper, "points__half", 0.5, "float32"),
                          helper.make_node("Add", ["points__cf", "points__half"], ["points__centre"],
                                           name="points_centre"),
                          _const(helper, numpy_helper, "points__cell", 256.0 / n, "float32"),
                          helper.make_node("Mul", ["points__centre", "points__cell"], ["points"],
                                           name="points_to_pixels")]
        if opset >= 18:
            new_nodes += [_const(helper, numpy_helper, "scores__axes", [2, 3]),
                          helper.make_node("ReduceMax", [heat, "scores__axes"], ["scores"], name="scores_peak",
                                           keepdims=0)]
        else:
            new_nodes.append(helper.make_node("ReduceMax", [heat], ["scores"], name="scores_peak", axes=[2, 3],
                                              keepdims=0))
    g.node.extend(new_nodes)

    def value_info(t):
        dims = [d if isinstance(d, int) else str(d) for d in t.shape]
        return helper.make_tensor_value_info(t.name, onnx.TensorProto.FLOAT, dims)

    del g.output[:]
    g.output.extend(value_info(t) for t in spec.outputs)
    kept = [i for i in g.input if i.name not in set(spec.input_names)]
    del g.input[:]
    g.input.extend([value_info(t) for t in spec.inputs] + kept)
    del g.value_info[:]


# --- adoption -----------------------------------------------------------------------------------

def _feeds(spec, emap=None, n: int = PARITY_FACES) -> list[dict]:
    from ..faces import builtin_faces, module_feeds

    faces = list(builtin_faces())[:n]
    return list(module_feeds(spec, faces, batch=1, drop_last=True, emap=emap))


def _session(model_or_path):
    ort = require("onnxruntime", "running ONNX models")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _run_dims(model, g: L.Graph) -> dict:
    """Output dims of one run at the detector size (outputs of a dynamic-size file have no static shape)."""
    import numpy as np

    try:
        s = _session(model)
        x = np.zeros((1, 3, L.DETECT_SIZE, L.DETECT_SIZE), np.float32)
        outs = s.run(None, {g.inputs[0].name: x})
    except Exception:  # the layout check then reports the static shapes it found
        return {}
    return {o.name: list(v.shape) for o, v in zip(s.get_outputs(), outs)}


def _base_spec(module: str, plan: L.Plan):
    from .. import specs

    if module == "generator":
        return specs.get("generator", "inswapper-128" if plan.source_transform == "emap" else "simswap-256")
    return specs.get(module, specs.default_variant(module))


def _own_export(model, module: str):
    """The registered spec a file exported by ffexport names in its metadata, when it is one of ``module``'s."""
    from .. import specs

    meta = {p.key: p.value for p in model.metadata_props}
    key = meta.get("ffexport.spec", "")
    m, _, v = key.partition("/")
    if m == module and not meta.get("ffexport.origin") and v in specs.variants(module):
        return specs.get(m, v)
    return None


def _check_own_names(model, own, module: str, path: Path) -> None:
    """An ffexport export keeps the spec's tensor names; one renamed since (by a graph tool, say) is one line
    naming the spec's names and the file's, and the two ways out."""
    from ..passes import graph as G

    have_in = [i.name for i in G.graph_inputs(model)]
    have_out = [o.name for o in model.graph.output]
    if set(have_in) == set(own.input_names) and set(have_out) == set(own.output_names):
        return
    ins = dict(zip(own.input_names, have_in)) if len(have_in) == len(own.input_names) else {}
    outs = dict(zip(own.output_names, have_out)) if len(have_out) == len(own.output_names) else {}
    example = (f" (e.g. inputs: {_flow(ins)}, outputs: {_flow(outs)})" if ins and outs else "")
    raise InputSpecError(f"--onnx {module}={path.name}: its metadata says it is ffexport's {own.key} export, but "
                         f"its tensors are named {have_in} -> {have_out}, not {list(own.input_names)} -> "
                         f"{list(own.output_names)}; export it again with `ffexport onnx -m {module} --variant "
                         f"{own.variant}`, or map each name with --contract {module}=FILE{example}")


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def adopt(module: str, path: str | Path, out: str | Path = "artifacts", contract: str | Path | None = None,
          say=None):
    """Adopt ``path`` as ``module``'s FP32 artifact under ``out`` and register its spec (see the module
    docstring); returns the spec."""
    from .. import specs
    from ..passes import graph as G
    from ..specs.templates import TEMPLATES

    say = say or (lambda _m: None)
    path = Path(path)
    specs.variants(module)
    model = G.load(path)
    source_sha = sha256_file(path)
    cfg = _load_contract(Path(contract) if contract else None)
    where = f"--contract {contract}"
    own = _own_export(model, module) if not cfg else None
    if own is not None:
        _check_own_names(model, own, module, path)
        plan = L.Plan(module, f"ffexport export ({own.key})", {n: n for n in own.input_names},
                      {n: (n, None) for n in own.output_names}, int(own.input_size[0]) if own.input_size else 0,
                      own.preprocess, source_transform=own.source_transform)
        base = own
    else:
        g = L.read_graph(model, path)
        if module == "detector" and g.inputs:
            g.run_dims = _run_dims(model, g)
        if cfg.get("inputs") or cfg.get("outputs"):
            plan = _plan_from_contract(module, g, specs.get(module), cfg, where)
        else:
            plan = L.recognise(module, g, cfg.get("layout"))
        plan = _apply_contract(plan, cfg, where)
        if module == "generator" and plan.source_transform == "emap" and g.emap is None:
            raise InputSpecError(f"--onnx generator={path.name}: the source goes through emap, but the file's last "
                                 "initializer is no unused 512x512 matrix")
        base = _base_spec(module, plan) if plan.layout != "contract" else specs.get(module)
    variant = _variant(path)
    template = TEMPLATES[cfg["template"]] if "template" in cfg else base.template
    trained = bool(cfg.get("trained", True))
    origin = f"user ONNX {path.name} ({plan.layout} layout)"
    folder = Path(out) / f"{module}.{variant}"
    fp32 = folder / FP32_ONNX
    probe = replace(base, variant=variant, builder="", builder_kwargs={"onnx": str(fp32.resolve())}, origin=origin,
                    preprocess=plan.preprocess, template=template, source_transform=plan.source_transform,
                    input_size=(plan.size, plan.size) if plan.size else base.input_size, pretrained=trained,
                    ci=False, summary=f"{base.module} from {path.name} ({plan.layout} layout)")
    key = {"source_sha256": source_sha, "layout": plan.layout, "inputs": plan.inputs,
           "outputs": {k: [v[0], v[1]] for k, v in plan.outputs.items()},
           "preprocess": plan.preprocess.describe() if plan.preprocess else None,
           "template": template.name if template else None, "source_transform": plan.source_transform,
           "decode": plan.decode}
    man = Manifest.load(folder)
    rec = man.get(FP32_ONNX)
    if rec and rec.get("pass") == "adopt" and rec.get("key", {}).get("adopt") == json.loads(json.dumps(key)) \
            and fp32.is_file() and sha256_file(fp32) == rec.get("sha256"):
        dynamic = rec.get("options", {}).get("batch") == "dynamic"
        ins, outs = L.spec_tensors(plan, base, dynamic)
        spec = replace(probe, inputs=ins, outputs=outs, **({} if dynamic else {"batch_profile": (1, 1, 1)}))
        say(f"{module}: {path.name} adopted before (same file and mapping), reused")
        return _register(spec)
    t0 = time.time()
    say(f"{module}: adopting {path.name} ({plan.layout} layout)")
    batch_dynamic = True
    ins, outs = L.spec_tensors(plan, base, batch_dynamic)
    spec = replace(probe, inputs=ins, outputs=outs)
    candidate = _rewritten(model, plan, spec)
    if not _runs_batch(candidate, spec):
        batch_dynamic = False
        ins, outs = L.spec_tensors(plan, base, False)
        spec = replace(probe, inputs=ins, outputs=outs, batch_profile=(1, 1, 1))
        candidate = _rewritten(model, plan, spec)
    meta = {"ffexport.spec": spec.key, "ffexport.contract": json.dumps(spec.contract(), sort_keys=True),
            "ffexport.origin": json.dumps({"file": str(path), "sha256": source_sha, "layout": plan.layout})}
    keep = [p for p in candidate.metadata_props if not p.key.startswith("ffexport.")]
    del candidate.metadata_props[:]
    candidate.metadata_props.extend(keep)
    for k, v in sorted(meta.items()):
        e = candidate.metadata_props.add()
        e.key, e.value = k, v
    require("onnx").checker.check_model(candidate)
    parity = _prove(path, candidate, plan, spec)
    if not parity["passed"]:
        raise ArtifactError(f"{module}: the adopted graph of {path.name} does not reproduce the file's outputs "
                            f"(max abs error {parity['max_abs_err']}); report this with the file's layout")
    with locked(folder, say), staging(fp32) as tmp:
        man = Manifest.load(folder)
        tmp.write_bytes(candidate.SerializeToString())
        man.set_module(spec)
        record = new_record(tmp, name=fp32.name, pass_name="adopt", parent=None, started=t0, parity=parity,
                            inputs={"onnx": str(path), "sha256": source_sha, "origin": "user",
                                    "torch_reference": None, "notes": plan.notes},
                            key={"adopt": key, "checkpoint_sha256": None},
                            options={"layout": plan.layout, "batch": "dynamic" if batch_dynamic else 1},
                            io=spec.contract())
        man.commit(FP32_ONNX, tmp, record)
        for stale in [n for n in man.data["artifacts"] if n != FP32_ONNX]:
            # made from another file (or mapping): records first, then files; the passes rebuild them
            man.data["artifacts"].pop(stale)
            man.save()
            (folder / stale).unlink(missing_ok=True)
    say(f"{module}: {path.name} -> {fp32} ({plan.layout} layout, outputs identical)")
    return _register(spec)


def _rewritten(model, plan, spec):
    import copy

    m = copy.deepcopy(model)
    _rewrite(m, plan, spec)
    return m


def _runs_batch(model, spec) -> bool:
    """True when the graph really takes a batch of 2 (some public files fix 1 inside their reshapes)."""
    import numpy as np

    try:
        s = _session(model)
        feeds = {t.name: np.zeros(t.concrete(2), np.float32) for t in spec.inputs}
        outs = s.run(None, feeds)
        one = s.run(None, {k: v[:1] for k, v in feeds.items()})
    except Exception:
        return False
    return all(o.shape[0] == 2 * p.shape[0] for o, p in zip(outs, one))  # (B, ...) and (B * N, k) alike


def _prove(path: Path, candidate, plan: L.Plan, spec) -> dict:
    """The adopted graph against the user's file on real faces: every mapped output, max abs error."""
    import numpy as np

    from ..passes import graph as G

    emap = G.last_initializer(candidate) if spec.source_transform == "emap" else None
    feeds = _feeds(spec, emap)
    theirs, ours = _session(path), _session(candidate)
    their_out = [o.name for o in theirs.get_outputs()]
    errs: dict[str, float] = {}
    for f in feeds:
        a = theirs.run(None, {plan.inputs[n]: v.numpy() for n, v in f.items()})
        b = dict(zip([o.name for o in ours.get_outputs()], ours.run(None, {n: v.numpy() for n, v in f.items()})))
        for name, (their, _) in plan.outputs.items():
            if plan.decode == "2dfan-points" and name == "points":
                ref = a[their_out.index(their)][..., :2] * (256.0 / L.HEATMAP)
            else:
                ref = a[their_out.index(their)]
            got = b[name]
            if ref.size != got.size:
                errs[name] = float("inf")
                continue
            errs[name] = max(errs.get(name, 0.0), float(np.abs(ref.reshape(got.shape) - got).max()))
    worst = max(errs.values()) if errs else 0.0
    return {"passed": worst <= MAX_ABS_ERR, "reference": f"{path.name} (onnxruntime CPU)",
            "candidate": f"{FP32_ONNX} (onnxruntime CPU)", "inputs": f"{len(feeds)} built-in faces",
            "max_abs_err": errs, "gate": f"max_abs_err <= {MAX_ABS_ERR:g} on every mapped output"}


def _register(spec):
    from .. import specs

    specs.register(spec, replace_existing=True)
    return spec


def adopt_all(onnx: dict, out, contracts: dict | None = None, say=None) -> dict[str, str]:
    """Adopt every ``module -> path`` (``contracts``: module -> contract file); returns ``module -> variant``
    (what the pipeline and the benchmark select)."""
    contracts = dict(contracts or {})
    stray = sorted(set(contracts) - set(onnx))
    if stray:
        raise InputSpecError(f"--contract {stray[0]}=... names a module without --onnx {stray[0]}=PATH")
    return {m: adopt(m, p, out, contracts.get(m), say).variant for m, p in onnx.items()}
