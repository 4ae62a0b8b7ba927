"""The registered passes: export, simplify, fp16, int8 and trt, each a :class:`ffexport.passes.base.Pass`
with its options dataclass.  ``get(name)`` refuses an unknown name and lists the valid ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import ConfigError, InputSpecError, UnknownNameError
from .base import Pass, PassOptions, Proof


# --- export -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportOptions(PassOptions):
    checkpoint: str | None = None  # a state dict; None: the module's default (seeded or packaged) weights
    seed: int = 0
    batch: str = "dynamic"  # the exported batch axis: "dynamic" or a fixed size ("1", "8")
    samples: int = 4  # real faces the export's parity check runs on


class ExportPass(Pass):
    """torch -> ``fp32.onnx`` (opset and IO names from the spec), proven against torch on real faces."""

    name = "export"
    tools = ("torch", "onnx", "onnxruntime")
    options_type = ExportOptions

    def validate(self, options: ExportOptions, where: str) -> None:
        if options.batch != "dynamic" and not options.batch.isdigit():
            raise ConfigError(f"{where}: export batch must be 'dynamic' or a positive integer, got {options.batch!r}")

    def run(self, parent, destination: Path, proof: Proof, options: ExportOptions) -> dict:
        from ..export.onnx import export_module
        from ..manifest import artifact_dir

        spec = proof.spec
        out = Path(destination).parent.parent
        if artifact_dir(out, spec) != Path(destination).parent:
            raise InputSpecError(f"an export of {spec.key} goes to {artifact_dir(out, spec)}, not {destination}")
        batch = options.batch if options.batch == "dynamic" else int(options.batch)
        res = export_module(spec, out, checkpoint=options.checkpoint, seed=options.seed, force=True, batch=batch,
                            samples=options.samples, progress=proof.progress)
        return res.record


# --- simplify -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimplifyOptions(PassOptions):
    tool: str = "auto"  # auto (onnxsim, then onnxslim), onnxsim or onnxslim


class SimplifyPass(Pass):
    """``fp32.onnx`` -> ``fp32.sim.onnx`` with onnxsim (onnxslim where onnxsim fails or breaks parity)."""

    name = "simplify"
    tools = ("onnx", "onnxruntime", "onnxsim", "onnxslim")
    options_type = SimplifyOptions

    def validate(self, options: SimplifyOptions, where: str) -> None:
        from .simplify import TOOLS

        if options.tool not in ("auto", *TOOLS):
            raise UnknownNameError("simplifier", options.tool, ("auto", *TOOLS))

    def run(self, parent, destination, proof: Proof, options: SimplifyOptions) -> dict:
        from .simplify import simplify

        return simplify(parent, destination, proof.judge, tool=options.tool, progress=proof.progress)


# --- fp16 ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fp16Options(PassOptions):
    keep_io_types: bool = True  # float32 inputs and outputs
    block_ops: tuple[str, ...] = ()  # op types kept in FP32 (default: the spec's)
    keep_fp32: tuple[str, ...] = ()  # node names kept in FP32


class Fp16Pass(Pass):
    """FP32 ONNX -> ``fp16.onnx``; fragile nodes stay FP32, more are kept until the FP16 gates pass."""

    name = "fp16"
    tools = ("onnx", "onnxruntime", "onnxconverter-common")
    options_type = Fp16Options
    config_key = "fp16"

    def defaults(self, spec) -> dict:
        return {"block_ops": tuple(getattr(spec, "fp16_block_ops", ()))}

    def run(self, parent, destination, proof: Proof, options: Fp16Options) -> dict:
        from .fp16 import fp16

        return fp16(parent, destination, proof.judge, keep_io_types=options.keep_io_types,
                    block_ops=list(options.block_ops), keep_nodes=list(options.keep_fp32), progress=proof.progress)

    def record(self, options: Fp16Options) -> dict:  # the manifest's historical field order
        return {"keep_io_types": options.keep_io_types, "block_ops": list(options.block_ops),
                "keep_fp32": list(options.keep_fp32)}


# --- int8 ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8Options(PassOptions):
    method: str = "minmax"  # calibration: minmax | entropy | percentile
    op_types: tuple[str, ...] = ()  # op types quantized (default: the weighted ops)
    exclude: tuple[str, ...] = ()  # node names kept in float
    dedicated_qdq_pair: bool = False


class Int8Pass(Pass):
    """FP32 ONNX -> calibrated Q/DQ ``int8.onnx`` in TensorRT's form (see :mod:`ffexport.passes.int8`)."""

    name = "int8"
    tools = ("onnx", "onnxruntime")
    options_type = Int8Options
    config_key = "int8"

    def defaults(self, spec) -> dict:
        from .int8 import DEFAULT_OP_TYPES

        return {"op_types": tuple(DEFAULT_OP_TYPES)}

    def configure(self, config, spec, overrides=None, where="configs") -> Int8Options:
        # an explicit --exclude adds to the configured exclusions
        over = dict(overrides or {})
        extra = tuple(over.pop("exclude", None) or ())
        opts = super().configure(config, spec, over, where)
        if extra:
            opts = Int8Options(opts.method, opts.op_types, tuple(sorted(set(opts.exclude) | set(extra))),
                               opts.dedicated_qdq_pair)
        else:
            opts = Int8Options(opts.method, opts.op_types, tuple(sorted(set(opts.exclude))), opts.dedicated_qdq_pair)
        return opts

    def validate(self, options: Int8Options, where: str) -> None:
        from .int8 import METHODS

        if options.method not in METHODS:
            raise UnknownNameError("calibration method", options.method, METHODS)

    def run(self, parent, destination, proof: Proof, options: Int8Options) -> dict:
        from .int8 import int8

        return int8(parent, destination, proof.judge, proof.calibration, method=options.method,
                    exclude=list(options.exclude), op_types=list(options.op_types),
                    dedicated_qdq_pair=options.dedicated_qdq_pair, progress=proof.progress)

    def record(self, options: Int8Options) -> dict:
        return {"method": options.method, "exclude": list(options.exclude), "op_types": list(options.op_types),
                "dedicated_qdq_pair": options.dedicated_qdq_pair}


