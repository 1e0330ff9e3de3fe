"""The shortcut audit and the per-image panels of saved maps, for callers that hold the maps
in memory (the recipe's report step): :func:`maps_sections`.

One :class:`ExplainedImage` per image: the image, its lung mask (None where the data has none),
each model's maps per method and each model's label probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from xraylens.report.document import Paragraph, Section


@attrs.frozen(eq=False)
class ExplainedImage:
    """One explained image: ``image`` [H, W]; ``lungs`` bool [H, W] or None; ``maps``:
    model -> method -> :class:`~xraylens.Attribution` of this image alone; ``probs``:
    model -> label -> probability; ``label``: the label its panels show."""

    image_id: str
    image: np.ndarray
    maps: dict[str, dict[str, Any]]
    lungs: np.ndarray | None = None
    probs: dict[str, dict[str, float]] = attrs.Factory(dict)
    label: str | None = None
    truth: tuple[str, ...] | None = None


def _labels(res) -> list[str]:
    return list(res.labels if isinstance(res.labels[0], str) else res.labels[0])


def maps_sections(
    items: Sequence[ExplainedImage],
    *,
    max_panels: int = 8,
    size: int = 128,
    title: str = "Per-image maps",
) -> tuple[list[str], list[Section]]:
    """(summary lines, [audit section, panels section]) of ``items``: the audit of every map
    (the lungs only for images with a mask; the section says how many have one) and panels of
    the first ``max_panels`` images, each label's probability beside its map."""
    from xraylens import audit
    from xraylens.evaluate import Results
    from xraylens.report import sections as rs

    rows = Results()
    for it in items:
        lung = None if it.lungs is None else np.asarray(it.lungs)[None]
        regions = audit.stack_regions(it.image[None], lung)
        for model, by_method in it.maps.items():
            for method, res in by_method.items():
                rows.extend(
                    audit.audit_maps(res, it.image[None], model=model, method=method,
                                     labels=res.labels, image_ids=[it.image_id], regions=regions)
                )  # fmt: skip
    if not len(rows):
        return [], []
    summary = audit.summarise(rows)
    flags = audit.flag(summary)
    verdicts = audit.verdicts(summary, flags)
    with_lungs = sum(it.lungs is not None for it in items)
    sec = rs.audit_section(summary, flags, verdicts, audit.describe_thresholds(),
                           lungs_known=with_lungs > 0)  # fmt: skip
    if 0 < with_lungs < len(items):
        sec.add(
            Paragraph(
                f"Lung masks: {with_lungs} of {len(items)} images have one (the data's "
                "human-reviewed masks); the lung shares are over those images only."
            )
        )
    lines = []
    for model, raised in verdicts.items():
        text = ", ".join(f"**{k}** ({len(v)} methods)" for k, v in raised.items())
        lines.append(f"`{model}`: " + (f"⚠ {text}" if raised else "no shortcut flag"))
    shown = list(items[:max_panels])
    models = list(dict.fromkeys(m for it in shown for m in it.maps))
    methods = list(dict.fromkeys(meth for it in shown for by in it.maps.values() for meth in by))
    label_of = [it.label or _labels(next(iter(next(iter(it.maps.values())).values())))[0]
                for it in shown]  # fmt: skip
    maps: dict[tuple[str, str], list] = {}
    for model in models:
        for method in methods:
            per_image = []
            for it, label in zip(shown, label_of):
                res = it.maps.get(model, {}).get(method)
                names = _labels(res) if res is not None else []
                slot = names.index(label) if label in names else None
                per_image.append(None if slot is None else res.values[0, slot].sum(0).numpy())
            maps[(model, method)] = per_image
    probs = {m: [it.probs.get(m, {}) for it in shown] for m in models}
    panels = rs.panels_section(
        [it.image for it in shown],
        [
            it.image_id
            if it.truth is None
            else f"{it.image_id} (truth: {', '.join(it.truth) or 'no label'})"
            for it in shown
        ],  # fmt: skip
        maps,
        probs,
        label_of=label_of,
        contours=[it.lungs for it in shown],
        size=size,
        title=title,
        outline="the lung mask",
    )
    return lines, [sec, panels]


__all__ = ["ExplainedImage", "maps_sections"]
