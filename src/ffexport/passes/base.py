"""The pass protocol: every conversion step of ffexport has the same shape.

A pass has

* a ``name`` (export, simplify, fp16, int8, trt) and the ``tools`` (distributions) whose versions decide
  whether its output is still current;
* an options dataclass (:class:`PassOptions`) with its defaults, the key of ``configs/<module>.yaml`` it
  reads (``config_key``), validated once by :meth:`Pass.configure` (unknown keys and wrong types are one
  line naming the file and key);
* ``run(parent, destination, proof, options) -> record``: make ``destination`` from ``parent`` and prove it
  (``proof`` holds the judge that compares it with its parent and the torch model on real faces, and the
  calibration faces for INT8); the record fields go into the manifest beside the artifact.

A pass never calls another pass and never decides what is up to date: the artifacts layer
(:mod:`ffexport.artifacts.optimize`) chains them, skips what is current and records what they return.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from ..errors import ConfigError


@dataclass(frozen=True)
class Proof:
    """What a pass proves its artifact with.

    ``judge``: parity of a candidate against its parent and the torch model (:class:`ffexport.passes.judge.Judge`);
    ``calibration``: ``factory(input_names) -> CalibrationDataReader`` over the calibration faces (INT8);
    ``progress``: one-line status messages; ``spec``: the module's spec."""

    judge: Any = None
    calibration: Callable[[list], Any] | None = None
    progress: Callable[[str], None] | None = None
    spec: Any = None  # the module's spec (the export and the engine build need it; the judge has its own)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass(frozen=True)
class PassOptions:
    """Options of a pass: a frozen dataclass whose fields are the keys of its ``configs/`` section."""

    def record(self) -> dict:
        """The options as the manifest records them (and as the step's key compares them)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Pass:
    """Base of the registered passes (see the module docstring)."""

    name: ClassVar[str]
    tools: ClassVar[tuple[str, ...]] = ()
    options_type: ClassVar[type[PassOptions]] = PassOptions
    config_key: ClassVar[str | None] = None

    def defaults(self, spec) -> dict:
        """Spec-dependent defaults of the options (e.g. FP16's op block list)."""
        return {}

    def configure(self, config: Mapping | None, spec, overrides: Mapping | None = None,
                  where: str = "configs") -> PassOptions:
        """The options from ``config`` (the module's ``configs/`` section for this pass) and explicit
        ``overrides`` (None values ignored), validated once."""
        fields = {f.name: f for f in dataclasses.fields(self.options_type)}
        section = {} if config is None else config
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: {self.config_key} must be a mapping of {sorted(fields)}")
        unknown = sorted(set(section) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown {self.config_key} keys {unknown}; valid: {sorted(fields)}")
        values = {**self.defaults(spec), **dict(section),
                  **{k: v for k, v in (overrides or {}).items() if v is not None}}
        bad = sorted(set(values) - set(fields))
        if bad:
            raise ConfigError(f"{self.name}: unknown options {bad}; valid: {sorted(fields)}")
        for key, value in values.items():
            values[key] = _coerce(value, fields[key], f"{where}: {self.config_key or self.name}.{key}")
        opts = self.options_type(**values)
        self.validate(opts, where)
        return opts

    def validate(self, options: PassOptions, where: str) -> None:
        """Checks across fields (raise :class:`ConfigError`); the types are checked already."""

    def record(self, options: PassOptions) -> dict:
        """The options as the manifest records them."""
        return options.record()

    def run(self, parent: Path | None, destination: Path, proof: Proof, options: PassOptions) -> dict:
        raise NotImplementedError


def _coerce(value, field: dataclasses.Field, where: str):
    """``value`` as the field's declared type (bool, int, str, tuple of str), or a one-line ConfigError."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    kind = kind.replace(" ", "")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind in ("int", "int|None"):
        if value is None and "None" in kind:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if kind in ("str", "str|None"):
        if value is None and "None" in kind:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if kind.startswith("tuple[str"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of names, got {value!r}")
        return tuple(value)
    return value
