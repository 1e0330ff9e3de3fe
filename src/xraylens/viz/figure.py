"""Saving figures: atomic writes, format from the file suffix."""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import InputError

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG, or PDF/SVG/JPEG by suffix) atomically; returns the path.

    Atomic: an interrupted run never leaves a half-written image behind.
    """
    if not isinstance(fig, Figure):
        raise InputError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise InputError(f"cannot save a figure as {path.suffix!r}; use one of {FORMATS}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["save_figure"]
