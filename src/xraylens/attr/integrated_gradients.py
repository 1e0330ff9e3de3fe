"""Integrated gradients and GradientShap: gradients averaged along paths from baselines.

Integrated gradients (Captum's ``IntegratedGradients``):
``(x - x0) * Σ_s w_s ∇f(x0 + α_s (x - x0))`` with Captum's quadrature
(``approximation_parameters``: the same points and weights). Delta:
``Σ attribution - (f(x) - f(x0))`` per pair (Captum's ``return_convergence_delta``).

GradientShap (Captum's ``GradientShap``): for each of ``n_samples`` samples, a baseline ``b``
drawn from the distribution, noise ``ε`` (``stdevs``) and ``α ~ U[0, 1)``; the map is the mean of
``(x + ε - b) * ∇f(α (x + ε) + (1 - α) b)``. Delta per pair: the mean over samples of Captum's
per-sample delta, i.e. ``Σ attribution - mean_s (f(x + ε_s) - f(b_s))``.
"""

from __future__ import annotations

import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from xraylens.attr import _baselines, configs
from xraylens.attr._pairs import Context, GradientAttributor, Rows
from xraylens.attr.noise_tunnel import gaussian_noise


class IntegratedGradients(GradientAttributor):
    """Integrated gradients for every requested label, steps batched by the engine."""

    name = "integrated_gradients"
    Config = configs.IntegratedGradientsConfig
    presets = {
        "paper": configs.IntegratedGradientsConfig(baseline=0.0, n_steps=50, method="gausslegendre")
    }
    has_delta = True

    def rows_per_unit(self, ctx: Context) -> int:
        return self.config.n_steps

    def chunk_rows(self, ctx: Context) -> int | None:
        return self.config.internal_batch_size

    def setup(self, ctx: Context) -> None:
        steps, alphas = approximation_parameters(self.config.method)
        n = self.config.n_steps
        dtype, device = ctx.x.dtype, ctx.x.device
        ctx.extra["step"] = torch.tensor(steps(n), dtype=dtype, device=device)
        ctx.extra["alpha"] = torch.tensor(alphas(n), dtype=dtype, device=device)
        ctx.extra["baseline"] = _baselines.per_image(self.config.baseline, ctx.x)

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        r = self.config.n_steps
        idx = torch.arange(start, stop)
        unit, s = idx // r, idx % r
        dev = ctx.x.device
        xu = ctx.units.x[unit.to(dev)]
        x0 = ctx.extra["baseline"][ctx.units.image[unit].to(dev)]
        alpha = ctx.extra["alpha"][s.to(dev)].view(-1, 1, 1, 1)
        step = ctx.extra["step"][s.to(dev)].view(-1, 1, 1, 1)
        first = (s == 0).to(dev)
        ends = None
        if bool(first.any()):
            ends = (
                xu[first],
                x0[first],
                unit[first.cpu()],
                torch.ones(int(first.sum()), dtype=xu.dtype, device=dev),
            )
        return Rows(unit=unit, inputs=x0 + alpha * (xu - x0), scale=step * (xu - x0), ends=ends)


class GradientShap(GradientAttributor):
    """GradientShap for every requested label (no noise tunnel: it samples noise itself)."""

    name = "gradient_shap"
    Config = configs.GradientShapConfig
    has_delta = True

    def rows_per_unit(self, ctx: Context) -> int:
        return self.config.n_samples

    def setup(self, ctx: Context) -> None:
        cfg, x = self.config, ctx.x
        n, s = x.shape[0], cfg.n_samples
        gen, rng = ctx.gen, _baselines.numpy_rng(cfg.seed)
        dist = _baselines.distribution(cfg.baselines, cfg.n_baselines, x, gen)
        # Captum's order of draws: baseline indices, noise, path points.
        ctx.extra["pick"] = torch.as_tensor(rng.choice(dist.shape[1], n * s))
        ctx.extra["noise"] = gaussian_noise((n * s, *x.shape[1:]), float(cfg.stdevs), x.device, gen)
        alpha = rng.uniform(0.0, 1.0, n * s)
        ctx.extra["alpha"] = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        ctx.extra["dist"] = dist

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        s = self.config.n_samples
        idx = torch.arange(start, stop)
        unit = idx // s
        dev = ctx.x.device
        image = ctx.units.image[unit]
        xn = ctx.units.x[unit.to(dev)] + ctx.extra["noise"][idx.to(dev)].to(ctx.x.dtype)
        b = ctx.extra["dist"][image.to(dev), ctx.extra["pick"][idx].to(dev)]
        alpha = ctx.extra["alpha"][idx.to(dev)].view(-1, 1, 1, 1)
        weight = torch.full((len(idx),), 1.0 / s, dtype=xn.dtype, device=dev)
        return Rows(
            unit=unit,
            inputs=alpha * xn + (1 - alpha) * b,
            scale=(xn - b) / s,
            ends=(xn, b, unit, weight),
        )
