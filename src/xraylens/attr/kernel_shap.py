"""KernelSHAP for every requested label from one set of perturbed forwards.

Captum's ``KernelShap`` semantics: the first two samples keep every feature and none; each
further sample keeps ``k`` features, ``k`` drawn with probability proportional to
``(F - 1) / (k (F - k))`` for ``k = 1 .. F-1`` and the kept set uniformly among those of size
``k`` (so the draws follow the Shapley kernel); the surrogate is weighted least squares with an
intercept (scikit-learn's ``LinearRegression``), each sample weighted 1 except the two end
points (weight 10^6, which pins ``f(x)`` and ``f(baseline)``). A pixel's attribution is its
feature's coefficient: with enough samples, the features' Shapley values. One set of forwards
per image serves every label and one least-squares solve fits them all.
"""

from __future__ import annotations

import attrs
import torch

from xraylens.attr.lime import SampledConfig, SurrogateAttributor
from xraylens.errors import InputError

#: weight of the all-kept and none-kept samples (Captum's ``inf_weight``)
END_POINT_WEIGHT = 1e6


@attrs.define
class KernelShapConfig(SampledConfig):
    """KernelSHAP (Lundberg and Lee 2017) as Captum's ``KernelShap``; the fields are the
    features' and the sampling's (see :class:`~xraylens.attr.lime.SampledConfig`)."""


class KernelShap(SurrogateAttributor):
    """KernelSHAP for every requested label from one set of perturbed forwards per image.

    ``xl.get_attributor("kernel_shap", n_samples=200, features="slic", n_features=50)``.
    """

    name = "kernel_shap"
    Config = KernelShapConfig

    def draw(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        if n_features < 2:
            raise InputError(
                "kernel_shap needs at least 2 features per image (xraylens.attr.kernel_shap); "
                "use more features or a larger region"
            )
        s = self.config.n_samples
        if s < 2:
            raise InputError("kernel_shap needs n_samples >= 2 (the two end points)")
        k = torch.arange(1, n_features, dtype=torch.float64)
        probs = (n_features - 1) / (k * (n_features - k))
        size = 1 + torch.multinomial(probs, max(s - 2, 1), replacement=True, generator=generator)
        rank = torch.rand(len(size), n_features, generator=generator).argsort(1).argsort(1)
        middle = rank < size[:, None]  # a uniformly random subset of each size
        ends = torch.stack([torch.ones(n_features), torch.zeros(n_features)]).bool()
        return torch.cat([ends, middle])[:s]

    def weights(self, ctx, i, ids, z, baseline) -> torch.Tensor:
        kept = z.sum(1)
        end = (kept == 0) | (kept == z.shape[1])
        return torch.where(end, END_POINT_WEIGHT, 1.0).double()
