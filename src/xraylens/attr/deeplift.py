"""DeepLIFT and DeepLiftShap (rescale rule, exact max pooling) for every requested label.

Both run on a prepared copy with the rules of :mod:`._dl_mode`: every function call of the
model is ruled by the taxonomy (:mod:`xraylens.surgery.taxonomy`), elementwise non-linearities
(rescale rule), products and matrix products of two input-dependent tensors (gates,
attention), division, normalisation, softmax, attention and max pooling get exact rules; an op
on the input-dependent path without one is refused with :class:`~xraylens.InputError`.
Summation-to-delta holds: ``Σ attribution = f(x) - f(x0)`` up to float rounding and ``eps``.
After the work, pairs whose relative completeness error ``|delta| / max(|f(x) - f(x0)|,
FLOOR * max |f(x) - f(x0)|)`` exceeds :data:`TOLERANCE` (by the model's dtype) are named in a
:class:`CompletenessWarning`.

DeepLIFT equals Captum's ``DeepLift`` where Captum is exact (elementwise activations, no max
pooling, no gates, normalisation or attention). Delta: ``Σ attribution - (f(x) - f(x0))`` per
pair (Captum's convergence delta).

DeepLiftShap averages DeepLIFT over the baselines ``b_1..b_B`` (Captum's ``DeepLiftShap``).
Delta per pair: the mean of the per-baseline deltas, ``Σ attribution - (f(x) - mean_j f(b_j))``
(Captum returns the B deltas separately).
"""

from __future__ import annotations

import warnings

import torch

from xraylens.attr import _baselines, configs
from xraylens.attr._pairs import Context, GradientAttributor, Rows

#: relative completeness error above which a result warns, by the model's dtype
TOLERANCE = {torch.float64: 1e-6}
DEFAULT_TOLERANCE = 1e-3
#: labels whose output barely changes are judged against this share of the largest change
FLOOR = 1e-2


class CompletenessWarning(UserWarning):
    """A DeepLIFT result whose attributions do not sum to ``f(x) - f(x0)`` (see the module
    docstring)."""


def check_completeness(values, delta, plan, clf, name: str) -> torch.Tensor:
    """Relative completeness error per pair [P]; warns naming the pairs above the tolerance."""
    total = values.double().flatten(1).sum(1)
    diff = (total - delta.double()).abs()
    denom = torch.maximum(diff, FLOOR * diff.max()).clamp_min(torch.finfo(torch.float64).tiny)
    rel = delta.double().abs() / denom
    tol = TOLERANCE.get(clf.dtype, DEFAULT_TOLERANCE)
    bad = (rel > tol).nonzero().flatten().tolist()
    if bad:
        names = ", ".join(
            f"image {int(plan.image[p])} label {clf.labels[int(plan.label[p])]!r} "
            f"({float(rel[p]):.1e})"
            for p in bad[:8]
        )
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        warnings.warn(
            f"{name}: attributions do not sum to f(x) - f(baseline) within {tol:g} (relative) "
            f"for {names}{more}; the map is not exact (see docs/methods.md)",
            CompletenessWarning,
            stacklevel=4,
        )
    return rel


class DeepLift(GradientAttributor):
    """DeepLIFT (rescale rule; exact max-pool rule)."""

    name = "deeplift"
    Config = configs.DeepLiftConfig
    presets = {"paper": configs.DeepLiftConfig(baseline=0.0)}
    pipeline = "deeplift"
    rules = "deeplift"
    has_delta = True
    item_scale = 2.0

    def setup(self, ctx: Context) -> None:
        ctx.extra["baseline"] = _baselines.per_image(self.config.baseline, ctx.x)

    def attribute_pairs(self, clf, x, plan, *, output):
        values, delta = super().attribute_pairs(clf, x, plan, output=output)
        if delta is not None and plan.n_pairs:
            check_completeness(values, delta, plan, clf, self.name)
        return values, delta

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        unit = torch.arange(start, stop)
        dev = ctx.x.device
        xu = ctx.units.x[unit.to(dev)]
        x0 = ctx.extra["baseline"][ctx.units.image[unit].to(dev)]
        ones = torch.ones(len(unit), dtype=xu.dtype, device=dev)
        return Rows(unit=unit, inputs=xu, scale=xu - x0, refs=x0.contiguous(), diff_weight=ones)


class DeepLiftShap(DeepLift):
    """DeepLIFT averaged over a baseline distribution."""

    name = "deeplift_shap"
    Config = configs.DeepLiftShapConfig
    presets = {}

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        ctx.extra["dist"] = _baselines.distribution(cfg.baselines, cfg.n_baselines, ctx.x, ctx.gen)

    def rows_per_unit(self, ctx: Context) -> int:
        return int(ctx.extra["dist"].shape[1])

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        b = ctx.rows_per_unit
        idx = torch.arange(start, stop)
        unit, j = idx // b, idx % b
        dev = ctx.x.device
        xu = ctx.units.x[unit.to(dev)]
        ref = ctx.extra["dist"][ctx.units.image[unit].to(dev), j.to(dev)]
        weight = torch.full((len(idx),), 1.0 / b, dtype=xu.dtype, device=dev)
        return Rows(
            unit=unit, inputs=xu, scale=(xu - ref) / b, refs=ref.contiguous(), diff_weight=weight
        )
