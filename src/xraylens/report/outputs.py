"""A report from the command line's outputs: ``xraylens explain`` folders (one per model),
``xraylens evaluate`` folders or tables, and ``xraylens profile`` folders.

Nothing is recomputed but the shortcut audit (cheap: region shares of the saved maps) and, on
request, the panel images' probabilities (one forward pass per model and image).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xraylens.errors import InputError
from xraylens.evaluate.results import CurveTable
from xraylens.report import sections as rs
from xraylens.report.curves import curves_section, missing_curves_note
from xraylens.report.document import Document, Paragraph, Section
from xraylens.report.provenance import provenance


def read_explain(folder: str | os.PathLike) -> dict[str, Any]:
    """``{"folder", "summary", "maps": {key: {method: npz path}}}`` of an explain output."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{folder}: no summary.json (not an xraylens explain output folder)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{summary_path}: not valid JSON ({exc})") from exc
    maps: dict[str, dict[str, Path]] = {}
    for npz in sorted(folder.rglob("*.npz")):
        maps.setdefault(npz.parent.relative_to(folder).as_posix(), {})[npz.stem] = npz
    if not maps:
        raise InputError(f"{folder}: no .npz maps (run xraylens explain first)")
    return {"folder": folder, "summary": summary, "maps": maps}


