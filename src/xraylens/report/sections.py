"""Report sections built from the library's outputs: provenance, classification metrics,
attribution quality (with CIs and flags), the shortcut audit, per-image panels, NAPs, costs.

Each function returns a :class:`~xraylens.report.document.Section` (or blocks); callers (the
demo, the recipe, ``xraylens report``) put them into one :class:`Document`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from xraylens.report.document import Bullets, Grid, Image, Panel, Paragraph, Section, Table

#: Classification metrics shown per model, in this order, when present.
CLASSIFICATION = (
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "auc_macro",
)


def provenance_section(prov: dict[str, Any]) -> Section:
    """Models (weights and hashes), preprocessing, seeds, the command and package versions."""
    s = Section("Provenance")
    if prov.get("command"):
        s.add(Paragraph(f"Command: `{prov['command']}`"))
    models = prov.get("models") or {}
    if models:
        keys = sorted({k for info in models.values() for k in info})
        rows = [[name, *[_short(info.get(k)) for k in keys]] for name, info in models.items()]
        s.add(Table(["model", *keys], rows, caption="models and their weights (SHA-256)"))
    for key, title in (("preprocessing", "preprocessing"), ("seeds", "seeds")):
        if prov.get(key):
            s.add(Table([title, "value"], [[k, _short(v)] for k, v in prov[key].items()]))
    extra = {
        k: v
        for k, v in prov.items()
        if k not in ("command", "models", "preprocessing", "seeds", "versions")
    }
    if extra:
        s.add(Table(["setting", "value"], [[k, _short(v)] for k, v in extra.items()]))
    if prov.get("versions"):
        s.add(Table(["package", "version"], list(prov["versions"].items()), sortable=False))
    return s


def _short(value: Any, limit: int = 120) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ci(row: dict[str, Any], digits: int = 3) -> str:
    mean, lo, hi = row.get("mean"), row.get("ci_low"), row.get("ci_high")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def classification_section(aggregated: Sequence[dict[str, Any]]) -> Section | None:
    """Per model: micro/macro precision, recall, F1 (and AUC), then per label; from aggregated
    evaluate rows (model, method, label, metric, mean, ci_low, ci_high, n). Rows of method
    ``"-"``/None or ``"classification"`` with the metric names of :data:`CLASSIFICATION` (and
    ``precision``/``recall``/``f1``/``auc`` per label) count."""
    rows = [r for r in aggregated if r.get("method") in (None, "", "-", "classification")]
    if not rows:
        return None
    s = Section("Classification")
    models = list(dict.fromkeys(r["model"] for r in rows))
    overall = {(r["model"], r["metric"]): r for r in rows if r["metric"] in CLASSIFICATION}
    present = [m for m in CLASSIFICATION if any((mod, m) in overall for mod in models)]
    if present:
        s.add(
            Table(
                ["model", *present],
                [
                    [
                        mod,
                        *[_ci(overall[(mod, m)]) if (mod, m) in overall else None for m in present],
                    ]
                    for mod in models
                ],
                caption="mean [95% CI]; micro: pooled over labels, macro: mean of per-label values",
            )
        )
    per_label = [
        r
        for r in rows
        if r["metric"] in ("precision", "recall", "f1", "auc")
        and r.get("label") not in (None, "", "-")
    ]
    if per_label:
        metrics = [
            m
            for m in ("precision", "recall", "f1", "auc")
            if any(r["metric"] == m for r in per_label)
        ]
        table: dict[tuple, dict] = {}
        for r in per_label:
            table.setdefault((r["model"], r["label"]), {})[r["metric"]] = r
        s.add(
            Table(
                ["model", "label", *metrics, "n"],
                [
                    [
                        mod,
                        lab,
                        *[_ci(v[m]) if m in v else None for m in metrics],
                        max(int(x.get("n") or 0) for x in v.values()),
                    ]
                    for (mod, lab), v in table.items()
                ],
                caption="per label",
            )
        )
    return s


def quality_section(
    aggregated: Sequence[dict[str, Any]], flags: Sequence[dict[str, Any]] = ()
) -> Section | None:
    """Attribution quality per model, method and label (every evaluate metric but the
    classification ones) as mean [95% CI] with n, and the audit's flags beside."""
    rows = [r for r in aggregated if r.get("method") not in (None, "", "-", "classification")]
    if not rows:
        return None
    metrics = sorted({r["metric"] for r in rows})
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["model"], r["method"], r["label"]), {})[r["metric"]] = r
    raised: dict[tuple, list[str]] = {}
    for f in flags:
        raised.setdefault((f["model"], f["method"], f["label"]), []).append(f["flag"])
    table_rows = []
    for key, v in by_key.items():
        marks = raised.get(key)
        table_rows.append(
            [
                *key,
                *[_ci(v[m]) if m in v else None for m in metrics],
                "⚠ " + ", ".join(marks) if marks else "",
            ]
        )
    s = Section("Attribution quality", flag=bool(flags))
    s.add(
        Table(
            ["model", "method", "label", *metrics, "flags"],
            table_rows,
            caption="mean [95% CI] over images; click a column to sort",
        )
    )
    return s


