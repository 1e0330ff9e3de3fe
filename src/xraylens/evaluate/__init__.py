"""Measure attribution quality for every label of every image: localisation, faithfulness,
randomisation sanity checks and complexity, collected in a tidy :class:`Results` table.

Stable API (see ``docs/evaluation.md``):

- ``region_share(maps, region) -> torch.Tensor [N, T]``: maps float [N, T, H, W] (or
  [N, T, C, H, W], channels summed, or an Attribution), region bool [N, H, W] (one mask per
  image) or [N, T, H, W] (one per map); the share of the **positive** attribution mass inside
  the region, NaN where a map has no positive mass (0 for an empty region).
- ``area_share(region) -> torch.Tensor [N] or [N, T]``: the fraction of pixels inside.
- ``Results``: rows with exactly the columns ``model, method, label, image_id, patient_id,
  metric, value``; ``.to_csv(path)``, ``.to_json(path)``, ``Results.read(path)``, and
  ``.aggregate(by=("model", "method", "label", "metric"), n_boot=1000, ci=0.95, seed=0)``
  returning a :class:`Summary` with rows ``model, method, label, metric, mean, ci_low,
  ci_high, n`` (bootstrap over patients where patient ids are given, else over images).
"""

from __future__ import annotations

from xraylens.evaluate.activation import area_fractions, energy_share, roc_auc
from xraylens.evaluate.complexity import entropy, sparseness
from xraylens.evaluate.faithfulness import Curves, perturbation_curves
from xraylens.evaluate.localisation import (
    area_share,
    binarise,
    iou,
    otsu_threshold,
    pixel_auroc,
    pointing_game,
    rank_accuracy,
    region_share,
    share_ratio,
)
from xraylens.evaluate.metric import Metric
from xraylens.evaluate.randomisation import RandomisationResult, randomisation_check
from xraylens.evaluate.results import (
    COLUMNS,
    SUMMARY_STATS,
    CurveTable,
    Results,
    Summary,
    Table,
)

__all__ = [
    "COLUMNS",
    "CurveTable",
    "Curves",
    "SUMMARY_STATS",
    "Metric",
    "RandomisationResult",
    "Results",
    "Summary",
    "Table",
    "area_fractions",
    "area_share",
    "binarise",
    "energy_share",
    "entropy",
    "iou",
    "otsu_threshold",
    "perturbation_curves",
    "pixel_auroc",
    "pointing_game",
    "randomisation_check",
    "rank_accuracy",
    "region_share",
    "roc_auc",
    "share_ratio",
    "sparseness",
]
