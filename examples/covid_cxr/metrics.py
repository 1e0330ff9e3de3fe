"""Multi-label precision, recall and F1: per label, micro and macro; mean +- std over folds.

Conventions (the same for every model, fold and the ensemble):

- a label is predicted when its sigmoid probability is **greater than** the threshold (0.5 by
  default; the paper's code used 0.51);
- per label: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean; a
  label that is never predicted has precision 0 (nothing right), F1 0 when P + R = 0;
- a label with **no positive test image** in a fold has no recall and no meaningful F1: its
  figures are ``None`` (shown "n/a"), its false positives are still counted, and it is left out
  of that fold's macro average and of its own mean over folds (no NaN is ever averaged);
- micro: TP, FP and FN summed over all labels first (absent labels' false positives included);
- macro: the unweighted mean over the labels with at least one positive test image;
- over folds: mean and sample standard deviation (ddof 1) of the folds where a figure exists;
  with one fold the std is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xraylens.errors import InputError

FIGURES = ("precision", "recall", "f1")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def multilabel_metrics(
    targets: np.ndarray, probs: np.ndarray, labels: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Figures of one model on one fold. ``targets`` 0/1 and ``probs`` [N, L]."""
    y = np.asarray(targets) > 0.5
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != len(labels):
        raise InputError(f"targets {y.shape} and probs {p.shape} must both be [N, {len(labels)}]")
    pred = p > threshold
    tp = (pred & y).sum(0)
    fp = (pred & ~y).sum(0)
    fn = (~pred & y).sum(0)
    support = y.sum(0)
    per_label = {}
    for i, name in enumerate(labels):
        entry: dict[str, Any] = {
            "support": int(support[i]),
            "predicted": int(tp[i] + fp[i]),
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "fn": int(fn[i]),
        }
        if support[i] == 0:
            entry.update(precision=None, recall=None, f1=None)
        else:
            prec, rec = _ratio(tp[i], tp[i] + fp[i]), _ratio(tp[i], support[i])
            entry.update(precision=prec, recall=rec, f1=_f1(prec, rec))
        per_label[name] = entry
    micro_p = _ratio(tp.sum(), tp.sum() + fp.sum())
    micro_r = _ratio(tp.sum(), tp.sum() + fn.sum())
    present = [name for name in labels if per_label[name]["support"] > 0]
    macro = {
        fig: (float(np.mean([per_label[n][fig] for n in present])) if present else None)
        for fig in FIGURES
    }
    return {
        "images": int(y.shape[0]),
        "threshold": threshold,
        "micro": {"precision": micro_p, "recall": micro_r, "f1": _f1(micro_p, micro_r)},
        "macro": macro,
        "macro_labels": present,
        "absent_labels": [name for name in labels if per_label[name]["support"] == 0],
        "per_label": per_label,
    }


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` over the values that are not None (std: ddof 1, None if n < 2)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}


def summarize_folds(per_fold: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Mean +- std over folds of the micro, macro and per-label figures."""
    out: dict[str, Any] = {"folds": len(per_fold)}
    for avg in ("micro", "macro"):
        out[avg] = {fig: mean_std([m[avg][fig] for m in per_fold]) for fig in FIGURES}
    out["per_label"] = {
        name: {
            **{fig: mean_std([m["per_label"][name][fig] for m in per_fold]) for fig in FIGURES},
            "support": int(sum(m["per_label"][name]["support"] for m in per_fold)),
        }
        for name in labels
    }
    return out


def fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """``0.812 ± 0.034``, ``0.812`` (one fold) or ``n/a``."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return text
