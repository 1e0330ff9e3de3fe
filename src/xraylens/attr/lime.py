"""LIME for every requested label from one set of perturbed forwards.

Captum's ``Lime`` semantics and defaults: ``S`` binary samples ``z`` [S, F] over the features
(each kept with probability 1/2); a sample's input keeps the image on the kept features and
takes the baseline elsewhere; its weight is the exponential kernel
``exp(-d^2 / (2 kernel_width^2))`` of the cosine distance ``d`` between the flattened image and
the perturbed input; the surrogate is ``Lasso(alpha=0.01)`` (scikit-learn) with an intercept,
and a pixel's attribution is its feature's coefficient. Captum runs the ``S`` forwards and the
fit once per label; here the forwards run once per image (each gives every label) and the
surrogate is fitted for all labels at once (:mod:`xraylens.attr._surrogate`).

Samples are drawn from ``torch.Generator().manual_seed(seed)`` for each image (an image's map
does not depend on the other images of the batch); ``samples=`` gives them explicitly.
"""

from __future__ import annotations

import attrs
import torch

from xraylens.attr import _surrogate, features
from xraylens.attr.configs import _in, _positive_int
from xraylens.attr.features import FeatureConfig
from xraylens.attr.perturbation import Perturbation, PerturbationAttributor, check_baseline
from xraylens.errors import InputError

DISTANCES = ("cosine", "euclidean")


def _positive_float(name, zero_ok=False):
    def check(_inst, _attr, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or value < 0 or (value == 0 and not zero_ok):
            raise InputError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} "
                             f"number, got {value!r}")  # fmt: skip

    return check


def _samples(value):
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        raise InputError("samples must be a binary tensor [S, F] (1: the feature kept)")
    if not ((value == 0) | (value == 1)).all():
        raise InputError("samples must hold only 0 and 1 (1: the feature kept)")
    return value.detach().cpu().bool()


def _seed(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"seed must be an int, got {value!r}")
    return value


@attrs.define
class SampledConfig(FeatureConfig):
    """Parameters shared by LIME and KernelSHAP (besides the feature mask's).

    Attributes:
        n_samples: perturbed inputs per image (Captum's default is 25).
        baseline: the value a removed feature's pixels take: a number, or a tensor
            broadcastable to the input [N, C, H, W].
        seed: seed of the samples (the same for every image).
        samples: bool/0-1 [S, F] samples to use instead of drawing (F: the images' feature
            count); e.g. to reproduce another implementation's draws.
    """

    n_samples: int = attrs.field(default=200, validator=_positive_int("n_samples"))
    baseline: float | torch.Tensor = attrs.field(default=0.0, converter=check_baseline("baseline"))
    seed: int = attrs.field(default=0, converter=_seed)
    samples: torch.Tensor | None = attrs.field(default=None, converter=_samples)


@attrs.define
class LimeConfig(SampledConfig):
    """LIME (Ribeiro et al. 2016) with Captum's defaults.

    Attributes:
        kernel_width: width of the exponential similarity kernel (Captum: 1.0).
        distance: ``"cosine"`` (Captum's default) or ``"euclidean"``, between the flattened
            image and the perturbed input.
        surrogate: ``"lasso"`` (Captum's), ``"ridge"`` or ``"linear"`` (weighted least squares).
        alpha: regularisation of the lasso and ridge surrogates (Captum: 0.01).
    """

    kernel_width: float = attrs.field(default=1.0, validator=_positive_float("kernel_width"))
    distance: str = attrs.field(default="cosine", validator=_in(DISTANCES, "distance"))
    surrogate: str = attrs.field(default="lasso", validator=_in(_surrogate.SURROGATES, "surrogate"))
    alpha: float = attrs.field(default=0.01, validator=_positive_float("alpha", zero_ok=True))


