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
from xraylens.attr._pairs import Context, GradientAttributor, Rows
from xraylens.errors import InputError
from xraylens.surgery import PIPELINES

log = logging.getLogger("xraylens.attr")


def _is_leaf(inner: nn.Module, name: str) -> bool:
    try:
        return not any(True for _ in inner.get_submodule(name).children())
    except AttributeError:
        return False


class GradCam(GradientAttributor):
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
        size = tuple(x.shape[-2:])
        name = self.config.layer or clf.cam_layer
        leaf = name and _is_leaf(inner, name)
        # A layer probe (one no-grad forward, remembered) finds the default layer, and sees a
        # leaf module called at several places before ``split_reused`` splits it; otherwise
        # the hook checks calls and shape on the real forward (no extra pass).
        members = getattr(clf, "member_cam_layers", None)
        if not name and members is not None:
            # an ensemble: a searched default would be one member's layer and explain only it
            choices = ", ".join(repr(m) for m in members if m) or "members.<i>.<layer>"
            raise InputError(
                f"{self.name}: the ensemble {clf.name!r} has no cam_layer; pass layer= a "
                f"member's layer ({choices}): its map is that member's weighted CAM"
            )
        probe = None
        if not name or (leaf and "split_reused" in PIPELINES[self.pipeline]):
            probe = layer_probe(clf.module, model, inner, x[:1])
        if not name:
            name = default_layer(probe, inner, size)
            if not name:
                raise InputError(
                    f"{self.name}: no module of the classifier outputs a spatial 4-D map; "
                    "pass layer=... (a module name from clf.module.named_modules())"
                )
            log.info("%s: default layer %r, output %s", self.name, name, probe.shapes[name])
        try:
            layer = inner.get_submodule(name)
        except AttributeError:
            raise InputError(
                f"{self.name}: layer {name!r} is not a module of the classifier"
            ) from None
        extra["layer_name"], extra["size"] = name, size
        extra["where"] = f"{self.name}: layer {name!r} ({type(layer).__name__})"
        extra["layer_module"] = layer
        if probe is not None:
            self._check_calls(extra, probe.calls.get(name, 0))
            self._layout(extra, probe.shapes.get(name))
        # merging a batch norm into this convolution (or replacing this batch norm by an
        # identity) would change the hooked output; elsewhere merging stays
        return ("merge_batchnorm",) if isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)) else ()

    def _check_calls(self, extra: dict, calls: int) -> None:
        if calls != 1:
            raise InputError(
                f"{extra['where']} runs {calls} times in one forward pass; Grad-CAM needs one "
                "activation (choose a module that runs once)"
            )

    def _layout(self, extra: dict, shape) -> None:
        if shape is None:
            raise InputError(f"{extra['where']} does not output a tensor")
        cfg = self.config
        extra["layout"] = resolve_layout(
            tuple(shape), extra["size"], cfg.reshape, cfg.prefix_tokens,
            where=extra["where"], module=extra.pop("layer_module", None),
        )  # fmt: skip

    def install(self, ctx: Context) -> None:
        extra = ctx.extra

        def start(_m, _args):
            extra["calls"] = 0
            extra.pop("activation", None)

        def keep(_m, _args, out):
            extra["calls"] += 1
            if extra["calls"] > 1:
                self._check_calls(extra, extra["calls"])
            if "layout" not in extra:
                self._layout(extra, out.shape if isinstance(out, torch.Tensor) else None)
            extra["activation"] = out
            return out.clone()  # later in-place ops change the clone, not the activation

        extra["hooks"] = [
            ctx.prep.model.register_forward_pre_hook(start),
            ctx.prep.layer(extra["layer_name"]).register_forward_hook(keep),
        ]

    def teardown(self, ctx: Context) -> None:
        for hook in ctx.extra.pop("hooks", ()):
            hook.remove()
        ctx.extra.pop("activation", None)

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        unit = torch.arange(start, stop)
        return Rows(unit=unit, inputs=ctx.units.x[unit.to(ctx.x.device)])

    def activation_and_grad(
        self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activation and ``d(out . grad_out)/d activation``, both [r, K, h, w]
        (detached; graph retained)."""
        act = ctx.extra.get("activation")
        if act is None:
            raise InputError(f"{ctx.extra['where']} did not run in the forward pass")
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
        return GradientAttributor.row_maps(self, ctx, rows, out, grad_out, retain) * cam