def audit_section(
    summary: Sequence[dict[str, Any]],
    flags: Sequence[dict[str, Any]],
    verdicts: dict,
    thresholds: dict[str, str],
    *,
    lungs_known: bool = True,
) -> Section:
    """The shortcut audit: verdicts per model, the rules, and every region's share vs area."""
    s = Section("Shortcut audit", flag=any(verdicts.values()))
    lines = []
    for model, raised in verdicts.items():
        if raised:
            text = "; ".join(
                f"**{name}** ({len(ms)} methods: {', '.join(ms)})" for name, ms in raised.items()
            )
            lines.append(f"`{model}`: ⚠ {text}")
        else:
            lines.append(f"`{model}`: no shortcut flag raised by half or more of its methods")
    s.add(Bullets(lines))
    s.add(
        Paragraph(
            "Share: the share of a map's positive attribution inside the region; area: the "
            "region's share of the image (what a uniform map would put there); ratio = share / "
            "area. Markers are found in each image (small bright high-contrast components near "
            "the edges); images without one do not count for the marker region. A flag is "
            "raised when "
            + "; ".join(f"**{k}**: {v}" for k, v in thresholds.items())
            + ". A model is flagged when half or more of its methods raise the flag."
        )
    )
    if not lungs_known:
        s.add(
            Paragraph(
                "**No lung masks were given**: the share inside the lungs, and so the flag "
                '"ignores the lungs", are not computed.'
            )
        )
    flagged = {(f["model"], f["method"], f["label"], f["region"]): f["flag"] for f in flags}
    s.add(_audit_glance(summary, flagged))
    rows = []
    for r in summary:
        mark = flagged.get((r["model"], r["method"], r["label"], r["region"]))
        rows.append(
            [
                r["model"],
                r["method"],
                r["label"],
                r["region"],
                r["n"],
                r["share"],
                r["ci_low"],
                r["ci_high"],
                r["area"],
                r["ratio"],
                f"⚠ {mark}" if mark else "",
            ]
        )
    s.add(
        Table(
            [
                "model",
                "method",
                "label",
                "region",
                "n",
                "share",
                "CI low",
                "CI high",
                "area",
                "ratio",
                "flag",
            ],
            rows,
            caption="every region, method and label: share with its 95% bootstrap CI",
            collapsed=True,
        )
    )
    return s


def _audit_glance(summary: Sequence[dict[str, Any]], flagged: dict) -> Table:
    """One row per model, method and label; per region ``share (x ratio)``, flagged cells
    marked."""
    regions = [
        r
        for r in ("lungs", "border", "corners", "markers")
        if any(x["region"] == r for x in summary)
    ]
    cells: dict[tuple, dict[str, str]] = {}
    for r in summary:
        key = (r["model"], r["method"], r["label"])
        text = "n/a" if r["n"] == 0 else f"{r['share']:.2f} (x{r['ratio']:.1f})"
        if key + (r["region"],) in flagged:
            text = f"⚠ {text} {flagged[key + (r['region'],)]}"
        cells.setdefault(key, {})[r["region"]] = text
    return Table(
        ["model", "method", "label", *[f"share {g} (x area)" for g in regions]],
        [[*key, *[v.get(g, "") for g in regions]] for key, v in cells.items()],
        caption="share of positive attribution in each region and (x) its ratio to the "
        "region's area share; x1 is what a uniform map gets",
    )


