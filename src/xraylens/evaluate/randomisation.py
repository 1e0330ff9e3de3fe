"""Randomisation sanity checks (Adebayo et al. 2018): do a method's maps depend on the model?

A copy of the classifier has its layers re-initialised, from the output towards the input:
``"cascading"`` (layers 1..k randomised at step k) or ``"independent"`` (layer k alone). The
method explains the copy at each step and its maps are compared with the original ones, per
(image, label) pair, by:

- ``spearman_abs`` / ``spearman``: Spearman rank correlation of absolute / signed maps;
- ``ssim``: structural similarity (scikit-image) of the min-max normalised maps;
- ``hog``: Pearson correlation of the HOG features (scikit-image) of the normalised maps.

Verdict: a method **passes** when the mean ``spearman_abs`` after randomising every listed
layer (the last cascading step; for ``"independent"``, the lowest over layers) is below
``threshold`` (default 0.5): its maps changed when the model did. A model-independent map
(an edge filter of the input) stays at 1 and fails.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from xraylens.core.attribution import Attribution
from xraylens.core.classifier import Classifier
from xraylens.errors import InputError
from xraylens.evaluate._checks import as_maps

MODES = ("cascading", "independent")
SIMILARITIES = ("spearman_abs", "spearman", "ssim", "hog")


def _ranks(a: torch.Tensor) -> torch.Tensor:
    """Mean 1-based ranks (ties averaged) along the last axis of float64 [B, P]."""
    s = a.sort(-1).values
    low = torch.searchsorted(s, a, right=False)
    high = torch.searchsorted(s, a, right=True)
    return (low + high + 1).double() / 2


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp(min=1e-300), torch.nan)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of rows of [B, P]: float64 [B]; NaN for a constant row."""
    return _pearson(_ranks(a.double()), _ranks(b.double()))


def _normalise(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(_normalise(a), _normalise(b), data_range=1.0, win_size=win))


