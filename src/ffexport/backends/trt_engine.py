"""TensorRT engine files: reading and checking one against its manifest record, deserialising it with the
runtime of its flavour (with a one-line reason when that cannot happen here), its IO tensors, and
``inspect_engine`` (an engine's IO, profile and layers, or its build record where no runtime can load it)."""

from __future__ import annotations

import json
from pathlib import Path

from .._lazy import available, require
from ..errors import ArtifactError, ModelLoadError, RuntimeUnavailableError
from ..fsutil import sha256_bytes
from ..manifest import Manifest
from . import trt_flavors as F

TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                 "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3fn"}
MB = float(1 << 20)
_HEADER = 64  # TensorRT and TensorRT-RTX plan headers are this long (IRuntime.engine_header_size)
# where a plan header gives the plan's length in bytes (little-endian uint64), by flavour: seen in every
# TensorRT-RTX 1.x plan; TensorRT's own plans are not checked (no plan of theirs was at hand to confirm it)
_SIZE_FIELD = {"tensorrt_rtx": 16}


# ---------------------------------------------------------------------------------------------
# Engine files: what can be checked before (and without) a GPU
# ---------------------------------------------------------------------------------------------

def read_engine(path: str | Path) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise ArtifactError(f"{p} is a folder: pass an engine file (e.g. {p}/<module>/fp16.tensorrt_rtx.engine; "
                            "`ffexport report` lists them)")
    if not p.is_file():
        raise ArtifactError(f"engine {p} does not exist; build it with `ffexport trt`")
    data = p.read_bytes()
    if len(data) < _HEADER:
        raise ArtifactError(f"{p} is not a TensorRT engine ({len(data)} bytes, shorter than an engine header); "
                            "rebuild it with `ffexport trt --force`")
    return data


def declared_size(flavor: str, data: bytes) -> int | None:
    """The plan length the header of ``data`` gives, where the flavour's header is known to carry one."""
    import struct

    at = _SIZE_FIELD.get(flavor)
    if at is None or len(data) < at + 8:
        return None
    return int(struct.unpack_from("<Q", data, at)[0])


def engine_record(path: str | Path) -> dict | None:
    """The manifest record ``ffexport trt`` wrote beside the engine, if any."""
    p = Path(path)
    try:
        return Manifest.load(p.parent).get(p.name)
    except ArtifactError:
        return None


def check_engine_file(path: str | Path, data: bytes, record: dict | None) -> str:
    """The engine's flavour, after the checks that need no runtime; one-line ArtifactError otherwise."""
    p = Path(path)
    flavor = F.sniff(data)
    if flavor is None:
        raise ArtifactError(f"{p} is not a TensorRT or TensorRT-RTX engine (header {bytes(data[:4])!r}): "
                            "corrupt or another kind of file; rebuild it with `ffexport trt --force`")
    declared = declared_size(flavor, data)
    if declared is not None and len(data) < declared:
        raise ArtifactError(f"{p} is truncated: its header gives {declared} bytes, the file has {len(data)} "
                            "(an interrupted copy or download); copy it again or rebuild it with "
                            "`ffexport trt --force`")
    if record:
        if record.get("sha256") and record["sha256"] != sha256_bytes(data):
            raise ArtifactError(f"{p} changed since it was built (its sha256 no longer matches the manifest): "
                                "corrupt or replaced; rebuild it with `ffexport trt --force`")
        built = record.get("trt_version")
        if built and available(flavor):
            installed = F.load(flavor).version
            if built != installed:
                raise ArtifactError(f"{p} was built with {F.LABELS[flavor]} {built} but {installed} is installed; "
                                    "engines run only on the version that built them: rebuild it with "
                                    "`ffexport trt --force`")
    return flavor


def check_loadable(fl: F.Flavor, runtime, logger, data: bytes, path: Path) -> None:
    """Ask the runtime about the header (works without a GPU); raise for what it can tell."""
    if not hasattr(runtime, "get_engine_validity"):
        return
    size = int(getattr(runtime, "engine_header_size", _HEADER))
    logger.clear()
    try:
        validity, diag = runtime.get_engine_validity(bytes(data[:size]))
    except Exception:  # an older binding: deserialisation will tell
        return
    if validity == fl.trt.EngineValidity.VALID:
        return
    bits = getattr(fl.trt, "EngineInvalidityDiagnostics", None)

    def has(name):
        return bits is not None and hasattr(bits, name) and int(diag) & int(getattr(bits, name))

    if has("MALFORMED_ENGINE"):
        raise ArtifactError(f"{path} is not a valid {fl.label} engine (malformed header): corrupt or built by "
                            "another version; rebuild it with `ffexport trt --force`")
    if has("VERSION_MISMATCH") or logger.mentions("created with"):
        raise ArtifactError(f"{path} was built by another {F.LABELS[fl.name]} version than the installed "
                            f"{fl.version}; rebuild it with `ffexport trt --force`")
    if has("UNSUPPORTED_CC"):
        raise RuntimeUnavailableError(f"{path} was built for other GPUs (compute capabilities) than this one; "
                                      "rebuild it here, or for this GPU with --target-cc")
    if has("OLD_CUDA_DRIVER") or has("OLD_CUDA_RUNTIME"):
        raise RuntimeUnavailableError(f"{path}: the CUDA driver or runtime here is older than {fl.label} needs")
    if has("INSUFFICIENT_GPU_MEMORY"):
        raise RuntimeUnavailableError(f"{path}: not enough free GPU memory to load the engine")
    # INVALID with no diagnostic: the runtime could not read GPU properties (no GPU); not conclusive