# --- trt ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrtOptions(PassOptions):
    dims: Mapping = field(default_factory=dict)  # axis name -> (min, opt, max) beside the batch axis
    flavor: str = "auto"  # auto | tensorrt | tensorrt_rtx
    batch: tuple = ()  # (min, opt, max) of the batch axis; () = the spec's batch profile
    workspace_mb: int | None = None
    opt_level: int | None = None
    target_cc: tuple[str, ...] = ()
    version_compatible: bool = False
    cache_dir: str | None = None  # timing caches (default: <artifacts>/.trt-cache)


class TrtPass(Pass):
    """ONNX at a precision -> strongly typed TensorRT engine (TensorRT 10/11 or TensorRT for RTX)."""

    name = "trt"
    tools = ("tensorrt", "tensorrt-rtx-cu13")
    options_type = TrtOptions
    config_key = "trt"

    def validate(self, options: TrtOptions, where: str) -> None:
        from .trt import check_range

        if not isinstance(options.dims, Mapping):
            raise ConfigError(f"{where}: trt.dims must map an axis name to [min, opt, max]")
        for name, rng in options.dims.items():
            if not isinstance(rng, (list, tuple)) or len(rng) != 3:
                raise ConfigError(f"{where}: trt.dims.{name} must be [min, opt, max], got {rng!r}")
            try:
                check_range(rng, f"{where}: trt.dims.{name}")
            except InputSpecError as exc:
                raise ConfigError(str(exc)) from None

    def run(self, parent, destination, proof: Proof, options: TrtOptions, force: bool = False) -> dict:
        """Build (or, when the engine cache key matches and not ``force``, keep) the engine; its record is
        stored by :func:`ffexport.passes.trt.build_engine` itself (the key includes the ONNX's sha256)."""
        from .trt import build_engine

        precision = Path(destination).name.split(".")[0]
        return build_engine(parent, proof.spec, precision=precision, out_path=destination, flavor=options.flavor,
                            batch=options.batch or None, dims=dict(options.dims),
                            workspace_mb=options.workspace_mb, opt_level=options.opt_level,
                            target_cc=list(options.target_cc) or None,
                            version_compatible=options.version_compatible, cache_dir=options.cache_dir,
                            force=force, progress=proof.progress)


PASSES: dict[str, Pass] = {p.name: p for p in (ExportPass(), SimplifyPass(), Fp16Pass(), Int8Pass(), TrtPass())}


def get(name: str) -> Pass:
    if name not in PASSES:
        raise UnknownNameError("pass", name, PASSES)
    return PASSES[name]
