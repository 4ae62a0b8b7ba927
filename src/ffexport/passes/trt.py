"""ONNX -> strongly typed TensorRT engine (TensorRT 10.x, 11.x or TensorRT for RTX).

Precision lives in the ONNX graph (FP32, FP16, or Q/DQ INT8 from the passes);
the engine is built strongly typed and no precision builder flag is ever set.
One optimization profile covers every dynamic axis: the batch axis from
``--batch`` or the module's ``batch`` config, other named axes (a frame's
height/width) from ``--dim`` or ``trt.dims`` in ``configs/<module>.yaml``.

A build is skipped when the engine's cache key (sha256 of the ONNX, precision,
profile, flavour and version, target, builder options) matches the manifest
record and the engine file still hashes as recorded.  TensorRT 10/11 timing
caches persist per (flavour, version, compute capability) and are reused.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .._lazy import require
from ..errors import (ArtifactError, ConfigError, InputSpecError, ModelLoadError,
                      RuntimeUnavailableError)
from ..fsutil import ensure_writable_dir, sha256_file, staging, write_bytes_atomic
from ..manifest import Manifest, locked, new_record
from ..backends import trt_flavors as F

OPT_LEVELS = range(0, 6)
DEFAULT_CACHE = ".trt-cache"  # under the artifact root: timing caches

Range = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------

def check_range(values: Sequence[int], what: str) -> Range:
    """``(min, opt, max)`` with 1 <= min <= opt <= max, or a one-line InputSpecError."""
    try:
        lo, opt, hi = (int(v) for v in values)
    except (TypeError, ValueError):
        raise InputSpecError(f"{what}: expected three integers min:opt:max, got {values!r}") from None
    if lo < 1:
        raise InputSpecError(f"{what}: min must be at least 1, got {lo}")
    if hi < lo:
        raise InputSpecError(f"{what}: max {hi} is below min {lo}")
    if not lo <= opt <= hi:
        raise InputSpecError(f"{what}: opt {opt} is outside min..max ({lo}..{hi})")
    return lo, opt, hi


def parse_range(text: str, what: str) -> Range:
    """``"1:4:8"`` -> (1, 4, 8); a single ``"4"`` means 4:4:4."""
    parts = str(text).split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise InputSpecError(f"{what} {text!r}: expected min:opt:max, e.g. 1:4:8")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputSpecError(f"{what} {text!r}: expected integers min:opt:max, e.g. 1:4:8") from None
    return check_range(values, f"{what} {text}")


def parse_dim(text: str) -> tuple[str, Range]:
    """``"height=64:720:2160"`` -> ("height", (64, 720, 2160))."""
    name, sep, rng = str(text).partition("=")
    if not sep or not name.strip():
        raise InputSpecError(f"--dim {text!r}: expected NAME=min:opt:max, e.g. height=64:720:2160")
    return name.strip(), parse_range(rng, f"--dim {name.strip()}")


def config_dims(module: str, config_dir=None) -> dict[str, Range]:
    """``trt: {dims: {name: [min, opt, max]}}`` from ``configs/<module>.yaml``."""
    from ..config import load_module_config

    trt_cfg = load_module_config(module, config_dir).get("trt") or {}
    where = f"configs/{module}.yaml"
    if not isinstance(trt_cfg, dict) or set(trt_cfg) - {"dims"}:
        raise ConfigError(f"{where}: trt must be a mapping with the key 'dims' (name: [min, opt, max])")
    dims = trt_cfg.get("dims") or {}
    if not isinstance(dims, dict):
        raise ConfigError(f"{where}: trt.dims must map an axis name to [min, opt, max]")
    out = {}
    for name, rng in dims.items():
        if not isinstance(rng, (list, tuple)) or len(rng) != 3:
            raise ConfigError(f"{where}: trt.dims.{name} must be [min, opt, max], got {rng!r}")
        try:
            out[str(name)] = check_range(rng, f"{where}: trt.dims.{name}")
        except InputSpecError as exc:
            raise ConfigError(str(exc)) from None
    return out


def onnx_input_dims(path: str | Path) -> dict[str, list[int | str | None]]:
    """Each graph input's dims: int (fixed), str (named dynamic axis) or None (unnamed dynamic axis)."""
    onnx = require("onnx", "reading ONNX inputs")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model: {type(exc).__name__}") from exc
    inits = {i.name for i in proto.graph.initializer}
    out = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        dims = []
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out[inp.name] = dims
    return out


