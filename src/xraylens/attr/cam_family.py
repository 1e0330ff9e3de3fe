"""The CAM family on Grad-CAM's layer machinery: every requested label from one forward.

Each method is a :class:`~xraylens.attr.cam.GradCam` with another map of the layer's
activations ``A`` [r, K, h, w] and (where it needs them) their gradients ``G = ∂f_label/∂A``
(one backward per label, from the layer only). Definitions are pytorch-grad-cam 1.5's (sums
over the pixels ``ij`` of the layer; tested equal per label):

- ``grad_cam_pp`` (Grad-CAM++): ``alpha = G² / (2 G² + Σ_ij A · G³ + eps)`` (0 where G = 0),
  ``w_k = Σ_ij relu(G) · alpha``, map ``Σ_k w_k A_k``.
- ``xgrad_cam`` (XGrad-CAM): ``w_k = Σ_ij G · A / (Σ_ij A + eps)``, map ``Σ_k w_k A_k``.
- ``hires_cam`` (HiResCAM): ``Σ_k G_k · A_k`` (no spatial averaging of the gradient).
- ``layer_cam`` (LayerCAM): ``Σ_k relu(G_k) · A_k``.
- ``eigen_cam`` (EigenCAM): the activations' projection on their first principal component;
  no gradient, the **same map for every label**.

Then, as Grad-CAM: ReLU (``relu=True``, pytorch-grad-cam's ``np.maximum(cam, 0)``), upsampling
to the input (``interpolate``), repeated over the input channels. pytorch-grad-cam then also
min-max scales each map to [0, 1]; xraylens returns the unscaled map (scale it for display).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xraylens.attr import cam_configs
from xraylens.attr._pairs import Context
from xraylens.attr.cam import GradCam
from xraylens.errors import InputError


class CamFromActivation(GradCam):
    """Grad-CAM with another map of (activation, gradient): subclasses implement
    :meth:`combine`. ``uses_gradient = False``: no backward, the map of the activation alone."""

    presets = {}
    uses_gradient = True

    def combine(self, act: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """The raw map [r, 1, h, w] (before ReLU and upsampling) from the layer's activation
        [r, K, h, w] and its gradient [r, K, h, w] (None when ``uses_gradient`` is False)."""
        raise NotImplementedError

    def cam(
        self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor, relu: bool
    ) -> torch.Tensor:
        """Upsampled map [r, 1, H, W] for one round (graph retained)."""
        act, grad = self.layer_tensors(ctx, out, grad_out)
        return self.finish(ctx, self.combine(act, grad), relu)

    def layer_tensors(self, ctx: Context, out: torch.Tensor, grad_out: torch.Tensor):
        """The layer's activation [r, K, h, w] (detached) and, where ``uses_gradient``, its
        gradient ``d(out . grad_out)/d activation`` [r, K, h, w] (graph retained), else None.
        Grad-CAM's own ``activation_and_grad`` (layouts other than [N, K, h, w]) where it has
        one."""
        if self.uses_gradient and hasattr(GradCam, "activation_and_grad"):
            return self.activation_and_grad(ctx, out, grad_out)
        act = ctx.extra.get("activation")
        if act is None:
            raise InputError(f"{self.name}: the layer did not run in the forward pass")
        grad = None
        if self.uses_gradient:
            grad = torch.autograd.grad(out, act, grad_out, retain_graph=True)[0]
        layout = ctx.extra.get("layout")
        if layout is not None:  # token / channels-last outputs as [r, K, h, w]
            act = layout.to_nchw(act)
            grad = None if grad is None else layout.to_nchw(grad)
        return act.detach(), grad

    def finish(self, ctx: Context, cam: torch.Tensor, relu: bool) -> torch.Tensor:
        """ReLU (when ``relu``) and upsampling of a raw map [r, 1, h, w] to [r, 1, H, W]."""
        if relu:
            cam = cam.clamp_min(0)
        return F.interpolate(cam, size=ctx.x.shape[-2:], mode=self.config.interpolate)


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(2, 3), keepdim=True)


class GradCamPlusPlus(CamFromActivation):
    """Grad-CAM++: channel weights from positive gradients weighted per pixel by alpha."""

    name = "grad_cam_pp"
    Config = cam_configs.GradCamPlusPlusConfig

    def combine(self, act, grad):
        g2 = grad * grad
        alpha = g2 / (2 * g2 + _spatial_sum(act) * g2 * grad + self.config.eps)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        weights = _spatial_sum(grad.clamp_min(0) * alpha)
        return (weights * act).sum(dim=1, keepdim=True)


class XGradCam(CamFromActivation):
    """XGrad-CAM: channel weights are the activation-weighted mean of the gradient."""

    name = "xgrad_cam"
    Config = cam_configs.XGradCamConfig

    def combine(self, act, grad):
        weights = _spatial_sum(grad * act / (_spatial_sum(act) + self.config.eps))
        return (weights * act).sum(dim=1, keepdim=True)


class HiResCam(CamFromActivation):
    """HiResCAM: the element-wise product of gradient and activation, summed over channels."""

    name = "hires_cam"
    Config = cam_configs.HiResCamConfig

    def combine(self, act, grad):
        return (grad * act).sum(dim=1, keepdim=True)


class LayerCam(CamFromActivation):
    """LayerCAM: the positive gradient times the activation, summed over channels."""

    name = "layer_cam"
    Config = cam_configs.LayerCamConfig

    def combine(self, act, grad):
        return (grad.clamp_min(0) * act).sum(dim=1, keepdim=True)


class EigenCam(CamFromActivation):
    """EigenCAM: the first principal component of the activations (label-independent)."""

    name = "eigen_cam"
    Config = cam_configs.EigenCamConfig
    uses_gradient = False
    multi_layer = (
        "EigenCAM uses no gradient, so nothing weighs one member's principal component "
        "against another's (the ensemble's weights and combine would not enter the map)"
    )

    def row_maps(self, ctx, rows, out, grad_out, retain):
        # The map does not depend on the label: computed in the chunk's first round only.
        cached = ctx.extra.get("eigen_map")
        if cached is None or cached[0] is not rows:
            cached = (rows, super().row_maps(ctx, rows, out, grad_out, retain))
            ctx.extra["eigen_map"] = cached
        return cached[1]

    def combine(self, act, grad):
        return first_component(act, self.config.sign_correction, what=self.name)

    def teardown(self, ctx):
        ctx.extra.pop("eigen_map", None)
        super().teardown(ctx)


def first_component(act: torch.Tensor, sign_correction: bool, what: str) -> torch.Tensor:
    """Projection [r, 1, h, w] of each image's activations [r, K, h, w] (pixels as samples,
    channels as features, centred per channel) on their first right singular vector.

    The sign of a singular vector is arbitrary; NumPy's SVD (LAPACK ``gesdd``) on the CPU picks
    it here, as in pytorch-grad-cam (``torch.linalg.svd`` often picks the other sign), unless
    ``sign_correction`` flips maps whose minimum outweighs their maximum.
    """
    if not torch.isfinite(act).all():
        # pytorch-grad-cam sets NaN to 0 and goes on: a map of a broken forward
        raise InputError(f"{what}: the layer's activations are not finite (NaN or inf)")
    r, k, h, w = act.shape
    a = act.detach().cpu().numpy().reshape(r, k, h * w).transpose(0, 2, 1)  # [r, hw, K]
    out = np.empty((r, h * w), dtype=a.dtype)
    for i in range(r):
        m = a[i] - a[i].mean(axis=0)
        vt = np.linalg.svd(m, full_matrices=False)[2]
        p = m @ vt[0]
        if sign_correction and abs(p.min()) > abs(p.max()):
            p = -p
        out[i] = p
    return torch.from_numpy(out).reshape(r, 1, h, w).to(act.device)
