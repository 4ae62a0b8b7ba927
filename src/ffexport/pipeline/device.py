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


def from_host(values, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``values`` (host numbers, nested lists) as a tensor on ``device`` without waiting for the device: on CUDA
    through page-locked memory, a copy queued behind the work already on the stream (a plain
    ``torch.tensor(values, device=...)`` waits for that work to finish)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)
