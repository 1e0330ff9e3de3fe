"""Step ``evaluate``: each model's test predictions and figures, per fold and over folds.

For every backbone and fold the model selected on validation (``best.pt``) runs over the fold's
test images (sharded across ranks); its sigmoid outputs are saved in ``predictions/`` (reused by
``ensemble`` and ``report``), its figures in ``metrics/<model>/fold<k>.json`` and the mean +- std
over folds in ``metrics/models.json``. Conventions (threshold, absent labels, micro/macro): see
:mod:`examples.covid_cxr.metrics`.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.covid_cxr.context import Run
from examples.covid_cxr.data import write_json
from examples.covid_cxr.inference import load_model, predict_logits
from examples.covid_cxr.metrics import multilabel_metrics, summarize_folds
from examples.covid_cxr.prepare import Prepared, load_prepared
from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import InputError


def save_predictions(path: Path, probs: np.ndarray, targets: np.ndarray, ids: list[str]) -> None:
    """``probs`` and ``targets`` [N, L] float32 and the image ids, as one ``.npz`` (atomic)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        probs=np.asarray(probs, dtype=np.float32),
        targets=np.asarray(targets, dtype=np.float32),
        ids=np.asarray(ids),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"no predictions {path}: run the evaluate step first")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in ("probs", "targets", "ids")}


def predict_fold(run: Run, prep: Prepared, backbone: str, fold: int) -> Path:
    """Test-split sigmoid outputs of one model (reused when present, unless ``--force``)."""
    path = run.predictions(backbone, fold)
    if path.is_file() and not run.force:
        return path
    clf = load_model(run, backbone, fold)
    test = prep.part(fold, "test")
    logits = predict_logits(
        run, clf.forward_module(), clf.module, prep.store, test, desc=f"test {backbone}"
    )
    if run.dist.is_main:
        save_predictions(
            path,
            torch.sigmoid(logits).numpy(),
            prep.store.targets[test].numpy(),
            [prep.store.ids[i] for i in test],
        )
    run.dist.barrier()
    return path


def score_model(run: Run, model: str, labels, folds: int) -> dict[str, Any]:
    """Figures of ``model`` (a backbone or an ensemble) on every fold, and over folds."""
    per_fold = []
    for fold in range(folds):
        pred = load_predictions(run.predictions(model, fold))
        m = multilabel_metrics(pred["targets"], pred["probs"], labels, run.profile.threshold)
        m["fold"] = fold
        write_json(run.out / "metrics" / model / f"fold{fold}.json", m)
        per_fold.append(m)
    return {"model": model, "per_fold": per_fold, "summary": summarize_folds(per_fold, labels)}


def evaluate(run: Run) -> dict[str, Any]:
    """Predict with every model on its fold's test split; write the figures (rank 0)."""
    t0 = time.perf_counter()
    prep = load_prepared(run)
    p = run.profile
    fresh = [
        not run.predictions(backbone, fold).is_file() or run.force
        for backbone in p.backbones
        for fold in range(p.folds)
    ]
    for backbone in p.backbones:
        for fold in range(p.folds):
            predict_fold(run, prep, backbone, fold)
    results: dict[str, Any] = {}
    if run.dist.is_main:
        for backbone in p.backbones:
            results[backbone] = score_model(run, backbone, prep.labels, p.folds)
        write_json(
            run.out / "metrics" / "models.json",
            {
                "threshold": p.threshold,
                "labels": list(prep.labels),
                "models": {k: v["summary"] for k, v in results.items()},
            },
        )
        if any(fresh):
            run.record_time("evaluate", time.perf_counter() - t0)
    run.dist.barrier()
    return results
