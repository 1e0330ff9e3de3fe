"""Score-CAM (Wang et al. 2020) for every requested label from one set of masked forwards.

pytorch-grad-cam's ``ScoreCAM`` semantics: each channel ``k`` of the layer's activations ``A``
[K, h, w] is upsampled to the input (bilinear, corners aligned), scaled to [0, 1]
(``(a - min) / (max - min + 1e-8)``) and multiplies the input; the scores ``s_k`` of the K
masked inputs give the weights ``softmax_k(s_k)`` of label ``l``, and the CAM is
``ReLU(sum_k w_k A_k)`` at the layer's resolution, then upsampled to the input as Grad-CAM's.
pytorch-grad-cam also scales each CAM to [0, 1]; xraylens keeps the values (as its Grad-CAM),
so the two agree after that normalisation. The masked inputs do not depend on the label: the
K forwards per image serve every label (pytorch-grad-cam runs them once per label).

The activations come from a forward hook on the layer of a prepared copy of the model
(:func:`xraylens.attr._prepare.prepare`); the caller's model is never hooked.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from xraylens.attr.perturbation import Perturbation, PerturbationAttributor
from xraylens.errors import InputError

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")


def _interpolation(_inst, _attr, value):
    if value not in INTERPOLATIONS:
        raise InputError(f"interpolate must be one of {list(INTERPOLATIONS)}, got {value!r}")


def _optional_positive(_inst, _attr, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"max_channels must be None or a positive int, got {value!r}")


@attrs.define
class ScoreCamConfig:
    """Score-CAM on a convolutional layer, upsampled to the input.

    Attributes:
        layer: module name (``clf.module.named_modules()``); None: the classifier's
            ``cam_layer``.
        relu: keep only positive evidence (pytorch-grad-cam does).
        interpolate: upsampling mode of the CAM (``"bilinear"``, ``"nearest"``, ...).
        max_channels: None: every channel (pytorch-grad-cam's Score-CAM, K forwards per
            image); an int k: only the k channels of largest spatial variance of the
            activation (Faster Score-CAM; k forwards).
    """

    layer: str | None = None
    relu: bool = True
    interpolate: str = attrs.field(default="bilinear", validator=_interpolation)
    max_channels: int | None = attrs.field(default=None, validator=_optional_positive)


def upsample(maps: torch.Tensor, size, mode: str) -> torch.Tensor:
    """[B, K, h, w] -> [B, K, H, W]; bilinear/bicubic with half-pixel centres (as cv2)."""
    corners = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(maps, size=size, mode=mode, align_corners=corners)


class ScoreCam(PerturbationAttributor):
    """Score-CAM: ``xl.get_attributor("score_cam", layer="layer4")``."""

    name = "score_cam"
    Config = ScoreCamConfig
    needs_copy = True

    def activations(self, ctx: Perturbation) -> torch.Tensor:
        """The layer's activations [n, K, h, w] for ctx's images (one hooked forward)."""
        name = self.config.layer or ctx.clf.cam_layer
        if not name:
            raise InputError(f"{self.name}: the classifier has no cam_layer; pass layer=...")
        layer = ctx.prep.layer(name)
        seen: list[torch.Tensor] = []

        def keep(_m, _args, out):
            if not isinstance(out, torch.Tensor) or out.dim() != 4:
                raise InputError(f"{self.name}: layer {name!r} must output [N, K, h, w]")
            seen.append(out.detach())

        hook = layer.register_forward_hook(keep)
        try:
            n = len(ctx.x)
            chunk = ctx.plan(n, f"{self.name} activations")

            def run(a: int, b: int) -> torch.Tensor:
                seen.clear()
                ctx.forward(ctx.x[a:b])
                if len(seen) != 1:
                    raise InputError(
                        f"{self.name}: layer {name!r} ran {len(seen)} times in one forward; "
                        "Score-CAM needs a layer used once (xraylens.attr.score_cam)"
                    )
                return seen[0].to(ctx.x.dtype)

            return torch.cat(ctx.engine.map_chunks(run, n, chunk=chunk, desc=self.name))
        finally:
            hook.remove()

    def pair_maps(self, ctx: Perturbation) -> torch.Tensor:
        acts = self.activations(ctx)  # [n, K, h, w]
        size = tuple(ctx.x.shape[-2:])
        k = acts.shape[1]
        if self.config.max_channels is None or self.config.max_channels >= k:
            chans = torch.arange(k, device=acts.device).expand(len(acts), -1)
        else:
            spread = acts.flatten(2).var(2, correction=0)  # [n, K]
            top = spread.topk(self.config.max_channels, dim=1).indices
            chans = top.sort(dim=1).values

        def masked(image: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            a = acts[image, chans[image, j]][:, None]  # [B, 1, h, w]
            up = F.interpolate(a, size=size, mode="bilinear", align_corners=True)
            low = up.amin(dim=(2, 3), keepdim=True)
            high = up.amax(dim=(2, 3), keepdim=True)
            return ctx.x[image] * ((up - low) / (high - low + 1e-8))

        scores = ctx.scores(chans.shape[1], masked)  # n x [k, L]
        out = torch.zeros((len(ctx.pair_image), *size), dtype=torch.float64)
        for i in range(len(acts)):
            pairs = torch.nonzero(ctx.pair_image == i).flatten()
            weights = torch.softmax(scores[i][:, ctx.pair_label[pairs]], dim=0)  # [k, p]
            chosen = acts[i, chans[i]].double().cpu()  # [k, h, w]
            cam = torch.einsum("kp,khw->phw", weights, chosen)
            if self.config.relu:
                cam = cam.clamp_min(0)
            out[pairs] = upsample(cam[:, None], size, self.config.interpolate)[:, 0]
        return out
