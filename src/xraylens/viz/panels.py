"""Multi-panel attribution figures: rows x columns of overlays on one greyscale image.

- :func:`plot_grid`: the general form, any rows x columns of maps (None leaves a panel empty);
- :func:`plot_models_methods`: the paper's layout, rows = models, columns = methods, one label;
- :func:`plot_labels_methods`: one model, rows = labels, columns = methods;
- :func:`plot_attribution`: one :class:`~xraylens.Attribution`, one panel per explained label.

Every function returns a :class:`matplotlib.figure.Figure` (no pyplot: safe under Agg, in
threads and without a display); save it with :func:`xraylens.viz.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from xraylens.core.attribution import Attribution
from xraylens.errors import InputError
from xraylens.viz.overlay import (
    _check_sign,
    _magnitudes,
    draw_overlay,
    scale_threshold,
    to_image,
    to_map,
)


def plot_grid(
    image: Any,
    maps: Sequence[Sequence[Any | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    panel_titles: Sequence[Sequence[str | None]] | None = None,
    show_image: bool = True,
    contours: Any | None = None,
    sign: str = "positive",
    outlier_perc: float = 2.0,
    scaling: str = "cumulative",
    shared_scale: bool = False,
    alpha: float = 0.7,
    cmap: str | None = None,
    panel_size: float = 2.2,
    title: str | None = None,
) -> Figure:
    """Rows x columns of attribution maps over ``image`` ([H, W] or [C, H, W], grey).

    Args:
        image: one image for every row, or a list with one image per row.
        maps: ``maps[r][c]`` a map [H, W] or [C, H, W] (channels summed), or None (empty panel).
        panel_titles: ``panel_titles[r][c]`` a title per panel (instead of ``col_labels``).
        show_image: add a first column with the image alone.
        contours: a mask [H, W] outlined on every panel, or a list with one (or None) per row.
        shared_scale: one outlier threshold for every panel (compare magnitudes across panels);
            default: each panel scaled on its own, as Captum and the paper do.
    """
    rows = [list(r) for r in maps]
    if not rows or not any(rows):
        raise InputError("maps must hold at least one row with at least one panel")
    n_cols = max(len(r) for r in rows)
    rows = [r + [None] * (n_cols - len(r)) for r in rows]
    _check_labels(row_labels, len(rows), "row_labels")
    _check_labels(col_labels, n_cols, "col_labels")
    images = _per_row(image, len(rows), "image")
    outlines = _per_row(contours, len(rows), "contours")
    sign = _check_sign(sign)
    threshold = None
    if shared_scale:
        mags = [_magnitudes(to_map(m), sign).ravel() for r in rows for m in r if m is not None]
        threshold = scale_threshold(np.concatenate(mags), outlier_perc, scaling)
    lead = 1 if show_image else 0
    fig = Figure(
        figsize=(0.9 + panel_size * (n_cols + lead), 0.5 + panel_size * len(rows)),
        layout="constrained",
    )
    axes = fig.subplots(len(rows), n_cols + lead, squeeze=False)
    mappable = None
    for r, row in enumerate(rows):
        img = to_image(images[r], f"image of row {r}")
        if show_image:
            head = "input" if r == 0 else None
            draw_overlay(axes[r, 0], img, None, title=head, contour=outlines[r])
        for c, m in enumerate(row):
            ax = axes[r, c + lead]
            head = col_labels[c] if (col_labels is not None and r == 0) else None
            if panel_titles is not None and r < len(panel_titles) and c < len(panel_titles[r]):
                head = panel_titles[r][c]
            if m is None:
                ax.set_axis_off()
                if head:
                    ax.set_title(head, fontsize=9)
                continue
            mappable = draw_overlay(
                ax,
                img,
                m,
                sign=sign,
                outlier_perc=outlier_perc,
                scaling=scaling,
                threshold=threshold,
                alpha=alpha,
                cmap=cmap,
                title=head,
                contour=outlines[r],
            )
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.6, label=f"attribution ({sign}, scaled)")
    if title:
        fig.suptitle(title)
    return fig


def _per_row(value: Any, n_rows: int, name: str) -> list[Any]:
    """``value`` repeated for every row, or a list/tuple of one entry per row as given."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_rows:
            raise InputError(f"{name}: {len(value)} entries for {n_rows} rows")
        return list(value)
    return [value] * n_rows


