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
from xraylens.attr._cam_layer import (
    default_layer,
    layer_probe,
    member_layers,
    resolve_layout,
)
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

    An :class:`~xraylens.core.ensemble.Ensemble` takes a layer per member (``layer=`` a
    mapping member index -> layer, a list in member order, or module paths
    ``members.i.<layer>``; None: every member's default CAM layer). The map is the sum over
    those layers of each layer's upsampled map from the gradient of the ensemble's output,
    which for ``"mean_logits"`` is ``Σ_i w_i CAM_i`` (``w_i`` times member i's own Grad-CAM;
    ``relu`` applies per member). One str layer (``"members.0.layer4"``) explains that member
    alone (``w_0 CAM_0``). Methods that cannot sum layers set :attr:`multi_layer` to why.

    Subclasses (other CAM variants) override :meth:`cam` (the map of one round from
    ``ctx.extra["activation"]``, the raw layer output, and ``ctx.extra["layout"]``) or
    :meth:`row_maps`; :meth:`activation_and_grad` gives both as [r, K, h, w].
    """

    name = "grad_cam"
    Config = configs.GradCamConfig
    presets = {"captum": configs.GradCamConfig(relu=False, interpolate="nearest")}

    #: whether the method can sum the maps of several layers (an ensemble's members); else
    #: the reason it cannot (shown in the error)
    multi_layer: bool | str = True

    def inspect(self, clf, x, model, inner, extra) -> tuple[str, ...]:
        size = tuple(x.shape[-2:])
        spec = member_layers(clf, self.config.layer, self.name)
        if spec is not None and len(spec) > 1:
            return self._inspect_members(clf, x, model, inner, extra, spec)
        name = spec[0][1] if spec else (self.config.layer or clf.cam_layer)
        leaf = name and _is_leaf(inner, name)
        # A layer probe (one no-grad forward, remembered) finds the default layer, and sees a
        # leaf module called at several places before ``split_reused`` splits it; otherwise
        # the hook checks calls and shape on the real forward (no extra pass).
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
                + (f" (member {spec[0][0]}, {clf.members[spec[0][0]].name})" if spec else "")
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

    def _inspect_members(self, clf, x, model, inner, extra, spec) -> tuple[str, ...]:
        """One hooked layer (a "slot" in ``extra["slots"]``) per ensemble member in ``spec``:
        the map is the sum of the slots' maps, each from the gradient of the ensemble's output
        (see :meth:`summed_cam`)."""
        who = ", ".join(f"member {i} ({clf.members[i].name})" for i, _ in spec)
        if self.multi_layer is not True:
            raise InputError(
                f"{self.name} cannot sum layers of {who}: {self.multi_layer}; pass layer= one "
                f"member's layer (e.g. {spec[0][1]!r})"
            )
        size = tuple(x.shape[-2:])
        probe = None
        slots, keep_bn = [], False
        for i, name in spec:
            member = f"member {i} ({clf.members[i].name})"
            try:
                layer = inner.get_submodule(name)
            except AttributeError:
                raise InputError(
                    f"{self.name}: {member} has no module {name.split('.', 2)[2]!r} ({name!r} "
                    "is not a module of the ensemble)"
                ) from None
            where = f"{self.name}: {member} layer {name!r} ({type(layer).__name__})"
            slot = {"layer_name": name, "size": size, "layer_module": layer, "where": where}
            if _is_leaf(inner, name) and "split_reused" in PIPELINES[self.pipeline]:
                probe = probe or layer_probe(clf.module, model, inner, x[:1])
                self._check_calls(slot, probe.calls.get(name, 0))
                self._layout(slot, probe.shapes.get(name))
            keep_bn = keep_bn or isinstance(layer, (nn.Conv2d, nn.BatchNorm2d))
            slots.append(slot)
        extra["slots"], extra["size"], extra["where"] = slots, size, slots[0]["where"]
        log.info("%s: layers %s", self.name, [s["layer_name"] for s in slots])
        return ("merge_batchnorm",) if keep_bn else ()

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
        slots = extra.get("slots") or [extra]  # one layer: its state lives in ``extra``

        def start(_m, _args):
            for slot in slots:
                slot["calls"] = 0
                slot.pop("activation", None)

        def keep_for(slot):
            def keep(_m, _args, out):
                slot["calls"] += 1
                if slot["calls"] > 1:
                    self._check_calls(slot, slot["calls"])
                if "layout" not in slot:
                    self._layout(slot, out.shape if isinstance(out, torch.Tensor) else None)
                slot["activation"] = out
                return out.clone()  # later in-place ops change the clone, not the activation

            return keep

        extra["hooks"] = [ctx.prep.model.register_forward_pre_hook(start)] + [
            ctx.prep.layer(slot["layer_name"]).register_forward_hook(keep_for(slot))
            for slot in slots
        ]

    def teardown(self, ctx: Context) -> None:
        for hook in ctx.extra.pop("hooks", ()):
            hook.remove()
        for slot in ctx.extra.get("slots", ()):
            slot.pop("activation", None)
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

    def summed_cam(
        self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor, relu: bool
    ) -> torch.Tensor:
        """:meth:`cam` [r, 1, H, W]; for several layers (an ensemble's members) the sum of each
        layer's upsampled map, every one from the gradient of the ensemble's output at that
        layer (for ``"mean_logits"``: ``w_i`` times member i's own gradient, so the sum is
        ``Σ_i w_i CAM_i``). ``relu`` applies to each layer's map."""
        slots = ctx.extra.get("slots")
        if not slots:
            return self.cam(ctx, out, grad_out, relu)
        total = None
        for slot in slots:
            ctx.extra["activation"] = slot.get("activation")
            ctx.extra["layout"], ctx.extra["where"] = slot.get("layout"), slot["where"]
            cam = self.cam(ctx, out, grad_out, relu)
            total = cam if total is None else total + cam
        return total

    def row_maps(self, ctx, rows, out, grad_out, retain):
        cam = self.summed_cam(ctx, out, grad_out, self.config.relu)
        return cam.expand(-1, ctx.x.shape[1], -1, -1)


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
            cam = self.summed_cam(ctx, out, grad_out, relu=True)
        finally:
            ctx.rules.state.active = True
        return GradientAttributor.row_maps(self, ctx, rows, out, grad_out, retain) * cam
