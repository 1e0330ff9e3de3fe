"""The built-in metrics, registered through ``register_metrics`` (see ``docs/evaluation.md``)."""

from __future__ import annotations

from typing import Any

import attrs

from xraylens.evaluate import complexity, localisation
from xraylens.evaluate.faithfulness import perturbation_curves
from xraylens.evaluate.metric import Metric, NoParams
from xraylens.evaluate.randomisation import SIMILARITIES, randomisation_check
from xraylens.hookspecs import hookimpl


class _Localisation(Metric):
    family = "localisation"
    needs = frozenset({"region"})
    fn: Any = None

    def score(self, attribution, *, region=None, **_):
        return type(self).fn(attribution, region, **self.params)


class RegionShare(_Localisation):
    """Share of the positive attribution inside the region (:func:`region_share`)."""

    name = "region_share"
    fn = staticmethod(localisation.region_share)


class ShareRatio(_Localisation):
    """Region share over area share: 1 is chance (:func:`share_ratio`)."""

    name = "share_ratio"
    fn = staticmethod(localisation.share_ratio)


class RankAccuracy(_Localisation):
    """Relevance rank accuracy (:func:`rank_accuracy`)."""

    name = "rank_accuracy"
    fn = staticmethod(localisation.rank_accuracy)


class PixelAUROC(_Localisation):
    """Pixel AUROC of the map against the region (:func:`pixel_auroc`)."""

    name = "pixel_auroc"
    fn = staticmethod(localisation.pixel_auroc)


@attrs.frozen
class PointingConfig:
    tolerance: int = 0


class PointingGame(_Localisation):
    """Hit (1) when the map's maximum is in the region grown by ``tolerance`` pixels."""

    name = "pointing_game"
    Config = PointingConfig
    fn = staticmethod(localisation.pointing_game)


@attrs.frozen
class IoUConfig:
    threshold: Any = "otsu"


class IoU(_Localisation):
    """IoU of the binarised map (Otsu or a fixed threshold) and the region."""

    name = "iou"
    Config = IoUConfig
    fn = staticmethod(localisation.iou)


class Sparseness(Metric):
    """Gini index of the absolute map (:func:`sparseness`)."""

    name = "sparseness"
    family = "complexity"
    higher_is_better = None
    Config = NoParams

    def score(self, attribution, **_):
        return complexity.sparseness(attribution)


class Entropy(Metric):
    """Entropy (nats) of the normalised absolute map (:func:`entropy`)."""

    name = "entropy"
    family = "complexity"
    higher_is_better = None
    Config = NoParams

    def score(self, attribution, **_):
        return complexity.entropy(attribution)


@attrs.frozen
class CurveConfig:
    order: str = "morf"
    substrate: str = "constant"
    value: float = 0.0
    sigma: float = 5.0
    steps: int = 20
    output: str | None = None


@attrs.frozen
class RoadConfig:
    order: str = "morf"
    steps: int = 9
    noise: float = 0.01
    seed: int = 0
    output: str | None = None


class _Curve(Metric):
    family = "faithfulness"
    needs = frozenset({"model", "x"})
    mode = ""

    def score(self, attribution, **inputs):
        return self.reduce(self.trace(attribution, **inputs))

    def trace(self, attribution, *, model=None, x=None, engine=None, **_):
        return perturbation_curves(
            model, x, attribution, mode=self.mode, engine=engine, **self.params
        )

    def reduce(self, trace):
        return trace.auc()


class Deletion(_Curve):
    """Area under the deletion curve (lower is better for MoRF)."""

    name = "deletion"
    mode = "deletion"
    higher_is_better = False
    Config = CurveConfig


class Insertion(_Curve):
    """Area under the insertion curve (higher is better for MoRF)."""

    name = "insertion"
    mode = "insertion"
    Config = CurveConfig


class Road(_Curve):
    """Area under the ROAD curve, noisy linear imputation (lower is better for MoRF)."""

    name = "road"
    mode = "road"
    higher_is_better = False
    Config = RoadConfig


@attrs.frozen
class RandomisationConfig:
    mode: str = "cascading"
    layers: tuple[str, ...] | None = None
    similarity: str = "spearman_abs"
    seed: int = 0
    output: str | None = None


class Randomisation(Metric):
    """Similarity of each map to the map after randomising the model (lower is better):
    after every listed layer (cascading) or the lowest over single layers (independent)."""

    name = "randomisation"
    family = "randomisation"
    needs = frozenset({"model", "x", "method"})
    higher_is_better = False
    Config = RandomisationConfig

    def score(self, attribution, **inputs):
        return self.reduce(self.trace(attribution, **inputs))

    def trace(self, attribution, *, model=None, x=None, method=None, **_):
        p = self.config
        sims = ("spearman_abs",) + ((p.similarity,) if p.similarity != "spearman_abs" else ())
        if p.similarity not in SIMILARITIES:
            from xraylens.errors import InputError

            raise InputError(f"similarity must be one of {SIMILARITIES}, got {p.similarity!r}")
        targets = _targets(attribution)
        output = p.output or getattr(attribution, "output", "logits")
        return randomisation_check(model, x, method, targets=targets, mode=p.mode,
                                   layers=p.layers, similarities=sims, output=output,
                                   seed=p.seed)  # fmt: skip

    def reduce(self, trace):
        s = trace.similarity[self.config.similarity]
        return s[-1] if self.config.mode == "cascading" else s.min(dim=0).values


def _targets(attribution):
    """The attribution's targets in the form attributors accept."""
    if getattr(attribution, "per_image", False):
        return [list(names) for names in attribution.labels]
    return list(attribution.labels)


BUILTIN: tuple[type[Metric], ...] = (
    RegionShare,
    ShareRatio,
    RankAccuracy,
    PointingGame,
    IoU,
    PixelAUROC,
    Sparseness,
    Entropy,
    Deletion,
    Insertion,
    Road,
    Randomisation,
)


@hookimpl
def register_metrics(register):
    for cls in BUILTIN:
        register(cls.name, cls)


__all__ = [c.__name__ for c in BUILTIN] + ["BUILTIN", "register_metrics"]