def panels_section(
    images: Sequence[Any],
    image_names: Sequence[str],
    maps: dict[tuple[str, str], Sequence[Any]],
    probabilities: dict[str, Sequence[dict[str, float]]] | None = None,
    *,
    label_of: Sequence[str] | None = None,
    contours: Sequence[Any] | None = None,
    size: int = 128,
    title: str = "Per-image maps",
    outline: str = "the regions of interest (lesions, markers)",
    top: int = 5,
) -> Section:
    """Panels: one row per image and model, one column per method, the image itself first
    (with ``contours`` outlined and the model's probability of every label), then each
    method's map with the probability of the label it explains.

    ``maps[(model, method)][i]``: map [H, W] of image ``i`` (None: not computed);
    ``probabilities[model][i]``: label -> probability; ``label_of[i]``: the label explained;
    ``outline``: what the contours are (the caption's words); ``top``: the most probable
    labels listed under the image (the explained label always among them).
    """
    from xraylens.report.figures import overlay_image

    models = list(dict.fromkeys(model for model, _ in maps))
    methods = list(dict.fromkeys(method for _, method in maps))
    rows = []
    for i, name in enumerate(image_names):
        contour = contours[i] if contours is not None else None
        underlay = overlay_image(images[i], None, f"img{i}", size=size, contour=contour)
        for model in models:
            probs = (probabilities or {}).get(model)
            probs = probs[i] if probs is not None else {}
            label = label_of[i] if label_of is not None else None
            ranked = sorted(probs.items(), key=lambda kv: -kv[1])
            listed = ranked[:top] + [kv for kv in ranked[top:] if kv[0] == label]
            more = [f"({len(ranked) - len(listed)} more labels below)"] if len(listed) < len(
                ranked
            ) else []  # fmt: skip
            first = Panel(underlay, [f"P({lab}) {p:.2f}" for lab, p in listed] + more)
            panels = [first]
            for k, method in enumerate(methods):
                m = maps.get((model, method), [None] * len(image_names))[i]
                lines = [f"for {label}" if label else ""]
                if label in probs:
                    lines = [f"for **{label}**: P {probs[label]:.2f}"]
                img = overlay_image(images[i], m, f"img{i}_{model}_{k}", size=size)
                panels.append(Panel(img if m is not None else None, lines))
            rows.append((f"{name} · {model}", panels))
    s = Section(title)
    s.add(
        Grid(
            ["image", *methods],
            rows,
            caption="positive attribution (inferno), each map on its own scale"
            + (f"; cyan outline on the image: {outline}" if contours is not None else ""),
        )
    )
    return s


def nap_section(
    nap,
    *,
    region: np.ndarray | None = None,
    outside_lungs: Sequence[dict] = (),
    title: str = "Neuron Activation Profiles",
    name: str = "nap_input",
) -> Section:
    """The input-layer NAPs, the inactive-feature-map share and, given, the NAP energy outside
    the lungs per layer and group."""
    from xraylens import viz

    s = Section(title)
    s.add(
        Paragraph(
            f"Groups and image counts: {', '.join(f'{g} ({n})' for g, n in nap.counts.items())}."
        )
    )
    fig = viz.plot_input_nap(nap, panel_size=2.0)  # small: noisy profiles compress badly
    s.add(Image.from_figure(fig, name, "mean image and NAP per group at the input", dpi=72))
    if outside_lungs:
        s.add(*nap_outside_blocks(outside_lungs, f"{name}_outside"))
    return s


def nap_outside_blocks(
    rows: Sequence[dict], name: str, caption: str = "", *, what: str = ""
) -> list:
    """[figure, table] of :func:`xraylens.audit.nap_outside_lungs` rows: the ratio per layer
    drawn (:func:`~xraylens.report.figures.nap_outside_image`, titled with ``what``, e.g. the
    model) and every number in a folded table."""
    from xraylens.report.figures import nap_outside_image

    title = f"{what + ': ' if what else ''}NAP energy outside the lungs, per layer"
    table = attrs.evolve(nap_outside_table(rows, caption), collapsed=True)
    return [nap_outside_image(rows, name, title=title), table]


def nap_outside_table(rows: Sequence[dict], caption: str = "") -> Table:
    """Rows of :func:`xraylens.audit.nap_outside_lungs` (layer, group, share, area, ratio)."""
    return Table(
        ["layer", "group", "energy outside lungs", "area outside lungs", "ratio"],
        [[r["layer"], r["group"], r["share"], r["area"], r["ratio"]] for r in rows],
        caption=caption
        or "share of NAP energy (sum over feature maps of |NAP|) outside the lungs, against "
        "the area outside them (ratio > 1: the profile lives more outside the lungs than a "
        "uniform one would)",
    )


def costs_section(costs: Sequence[dict[str, Any]]) -> Section:
    """Rows with at least ``what`` and ``seconds`` (and ``forward_passes`` where counted)."""
    keys = list(dict.fromkeys(k for r in costs for k in r))
    return Section("Costs").add(Table(keys, [[r.get(k) for k in keys] for r in costs], digits=2))
