"""Step ``evaluate-maps``: how much of each method's attribution falls inside the lungs.

For each fold of ``explain_folds`` and each backbone, every **test image that has a lung mask**
(the datasets' human-reviewed masks; phantoms carry their own) is explained by every method of
the profile, for the labels true or predicted for it (as the ``explain`` step), and scored
with :mod:`xraylens.evaluate`: share of the positive attribution inside the lungs, its ratio to
the lungs' area share (1 = chance), pointing-game hit and IoU after Otsu binarisation. Masks go
through the image's own resize and padding (``preprocess_mask``).

Outputs in ``evaluate_maps/``: ``results.csv`` (one row per image x label x metric, with the
patient id), ``summary.csv`` / ``summary.json`` (mean and 95% bootstrap CI per model, method
and metric, pooled over labels, resampling patients) and ``summary_labels.csv`` (per label),
``summary.md`` (the table for the report). Resumable: skipped when ``results.csv`` exists
(``--force`` redoes it). Runs on the main process only.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import PHANTOMS, load_dataset
from examples.covid_cxr.explain import build_attributors, targets_of
from examples.covid_cxr.inference import load_model
from examples.covid_cxr.prepare import load_prepared
from xraylens.core.atomic import atomic_write_text
from xraylens.evaluate import Results

METRICS = ("region_share", "share_ratio", "pointing_game", "iou")
BATCH = 8


def lung_masks(run: Run, ids: list[str]) -> dict[str, torch.Tensor]:
    """Image id -> bool lung mask [S, S] at the profile's geometry, for the ids that have one."""
    ds = load_dataset(run.data, run.profile)
    wanted = set(ids)
    out: dict[str, torch.Tensor] = {}
    for rec in ds.records:
        if rec["id"] not in wanted:
            continue
        if run.data == PHANTOMS:
            mask = rec.get("lung_mask")
        elif rec.get("mask_path"):
            mask = xl.data.read_mask(rec["mask_path"])
        else:
            mask = None
        if mask is not None and np.asarray(mask).any():
            out[rec["id"]] = xl.data.preprocess_mask(np.asarray(mask), run.profile.size)
    return out


def summary_markdown(summary) -> str:
    """The pooled summary as a Markdown table (mean [95% CI], n)."""
    lines = [
        "| model | method | metric | mean [95% CI] | n |",
        "|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['metric']} | {r['mean']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def evaluate_maps(run: Run) -> dict[str, Any] | None:
    """Score every method's maps of the masked test images against their lung masks."""
    d = run.dist
    out = run.out / "evaluate_maps"
    if not d.is_main or ((out / "results.csv").is_file() and not run.force):
        d.barrier()
        return None
    t0 = time.perf_counter()
    p = run.profile
    prep = load_prepared(run)
    attributors, _ = build_attributors(run)
    metrics = {name: xl.get_metric(name) for name in METRICS}
    patient = {r["id"]: r.get("patient_id") for r in prep.records}
    table = Results()
    counts = {}
    for fold in p.explain_folds:
        test = prep.part(fold, "test")
        masks = lung_masks(run, [prep.store.ids[i] for i in test])
        chosen = [i for i in test if prep.store.ids[i] in masks]
        counts[f"fold{fold}"] = {"test": len(test), "with_lung_mask": len(chosen)}
        for backbone in p.backbones:
            clf = load_model(run, backbone, fold)
            for start in range(0, len(chosen), BATCH):
                pos = chosen[start : start + BATCH]
                if run.show_progress:
                    print(f"evaluate-maps fold {fold} {backbone}: images {start + 1}-"
                          f"{start + len(pos)} of {len(chosen)}", flush=True)  # fmt: skip
                x, y = prep.store.batch(pos)
                x = x.to(d.device)
                probs = clf.predict_proba(x).float().cpu()
                targets = [targets_of(probs[k], y[k], prep.labels, p.threshold)
                           for k in range(len(pos))]  # fmt: skip
                ids = [prep.store.ids[i] for i in pos]
                region = torch.stack([masks[i] for i in ids])
                for method, att in attributors.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        res = att.attribute(clf, x, targets, output=p.explain_output)
                    for metric in metrics.values():
                        table.extend(metric.results(
                            res, image_ids=ids, patient_ids=[patient[i] for i in ids],
                            model_name=f"{backbone}/fold{fold}", method_name=method,
                            region=region,
                        ))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv.tmp.csv")
    pooled = table.aggregate(by=("model", "method", "metric"), seed=p.seed)
    pooled.to_csv(out / "summary.csv")
    pooled.to_json(out / "summary.json")
    table.aggregate(seed=p.seed).to_csv(out / "summary_labels.csv")
    atomic_write_text(out / "summary.md", summary_markdown(pooled))
    (out / "results.csv.tmp.csv").replace(out / "results.csv")  # last: marks the step done
    run.record_time("evaluate-maps", time.perf_counter() - t0, images=counts, rows=len(table))
    d.barrier()
    return {"images": counts, "rows": len(table)}
