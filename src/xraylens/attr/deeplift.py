"""DeepLIFT and DeepLiftShap (rescale rule, exact max pooling) for every requested label.

Both run on a surgically prepared copy (pipeline ``"deeplift"``: every non-linearity a distinct,
non-in-place module) with the rules of :mod:`._rules`. Summation-to-delta holds for every
backbone: ``Σ attribution = f(x) - f(x0)`` up to float rounding and ``eps``.

DeepLIFT equals Captum's ``DeepLift`` on models without max pooling (Captum's max-pool rule is
not exact; ours is, see :mod:`xraylens.surgery.maxpool`). Delta: ``Σ attribution - (f(x) -
f(x0))`` per pair (Captum's convergence delta).

DeepLiftShap averages DeepLIFT over the baselines ``b_1..b_B`` (Captum's ``DeepLiftShap``).
Delta per pair: the mean of the per-baseline deltas, ``Σ attribution - (f(x) - mean_j f(b_j))``
(Captum returns the B deltas separately).
"""

from __future__ import annotations

import torch

from xraylens.attr import _baselines, configs
from xraylens.attr._pairs import Context, PairAttributor, Rows


class DeepLift(PairAttributor):
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
