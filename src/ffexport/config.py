"""Module defaults from ``configs/<module>.yaml``; CLI flags override them.

A config may set: ``variant``, ``opset``, ``batch: {min, opt, max}``, and
``gates: {precision: {metric: threshold}}`` (the op is the spec's).  Looked up
in ``--config-dir``, then ``$FFEXPORT_CONFIGS``, then ``./configs``.  The same
folder's ``pipeline.yaml`` (what the reference pipeline runs) is read by
:func:`ffexport.pipeline.settings.load_pipeline_settings`.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .specs.base import Gate, ModuleSpec

_KEYS = {"variant", "opset", "batch", "gates", "fallback_gates", "calibration", "trt", "fp16", "int8"}


def config_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit and not Path(explicit).is_dir():
        raise ConfigError(f"config folder {explicit} does not exist: pass --config-dir with a folder of "
                          "<module>.yaml files (like the repository's configs/)")
    for cand in (explicit, os.environ.get("FFEXPORT_CONFIGS"), "configs"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    if explicit:
        raise ConfigError(f"config folder {explicit} does not exist")
    return None


def module_config_path(module: str, directory: str | os.PathLike | None = None) -> Path | None:
    """``<config folder>/<module>.yaml`` when that file exists, else None."""
    d = config_dir(directory)
    path = d / f"{module}.yaml" if d is not None else None
    return path if path is not None and path.is_file() else None


def module_config_label(module: str, directory: str | os.PathLike | None = None) -> str:
    """How error lines name ``module``'s config: the file read, or ``configs/<module>.yaml`` when there is none."""
    path = module_config_path(module, directory)
    return str(path) if path is not None else f"configs/{module}.yaml"


def load_module_config(module: str, directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """``<module>.yaml`` of the config folder (``{}`` without one), every value's type checked once here: a
    value of the wrong type is one :class:`ConfigError` line naming the file, the key and the value."""
    path = module_config_path(module, directory)
    if path is None:
        return {}
    return check_module_config(read_mapping(path, _KEYS, str(path)), str(path))


def read_mapping(path: Path, keys, label: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` whose keys are all in ``keys``; one :class:`ConfigError` line otherwise
    (``label`` names the file in it)."""
    yaml = __import__("ffexport._lazy", fromlist=["require"]).require("yaml", "reading configs")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping at the top level, got {_kind(data)}")
    unknown = set(data) - set(keys)
    if unknown:
        raise ConfigError(f"{label}: unknown keys {sorted(unknown, key=str)}; valid: {sorted(keys)}")
    return data


# --- the types of a module config's values ----------------------------------------------------------

CALIBRATION_KEYS = ("samples", "parity_samples")


def _kind(value) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:120]


def _whole(value, where: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where} must be a whole number >= {low}, got {value!r}")
    return value


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return value


def _section(data: dict, key: str, label: str, shape: str) -> dict:
    """``data[key]`` as a mapping (absent or empty: ``{}``)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: {key} must be a mapping of {shape}, got {_kind(value)}")
    return value


def check_module_config(data: dict, label: str) -> dict:
    """``data`` (a module config read from ``label``) when every value has the type its readers expect: the
    spec's (variant, opset, batch, gates), the INT8 chain's (calibration) and the passes' sections (each
    pass checks its own keys and values); one :class:`ConfigError` line otherwise.  An empty key is unset."""
    variant = data.get("variant")
    if variant is not None and not (isinstance(variant, str) and variant):
        raise ConfigError(f"{label}: variant must be a variant name (`ffexport modules` lists them), got "
                          f"{_kind(variant)}")
    opset = data.get("opset")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)):
        raise ConfigError(f"{label}: opset must be a whole number (e.g. 17), got {opset!r}")
    batch = _section(data, "batch", label, "min, opt and max")
    if "batch" in data and data["batch"] is not None:
        if sorted(map(str, batch)) != ["max", "min", "opt"]:
            raise ConfigError(f"{label}: batch needs integer min, opt and max (e.g. {{min: 1, opt: 1, max: 8}}), "
                              f"got {_kind(batch)}")
        lo, opt, hi = (_whole(batch[k], f"{label}: batch.{k}") for k in ("min", "opt", "max"))
        if not lo <= opt <= hi:
            raise ConfigError(f"{label}: batch needs min <= opt <= max, got {lo}, {opt}, {hi}")
    for key in ("gates", "fallback_gates"):
        for precision, metrics in _section(data, key, label, "precision -> {metric: threshold}").items():
            if not isinstance(metrics, dict):
                raise ConfigError(f"{label}: {key}.{precision} must map metric -> threshold, got {_kind(metrics)}")
            for metric, threshold in metrics.items():
                _number(threshold, f"{label}: {key}.{precision}.{metric}")
    calibration = _section(data, "calibration", label, f"{' and '.join(CALIBRATION_KEYS)}")
    unknown = sorted(set(calibration) - set(CALIBRATION_KEYS), key=str)
    if unknown:
        raise ConfigError(f"{label}: unknown calibration keys {unknown}; valid: {list(CALIBRATION_KEYS)}")
    for key, value in calibration.items():
        if value is not None:
            _whole(value, f"{label}: calibration.{key}")
    for key in ("trt", "fp16", "int8"):
        _section(data, key, label, f"the {key} pass's options")
    dims = _section(data, "trt", label, "the trt pass's options").get("dims")
    if dims is not None and not isinstance(dims, dict):
        raise ConfigError(f"{label}: trt.dims must map an axis name to [min, opt, max], got {_kind(dims)}")
    return data


def _override_gates(spec_gates, cfg: dict, path: str) -> dict:
    out = {p: tuple(gs) for p, gs in spec_gates.items()}
    for precision, metrics in (cfg or {}).items():
        if not isinstance(metrics, dict):
            raise ConfigError(f"{path}: gates.{precision} must map metric -> threshold")
        current = {g.metric: g for g in out.get(precision, ())}
        for metric, thr in metrics.items():
            if metric not in current:
                raise ConfigError(f"{path}: gates.{precision}.{metric} is not a gate of this module; "
                                  f"valid: {sorted(current)}")
            _number(thr, f"{path}: gates.{precision}.{metric}")
            current[metric] = Gate(metric, current[metric].op, float(thr))
        out[precision] = tuple(current.values())
    return out


def resolve_spec(module: str, variant: str | None = None, opset: int | None = None,
                 directory: str | os.PathLike | None = None) -> ModuleSpec:
    """The spec for ``module`` with configs/ applied, then explicit arguments."""
    from . import specs

    cfg = load_module_config(module, directory)
    spec = specs.get(module, variant or cfg.get("variant"))
    d = config_dir(directory) if cfg else None
    label = str(d / f"{module}.yaml") if d else f"configs/{module}.yaml"
    kw: dict[str, Any] = {}
    if opset or cfg.get("opset"):
        value = opset or cfg["opset"]
        if isinstance(value, bool) or not isinstance(value, int):
            where = "--opset" if opset else f"{label}: opset"
            raise ConfigError(f"{where} must be a whole number (e.g. 17), got {value!r}")
        kw["opset"] = value
    if "batch" in cfg:
        b = cfg["batch"]
        try:
            kw["batch_profile"] = (int(b["min"]), int(b["opt"]), int(b["max"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{label}: batch needs integer min, opt and max") from exc
    if "gates" in cfg:
        kw["gates"] = _override_gates(spec.gates, cfg["gates"], label)
    if "fallback_gates" in cfg:
        kw["fallback_gates"] = _override_gates(spec.fallback_gates, cfg["fallback_gates"], label)
    return replace(spec, **kw) if kw else spec
