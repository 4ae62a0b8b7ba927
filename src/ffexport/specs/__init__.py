"""The registry of pipeline modules.

``get("encoder")`` returns the default variant's spec, ``get("generator",
"simswap-256")`` a named one.  Unknown names raise :class:`UnknownNameError`
listing the valid ones; the CLI's choices come from the same functions.
"""

from __future__ import annotations

import os

from .base import BATCH, Gate, ModuleSpec, Preprocess, TensorSpec, Template  # noqa: F401
from .templates import TEMPLATES  # noqa: F401
from ..errors import UnknownNameError

_REGISTRY: dict[str, dict[str, ModuleSpec]] = {}
_DEFAULT: dict[str, str] = {}
_LOADED = False

# one file per module kind; each calls register() at import
_KIND_FILES = ("detector", "landmarker", "encoder", "generator", "enhancer", "blender", "mtcnn")


def register(spec: ModuleSpec, default: bool = False, replace_existing: bool = False) -> ModuleSpec:
    """Add ``spec`` to the registry (``default``: it becomes its module's default variant).  A module
    registered outside ffexport needs only its spec (with its ``builder``, ``feed`` and gates) and the
    torch builder it names: export, the passes, engine builds and the benchmark then work for it.
    ``replace_existing``: a variant registered again (a user's ONNX file adopted again) replaces the old one."""
    if spec.module not in _REGISTRY:
        _load()
    variants = _REGISTRY.setdefault(spec.module, {})
    if spec.variant in variants and not replace_existing:
        raise ValueError(f"duplicate spec {spec.key}")
    variants[spec.variant] = spec
    if default or spec.module not in _DEFAULT:
        _DEFAULT[spec.module] = spec.variant
    return spec


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for name in _KIND_FILES:
        importlib.import_module(f"{__name__}.{name}")
    # modules registered outside ffexport: FFEXPORT_SPECS=package.module[,...], each calling register()
    for name in filter(None, (n.strip() for n in os.environ.get("FFEXPORT_SPECS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UnknownNameError("FFEXPORT_SPECS module", name, [f"an importable module ({exc})"]) from None


def modules() -> list[str]:
    """Every registered module name, in registration order."""
    _load()
    return list(_REGISTRY)


def unregister(module: str, variant: str | None = None) -> None:
    """Remove ``module`` and its variants, or only its ``variant`` (registered for a while, by a test, a plugin or
    a user's ONNX file)."""
    if variant is not None:
        _REGISTRY.get(module, {}).pop(variant, None)
        return
    _REGISTRY.pop(module, None)
    _DEFAULT.pop(module, None)


def ci_variant(module: str) -> str:
    """The variant CI tests ``module`` with (the one whose spec says ``ci=True``), else the default."""
    vs = variants(module)
    return next((v for v in vs if _REGISTRY[module][v].ci), _DEFAULT[module])


def variants(module: str) -> list[str]:
    _load()
    if module not in _REGISTRY:
        raise UnknownNameError("module", module, _REGISTRY)
    return list(_REGISTRY[module])


def default_variant(module: str) -> str:
    variants(module)
    return _DEFAULT[module]


def get(module: str, variant: str | None = None) -> ModuleSpec:
    vs = variants(module)
    variant = variant or _DEFAULT[module]
    if variant not in vs:
        raise UnknownNameError(f"variant of {module}", variant, vs)
    return _REGISTRY[module][variant]


def all_specs() -> list[ModuleSpec]:
    _load()
    return [s for vs in _REGISTRY.values() for s in vs.values()]


def resolve_modules(selector: str) -> list[str]:
    """``"all"`` -> every module; ``"a,b"`` -> those (each checked)."""
    if selector == "all":
        return modules()
    names = [s.strip() for s in selector.split(",") if s.strip()]
    for n in names:
        variants(n)
    return names
