"""Step ``evaluate-maps``: how much of each method's attribution falls inside the lungs.

For each fold of ``explain_folds`` and each backbone and their ``ensemble``
(:func:`~examples.covid_cxr.ensemble.load_ensemble`; CAM methods as in ``explain``; with one
backbone the ensemble is that model and is not scored again), the **test
images that have a lung mask** (the datasets' human-reviewed masks; phantoms carry their own;
``evaluate_images`` of them, class-balanced, or every one when None) are explained by every
method of the profile, for the labels true or predicted for it (as the ``explain`` step), and scored
with :mod:`xraylens.evaluate`: share of the positive attribution inside the lungs, its ratio to
the lungs' area share (1 = chance), pointing-game hit and IoU after Otsu binarisation. Masks go
through the image's own resize and padding (``preprocess_mask``).

Outputs in ``evaluate_maps/``: ``results.csv`` (one row per image x label x metric, with the
patient id), ``summary.csv`` / ``summary.json`` (mean and 95% bootstrap CI per model, method
and metric, pooled over labels, resampling patients) and ``summary_labels.csv`` (per label),
``summary.md`` (the table for the report). Resumable: skipped when ``results.csv`` exists
(``--force`` redoes it); until then each batch of images (per model) writes its rows
atomically to ``evaluate_maps/parts/<settings hash>/``, so a rerun after an interruption
(Ctrl-C) continues from the first missing batch. Runs on the main process only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import PHANTOMS, load_dataset
from examples.covid_cxr.ensemble import explains, load_ensemble
from examples.covid_cxr.explain import balanced_sample, build_attributors, targets_of
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


def _score_batch(run, prep, clf, name, fold, pos, masks, attributors, metrics, patient):
    """The results rows of the images at store positions ``pos`` for one model."""
    p, table = run.profile, Results()
    x, y = prep.store.batch(pos)
    x = x.to(run.dist.device)
    probs = clf.predict_proba(x).float().cpu()
    targets = [targets_of(probs[k], y[k], prep.labels, p.threshold) for k in range(len(pos))]
    ids = [prep.store.ids[i] for i in pos]
    region = torch.stack([masks[i] for i in ids])
    for method, att in attributors.items():
        if not explains(att, clf):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = att.attribute(clf, x, targets, output=p.explain_output)
        for metric in metrics.values():
            table.extend(metric.results(
                res, image_ids=ids, patient_ids=[patient[i] for i in ids],
                model_name=f"{name}/fold{fold}", method_name=method, region=region,
            ))  # fmt: skip
    return table


def scored_models(p) -> list[str]:
    """The backbones, and their ensemble when it has more than one member (an ensemble of one
    model gives that model's maps: tested in tests/test_ensemble.py; not scored twice)."""
    return [*p.backbones, "ensemble"] if len(p.backbones) > 1 else list(p.backbones)


def _settings_key(run: Run, chosen: dict[int, list[str]], attributors) -> str:
    """A hash of what decides the rows: images, models, methods and their parameters."""
    p = run.profile
    data = {
        "images": chosen,
        "models": scored_models(p),
        "params": {m: a.params for m, a in attributors.items()},
        "output": p.explain_output,
        "threshold": p.threshold,
        "train": p.train_fingerprint(),
        "batch": BATCH,
    }
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


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
    counts, chosen, masks = {}, {}, {}
    for fold in p.explain_folds:
        test = prep.part(fold, "test")
        masks[fold] = lung_masks(run, [prep.store.ids[i] for i in test])
        masked = [i for i in test if prep.store.ids[i] in masks[fold]]
        chosen[fold] = balanced_sample(run, prep, masked, p.evaluate_images, fold)
        counts[f"fold{fold}"] = {"test": len(test), "with_lung_mask": len(masked),
                                 "scored": len(chosen[fold])}  # fmt: skip
    ids = {f: [prep.store.ids[i] for i in c] for f, c in chosen.items()}
    parts = out / "parts" / _settings_key(run, ids, attributors)
    if run.force and (out / "parts").is_dir():
        shutil.rmtree(out / "parts")
    models = scored_models(p)
    jobs = [(fold, name, start) for fold in p.explain_folds for name in models
            for start in range(0, len(chosen[fold]), BATCH)]  # fmt: skip
    files = []
    loaded: dict[tuple[int, str], xl.Classifier] = {}
    resumed = 0
    for fold, name, start in tqdm(jobs, desc="evaluate-maps", unit="batch",
                                  disable=not run.show_progress):  # fmt: skip
        part = parts / f"fold{fold}" / f"{name}_{start:05d}.csv"
        files.append(part)
        if part.is_file():
            resumed += 1
            continue
        if (fold, name) not in loaded:
            if name == "ensemble":
                members = {b: loaded.get((fold, b)) or load_model(run, b, fold)
                           for b in p.backbones}  # fmt: skip
                loaded[(fold, name)] = load_ensemble(run, fold, members)
            else:
                loaded[(fold, name)] = load_model(run, name, fold)
        pos = chosen[fold][start : start + BATCH]
        rows = _score_batch(run, prep, loaded[(fold, name)], name, fold, pos, masks[fold],
                            attributors, metrics, patient)  # fmt: skip
        rows.to_csv(part)  # atomic: a batch is written whole or not at all
        run.work_done("evaluate_maps")
    table = Results.concat(Results.read(f) for f in files)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv.tmp.csv")
    pooled = table.aggregate(by=("model", "method", "metric"), seed=p.seed)
    pooled.to_csv(out / "summary.csv")
    pooled.to_json(out / "summary.json")
    table.aggregate(seed=p.seed).to_csv(out / "summary_labels.csv")
    atomic_write_text(out / "summary.md", summary_markdown(pooled))
    (out / "results.csv.tmp.csv").replace(out / "results.csv")  # last: marks the step done
    run.record_time("evaluate-maps", time.perf_counter() - t0, images=counts, rows=len(table),
                    batches=len(jobs), resumed_batches=resumed)  # fmt: skip
    d.barrier()
    return {"images": counts, "rows": len(table), "resumed_batches": resumed}
