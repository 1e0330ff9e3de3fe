"""Grad-CAM and guided Grad-CAM for every requested label, upsampled to the input size.

Grad-CAM (Captum's ``LayerGradCam`` followed by ``LayerAttribution.interpolate``): the layer's
activations ``A`` [K, h, w] weighted by the spatial mean of ``∂f/∂A`` per channel, summed over
channels, ReLU-ed (``relu=True``), upsampled to [H, W] and repeated over the input channels.

Guided Grad-CAM (Captum's ``GuidedGradCam``): guided backprop times the ReLU-ed upsampled
Grad-CAM. Both backward passes come from one forward: the guided-ReLU rule is switched off for
the plain layer gradient and on for the guided input gradient.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from xraylens.attr import configs
from xraylens.attr._cam_layer import default_layer, layer_probe, resolve_layout
from xraylens.attr._pairs import Context, PairAttributor, Rows
from xraylens.errors import InputError

log = logging.getLogger("xraylens.attr")


class GradCam(PairAttributor):
    """Grad-CAM on ``layer`` (default: the classifier's ``cam_layer``, else the last module with
    a spatial 4-D output).

    The activation is the layer's output exactly as the model computed it: surgery never
    merges a batch norm into the hooked layer, the hook runs after the backward rules' hooks
    (a ReLU module works as the layer) and hands the rest of the model a copy, so later
    in-place ops (DenseNet's ``F.relu(features, inplace=True)``) leave it intact. A layer that
    runs several times in one forward is refused. Token ([N, T, K]) and channels-last outputs
    are reshaped to [N, K, h, w] (option ``reshape``, see :mod:`xraylens.attr._cam_layer`).

    Subclasses (other CAM variants) override :meth:`cam` (the map of one round from
    ``ctx.extra["activation"]``, the raw layer output, and ``ctx.extra["layout"]``) or
    :meth:`row_maps`; :meth:`activation_and_grad` gives both as [r, K, h, w].
    """

    name = "grad_cam"
    Config = configs.GradCamConfig
    presets = {"captum": configs.GradCamConfig(relu=False, interpolate="nearest")}

    def inspect(self, clf, x, model, inner, extra) -> tuple[str, ...]:
        probe = layer_probe(clf.module, model, inner, x[:1])
        size = tuple(x.shape[-2:])
        name = self.config.layer or clf.cam_layer or default_layer(probe, inner, size)
        if not name:
            raise InputError(
                f"{self.name}: no module of the classifier outputs a spatial 4-D map; "
                "pass layer=... (a module name from clf.module.named_modules())"
            )
        try:
            layer = inner.get_submodule(name)
        except AttributeError:
            raise InputError(
                f"{self.name}: layer {name!r} is not a module of the classifier"
            ) from None
        where = f"{self.name}: layer {name!r} ({type(layer).__name__})"
        calls = probe.calls.get(name, 0)
        if calls != 1:
            raise InputError(
                f"{where} runs {calls} times in one forward pass; Grad-CAM needs one activation "
                "(choose a module that runs once)"
            )
        shape = probe.shapes.get(name)
        if shape is None:
            raise InputError(f"{where} does not output a tensor")
        extra["layer_name"] = name
        log.info("%s: layer %r%s, output %s", self.name, name,
                 "" if self.config.layer or clf.cam_layer else " (default)", shape)  # fmt: skip
        cfg = self.config
        extra["layout"] = resolve_layout(
            shape, size, cfg.reshape, cfg.prefix_tokens, where=where, module=layer
        )
        # merging a batch norm into this convolution (or replacing this batch norm by an
        # identity) would change the hooked output; elsewhere merging stays
        return ("merge_batchnorm",) if isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)) else ()

    def install(self, ctx: Context) -> None:
        def keep(_m, _args, out):
            if not isinstance(out, torch.Tensor):
                raise InputError(f"{self.name}: layer {name!r} does not output a tensor")
            ctx.extra["activation"] = out
            return out.clone()  # later in-place ops change the clone, not the activation

        name = ctx.extra["layer_name"]
        ctx.extra["hook"] = ctx.prep.layer(name).register_forward_hook(keep)

    def teardown(self, ctx: Context) -> None:
        if "hook" in ctx.extra:
            ctx.extra.pop("hook").remove()
        ctx.extra.pop("activation", None)

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        unit = torch.arange(start, stop)
        return Rows(unit=unit, inputs=ctx.units.x[unit.to(ctx.x.device)])

    def activation_and_grad(
        self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activation and ``d(out . grad_out)/d activation``, both [r, K, h, w]
        (detached; graph retained)."""
        act = ctx.extra["activation"]
        grad = torch.autograd.grad(out, act, grad_out, retain_graph=True)[0]
        layout = ctx.extra["layout"]
        return layout.to_nchw(act.detach()), layout.to_nchw(grad)

    def cam(
        self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor, relu: bool
    ) -> torch.Tensor:
        """Upsampled CAM [r, 1, H, W] for one round (graph retained)."""
        act, grad = self.activation_and_grad(ctx, out, grad_out)
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