def resolve_profile(inputs: Mapping[str, list[int | str | None]], *, batch: Range,
                    dims: Mapping[str, Range] | None = None, spec=None) -> tuple[dict, dict, list[str]]:
    """The optimization profile for ``inputs``: name -> {min, opt, max} shapes.

    Axis 0, when dynamic, is the batch axis.  A named axis takes ``dims[name]``;
    without one, a spec's example size ``e`` gives ``e//4 .. 3e`` (opt ``e``) and a note says so.
    Returns (profile, the ranges used per axis name, notes).
    """
    dims = dict(dims or {})
    examples = {}
    for t in (spec.inputs if spec is not None else ()):
        examples.update(t.example)
    profile, used, notes = {}, {}, []
    dynamic = False
    for name, shape in inputs.items():
        lo, opt, hi = [], [], []
        for axis, d in enumerate(shape):
            if isinstance(d, int):
                rng = (d, d, d)
            else:
                dynamic = True
                key = d if isinstance(d, str) else None
                if key is not None and key in dims:
                    rng = dims[key]
                elif axis == 0:
                    key, rng = key or "batch", batch
                elif key is not None and key in examples:
                    ex = int(examples[key])
                    rng = (max(1, ex // 4), ex, ex * 3)
                    notes.append(f"axis {key!r}: range {rng[0]}..{rng[2]} (opt {ex}) derived from the spec's example "
                                 f"size; set it with --dim {key}=MIN:OPT:MAX or trt.dims in configs/")
                else:
                    label = f"'{key}'" if key else "unnamed"
                    raise InputSpecError(f"input {name!r} axis {axis} ({label}) is dynamic and has no range: give "
                                         f"--dim {key or 'NAME'}=MIN:OPT:MAX (or trt.dims in configs/<module>.yaml)")
                used[key] = list(rng)
            lo.append(rng[0])
            opt.append(rng[1])
            hi.append(rng[2])
        profile[name] = {"min": lo, "opt": opt, "max": hi}
    return (profile if dynamic else {}), used, sorted(set(notes))


# ---------------------------------------------------------------------------------------------
# Targets and caches
# ---------------------------------------------------------------------------------------------

def resolve_target(flavor: F.Flavor, target_cc: Sequence[str] | None, gpu: F.GpuInfo | None) -> tuple[list[str], list]:
    """(labels for the record and the cache key, ComputeCapability members to set on the config)."""
    wanted = [c.strip() for c in (target_cc or []) if c and c.strip()]
    if flavor.is_rtx:
        if not wanted:
            return ["default"], []
        valid = flavor.target_ccs()
        bad = [c for c in wanted if c not in valid]
        if bad:
            raise InputSpecError(f"--target-cc {','.join(bad)}: {flavor.label} builds for compute capabilities "
                                 f"{', '.join(valid)}")
        return wanted, [valid[c] for c in wanted]
    if gpu is None:
        raise RuntimeUnavailableError(f"{flavor.label} builds for the GPU it runs on, and there is no CUDA GPU here; "
                                      "use --flavor tensorrt_rtx to build ahead of time")
    if wanted and wanted != [gpu.cc_str]:
        raise InputSpecError(f"--target-cc {','.join(wanted)}: {flavor.label} builds for the GPU it runs on "
                             f"({gpu.name}, compute capability {gpu.cc_str}); use --flavor tensorrt_rtx to build "
                             "for other compute capabilities")
    return [gpu.cc_str], []


def timing_cache_path(cache_dir: str | Path, flavor: F.Flavor, target: Sequence[str]) -> Path:
    cc = "-".join("sm" + t.replace(".", "") for t in target)
    return Path(cache_dir) / f"{flavor.name}-{flavor.version}-{cc}.timing"


def _cache_entries(cache) -> int | None:
    try:
        return len(cache.queryKeys())
    except Exception:  # not in every version's bindings
        return None


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------

def _parse_error(flavor: F.Flavor, parser, onnx_path: Path) -> str:
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = str(e.node_name() if hasattr(e, "node_name") else "").strip()  # both since TensorRT 10.0
        op = str(e.node_operator() if hasattr(e, "node_operator") else "").strip()
        desc = F.clean(e.desc())
        if node or op:
            errors.append(f"node {node!r} ({op or '?'}): {desc}")
        else:
            errors.append(desc)
    first = errors[0] if errors else "the parser gave no reason"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{flavor.label} cannot parse {onnx_path.name}: {first}{more}"


def _build_error(flavor: F.Flavor, logger, onnx_path: Path, precision: str, workspace_mb, version_compatible) -> str:
    errs = logger.errors()
    first = errs[0] if errs else "the builder returned no engine and logged no error"
    hint = ""
    low = " ".join(errs).lower()
    if "workspace" in low or ("outofmemory" in low.replace(" ", "") and workspace_mb):
        hint = f"; raise --workspace (now {workspace_mb} MB)" if workspace_mb else "; raise --workspace"
    elif version_compatible and "lean" in low:
        hint = f"; --version-compatible needs TensorRT's lean runtime, which {flavor.label} does not ship"
    return f"{flavor.label} cannot build {onnx_path.name} ({precision}): {first}{hint}"


def _io_record(network, profile) -> dict:
    def one(t):
        return {"name": t.name, "dtype": t.dtype.name.lower(), "shape": [int(d) for d in t.shape]}

    ins = [dict(one(network.get_input(i)), profile=profile.get(network.get_input(i).name))
           for i in range(network.num_inputs)]
    outs = [one(network.get_output(i)) for i in range(network.num_outputs)]
    return {"inputs": ins, "outputs": outs}


def build_engine(onnx_path: str | Path, spec=None, *, precision: str, out_path: str | Path,
                 flavor: str | F.Flavor = "auto", batch: Sequence[int] | None = None,
                 dims: Mapping[str, Sequence[int]] | None = None, workspace_mb: int | None = None,
                 opt_level: int | None = None, target_cc: Sequence[str] | None = None,
                 version_compatible: bool = False, cache_dir: str | Path | None = None, force: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Build ``onnx_path`` into a strongly typed engine at ``out_path``; return its manifest record.

    The record is also stored in ``out_path``'s folder manifest.  When the cache
    key matches an existing engine (and ``force`` is False) nothing is built and
    the stored record comes back with ``engine_cache_hit: True``.
    """
    from ..vocab import PRECISIONS

    say = progress or (lambda _m: None)
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if precision not in PRECISIONS:
        raise InputSpecError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX model {onnx_path} does not exist")
    if workspace_mb is not None and int(workspace_mb) < 1:
        raise InputSpecError(f"--workspace must be a positive number of MB, got {workspace_mb}")
    if opt_level is not None and int(opt_level) not in OPT_LEVELS:
        raise InputSpecError(f"--opt-level must be 0..5, got {opt_level}")
    batch_rng = check_range(batch or (spec.batch_profile if spec is not None else (1, 1, 8)), "--batch")
    dim_rngs = {k: check_range(v, f"--dim {k}") for k, v in (dims or {}).items()}

    gpu = F.local_gpu()
    fl = flavor if isinstance(flavor, F.Flavor) else F.resolve(flavor, gpu=gpu)
    trt = fl.trt
    targets, cc_members = resolve_target(fl, target_cc, gpu)
    profile, used_dims, notes = resolve_profile(onnx_input_dims(onnx_path), batch=batch_rng, dims=dim_rngs, spec=spec)

    folder = ensure_writable_dir(out_path.parent)
    with locked(folder, say):
        manifest = Manifest.load(folder)
        key = {"onnx_sha256": sha256_file(onnx_path), "precision": precision, "profile": profile, "flavor": fl.name,
               "trt_version": fl.version, "target_cc": targets, "workspace_mb": workspace_mb, "opt_level": opt_level,
               "version_compatible": bool(version_compatible)}
        if not force and manifest.is_current(out_path.name, key):
            say(f"{out_path.name}: engine cache hit (same ONNX, options and {fl.label})")
            return dict(manifest.get(out_path.name), engine_cache_hit=True)

        t0 = time.time()
        logger = F.capture_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(fl.network_flags())
        strongly_typed = bool(network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if hasattr(
            trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") else True
        if not strongly_typed:
            raise RuntimeUnavailableError(f"{fl.label} did not create a strongly typed network; ffexport builds only "
                                          "strongly typed engines")
        parser = trt.OnnxParser(network, logger)
        say(f"{fl.label}: parsing {onnx_path.name}")
        if not parser.parse_from_file(str(onnx_path)):
            raise ModelLoadError(_parse_error(fl, parser, onnx_path))

        config = builder.create_builder_config()
        if profile:
            prof = builder.create_optimization_profile()
            for name, p in profile.items():
                prof.set_shape(name, p["min"], p["opt"], p["max"])
            if config.add_optimization_profile(prof) < 0:
                why = (logger.errors() or ["no reason given"])[0]
                raise InputSpecError(f"{fl.label} rejected the optimization profile {profile}: {why}")
        if workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        if opt_level is not None:
            config.builder_optimization_level = int(opt_level)
        if cc_members:
            config.num_compute_capabilities = len(cc_members)
            for i, member in enumerate(cc_members):
                config.set_compute_capability(member, i)
        if version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if hasattr(trt, "ProfilingVerbosity"):  # per-layer detail for `ffexport inspect`
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

        tc_info: dict = {"used": False}
        tc_path = tc_cache = None
        if fl.uses_timing_cache:
            tc_path = timing_cache_path(cache_dir or out_path.parent.parent / DEFAULT_CACHE, fl, targets)
            blob = tc_path.read_bytes() if tc_path.is_file() else b""
            tc_cache = config.create_timing_cache(blob)
            before = _cache_entries(tc_cache)
            config.set_timing_cache(tc_cache, False)
            hit = bool(blob) and (before is None or before > 0)
            tc_info = {"used": True, "file": str(tc_path), "loaded_bytes": len(blob), "entries_before": before,
                       "hit": hit}
        else:
            tc_info["reason"] = f"{fl.label} ignores timing caches (no-ops since TensorRT-RTX 1.2)"

        say(f"{fl.label}: building {precision} engine for {', '.join(targets)}")
        tb = time.time()
        serialized = builder.build_serialized_network(network, config)
        build_s = time.time() - tb
        if serialized is None:
            raise ModelLoadError(_build_error(fl, logger, onnx_path, precision, workspace_mb, version_compatible))
        data = memoryview(serialized).cast("B")
        with staging(out_path) as tmp:
            tmp.write_bytes(data)
            if tc_cache is not None:
                blob = bytes(memoryview(tc_cache.serialize()).cast("B"))
                ensure_writable_dir(tc_path.parent)
                write_bytes_atomic(tc_path, blob)
                tc_info.update(saved_bytes=len(blob), entries_after=_cache_entries(tc_cache))

            options = {"precision": precision, "flavor": fl.name, "batch": list(batch_rng), "dims": used_dims,
                       "workspace_mb": workspace_mb, "opt_level": opt_level, "target_cc": targets,
                       "version_compatible": bool(version_compatible), "strongly_typed": True,
                       "precision_flags": "none (precision comes from the ONNX graph)"}
            rec = new_record(tmp, name=out_path.name, pass_name="trt", parent=onnx_path,
                             parent_sha256=key["onnx_sha256"], options=options, parity=None, key=key, started=t0,
                             flavor=fl.name, trt_version=fl.version, target_cc=targets, profile=profile,
                             build_time_s=round(build_s, 3), engine_size=len(data), workspace_mb=workspace_mb,
                             timing_cache_hit=tc_info.get("hit"), timing_cache=tc_info,
                             io=_io_record(network, profile), notes=notes,
                             build_host={"gpu": f"{gpu.name} (compute capability {gpu.cc_str})" if gpu else None})
            if spec is not None and "module" not in manifest.data:
                manifest.set_module(spec)
            manifest.commit(out_path.name, tmp, rec)
        return dict(rec, engine_cache_hit=False)
