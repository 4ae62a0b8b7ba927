"""The registry of pipeline modules.

``get("encoder")`` returns the default variant's spec, ``get("generator",
"simswap-256")`` a named one.  Unknown names raise :class:`UnknownNameError`
listing the valid ones; the CLI's choices come from the same functions.
"""

from __future__ import annotations

from .base import BATCH, PRECISIONS, Gate, ModuleSpec, Preprocess, TensorSpec, Template  # noqa: F401
from .templates import TEMPLATES  # noqa: F401
from ..errors import UnknownNameError

_REGISTRY: dict[str, dict[str, ModuleSpec]] = {}
_DEFAULT: dict[str, str] = {}
_LOADED = False

# one file per module kind; each calls register() at import
_KIND_FILES = ("detector", "landmarker", "encoder", "generator", "enhancer", "blender", "mtcnn")


def register(spec: ModuleSpec, default: bool = False) -> ModuleSpec:
    variants = _REGISTRY.setdefault(spec.module, {})
    if spec.variant in variants:
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
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a kind file not written yet
            if exc.name != f"{__name__}.{name}":
                raise


def modules() -> list[str]:
    """Every registered module name, in registration order."""
    _load()
    return list(_REGISTRY)


def default_pipeline_modules() -> list[str]:
    _load()
    return [m for m in _REGISTRY if _REGISTRY[m][_DEFAULT[m]].in_default_pipeline]


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