def load_error(fl: F.Flavor, logger, path: Path) -> Exception:
    errs = logger.errors()
    text = " ".join(errs).lower()
    if "magic" in text or "serialization" in text or "malformed" in text:
        return ArtifactError(f"{path} is not a valid {fl.label} engine ({errs[0]}); rebuild it with "
                             "`ffexport trt --force`")
    if "version" in text:
        return ArtifactError(f"{path} was built by another TensorRT version ({errs[0]}); rebuild it with "
                             "`ffexport trt --force`")
    return ModelLoadError(f"{fl.label} cannot load {path}: {errs[0] if errs else 'no reason given'}")


def runtime_flavor(name: str, path: Path) -> F.Flavor:
    if not available(name):
        raise RuntimeUnavailableError(f"{path.name} is a {F.LABELS[name]} engine and {name} is not installed: "
                                      f"{F.INSTALL[name]}")
    return F.load(name, "running TensorRT engines")


def _dims(d) -> list[int]:
    return [int(x) for x in d]


def engine_io(trt, engine) -> list[dict]:
    out = []
    for i in range(engine.num_io_tensors):
        n = engine.get_tensor_name(i)
        is_in = engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        t = {"name": n, "mode": "input" if is_in else "output", "dtype": engine.get_tensor_dtype(n).name.lower(),
             "shape": _dims(engine.get_tensor_shape(n))}
        if is_in and engine.num_optimization_profiles:
            profs = []
            for k in range(engine.num_optimization_profiles):
                lo, opt, hi = engine.get_tensor_profile_shape(n, k)
                profs.append({"min": _dims(lo), "opt": _dims(opt), "max": _dims(hi)})
            t["profiles"] = profs
        out.append(t)
    return out


def device_memory_size(engine) -> int:
    for attr in ("device_memory_size_v2", "device_memory_size"):
        if hasattr(engine, attr):
            return int(getattr(engine, attr))
    return 0



# ---------------------------------------------------------------------------------------------
# Inspection (``ffexport inspect``)
# ---------------------------------------------------------------------------------------------

def inspect_engine(path: str | Path, device: int = 0) -> dict:
    """What can be known about an engine here: file facts, its build record, and, where a runtime and a
    GPU allow, the deserialised engine's IO tensors, profiles, memory and per-layer information."""
    p = Path(path)
    data = read_engine(p)
    record = engine_record(p)
    flavor = check_engine_file(p, data, record)
    info: dict = {"file": str(p), "size_bytes": len(data), "sha256": sha256_bytes(data), "flavor": flavor,
                  "record": record, "deserialized": False, "reason": "", "io": None, "layers": None}
    if not available(flavor):
        info["reason"] = f"{flavor} is not installed here ({F.INSTALL[flavor]})"
        return info
    fl = F.load(flavor)
    gpu = F.local_gpu(device)
    ok, why = fl.runs_on(gpu) if gpu is not None else (False, "")
    if gpu is not None and not ok:
        info["reason"] = why
        return info
    logger = F.capture_logger(fl.trt)
    runtime = fl.trt.Runtime(logger)
    check_loadable(fl, runtime, logger, data, p)  # header checks run without a GPU
    if gpu is None:
        info["reason"] = f"no CUDA GPU here, and {fl.label} cannot deserialise an engine without one"
        return info
    torch = require("torch")
    with torch.cuda.device(device):
        if record and (record.get("options") or {}).get("version_compatible"):
            runtime.engine_host_code_allowed = True
        logger.clear()
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise load_error(fl, logger, p)
        info.update(deserialized=True, runtime=fl.label, gpu=f"{gpu.name} (compute capability {gpu.cc_str})",
                    io=engine_io(fl.trt, engine), num_layers=int(engine.num_layers),
                    optimization_profiles=int(engine.num_optimization_profiles),
                    device_memory_bytes=device_memory_size(engine))
        try:
            inspector = engine.create_engine_inspector()
            raw = inspector.get_engine_information(fl.trt.LayerInformationFormat.JSON)
            parsed = json.loads(raw)
            info["layers"] = parsed.get("Layers", parsed) if isinstance(parsed, dict) else parsed
        except Exception as exc:  # detail depends on the build's profiling verbosity
            info["layers_reason"] = f"engine inspector gave no layer information: {str(exc).splitlines()[0][:200]}"
        del engine
    return info
