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
    scale_label,
    scale_threshold,
    to_image,
    to_map,
)

#: ``shared_scale`` values of :func:`plot_grid` (False: each panel on its own scale).
SHARED_SCALES = (False, True, "all", "row", "column")


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
    scaling: str = "percentile",
    shared_scale: bool | str = False,
    alpha: float = 0.7,
    alpha_scaling: str = "linear",
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
        shared_scale: False (default): each panel scaled on its own, as Captum and the paper
            do; True or ``"all"``: one outlier threshold for every panel; ``"row"``: one per
            row (e.g. the labels of one image); ``"column"``: one per column (e.g. one method
            across models, whose maps share units).
        sign, outlier_perc, scaling, alpha, alpha_scaling: see :mod:`xraylens.viz.overlay`.
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
    thresholds = _shared_thresholds(rows, shared_scale, sign, outlier_perc, scaling)
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
                threshold=thresholds[r][c],
                alpha=alpha,
                alpha_scaling=alpha_scaling,
                cmap=cmap,
                title=head,
                contour=outlines[r],
            )
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    if mappable is not None:
        shared = {False: "", "row": ", per row", "column": ", per column"}.get(
            shared_scale, ", shared"
        )
        fig.colorbar(
            mappable,
            ax=axes,
            shrink=0.6,
            label=scale_label(sign, outlier_perc, scaling) + (shared if shared else ", per panel"),
        )
    if title:
        fig.suptitle(title)
    return fig


def _shared_thresholds(rows, shared_scale, sign, outlier_perc, scaling):
    """``thresholds[r][c]``: the clipping threshold of each panel (None: its own)."""
    if shared_scale not in SHARED_SCALES:
        raise InputError(f"shared_scale must be one of {SHARED_SCALES}, got {shared_scale!r}")
    n_rows, n_cols = len(rows), len(rows[0])
    out: list[list[float | None]] = [[None] * n_cols for _ in range(n_rows)]
    if shared_scale is False:
        return out
    if shared_scale == "row":
        groups = [[(r, c) for c in range(n_cols)] for r in range(n_rows)]
    elif shared_scale == "column":
        groups = [[(r, c) for r in range(n_rows)] for c in range(n_cols)]
    else:
        groups = [[(r, c) for r in range(n_rows) for c in range(n_cols)]]
    for cells in groups:
        cells = [(r, c) for r, c in cells if rows[r][c] is not None]
        if not cells:
            continue
        mags = np.concatenate([_magnitudes(to_map(rows[r][c]), sign).ravel() for r, c in cells])
        t = scale_threshold(mags, outlier_perc, scaling)
        for r, c in cells:
            out[r][c] = t
    return out


def prob_text(res: Attribution, index: int, label: str) -> str:
    """``"p=0.93"``: the model's probability of ``label`` for image ``index`` ("" unknown)."""
    p = res.prob(index, label)
    return "" if p is None else f"p={p:.2f}"


def _head(label: str, prob: str) -> str:
    """A panel title: ``"COVID-19  p=0.93"`` on one line (two when the label is long)."""
    if not prob:
        return label
    return f"{label}  {prob}" if len(label) <= 18 else f"{label}\n{prob}"


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
    panel empty. Row labels show each model's probability of ``label`` when recorded.
    ``shared_scale="column"`` compares models on one scale per method. ``kwargs`` go to
    :func:`plot_grid`.
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
    rows = []
    for model in models:
        probs = [prob_text(r, index, label) for r in results[model].values()]
        p = next((t for t in probs if t), "")
        rows.append(f"{model}\n{label} {p}" if p else model)
    kwargs.setdefault("title", label)
    return plot_grid(image, maps, row_labels=rows, col_labels=methods, **kwargs)


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
    rows = []
    for name in names:
        p = next((t for t in (prob_text(r, index, name) for r in results.values()) if t), "")
        rows.append(f"{name}\n{p}" if p else name)
    return plot_grid(image, maps, row_labels=rows, col_labels=methods, **kwargs)


def plot_attribution(
    image: Any,
    res: Attribution,
    *,
    index: int = 0,
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    image_id: str | None = None,
    shared_scale: bool | str = True,
    **kwargs: Any,
) -> Figure:
    """One :class:`Attribution` of image ``index``: the image, then one panel per label.

    Panels are titled with the label and the model's probability (when ``res.probs`` is
    recorded); the figure title names ``image_id`` (a file or image id), the method and model.
    ``shared_scale``: True (default): one scale for every label of the image, so a label the
    model gives ~0 probability is not drawn at full strength; False: each panel alone.
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
    heads = [_head(n, prob_text(res, index, n)) for n in names]
    titles = [heads[i : i + columns] for i in range(0, len(heads), columns)]
    what = f"{res.method} ({res.model or 'model'}, {res.output})"
    kwargs.setdefault("title", f"{image_id}: {what}" if image_id else what)
    return plot_grid(image, grid, panel_titles=titles, shared_scale=shared_scale, **kwargs)


__all__ = [
    "SHARED_SCALES",
    "plot_attribution",
    "plot_grid",
    "plot_labels_methods",
    "plot_models_methods",
    "prob_text",
]
