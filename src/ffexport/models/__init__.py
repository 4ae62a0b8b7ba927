"""Torch builders for the registered modules: seeded weights by default, or a checkpoint.

``build_model(spec)`` imports the builder named by the spec lazily, so
``import ffexport`` never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError, ModelLoadError
from .._lazy import require

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..specs.base import ModuleSpec

DEFAULT_SEED = 0
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "g_ema", "net")


def _builder(spec: "ModuleSpec"):
    mod_name, fn_name = spec.builder.split(":")
    return getattr(importlib.import_module(mod_name), fn_name)


def build_model(spec: "ModuleSpec", checkpoint: str | Path | None = None, seed: int = DEFAULT_SEED) -> "torch.nn.Module":
    """Build ``spec``'s torch module in eval mode.

    Without a checkpoint the weights come from a seeded generator, so the same
    seed gives the same weights on every machine.  With one, the state dict
    must match the architecture exactly (strict).
    """
    if getattr(spec, "origin", "") and not spec.builder:
        raise ModelLoadError(f"{spec.key} is {spec.origin}: it has no torch model; run it with --backend ort or trt")
    torch = require("torch", "building models")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kwargs = dict(spec.builder_kwargs)
        if checkpoint is not None and spec.pretrained:
            kwargs["weights"] = "seeded"  # the checkpoint replaces the packaged trained weights
        model = _builder(spec)(spec, **kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec.key)
    return model.eval()


def _unreadable(p: Path, exc: Exception) -> str:
    """Why ``p`` is not a checkpoint ffexport loads, in one line."""
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "weights_only" in text.lower():
        return (f"{p} holds pickled Python objects besides tensors: ffexport loads only state dicts (tensors by "
                "name), never pickled code; save one with torch.save(model.state_dict(), path)")
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return (f"{p} is not a PyTorch checkpoint (.pt/.pth from torch.save) or a .safetensors file: torch.load "
            f"says {type(exc).__name__}{': ' + first if first else ''}")


def read_state_dict(path: str | Path) -> dict:
    """Load a state dict from ``.pt``/``.pth``/``.safetensors``, unwrapping common containers."""
    torch = require("torch", "loading checkpoints")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist or is not a file")
    try:
        if p.suffix == ".safetensors":
            st = require("safetensors.torch", "reading .safetensors checkpoints")
            sd = st.load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, pickled code, not a checkpoint at all
        raise CheckpointError(_unreadable(p, exc)) from exc
    if isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    for key in _WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {p} does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _short(keys: list[str], n: int = 4) -> str:
    head = ", ".join(keys[:n])
    return head + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_checkpoint(model: "torch.nn.Module", path: str | Path, what: str = "model") -> None:
    """Strictly load ``path`` into ``model``; one line naming missing, unexpected and mis-shaped keys."""
    sd = read_state_dict(path)
    own = model.state_dict()
    # BatchNorm's num_batches_tracked is absent from checkpoints saved before torch 0.4.1: not a mismatch
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    misshaped = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_short(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped {len(misshaped)}: {_short(misshaped, 2)}")
        raise CheckpointError(f"checkpoint {path} does not match {what}: " + "; ".join(parts))
    full = {k: sd[k].to(own[k].dtype) if k in sd else own[k] for k in own}
    model.load_state_dict(full, strict=True)
