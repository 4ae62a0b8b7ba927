"""Module defaults from ``configs/<module>.yaml``; CLI flags override them.

A config may set: ``variant``, ``opset``, ``batch: {min, opt, max}``, and
``gates: {precision: {metric: threshold}}`` (the op is the spec's).  Looked up
in ``--config-dir``, then ``$FFEXPORT_CONFIGS``, then ``./configs``.  The same
folder's ``pipeline.yaml`` (what the reference pipeline runs) is read by
:func:`ffexport.pipeline.settings.load_pipeline_settings`.
"""

from __future__ import annotations

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


def load_module_config(module: str, directory: str | os.PathLike | None = None) -> dict[str, Any]:
    d = config_dir(directory)
    if d is None:
        return {}
    path = d / f"{module}.yaml"
    if not path.is_file():
        return {}
    return read_mapping(path, _KEYS, str(path))


def read_mapping(path: Path, keys, label: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` whose keys are all in ``keys``; one :class:`ConfigError` line otherwise
    (``label`` names the file in it)."""
    yaml = __import__("ffexport._lazy", fromlist=["require"]).require("yaml", "reading configs")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping at the top level")
    unknown = set(data) - set(keys)
    if unknown:
        raise ConfigError(f"{label}: unknown keys {sorted(unknown)}; valid: {sorted(keys)}")
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
            if isinstance(thr, bool) or not isinstance(thr, (int, float)):
                raise ConfigError(f"{path}: gates.{precision}.{metric} must be a number, got {thr!r}")
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
