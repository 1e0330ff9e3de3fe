"""The shortcut audit: where a model's attribution lands, against where it would land by chance.

For every map (model x method x image x label) and region (lungs, border band, corners,
detected markers: :mod:`xraylens.audit.regions`) the audit records the *share* of the map's
positive attribution inside the region (:func:`xraylens.evaluate.region_share`) and the
region's *area* share (:func:`xraylens.evaluate.area_share`: the share a map spread uniformly
would put there). :func:`summarise` averages over images with a bootstrap CI; :func:`flag`
raises the named flags of :data:`THRESHOLDS`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xraylens.audit.regions import stack_regions
from xraylens.errors import InputError
from xraylens.evaluate import Results, area_share, region_share

REGIONS = ("lungs", "border", "corners", "markers")

#: flag -> (region, minimum mean share, minimum ratio of mean share to mean area share) or, for
#: "ignores the lungs", the ratio below which the lungs get less than their area's worth.
THRESHOLDS: dict[str, dict[str, Any]] = {
    "reads markers": {"region": "markers", "min_share": 0.10, "min_ratio": 5.0},
    "reads borders": {"region": "border", "min_share": 0.40, "min_ratio": 1.5},
    "ignores the lungs": {"region": "lungs", "max_ratio": 1.0},
}
#: Labels without a finding to localise: evidence for them may lie anywhere, so they never
#: raise "ignores the lungs".
NORMAL_LABELS = ("No Finding", "Normal", "NORMAL")


def describe_thresholds() -> dict[str, str]:
    """flag -> the rule in words (for reports)."""
    out = {}
    for name, t in THRESHOLDS.items():
        if "max_ratio" in t:
            out[name] = (
                f"mean share in the {t['region']} < {t['max_ratio']:g} x its area share (labels "
                f"with a finding only, not {', '.join(NORMAL_LABELS[:1])})"
            )
        else:
            out[name] = (
                f"mean share on the {t['region']} >= {t['min_share']:.2f} and >= "
                f"{t['min_ratio']:g} x its area share"
            )
    return out


def _maps(maps: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    from xraylens.core.attribution import Attribution

    values, mask = (maps.values, maps.mask) if isinstance(maps, Attribution) else (maps, None)
    values = torch.as_tensor(values)
    if values.dim() == 5:
        values = values.sum(2)  # channels summed, as the overlays show them
    if values.dim() != 4:
        raise InputError(f"audit: maps must be [N, T, H, W] or [N, T, C, H, W], got {values.shape}")
    return values.detach().cpu().double(), mask


def audit_maps(
    maps: Any,
    images: Any,
    *,
    model: str,
    method: str,
    labels: Sequence[str] | Sequence[Sequence[str]],
    image_ids: Sequence[str] | None = None,
    patient_ids: Sequence[str] | None = None,
    lung_masks: Any | None = None,
    regions: dict[str, np.ndarray] | None = None,
) -> Results:
    """A :class:`xraylens.evaluate.Results` table for one model and method: metrics
    ``share_<region>`` and ``area_<region>`` per map and region.

    Args:
        maps: [N, T, H, W], [N, T, C, H, W] or an :class:`~xraylens.Attribution`.
        images: [N, H, W] or [N, 1, H, W], the images explained (markers are found in them).
        labels: the T label names, or one list per image (an Attribution's per-image labels).
        lung_masks: bool [N, H, W], or None when the data has none (no ``lungs`` rows).
        regions: precomputed :func:`~xraylens.audit.regions.stack_regions` (shared by methods).
    Maps without positive attribution give NaN shares (kept: a report counts them).
    """
    values, mask = _maps(maps)
    n, t, h, w = values.shape
    if regions is None:
        regions = stack_regions(images, lung_masks)
    per_image = bool(labels) and not isinstance(labels[0], str)
    if per_image and len(labels) != n:
        raise InputError(f"audit: {len(labels)} per-image label lists for {n} images")
    if not per_image and len(labels) != t:
        raise InputError(f"audit: {len(labels)} labels for {t} maps per image")
    ids = list(image_ids) if image_ids is not None else [str(i) for i in range(n)]
    pids = list(patient_ids) if patient_ids is not None else [None] * n
    if len(ids) != n or len(pids) != n:
        raise InputError(f"audit: image_ids/patient_ids must have {n} entries")
    rows: list[dict[str, Any]] = []
    for name, region in regions.items():
        r = torch.from_numpy(np.ascontiguousarray(region))
        if tuple(r.shape) != (n, h, w):
            raise InputError(f"audit: region {name!r} is {tuple(r.shape)}, maps {(n, h, w)}")
        share = region_share(values, r)  # [N, T]
        area = area_share(r)  # [N]
        for i in range(n):
            names = labels[i] if per_image else labels
            for j in range(t):
                if (mask is not None and not bool(mask[i, j])) or j >= len(names):
                    continue
                base = {"model": model, "method": method, "label": names[j]}
                base |= {"image_id": ids[i], "patient_id": pids[i]}
                rows.append(base | {"metric": f"share_{name}", "value": float(share[i, j])})
                rows.append(base | {"metric": f"area_{name}", "value": float(area[i])})
    return Results(rows)


def summarise(results: Results | Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Per model, method, label and region: ``n`` maps (with positive mass and a non-empty
    region), mean ``share`` with a 95% bootstrap CI (:meth:`Results.aggregate`: over patients
    where known), mean ``area`` and ``ratio`` = share / area. Images where the region is empty
    (no marker found) do not count."""
    pairs: dict[tuple, dict[tuple, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in results:
        kind, _, region = row["metric"].partition("_")
        if kind not in ("share", "area"):
            continue
        key = (row["model"], row["method"], row["label"], region)
        pairs[key][(row["image_id"], row["patient_id"])][kind] = row["value"]
    kept, areas = [], defaultdict(list)
    for (model, method, label, region), per in pairs.items():
        for (image_id, patient_id), v in per.items():
            if v.get("area", 0) > 0 and not math.isnan(v.get("share", math.nan)):
                kept.append((model, method, label, image_id, patient_id, region, v["share"]))
                areas[(model, method, label, region)].append(v["area"])
    stats = {
        (r["model"], r["method"], r["label"], r["metric"]): r
        for r in Results(kept).aggregate(seed=seed)
    }
    out = []
    for key in pairs:
        s = stats.get(key, {})
        area = float(np.mean(areas[key])) if areas.get(key) else float("nan")
        share = s.get("mean", float("nan"))
        out.append(
            dict(zip(("model", "method", "label", "region"), key))
            | {
                "n": int(s.get("n", 0)),
                "share": share,
                "ci_low": s.get("ci_low", float("nan")),
                "ci_high": s.get("ci_high", float("nan")),
                "area": area,
                "ratio": share / area if area > 0 else float("nan"),
            }
        )
    return out


def flag(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flags of :data:`THRESHOLDS` raised by :func:`summarise` rows: model, method, label,
    flag, region, share, area, ratio, rule."""
    rules = describe_thresholds()
    out = []
    for row in summary:
        if row["n"] == 0 or math.isnan(row["ratio"]):
            continue
        for name, t in THRESHOLDS.items():
            if row["region"] != t["region"]:
                continue
            if "max_ratio" in t:
                raised = row["ratio"] < t["max_ratio"] and row["label"] not in NORMAL_LABELS
            else:
                raised = row["share"] >= t["min_share"] and row["ratio"] >= t["min_ratio"]
            if raised:
                keep = ("model", "method", "label", "region", "share", "area", "ratio")
                out.append({k: row[k] for k in keep} | {"flag": name, "rule": rules[name]})
    return out


def verdicts(summary: Sequence[dict[str, Any]], flags: Sequence[dict[str, Any]]) -> dict:
    """model -> {flag: [methods raising it]} for flags raised by at least half of the model's
    methods (one method alone can be an artefact of that method)."""
    methods: dict[str, set] = defaultdict(set)
    for row in summary:
        methods[row["model"]].add(row["method"])
    raised: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for f in flags:
        raised[f["model"]][f["flag"]].add(f["method"])
    return {
        model: {
            name: sorted(ms)
            for name, ms in raised.get(model, {}).items()
            if 2 * len(ms) >= len(methods[model])
        }
        for model in sorted(methods)
    }
