"""The pipeline's device: ``cpu``, ``cuda`` or ``cuda:N``, checked once with a one-line error."""

from __future__ import annotations

import torch

from ..errors import InputSpecError, RuntimeUnavailableError


def check_device(device: str) -> torch.device:
    """``torch.device`` for ``device``; a one-line error when CUDA is asked for and absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputSpecError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeUnavailableError("CUDA requested but no GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeUnavailableError(f"{device} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type != "cpu":
        raise InputSpecError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev
