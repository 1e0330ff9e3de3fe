"""Grad-CAM and guided Grad-CAM for every requested label, upsampled to the input size.

Grad-CAM (Captum's ``LayerGradCam`` followed by ``LayerAttribution.interpolate``): the layer's
activations ``A`` [K, h, w] weighted by the spatial mean of ``∂f/∂A`` per channel, summed over
channels, ReLU-ed (``relu=True``), upsampled to [H, W] and repeated over the input channels.

Guided Grad-CAM (Captum's ``GuidedGradCam``): guided backprop times the ReLU-ed upsampled
Grad-CAM. Both backward passes come from one forward: the guided-ReLU rule is switched off for
the plain layer gradient and on for the guided input gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xraylens.attr import configs
from xraylens.attr._pairs import Context, PairAttributor, Rows
from xraylens.errors import InputError


class GradCam(PairAttributor):
    """Grad-CAM on ``layer`` (default: the classifier's ``cam_layer``)."""

    name = "grad_cam"
    Config = configs.GradCamConfig
    presets = {"captum": configs.GradCamConfig(relu=False, interpolate="nearest")}

    def setup(self, ctx: Context) -> None:
        name = self.config.layer or ctx.clf.cam_layer
        if not name:
            raise InputError(f"{self.name}: the classifier has no cam_layer; pass layer=...")
        layer = ctx.prep.layer(name)

        def keep(_m, _args, out):
            if not isinstance(out, torch.Tensor) or out.dim() != 4:
                raise InputError(f"{self.name}: layer {name!r} must output [N, K, h, w]")
            ctx.extra["activation"] = out

        ctx.extra["hook"] = layer.register_forward_hook(keep)

    def teardown(self, ctx: Context) -> None:
        if "hook" in ctx.extra:
            ctx.extra.pop("hook").remove()
        ctx.extra.pop("activation", None)

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        unit = torch.arange(start, stop)
        return Rows(unit=unit, inputs=ctx.units.x[unit.to(ctx.x.device)])

    def cam(
        self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor, relu: bool
    ) -> torch.Tensor:
        """Upsampled CAM [r, 1, H, W] for one round (graph retained)."""
        act = ctx.extra["activation"]
        grad = torch.autograd.grad(out, act, grad_out, retain_graph=True)[0]
        cam = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True)
        if relu:
            cam = cam.clamp_min(0)
        return F.interpolate(cam.detach(), size=ctx.x.shape[-2:], mode=self.config.interpolate)

    def row_maps(self, ctx, rows, out, grad_out, retain):
        return self.cam(ctx, out, grad_out, self.config.relu).expand(-1, ctx.x.shape[1], -1, -1)


class GuidedGradCam(GradCam):
    """Guided backprop times the upsampled, ReLU-ed Grad-CAM."""

    name = "guided_grad_cam"
    Config = configs.GuidedGradCamConfig
    presets = {"captum": configs.GuidedGradCamConfig(interpolate="nearest")}
    pipeline = "guided"
    rules = "guided"
    item_scale = 1.2

    def row_maps(self, ctx, rows, out, grad_out, retain):
        ctx.rules.state.active = False
        try:
            cam = self.cam(ctx, out, grad_out, relu=True)
        finally:
            ctx.rules.state.active = True
        return PairAttributor.row_maps(self, ctx, rows, out, grad_out, retain) * cam
