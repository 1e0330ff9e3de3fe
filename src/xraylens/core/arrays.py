"""Small conversions shared by the measuring and drawing layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xraylens.errors import InputError


def as_array(value: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (detached, on the CPU); ``name`` is the
    argument named in the :class:`InputError` for anything else."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a tensor or array, got {type(value).__name__}") from exc
