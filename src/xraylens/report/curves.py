"""Deletion / insertion / ROAD and randomisation curves in a report: one figure per model (a
panel per curve kind, a line per method), and the plotted means as a table beside.

The curves come in tidy form (:class:`~xraylens.evaluate.results.CurveTable`, ``curves.csv``);
:func:`compute_curves` makes the perturbation curves of saved maps when an evaluate output
kept only their areas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xraylens.evaluate.results import CurveTable
from xraylens.report.document import Image, Paragraph, Section, Table

#: curve kind -> (panel title, x label, y label), in the order the panels are drawn
KINDS = {
    "deletion": ("deletion (MoRF)", "fraction of pixels removed", "score"),
    "insertion": ("insertion (MoRF)", "fraction of pixels revealed", "score"),
    "road": ("ROAD (MoRF)", "fraction of pixels imputed", "score"),
    "randomisation": ("cascading randomisation", "layers randomised (output first)", "|Spearman|"),
}
#: the randomisation verdict's threshold (:func:`xraylens.evaluate.randomisation_check`)
RANDOMISATION_THRESHOLD = 0.5
#: evaluate metrics whose curves the report would draw
CURVE_METRICS = ("deletion", "insertion", "road", "randomisation")


def curves_figure(
    means: dict[tuple[str, str, str], tuple[list[float], list[float], int]],
    model: str,
    name: str,
    *,
    threshold: float = RANDOMISATION_THRESHOLD,
) -> Image:
    """One model's curves: a panel per curve kind present, a line per method (the mean over
    images and labels); the randomisation panel has the verdict's threshold as a dashed line."""
    from matplotlib.figure import Figure

    kinds = [k for k in KINDS if any(m == model and c == k for m, _, c in means)]
    methods = list(dict.fromkeys(meth for m, meth, _ in means if m == model))
    fig = Figure(figsize=(3.4 * len(kinds) + 1.4, 2.9), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    colours = {meth: f"C{i % 10}" for i, meth in enumerate(methods)}
    for ax, kind in zip(axes, kinds):
        title, xlabel, ylabel = KINDS[kind]
        for meth in methods:
            if (model, meth, kind) in means:
                x, y, _ = means[(model, meth, kind)]
                ax.plot(x, y, marker="o", ms=3, lw=1.5, color=colours[meth], label=meth)
        if kind == "randomisation":
            ax.axhline(threshold, ls="--", lw=1.2, color="0.3", label=f"threshold {threshold:g}")
            ax.set_ylim(0, 1.02)
        else:
            ax.set_xlim(0, 1)
        ax.set_title(f"{model}: {title}", fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", fontsize=9, frameon=False)
    return Image.from_figure(fig, name, f"{model}: mean curves per method", dpi=90)


def curves_section(
    curves: CurveTable,
    *,
    threshold: float = RANDOMISATION_THRESHOLD,
    title: str = "Faithfulness and randomisation curves",
) -> Section:
    """A figure per model (:func:`curves_figure`) and a table of every plotted point."""
    means = curves.mean()
    s = Section(title)
    kinds = {c for _, _, c in means}
    words = {
        "deletion": "Deletion: the explained label's score as the pixels the map ranks highest "
        "are removed first; a faithful map makes it fall fast (a low curve).",
        "insertion": "Insertion: the same pixels revealed on a blank image; the score should "
        "rise fast (a high curve).",
        "road": "ROAD: as deletion, the pixels imputed from their neighbours (less leakage of "
        "the removed shape).",
        "randomisation": "Randomisation (Adebayo et al. 2018): similarity of the map to the map "
        "of the same model with its layers randomised, output side first; a map that stays "
        f"above the dashed line ({threshold:g}) barely depends on the learned weights.",
    }
    s.add(Paragraph(" ".join(words[k] for k in KINDS if k in kinds)))
    models = list(dict.fromkeys(m for m, _, _ in means))
    for i, model in enumerate(models):
        s.add(curves_figure(means, model, f"curves_{i}", threshold=threshold))
    rows = [
        [model, method, curve, x, y, n]
        for (model, method, curve), (xs, ys, n) in means.items()
        for x, y in zip(xs, ys)
    ]
    s.add(
        Table(
            ["model", "method", "curve", "x", "mean y", "curves"],
            rows,
            caption="the plotted points: mean over images and labels (curves: how many)",
            digits=(0, 0, 0, 2, 3, 0),
            collapsed=True,
        )
    )
    return s


def missing_curves_note(aggregated: Sequence[dict[str, Any]], where: str) -> Paragraph | None:
    """A note when ``aggregated`` evaluate rows hold curve metrics (their areas) but no curves
    were saved with them (``where``: the evaluate output)."""
    found = sorted({r["metric"] for r in aggregated if r.get("metric") in CURVE_METRICS})
    if not found:
        return None
    return Paragraph(
        f"{where}: {', '.join(found)} are in the tables as areas under their curves; the "
        "curves themselves were not saved (no `curves.csv`), so they are not drawn."
    )


def compute_curves(
    clf: Any,
    x: Any,
    attribution: Any,
    *,
    model: str,
    method: str,
    image_ids: Sequence[str],
    modes: Sequence[str] = ("deletion", "insertion"),
    steps: int = 10,
    output: str | None = None,
) -> CurveTable:
    """Deletion and insertion curves (``steps`` steps, black substrate) of a saved
    ``attribution`` of images ``x`` [N, 1, H, W] under classifier ``clf``: a
    :class:`CurveTable` (about ``steps`` forward passes per image and mode, shared by labels;
    ``output``: the scores, default the attribution's own)."""
    from xraylens.evaluate import perturbation_curves

    out = CurveTable()
    for mode in modes:
        c = perturbation_curves(clf, x, attribution, mode=mode, steps=steps, output=output)
        out.extend(CurveTable.from_curves(c, model=model, method=method, image_ids=image_ids))
    return out


__all__ = [
    "CURVE_METRICS",
    "KINDS",
    "RANDOMISATION_THRESHOLD",
    "compute_curves",
    "curves_figure",
    "curves_section",
    "missing_curves_note",
]