def _check_labels(labels: Sequence[str] | None, n: int, name: str) -> None:
    if labels is not None and len(labels) != n:
        raise InputError(f"{name} has {len(labels)} entries for {n} panels")


def _check_index(res: Attribution, index: int) -> None:
    if not isinstance(res, Attribution):
        raise InputError(f"expected an xraylens Attribution, got {type(res).__name__}")
    if not 0 <= index < res.values.shape[0]:
        raise InputError(f"image index {index} out of range for {res.values.shape[0]} images")


def _map_of(res: Attribution, index: int, label: str) -> np.ndarray | None:
    """The map of ``label`` for image ``index`` in ``res``, or None when it was not explained."""
    _check_index(res, index)
    if label not in res.labels_of(index):
        return None
    return res.map(index, label).numpy()


def _labels_in(results: Sequence[Attribution], index: int) -> list[str]:
    seen: list[str] = []
    for res in results:
        _check_index(res, index)
        for name in res.labels_of(index):
            if name not in seen:
                seen.append(name)
    return seen


def plot_models_methods(
    image: Any,
    results: Mapping[str, Mapping[str, Attribution]],
    label: str,
    *,
    index: int = 0,
    **kwargs: Any,
) -> Figure:
    """The paper's figure: rows = models, columns = methods, for one ``label`` of image ``index``.

    ``results[model][method]`` is an :class:`Attribution`; a missing method or label leaves the
    panel empty. ``kwargs`` go to :func:`plot_grid`.
    """
    models = list(results)
    methods: list[str] = []
    for by_method in results.values():
        methods += [m for m in by_method if m not in methods]
    maps = [
        [
            _map_of(results[model][method], index, label) if method in results[model] else None
            for method in methods
        ]
        for model in models
    ]
    kwargs.setdefault("title", label)
    return plot_grid(image, maps, row_labels=models, col_labels=methods, **kwargs)


def plot_labels_methods(
    image: Any,
    results: Mapping[str, Attribution] | Sequence[Attribution],
    *,
    index: int = 0,
    labels: Sequence[str] | None = None,
    **kwargs: Any,
) -> Figure:
    """One model: rows = labels, columns = methods, for image ``index``.

    ``results``: method name -> :class:`Attribution`, or a sequence of them (named by their
    ``method``). ``labels``: which labels (default every label any method explained).
    """
    if not isinstance(results, Mapping):
        results = {res.method or f"method {i}": res for i, res in enumerate(results)}
    if not results:
        raise InputError("results is empty")
    methods = list(results)
    names = list(labels) if labels is not None else _labels_in(list(results.values()), index)
    maps = [[_map_of(results[m], index, name) for m in methods] for name in names]
    return plot_grid(image, maps, row_labels=names, col_labels=methods, **kwargs)


def plot_attribution(
    image: Any,
    res: Attribution,
    *,
    index: int = 0,
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    **kwargs: Any,
) -> Figure:
    """One :class:`Attribution` of image ``index``: the image, then one panel per label.

    ``columns``: panels per row (default: all in one row up to 7, then wrapped).
    """
    _check_index(res, index)
    names = list(labels) if labels is not None else list(res.labels_of(index))
    if not names:
        raise InputError(f"image {index} has no explained label")
    cells = [_map_of(res, index, name) for name in names]
    missing = [n for n, c in zip(names, cells) if c is None]
    if missing:
        raise InputError(f"image {index} has no map for {missing}; it has {res.labels_of(index)}")
    columns = columns or min(len(names), 7)
    grid = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    titles = [names[i : i + columns] for i in range(0, len(names), columns)]
    kwargs.setdefault("title", f"{res.method} ({res.model or 'model'}, {res.output})")
    fig = plot_grid(image, grid, panel_titles=titles, **kwargs)
    return fig


__all__ = ["plot_attribution", "plot_grid", "plot_labels_methods", "plot_models_methods"]
