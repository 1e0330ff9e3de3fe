"""What the pipeline explains: :class:`Item` (an output key plus where its image comes from),
and :class:`FigureOptions` (how its figures are drawn)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from xraylens.errors import InputError


@attrs.define(frozen=True)
class Item:
    """One image to explain.

    Attributes:
        key: its output folder below the output root (a relative posix path).
        path: the image file (read with :func:`xraylens.data.read_image` and preprocessed),
            unless ``load`` is given.
        load: ``load() -> Tensor [C, H, W]`` in [0, 1] at the model's size (e.g. from a
            dataset); wins over ``path``.
        id: the name shown in figure titles (default: ``path`` or ``key``).
    """

    key: str
    path: str | None = None
    load: Callable[[], torch.Tensor] | None = attrs.field(default=None, eq=False)
    id: str | None = None

    def __attrs_post_init__(self) -> None:
        key = Path(self.key)
        if not self.key or key.is_absolute() or ".." in key.parts:
            raise InputError(f"item key {self.key!r} must be a relative path inside the output")
        if self.path is None and self.load is None:
            raise InputError(f"item {self.key!r}: give path= or load=")

    @property
    def name(self) -> str:
        return self.id or self.path or self.key


def items_from_paths(paths: Sequence[str | os.PathLike], keys: Sequence[str]) -> list[Item]:
    """One :class:`Item` per file, with the given output keys."""
    if len(paths) != len(keys):
        raise InputError(f"{len(paths)} paths but {len(keys)} keys")
    return [Item(key=k, path=os.fspath(p), id=Path(p).name) for p, k in zip(paths, keys)]


def _default(name: str) -> Any:
    from xraylens.viz.overlay import DEFAULTS

    return DEFAULTS[name]


@attrs.define(frozen=True)
class FigureOptions:
    """How the per-image PNGs are drawn (defaults: :data:`xraylens.viz.DEFAULTS`; see
    :mod:`xraylens.viz.overlay`). ``shared_scale``: one scale for every label of an image."""

    sign: str = attrs.field(factory=lambda: _default("sign"))
    outlier_perc: float = attrs.field(factory=lambda: _default("outlier_perc"))
    scaling: str = attrs.field(factory=lambda: _default("scaling"))
    alpha: float = attrs.field(factory=lambda: _default("alpha"))
    alpha_scaling: str = attrs.field(factory=lambda: _default("alpha_scaling"))
    shared_scale: bool = True
    dpi: int = 90

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`xraylens.viz.plot_attribution`."""
        out = attrs.asdict(self)
        out.pop("dpi")
        return out


__all__ = ["FigureOptions", "Item", "items_from_paths"]