def read_evaluate(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(results rows, summary rows) from an evaluate output folder (``results.json``/``.csv``
    and ``summary.json``/``.csv``) or one results file (then aggregated here)."""
    from xraylens.evaluate import Results, Summary

    path = Path(path)
    if path.is_dir():
        res = next(
            (path / n for n in ("results.json", "results.csv") if (path / n).is_file()), None
        )
        summ = next(
            (path / n for n in ("summary.json", "summary.csv") if (path / n).is_file()), None
        )
        if res is None and summ is None:
            raise InputError(f"{path}: no results.json/csv or summary.json/csv (evaluate output)")
    elif path.is_file():
        res, summ = path, None
    else:
        raise InputError(f"{path}: no such file or folder")
    results = Results.read(res) if res is not None else None
    summary = Summary.read(summ) if summ is not None else results.aggregate()
    return (list(results) if results is not None else []), list(summary)


def _model_names(runs: Sequence[dict]) -> list[str]:
    names = [str(r["summary"].get("model") or r["folder"].name) for r in runs]
    if len(set(names)) < len(names):  # the same architecture twice: tell the runs apart
        names = [f"{n} ({r['folder'].name})" for n, r in zip(names, runs)]
    return names


def _mask_for(masks: Path | None, key: str, size: int):
    if masks is None:
        return None
    import xraylens as xl

    for f in sorted(masks.glob(f"{key}.*")) + sorted(masks.rglob(f"{Path(key).name}.*")):
        if f.is_file():
            return xl.data.preprocess_mask(xl.data.read_mask(f), size).numpy()
    return None


def typical_lungs(masks: Sequence[Any]) -> np.ndarray:
    """The majority mask of lung masks [H, W] (pixels inside the lungs of half or more)."""
    stack = np.stack([np.asarray(m) > 0 for m in masks])
    return stack.mean(0) >= 0.5


def _nap_section(folder: Path, masks: Path | None, k: int = 0):
    """A profile output's NAP section, with the NAP energy outside the lungs (the majority
    mask of every mask in ``masks`` at the profile's size) when masks are given."""
    import xraylens as xl
    from xraylens import audit
    from xraylens.profile import NAPResult

    npz = folder / "nap.npz" if folder.is_dir() else folder
    if not npz.is_file():
        raise InputError(f"{folder}: no nap.npz (not an xraylens profile output)")
    nap = NAPResult.load(npz)
    where = npz.parent.name
    title = f"NAPs: {nap.model} ({where})" if nap.model and nap.model != where else f"NAPs: {where}"
    s = rs.nap_section(nap, title=title, name=f"nap_input_{k}")
    if masks is None:
        s.add(Paragraph("NAP energy outside the lungs: not computed (no lung masks; give "
                        "`--masks`)."))  # fmt: skip
        return s
    spatial = [layer for layer in nap.layers if len(nap.shape(layer)) == 3]
    if not spatial:
        s.add(Paragraph("NAP energy outside the lungs: no layer with a spatial grid."))
        return s
    size = nap.shape("input" if "input" in spatial else spatial[0])[-1]
    files = [f for f in sorted(masks.rglob("*")) if f.is_file()]
    lungs = []
    for f in files:
        try:
            lungs.append(xl.data.preprocess_mask(xl.data.read_mask(f), size).numpy())
        except (InputError, OSError, ValueError):
            continue  # not a mask file
    lungs = [m for m in lungs if m.any()]
    if not lungs:
        s.add(Paragraph(f"NAP energy outside the lungs: not computed (no readable mask in "
                        f"`{masks}`)."))  # fmt: skip
        return s
    rows = audit.nap_outside_lungs(nap, typical_lungs(lungs))
    what = title.removeprefix("NAPs: ")
    s.add(*rs.nap_outside_blocks(rows, f"nap_outside_{k}", what=what, caption=(
        f"NAP energy (sum over feature maps of |NAP|) outside the lungs, layer by layer: the "
        f"lungs are the majority of {len(lungs)} masks in `{masks}` (the profile does not "
        "record which images it read); ratio > 1: more energy outside than a uniform "
        "profile would put there")))  # fmt: skip
    return s


def _probabilities(summary: dict, images: list) -> list[dict[str, float]] | None:
    import torch

    import xraylens as xl

    clf = xl.get_classifier(summary["model"], weights=summary.get("weights"))
    with torch.no_grad():
        p = clf.predict_proba(torch.stack([torch.as_tensor(im)[None] for im in images])).cpu()
    return [dict(zip(clf.labels, map(float, row))) for row in p]


def build(
    explain: Sequence[str | os.PathLike] = (),
    evaluate: Sequence[str | os.PathLike] = (),
    profile: Sequence[str | os.PathLike] = (),
    *,
    masks: str | os.PathLike | None = None,
    max_images: int = 8,
    panel_size: int = 128,
    predict: bool = False,
    title: str = "xraylens report",
    command: str | None = None,
) -> Document:
    """The report of existing outputs (see the module docstring). ``masks``: a folder of lung
    masks named like the explained images' keys or file stems (the audit's lung region)."""
    import xraylens as xl
    from xraylens import audit
    from xraylens.core.attribution import Attribution
    from xraylens.evaluate import Results

    if not (explain or evaluate or profile):
        raise InputError("report: give at least one explain, evaluate or profile output")
    runs = [read_explain(f) for f in explain]
    names = _model_names(runs)
    masks = Path(masks) if masks is not None else None
    if masks is not None and not masks.is_dir():
        raise InputError(f"masks: {masks} is not a folder")
    doc = Document(title)
    summary_lines: list[str] = []
    audit_rows = Results()
    panel_keys = list(dict.fromkeys(k for r in runs for k in r["maps"]))[:max_images]
    images: dict[str, np.ndarray] = {}
    regions_of: dict[str, dict] = {}
    panel_maps: dict[tuple[str, str], list] = {}
    label_of: dict[str, str] = {}
    probs: dict[str, list] = {}
    costs = []
    notes: list[str] = []
    lungs_known = masks is not None
    for run, model in zip(runs, names):
        summary, size = run["summary"], int(run["summary"].get("size") or 0)
        inputs = summary.get("inputs", {})
        for key, by_method in run["maps"].items():
            if key not in images:
                path = inputs.get(key)
                if path is None or not Path(path).is_file():
                    continue  # the audit needs the image (markers are found in it)
                images[key] = xl.data.preprocess(xl.data.read_image(path), size=size)[0].numpy()
            image = images[key]
            if key not in regions_of:  # the same image under every model: found once
                lung = _mask_for(masks, key, image.shape[-1])
                lungs_known &= lung is not None
                regions_of[key] = audit.stack_regions(
                    image[None], None if lung is None else lung[None]
                )
            regions = regions_of[key]
            for method, npz in by_method.items():
                res = Attribution.load(npz)
                audit_rows.extend(
                    audit.audit_maps(
                        res,
                        image[None],
                        model=model,
                        method=method,
                        labels=res.labels,
                        image_ids=[key],
                        regions=regions,
                    )
                )
                if key in panel_keys:
                    labels = res.labels if isinstance(res.labels[0], str) else res.labels[0]
                    label_of.setdefault(key, labels[0])
                    slot = list(labels).index(label_of[key]) if label_of[key] in labels else None
                    m = None if slot is None else res.values[0, slot].sum(0).numpy()
                    panel_maps.setdefault((model, method), [None] * len(panel_keys))
                    panel_maps[(model, method)][panel_keys.index(key)] = m
        costs.append(
            {
                "what": f"explain {model}",
                "images": summary.get("explained"),
                "methods": len(summary.get("methods", {})),
                "seconds": summary.get("seconds"),
            }
        )
        if predict and summary.get("model"):
            if not summary.get("weights"):
                # random init cannot be rebuilt: another draw would give other probabilities
                notes.append(
                    f"`{model}`: explained with random weights (none recorded), so its "
                    "probabilities cannot be reproduced and are not shown."
                )
            else:
                shown = [images[k] for k in panel_keys if k in images]
                probs[model] = _probabilities(summary, shown)
    aggregated = []
    curves = CurveTable()
    curve_notes = []
    for path in evaluate:
        rows = read_evaluate(path)[1]
        aggregated += rows
        saved = Path(path) / "curves.csv" if Path(path).is_dir() else None
        if saved is not None and saved.is_file():
            curves.extend(CurveTable.read(saved))
        elif (note := missing_curves_note(rows, str(path))) is not None:
            curve_notes.append(note)
    a_summary = audit.summarise(audit_rows) if len(audit_rows) else []
    flags = audit.flag(a_summary)
    verdicts = audit.verdicts(a_summary, flags)
    for model, raised in verdicts.items():
        text = ", ".join(f"**{k}** ({len(v)} methods)" for k, v in raised.items())
        summary_lines.append(f"`{model}`: " + (f"⚠ {text}" if raised else "no shortcut flag"))
    doc.summary = summary_lines
    for section in (rs.classification_section(aggregated), rs.quality_section(aggregated, flags)):
        if section is not None:
            doc.sections.append(section)
    if a_summary:
        doc.sections.append(
            rs.audit_section(
                a_summary, flags, verdicts, audit.describe_thresholds(), lungs_known=lungs_known
            )
        )
    if len(curves):
        doc.sections.append(curves_section(curves))
        doc.sections[-1].add(*curve_notes)
    elif curve_notes:
        doc.sections.append(Section("Faithfulness and randomisation curves", curve_notes))
    shown = [k for k in panel_keys if k in images]
    if shown and panel_maps:
        keep = [panel_keys.index(k) for k in shown]
        maps = {mk: [v[i] for i in keep] for mk, v in panel_maps.items()}
        doc.sections.append(
            rs.panels_section(
                [images[k] for k in shown],
                shown,
                maps,
                probs or None,
                label_of=[label_of.get(k, "") for k in shown],
                size=panel_size,
            )
        )
        for note in notes:
            doc.sections[-1].add(Paragraph(note))
        if not probs and not notes:
            doc.sections[-1].add(
                Paragraph(
                    "Probabilities: not recorded by explain (rerun "
                    "`xraylens report` with `--predict` to add them)."
                )
            )
    for k, folder in enumerate(profile):
        doc.sections.append(_nap_section(Path(folder), masks, k))
    if costs:
        doc.sections.append(rs.costs_section(costs))
    prov = provenance(
        {
            n: {
                "architecture": r["summary"].get("model"),
                "weights": r["summary"].get("weights"),
                "labels": r["summary"].get("labels"),
                "output": r["summary"].get("output"),
            }
            for n, r in zip(names, runs)
        },
        preprocessing={n: {"size": r["summary"].get("size")} for n, r in zip(names, runs)},
        command=command,
        methods={n: r["summary"].get("methods") for n, r in zip(names, runs)},
        evaluate=[str(p) for p in evaluate],
        profile=[str(p) for p in profile],
    )
    doc.sections.append(rs.provenance_section(prov))
    return doc


__all__ = ["build", "read_evaluate", "read_explain"]
