"""Step ``ensemble``: combine the backbones of each fold and evaluate like a single model.

- ``ensemble``: the mean of the models' sigmoid outputs, thresholded as usual (this recipe's
  ensemble, as the issue specifies);
- ``ensemble_vote``: a label is predicted when more than half of the models predict it (the
  majority voting of the paper's journal version), stored as the share of votes.

Both read the test predictions written by ``evaluate`` (no model is run again). The step
also writes ``models/ensemble/fold<k>/ensemble.json`` per fold, the manifest of the same
``ensemble`` as one :class:`xl.Ensemble` (``"mean_probs"`` of the fold's backbones, their
``best.pt`` by relative path and sha256; :meth:`xl.Ensemble.load`). :func:`load_ensemble`
reads it (or builds the ensemble when it is not written yet), so that ``explain``,
``evaluate-maps`` and ``profile`` treat the ensemble like any other model; the command line
takes it too: ``xraylens explain --model ensemble --weights <manifest>``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import read_json, write_json
from examples.covid_cxr.evaluate import load_predictions, save_predictions, score_model
from xraylens.attr import GradCam
from xraylens.errors import InputError

ENSEMBLES = ("ensemble", "ensemble_vote")


def manifest_path(run: Run, fold: int) -> Path:
    """``models/ensemble/fold<k>/ensemble.json``: the fold's saved :class:`xl.Ensemble`."""
    return run.model_dir("ensemble", fold) / "ensemble.json"


def load_ensemble(run: Run, fold: int, members: dict[str, xl.Classifier] | None = None):
    """The fold's ``ensemble`` as an :class:`xl.Ensemble`: the mean of the backbones' sigmoid
    outputs. ``members``: backbone -> classifier already loaded (used as they are); else the
    fold's manifest (:func:`manifest_path`) when the ``ensemble`` step wrote it, else the
    backbones' ``best.pt``."""
    path = manifest_path(run, fold)
    if members is None and path.is_file():
        return xl.Ensemble.load(path, device=run.dist.device)
    if members is None:
        from examples.covid_cxr.inference import load_model

        members = {b: load_model(run, b, fold) for b in run.profile.backbones}
    return xl.Ensemble(
        [members[b] for b in run.profile.backbones], combine="mean_probs", name="ensemble"
    )


def save_manifest(run: Run, fold: int) -> Path:
    """Write the fold's ensemble manifest, referring to the backbones' ``best.pt`` (built from
    them, never from an older manifest: a retrained backbone gets a new hash)."""
    from examples.covid_cxr.inference import load_model

    members = {b: load_model(run, b, fold) for b in run.profile.backbones}
    files = [run.model_dir(b, fold) / "best.pt" for b in run.profile.backbones]
    path = manifest_path(run, fold)
    new = load_ensemble(run, fold, members).save(path.with_name("ensemble.new.json"), files)
    if path.is_file() and path.read_bytes() == new.read_bytes():
        new.unlink()  # unchanged: a rerun leaves the manifest (and its mtime) alone
    else:
        new.replace(path)
    return path


def explains(att: xl.Attributor, clf: xl.Classifier) -> bool:
    """Whether ``att`` can explain ``clf`` as configured. A CAM method without ``layer=`` needs
    the classifier's ``cam_layer``; for an ensemble, every member's (the CAM methods sum the
    members' maps), and a method that cannot sum layers (EigenCAM, Ablation-CAM, Score-CAM)
    needs one member's layer as ``layer=``."""
    layer = getattr(att.config, "layer", "")  # "": not a CAM method
    if isinstance(layer, str):
        return True
    members = getattr(clf, "member_cam_layers", None)
    if members is None:
        return layer is not None or clf.cam_layer is not None
    if not isinstance(att, GradCam) or att.multi_layer is not True:
        return False  # e.g. Score-CAM: one layer only
    return layer is not None or all(members)


def combine_fold(run: Run, fold: int) -> dict[str, np.ndarray]:
    """``{"ensemble": mean probs, "ensemble_vote": vote share}`` [N, L] of one fold."""
    preds = [load_predictions(run.predictions(b, fold)) for b in run.profile.backbones]
    ids, targets = preds[0]["ids"], preds[0]["targets"]
    for b, pred in zip(run.profile.backbones, preds):
        if not np.array_equal(pred["ids"], ids):
            raise InputError(
                f"fold {fold}: {b}'s predictions cover other test images; rerun evaluate"
            )
    probs = np.stack([pred["probs"] for pred in preds])  # [M, N, L]
    votes = (probs > run.profile.threshold).mean(axis=0)
    # a vote share above the threshold 0.5 is a strict majority; shift so that the common
    # ">" threshold of the metrics keeps that meaning for any profile threshold
    vote_scores = votes - 0.5 + run.profile.threshold
    return {
        "ensemble": probs.mean(axis=0),
        "ensemble_vote": vote_scores,
        "ids": ids,
        "targets": targets,
    }


def ensemble(run: Run) -> dict[str, Any]:
    """Write ``predictions/ensemble*/fold<k>.npz`` and ``metrics/ensemble.json`` (rank 0)."""
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    if run.dist.is_main:
        labels = read_json(run.out / "dataset.json")["labels"]
        for fold in range(run.profile.folds):
            combined = combine_fold(run, fold)
            save_manifest(run, fold)
            for name in ENSEMBLES:
                save_predictions(
                    run.predictions(name, fold),
                    combined[name],
                    combined["targets"],
                    list(combined["ids"]),
                )
        for name in ENSEMBLES:
            results[name] = score_model(run, name, labels, run.profile.folds)
        write_json(
            run.out / "metrics" / "ensemble.json",
            {
                "members": list(run.profile.backbones),
                "threshold": run.profile.threshold,
                "models": {k: v["summary"] for k, v in results.items()},
            },
        )
        run.record_time("ensemble", time.perf_counter() - t0)
    run.dist.barrier()
    return results