def _hog(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.feature import hog

    cell = max(2, min(a.shape) // 8)
    fa = hog(_normalise(a), pixels_per_cell=(cell, cell), cells_per_block=(2, 2))
    fb = hog(_normalise(b), pixels_per_cell=(cell, cell), cells_per_block=(2, 2))
    r = _pearson(torch.from_numpy(fa)[None], torch.from_numpy(fb)[None])
    return float(r[0])


def similarity(a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    """Similarity ``name`` (one of :data:`SIMILARITIES`) of maps a, b [B, H, W]: float64 [B]."""
    if name == "spearman_abs":
        return spearman(a.flatten(1).abs(), b.flatten(1).abs())
    if name == "spearman":
        return spearman(a.flatten(1), b.flatten(1))
    if name in ("ssim", "hog"):
        fn = _ssim if name == "ssim" else _hog
        an, bn = a.double().numpy(), b.double().numpy()
        return torch.tensor([fn(x, y) for x, y in zip(an, bn)], dtype=torch.float64)
    raise InputError(f"similarity must be one of {SIMILARITIES}, got {name!r}")


def default_layers(module: nn.Module) -> list[str]:
    """The top-level children of ``module`` that hold parameters, output side first."""
    names = [n for n, m in module.named_children() if any(True for _ in m.parameters())]
    return names[::-1]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``module`` in place (``reset_parameters`` where a
    submodule has one, a normal draw of the same scale otherwise), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        done: set[int] = set()
        for m in module.modules():
            if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False)):
                m.reset_parameters()
                done.update(id(p) for p in m.parameters(recurse=False))
        with torch.no_grad():
            for p in module.parameters():
                if id(p) not in done:
                    p.normal_(0.0, float(p.detach().std()) if p.numel() > 1 else 1.0)


@attrs.frozen(eq=False)
class RandomisationResult:
    """Similarity of maps after randomisation to the original maps.

    Attributes:
        method, mode: the explained method and ``"cascading"``/``"independent"``.
        layers: the randomised layers, output side first (step k of the curves).
        similarity: name -> float64 [K, N, T] (NaN in empty slots).
        labels, mask: as the original Attribution's.
        threshold: the verdict's threshold on ``spearman_abs``.
    """

    method: str
    mode: str
    layers: tuple[str, ...]
    similarity: dict[str, torch.Tensor]
    labels: Any
    mask: torch.Tensor
    threshold: float

    def curve(self, name: str = "spearman_abs") -> torch.Tensor:
        """Mean similarity over filled pairs per layer step: float64 [K]."""
        s = self.similarity[name]
        return torch.nanmean(s.flatten(1), dim=1)

    @property
    def score(self) -> float:
        """The verdict's value: mean ``spearman_abs`` after full (cascading) randomisation,
        or the lowest over layers (independent)."""
        c = self.curve("spearman_abs")
        return float(c[-1] if self.mode == "cascading" else c.min())

    @property
    def passed(self) -> bool:
        """Whether the maps changed enough: :attr:`score` < :attr:`threshold`."""
        return self.score < self.threshold


Explainer = Callable[[Classifier, torch.Tensor], Any]


def _explain(method, clf, x, targets, output) -> Attribution | torch.Tensor:
    if hasattr(method, "attribute"):
        return method.attribute(clf, x, targets=targets, output=output)
    if callable(method):
        return method(clf, x)
    raise InputError(f"method must be an Attributor or a callable, got {type(method).__name__}")


def randomisation_check(
    clf: Classifier,
    x: torch.Tensor,
    method: Any,
    *,
    targets: Any = "all",
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    similarities: Sequence[str] = SIMILARITIES,
    threshold: float = 0.5,
    output: str = "logits",
    seed: int = 0,
) -> RandomisationResult:
    """Run a randomisation sanity check of ``method`` on ``clf`` and images ``x``.

    Args:
        method: an :class:`~xraylens.Attributor`, or a callable ``(clf, x) -> maps``
            [N, T, (C,) H, W] (e.g. a model-independent baseline).
        layers: names from ``clf.module.named_modules()``, output side first; None:
            :func:`default_layers`. The caller's model is never changed (a copy is randomised).
        similarities: which of :data:`SIMILARITIES` to compute.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    bad = [s for s in similarities if s not in SIMILARITIES]
    if bad or "spearman_abs" not in similarities:
        raise InputError(f"similarities: {bad} unknown; choose from {SIMILARITIES} with "
                         "spearman_abs (the verdict's)")  # fmt: skip
    if not isinstance(clf, Classifier):
        raise InputError(f"clf must be an xraylens Classifier, got {type(clf).__name__}")
    modules = dict(clf.module.named_modules())
    layers = list(default_layers(clf.module) if layers is None else layers)
    missing = [n for n in layers if n not in modules]
    if missing or not layers:
        raise InputError(f"layers {missing or layers} are not modules of {clf.name}")
    original = _explain(method, clf, x, targets, output)
    labels = original.labels if isinstance(original, Attribution) else None
    mask = original.mask if isinstance(original, Attribution) else None
    ref = as_maps(original, "maps")
    n, t, h, w = ref.shape
    mask = torch.ones(n, t, dtype=torch.bool) if mask is None else mask
    sims = {
        s: torch.full((len(layers), n, t), torch.nan, dtype=torch.float64) for s in similarities
    }
    work = copy.deepcopy(clf)
    work_modules = dict(work.module.named_modules())
    idx = mask.nonzero(as_tuple=True)
    for k, name in enumerate(layers):
        if mode == "independent":
            work = copy.deepcopy(clf)
            work_modules = dict(work.module.named_modules())
        randomise_layer(work_modules[name], seed + k)
        maps = as_maps(_explain(method, work, x, targets, output), "maps")
        if maps.shape != ref.shape:
            raise InputError(
                f"the randomised model's maps are {list(maps.shape)}, not {[n, t, h, w]}"
            )
        for s in similarities:
            sims[s][k][idx] = similarity(ref[idx], maps[idx], s)
    name = getattr(method, "name", getattr(method, "__name__", type(method).__name__))
    return RandomisationResult(str(name), mode, tuple(layers), sims, labels, mask, float(threshold))


__all__ = [
    "MODES",
    "SIMILARITIES",
    "RandomisationResult",
    "default_layers",
    "randomisation_check",
    "randomise_layer",
    "similarity",
    "spearman",
]