class SurrogateAttributor(PerturbationAttributor):
    """LIME-like methods: binary samples over features, weighted linear surrogates.

    Subclasses implement :meth:`draw` (samples of one image) and :meth:`weights`, and may
    override :meth:`surrogate`.
    """

    def surrogate(self) -> tuple[str, float]:
        """The surrogate's name and regularisation (:func:`xraylens.attr._surrogate.fit`)."""
        return "linear", 0.0

    def draw(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        """Bool samples [S, F] of one image (True: the feature kept)."""
        raise NotImplementedError

    def weights(self, ctx: Perturbation, i: int, ids, z, baseline) -> torch.Tensor:
        """Weights float64 [S] of image ``i``'s samples ``z`` [S, F]."""
        raise NotImplementedError

    def samples_for(self, n_features: list[int]) -> list[torch.Tensor]:
        """Samples [S, F_i] per image: the given ``samples`` or a seeded draw."""
        given = self.config.samples
        out = []
        for f in n_features:
            if given is not None:
                if given.shape[1] != f:
                    raise InputError(
                        f"{self.name}: samples have {given.shape[1]} features, the image has "
                        f"{f}; give a features mask with that many ids"
                    )
                out.append(given)
            else:
                out.append(self.draw(f, torch.Generator().manual_seed(self.config.seed)))
        return out

    def pair_maps(self, ctx: Perturbation) -> torch.Tensor:
        ids = features.segment(ctx.x, self.config, index=ctx.index, batch_size=ctx.batch_size)
        ids = ids.to(ctx.device)  # [n, H, W]
        counts = features.count(ids)
        z = self.samples_for(counts)
        width = max(counts)
        padded = torch.zeros((len(ids), len(z[0]), width), dtype=torch.bool)
        for i, zi in enumerate(z):
            padded[i, :, : zi.shape[1]] = zi
        padded = padded.to(ctx.device)
        baseline = ctx.baseline(self.config.baseline)

        def perturbed(image: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
            keep = features.keep_pixels(ids[image], padded[image, sample])
            base = baseline[image] if baseline.shape[0] > 1 else baseline
            return torch.where(keep, ctx.x[image], base)

        scores = ctx.scores([len(zi) for zi in z], perturbed)
        out = torch.zeros((len(ctx.pair_image), *ids.shape[1:]), dtype=torch.float64)
        for i in range(len(ids)):
            pairs = torch.nonzero(ctx.pair_image == i).flatten()
            base_i = baseline[i : i + 1] if baseline.shape[0] > 1 else baseline
            w = self.weights(ctx, i, ids[i], z[i], base_i)
            labels = ctx.pair_label[pairs]
            coef = _surrogate.fit(z[i], scores[i][:, labels], w, *self.surrogate())
            out[pairs] = features.paint(ids[i].cpu().expand(len(pairs), -1, -1), coef)
        return out


def feature_sums(x: torch.Tensor, ids: torch.Tensor, values: torch.Tensor, n_features: int):
    """Per-feature sums over pixels and channels of ``values`` [C, H, W]: float64 [F], and
    the sum over the never-perturbed pixels."""
    flat = values.double().sum(0).flatten().cpu()
    index = ids.flatten().cpu()
    inside = index >= 0
    sums = torch.zeros(n_features, dtype=torch.float64).index_add_(0, index[inside], flat[inside])
    return sums, flat[~inside].sum()


class Lime(SurrogateAttributor):
    """LIME for every requested label from one set of perturbed forwards per image.

    ``xl.get_attributor("lime", n_samples=200, features="slic", n_features=50)``.
    """

    name = "lime"
    Config = LimeConfig

    def surrogate(self) -> tuple[str, float]:
        return self.config.surrogate, self.config.alpha

    def draw(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(self.config.n_samples, n_features, generator=generator) < 0.5

    def weights(self, ctx, i, ids, z, baseline) -> torch.Tensor:
        """The exponential kernel of the distance between the image and each perturbed input,
        from per-feature sums (exact, without building the inputs again)."""
        x = ctx.x[i]
        b = baseline[0].expand_as(x)
        f = z.shape[1]
        zf = z.double()
        if self.config.distance == "euclidean":
            diff, _ = feature_sums(x, ids, (x - b) ** 2, f)
            d = ((1 - zf) @ diff).clamp_min(0).sqrt()
        else:
            xx, xx_out = feature_sums(x, ids, x * x, f)
            xb, _ = feature_sums(x, ids, x * b, f)
            bb, _ = feature_sums(x, ids, b * b, f)
            dot = zf @ xx + (1 - zf) @ xb + xx_out
            norm_p = zf @ xx + (1 - zf) @ bb + xx_out
            norm_x = xx.sum() + xx_out
            # torch's cosine_similarity: x.y / sqrt(max(|x|^2 |y|^2, eps^2)), eps = 1e-8
            d = 1 - dot / (norm_x * norm_p).clamp_min(1e-16).sqrt()
        return torch.exp(-(d**2) / (2 * self.config.kernel_width**2))
