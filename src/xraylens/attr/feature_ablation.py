"""Feature ablation for every requested label from one forward per feature.

Captum's ``FeatureAblation`` with a feature mask: each feature in turn takes the baseline
value; every pixel of the feature gets ``f(x) - f(x with the feature ablated)``. Each ablated
image goes through the model once for all labels (Captum runs every feature once per label).
Features: SLIC superpixels by default, or any of :mod:`xraylens.attr.features`.
"""

from __future__ import annotations

import attrs
import torch

from xraylens.attr import features
from xraylens.attr.features import FeatureConfig
from xraylens.attr.perturbation import Perturbation, PerturbationAttributor, check_baseline


@attrs.define
class FeatureAblationConfig(FeatureConfig):
    """Feature ablation.

    Attributes:
        baseline: the value an ablated feature's pixels take: a number, or a tensor
            broadcastable to the input [N, C, H, W].
    """

    baseline: float | torch.Tensor = attrs.field(default=0.0, converter=check_baseline("baseline"))


class FeatureAblation(PerturbationAttributor):
    """Feature ablation: ``xl.get_attributor("feature_ablation", features="slic")``."""

    name = "feature_ablation"
    Config = FeatureAblationConfig

    def pair_maps(self, ctx: Perturbation) -> torch.Tensor:
        ids = features.segment(ctx.x, self.config, index=ctx.index, batch_size=ctx.batch_size)
        ids = ids.to(ctx.device)  # [n, H, W]
        counts = features.count(ids)
        baseline = ctx.baseline(self.config.baseline)

        def ablated(image: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
            inside = (ids[image] == feature[:, None, None])[:, None]
            base = baseline[image] if baseline.shape[0] > 1 else baseline
            return torch.where(inside, base, ctx.x[image])

        ref = ctx.reference().cpu()
        scores = ctx.scores(counts, ablated)
        out = torch.zeros((len(ctx.pair_image), *ids.shape[1:]), dtype=torch.float64)
        for i in range(len(ids)):
            pairs = torch.nonzero(ctx.pair_image == i).flatten()
            labels = ctx.pair_label[pairs]
            diff = ref[i][labels][:, None] - scores[i][:, labels].T  # [pairs, F]
            out[pairs] = features.paint(ids[i].cpu().expand(len(pairs), -1, -1), diff)
        return out
