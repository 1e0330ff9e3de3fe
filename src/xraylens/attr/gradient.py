"""Plain and modified gradients: saliency, input x gradient, guided backprop, deconvolution.

All explain every requested label from one forward per chunk (see :mod:`._pairs`). Each equals
Captum's method of the same name called with ``target=label`` (tests compare them): Saliency
(``abs`` as Captum), InputXGradient, GuidedBackprop and Deconvolution (ReLU rules on every
ReLU module; surgery first turns reused and functional ReLUs into modules of their own).
"""

from __future__ import annotations

import torch

from xraylens.attr import configs
from xraylens.attr._pairs import Context, GradientAttributor, Rows


class _UnitRows(GradientAttributor):
    """One row per unit: the unit itself."""

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        idx = torch.arange(start, stop)
        inputs = ctx.units.x[idx.to(ctx.units.x.device)]
        return Rows(unit=idx, inputs=inputs, scale=self.scale(inputs))

    def scale(self, inputs: torch.Tensor) -> torch.Tensor | None:
        return None


class Saliency(_UnitRows):
    """Gradient of the output with respect to the input (absolute value by default)."""

    name = "saliency"
    Config = configs.SaliencyConfig

    def row_maps(self, ctx, rows, out, grad_out, retain):
        grad = super().row_maps(ctx, rows, out, grad_out, retain)
        return grad.abs() if self.config.abs else grad


class InputXGradient(_UnitRows):
    """Input times the gradient of the output."""

    name = "input_x_gradient"
    Config = configs.InputXGradientConfig

    def scale(self, inputs):
        return inputs


class GuidedBackprop(_UnitRows):
    """Gradient where every ReLU passes back only positive gradients of active units."""

    name = "guided_backprop"
    Config = configs.GuidedBackpropConfig
    pipeline = "guided"
    rules = "guided"
    item_scale = 1.2


class Deconvolution(_UnitRows):
    """Gradient where every ReLU passes back the positive part of the incoming gradient."""

    name = "deconvolution"
    Config = configs.DeconvolutionConfig
    pipeline = "guided"
    rules = "deconv"
    item_scale = 1.2
