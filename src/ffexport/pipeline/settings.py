"""What the reference pipeline runs, read once from ``configs/pipeline.yaml``: :class:`PipelineSettings`.

``load_pipeline_settings(config_dir=None)`` reads ``pipeline.yaml`` from ``config_dir``, else
``$FFEXPORT_CONFIGS``, else ``./configs`` (the folder of the ``<module>.yaml`` configs), checks every key
and value once and returns frozen settings; without a file, the built-in defaults (those of
:class:`~ffexport.pipeline.pipeline.Pipeline`).  A bad file is one :class:`~ffexport.errors.ConfigError`
line naming the file, the key and the valid values.  ``settings.override(...)`` applies explicit
choices (command-line flags) over the file; ``Pipeline.from_settings(settings, ...)`` builds the pipeline;
``ffexport swap``, ``ffexport run`` and ``ffexport bench --pipeline`` read the same settings.

The file (every key optional; the defaults shown)::

    modules:              # module -> the variant the pipeline runs (`ffexport modules`); generator: identity
      encoder: iresnet50  #   returns the target crop (tests). Unlisted: configs/<module>.yaml's, then the default
    backend: torch        # torch | compile | ort | trt, for every stage
    precision: fp32       # fp32 | fp16 | int8, for every stage (the blender runs int8 at fp32)
    stages:               # per module, over backend/precision
      generator: {backend: ort, precision: fp16}
    detector: auto        # auto (RetinaFace with a detector checkpoint, else MTCNN) | mtcnn | retinaface
    detect_max_side: 1280 # MTCNN detects frames with a longer side on a copy scaled to it; 0 or null: never
    blend: box            # box (feathered box mask) | poisson (gradient-domain)
    enhance: false        # restore the swapped faces with the enhancer
    enhance_faces_per_call: 4  # the enhancer's largest call (its activations are most of the device memory)
    landmarks68: false    # refine the detector's 5 points with the 68-point landmarker
    device: cpu           # cpu | cuda | cuda:N
    streaming: true       # videos through the streaming executor (copies and transfers overlap the GPU work);
                          #   false: the serial path, batch after batch (for comparison)

Importing this file does not import torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ConfigError, InputSpecError, UnknownNameError
from ..vocab import BACKENDS, PRECISIONS
from .detectors import CHOICES as DETECTORS
from .detectors import MTCNN_MAX_SIDE

# the enhancer's largest call: its activations at 512 x 512 are most of the pipeline's device memory (GFPGAN-1.4
# FP16: ~380 MB a face; 4 a call cost 1 % of the batch-8 throughput against 8, see benchmarks/NOTES.md)
ENHANCE_FACES_PER_CALL = 4

PIPELINE_YAML = "pipeline.yaml"
BLEND_MODES: tuple[str, ...] = ("box", "poisson")
IDENTITY = "identity"  # the generator whose output is its target input (tests)
STAGE_KEYS: tuple[str, ...] = ("backend", "precision")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class _Invalid(InputSpecError):
    """A bad setting: ``str()`` is the reason (one line, naming the value); ``key`` the file's key for it."""

    def __init__(self, key: str, reason: str):
        self.key = key
        super().__init__(reason)


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class PipelineSettings:
    """The pipeline's choices; every field is checked on construction (an ``InputSpecError`` naming the value).

    ``modules``: module -> variant (``generator`` may be ``identity``); modules not listed use
    ``configs/<module>.yaml``'s variant, then the registry's default.
    ``backend`` / ``precision``: every stage's, unless ``stage_backends`` / ``stage_precisions``
    (module -> name, the file's ``stages:``) say otherwise for a module.
    ``detector``: ``auto`` | ``mtcnn`` | ``retinaface``; ``detect_max_side``: MTCNN's detection size
    (``None`` or 0: frames at their own size).  ``blend``: ``box`` | ``poisson``.  ``enhance`` and
    ``landmarks68`` switch the optional enhancer and 68-point landmarker on.  ``device``: ``cpu`` |
    ``cuda`` | ``cuda:N`` (checked against the machine when the pipeline is built).  ``streaming``: streams of
    batches (videos, the pipeline benchmark) through the streaming executor (:mod:`.streaming`), or serially.
    ``config_dir``: the folder the settings came from (the pipeline reads its module configs there too);
    ``source``: the file, or ``"built-in defaults"``.
    """

    modules: Mapping[str, str] = field(default_factory=dict)
    backend: str = "torch"
    precision: str = "fp32"
    stage_backends: Mapping[str, str] = field(default_factory=dict)
    stage_precisions: Mapping[str, str] = field(default_factory=dict)
    detector: str = "auto"
    detect_max_side: int | None = MTCNN_MAX_SIDE
    blend: str = "box"
    enhance: bool = False
    enhance_faces_per_call: int = ENHANCE_FACES_PER_CALL
    landmarks68: bool = False
    device: str = "cpu"
    streaming: bool = True
    config_dir: Path | None = None
    source: str = "built-in defaults"

    def __post_init__(self) -> None:
        for name in ("modules", "stage_backends", "stage_precisions"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        _check(self)

    # --- what the settings mean for a module ------------------------------------------------------
    def backend_of(self, module: str) -> str:
        return self.stage_backends.get(module, self.backend)

    def precision_of(self, module: str) -> str:
        return self.stage_precisions.get(module, self.precision)

    def variant_of(self, module: str) -> str | None:
        """The variant the settings pick for ``module`` (``None``: ``configs/<module>.yaml``'s, then the default)."""
        return self.modules.get(module)

    # --- explicit choices over the file --------------------------------------------------------
    def override(self, *, modules: Mapping[str, str] | None = None, backend: str | None = None,
                 precision: str | None = None, stage_backends: Mapping[str, str] | None = None,
                 stage_precisions: Mapping[str, str] | None = None, detector: str | None = None,
                 detect_max_side: int | None = None, blend: str | None = None, enhance: bool | None = None,
                 landmarks68: bool | None = None, device: str | None = None,
                 streaming: bool | None = None) -> "PipelineSettings":
        """These settings with the choices given (``None``: keep the settings').

        ``modules``, ``stage_backends`` and ``stage_precisions`` are merged over the settings' per module.
        ``backend`` (``precision``) is every stage's: it replaces the default and the settings' per-stage
        backends (precisions); ``stage_backends`` (``stage_precisions``) given here still apply over it.
        ``detect_max_side=0`` detects frames at their own size.
        """
        changes: dict[str, Any] = {}
        if modules:
            changes["modules"] = {**self.modules, **modules}
        for name, default, per_stage in (("backend", backend, stage_backends),
                                         ("precision", precision, stage_precisions)):
            kept = dict(getattr(self, f"stage_{name}s")) if default is None else {}
            if default is not None:
                changes[name] = default
            if default is not None or per_stage:
                changes[f"stage_{name}s"] = {**kept, **(per_stage or {})}
        for name, value in (("detector", detector), ("detect_max_side", detect_max_side), ("blend", blend),
                            ("enhance", enhance), ("landmarks68", landmarks68), ("device", device),
                            ("streaming", streaming)):
            if value is not None:
                changes[name] = value
        return replace(self, **changes) if changes else self

    # --- for the pipeline and for reports ------------------------------------------------------
    def pipeline_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Pipeline(...)`` these settings give (``Pipeline.from_settings`` uses them)."""
        kw: dict[str, Any] = {
            "backend": {"default": self.backend, **self.stage_backends} if self.stage_backends else self.backend,
            "precision": ({"default": self.precision, **self.stage_precisions} if self.stage_precisions
                          else self.precision),
            "device": self.device, "enhance": self.enhance, "landmarks68": self.landmarks68,
            "enhance_faces_per_call": self.enhance_faces_per_call,
            "detector": self.detector, "blend": self.blend, "detect_max_side": self.detect_max_side or None,
            "variants": {m: v for m, v in self.modules.items() if m != "generator"},
            "config_dir": self.config_dir, "streaming": self.streaming,
        }
        if "generator" in self.modules:
            kw["generator"] = self.modules["generator"]
        return kw

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (for manifests and benchmark reports)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update({k: dict(out[k]) for k in ("modules", "stage_backends", "stage_precisions")})
        out["config_dir"] = str(self.config_dir) if self.config_dir is not None else None
        return out


# --- checks: every value, in one place ------------------------------------------------------------

def _name(key: str, what: str, value, valid) -> None:
    if not isinstance(value, str):
        raise _Invalid(key, f"{what} must be a name, one of {', '.join(sorted(valid))}; got {value!r} "
                            f"({type(value).__name__})")
    if value not in valid:
        raise _Invalid(key, str(UnknownNameError(what, value, valid)))


def _module(key: str, module) -> None:
    from .. import specs

    _name(key, "module", module, specs.modules())


def check_enhance_faces_per_call(n) -> None:
    """A whole number >= 1, else one :class:`InputSpecError` line (the file's reader names the key)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _Invalid("enhance_faces_per_call", f"enhance_faces_per_call must be a whole number >= 1, got {n!r}")


def _check(s: PipelineSettings) -> None:
    from .. import specs

    for module, variant in s.modules.items():
        _module(f"modules.{module}", module)
        valid = [*specs.variants(module), *((IDENTITY,) if module == "generator" else ())]
        _name(f"modules.{module}", f"variant of {module}", variant, valid)
    _name("backend", "backend", s.backend, BACKENDS)
    _name("precision", "precision", s.precision, PRECISIONS)
    for what, per_stage, valid in (("backend", s.stage_backends, BACKENDS),
                                   ("precision", s.stage_precisions, PRECISIONS)):
        for module, value in per_stage.items():
            _module(f"stages.{module}", module)
            _name(f"stages.{module}.{what}", what, value, valid)
    _name("detector", "detector", s.detector, DETECTORS)
    side = s.detect_max_side
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 0):
        raise _Invalid("detect_max_side", f"detect_max_side must be a whole number of pixels >= 0 "
                                          f"(0 or null: never scale), got {side!r}")
    _name("blend", "blend mode", s.blend, BLEND_MODES)
    check_enhance_faces_per_call(s.enhance_faces_per_call)
    for key in ("enhance", "landmarks68", "streaming"):
        if not isinstance(getattr(s, key), bool):
            raise _Invalid(key, f"{key} must be true or false, got {getattr(s, key)!r}")
    if not isinstance(s.device, str) or not _DEVICE.fullmatch(s.device):
        raise _Invalid("device", f"unsupported device {s.device!r}; use cpu, cuda or cuda:N")


# --- the file ------------------------------------------------------------------------------------

# file key -> what it holds (the error message's "valid" list is these keys)
_FILE_KEYS = ("modules", "backend", "precision", "stages", "detector", "detect_max_side", "blend", "enhance",
              "enhance_faces_per_call", "landmarks68", "device", "streaming")


def load_pipeline_settings(config_dir: str | os.PathLike | None = None) -> PipelineSettings:
    """The settings of ``pipeline.yaml`` in ``config_dir`` (else ``$FFEXPORT_CONFIGS``, else ``./configs``).

    No such folder, or no ``pipeline.yaml`` in it: the built-in defaults.  A folder given explicitly
    that does not exist, a file that is not YAML, an unknown key, a value of the wrong type or an
    unknown module, variant, backend, precision, detector or blend mode: one :class:`ConfigError` line.
    """
    from ..config import config_dir as find_config_dir

    folder = find_config_dir(config_dir)
    if folder is None:
        return PipelineSettings()
    path = folder / PIPELINE_YAML
    if not path.is_file():
        return PipelineSettings(config_dir=folder)
    yaml = __import__("ffexport._lazy", fromlist=["require"]).require("yaml", "reading configs")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    unknown = [k for k in data if k not in _FILE_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid: {', '.join(_FILE_KEYS)}")
    values: dict[str, Any] = {k: v for k, v in data.items() if k not in ("modules", "stages")}
    values["modules"] = _mapping(path, "modules", data.get("modules"), "module -> variant, e.g. {encoder: iresnet50}")
    for module, choice in _mapping(path, "stages", data.get("stages"),
                                   "module -> {backend: ..., precision: ...}").items():
        choice = _mapping(path, f"stages.{module}", choice, "{backend: ..., precision: ...}")
        bad = [k for k in choice if k not in STAGE_KEYS]
        if bad:
            raise ConfigError(f"{path}: stages.{module}: unknown key {bad[0]!r}; valid: {', '.join(STAGE_KEYS)}")
        for key in STAGE_KEYS:
            if key in choice:
                values.setdefault(f"stage_{key}s", {})[module] = choice[key]
    try:
        return PipelineSettings(**values, config_dir=folder, source=str(path))
    except _Invalid as exc:
        raise ConfigError(f"{path}: {exc.key}: {exc}") from None


def _mapping(path: Path, key: str, value, shape: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} must map {shape}, got {value!r}")
    return value
