"""Faithfulness: does removing what a map calls important change the model's score?

For every (image, label) pair of an attribution, pixels are ordered by the map (channels
summed): most relevant first (``order="morf"``) or least relevant first (``"lerf"``).

- ``mode="deletion"``: the first ``f`` of the pixels are replaced by a substrate (RISE,
  Petsiuk et al. 2018); the score should fall fast (low AUC is good for MoRF).
- ``mode="insertion"``: the first ``f`` of the pixels are revealed on the substrate; the
  score should rise fast (high AUC is good).
- ``mode="road"``: the first ``f`` of the pixels are removed by ROAD's noisy linear
  imputation (Rong et al. 2022), which leaks less of the removed shape than a constant.

Substrates: ``"constant"`` (``value``, default 0 = black), ``"blur"`` (Gaussian, ``sigma``
pixels) or a tensor like ``x``. Scores are the model's logits or sigmoid probabilities
(``output``; default the Attribution's own), softmax only when asked (``"softmax"``).

Speed: one forward of a perturbed image gives every label's score, the unperturbed and the
fully-perturbed image are shared by all labels of an image, and the steps of many pairs go
through the model together in chunks planned by the :class:`~xraylens.Engine` (no-grad
forwards under its memory budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from xraylens.core.classifier import Classifier, eval_mode
from xraylens.core.engine import Engine
from xraylens.core.targets import resolve_targets
from xraylens.errors import InputError
from xraylens.evaluate._checks import as_maps
from xraylens.evaluate._impute import blur, linear_imputation

MODES = ("deletion", "insertion", "road")
ORDERS = ("morf", "lerf")
OUTPUTS = ("logits", "probs", "softmax")


@attrs.frozen(eq=False)
class Curves:
    """Perturbation curves of every (image, label) pair.

    Attributes:
        scores: float64 [N, T, K]: the label's score after perturbing ``fractions[k]`` of the
            pixels; NaN in empty slots.
        fractions: float64 [K], increasing, in [0, 1].
        labels: the T label names (or one tuple per image); mask: bool [N, T].
        mode, order, output: how the curves were made.
    """

    scores: torch.Tensor
    fractions: torch.Tensor
    labels: Any
    mask: torch.Tensor
    mode: str
    order: str
    output: str

    def auc(self) -> torch.Tensor:
        """Area under each curve over the perturbed fraction (trapezoid, x in [0, 1]):
        float64 [N, T], NaN in empty slots. Divided by the span of ``fractions``, so it is the
        curve's mean height and comparable between step counts."""
        f = self.fractions
        area = torch.trapezoid(self.scores, f, dim=-1)
        span = (f[-1] - f[0]).clamp(min=1e-12)
        return area / span


def _fractions(steps, fractions, pixels_per_step, n_pixels: int, mode: str) -> torch.Tensor:
    if sum(v is not None for v in (fractions, pixels_per_step)) > 1:
        raise InputError("give at most one of fractions and pixels_per_step")
    if pixels_per_step is not None:
        if isinstance(pixels_per_step, bool) or not isinstance(pixels_per_step, int):
            raise InputError(f"pixels_per_step must be a positive int, got {pixels_per_step!r}")
        if pixels_per_step < 1:
            raise InputError(f"pixels_per_step must be a positive int, got {pixels_per_step!r}")
        counts = list(range(0, n_pixels, pixels_per_step)) + [n_pixels]
        return torch.tensor(counts, dtype=torch.float64) / n_pixels
    if fractions is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive int, got {steps!r}")
        # ROAD cannot impute a fully removed image (nothing to interpolate from)
        top = 0.9 if mode == "road" else 1.0
        return torch.linspace(0.0, top, steps + 1, dtype=torch.float64)
    f = torch.as_tensor(fractions, dtype=torch.float64).flatten()
    if f.numel() < 2 or not bool((f[1:] > f[:-1]).all()) or f[0] < 0 or f[-1] > 1:
        raise InputError(f"fractions must increase within [0, 1] (two or more), got {f.tolist()}")
    if mode == "road" and f[-1] >= 1:
        raise InputError("mode='road': fractions must stay below 1 (nothing left to impute from)")
    return f


def _pairs(model, attribution, targets, x: torch.Tensor):
    """(maps [N, T, H, W], label index [N, T] (-1 empty), mask, labels, default output)."""
    labels_all = model.labels if isinstance(model, Classifier) else None
    from xraylens.core.attribution import Attribution

    if isinstance(attribution, Attribution):
        if targets is not None:
            raise InputError("targets: an Attribution already names its labels; leave it None")
        maps = as_maps(attribution.values, "attribution")
        n, t = maps.shape[:2]
        index = torch.full((n, t), -1, dtype=torch.long)
        for i in range(n):
            for j, name in enumerate(attribution.labels_of(i)):
                if bool(attribution.mask[i, j]):
                    index[i, j] = _label(model, name, labels_all)
        return maps, index, attribution.mask.clone(), attribution.labels, attribution.output
    maps = as_maps(attribution, "attribution")
    if maps.shape[0] != x.shape[0]:
        raise InputError(
            f"attribution has {maps.shape[0]} images, x {x.shape[0]}: explain x itself"
        )
    if targets is None:
        raise InputError("targets: name the labels of the maps' T slots for a plain tensor")
    if labels_all is None:  # a plain module: labels are the output indices
        forward, module = _forward(model)
        with torch.no_grad(), eval_mode(module):
            labels_all = tuple(str(i) for i in range(forward(x[:1]).shape[-1]))
    plan = resolve_targets(targets, labels_all, x.shape[0])
    n, t = maps.shape[:2]
    if tuple(plan.mask.shape) != (n, t):
        raise InputError(f"targets give {list(plan.mask.shape)} slots, the maps have [{n}, {t}]")
    index = torch.full((n, t), -1, dtype=torch.long)
    index[plan.image, plan.slot] = plan.label
    return maps, index, plan.mask.clone(), plan.labels, "logits"


def _label(model, name: str, labels_all) -> int:
    if labels_all is not None:
        return model.label_index(name)
    try:
        return int(name)
    except ValueError:
        raise InputError(
            f"attribution label {name!r}: a plain nn.Module has no label names; pass an "
            "xraylens Classifier"
        ) from None


def _forward(model) -> tuple[nn.Module, nn.Module]:
    if isinstance(model, Classifier):
        return model.forward_module(), model.module
    if isinstance(model, nn.Module):
        return model, model
    raise InputError(f"model must be an xraylens Classifier or nn.Module, got {type(model)}")


def _noise(seed: int, item: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 7919 + item))


def _substrate(x: torch.Tensor, substrate, value: float, sigma: float) -> torch.Tensor | None:
    if isinstance(substrate, torch.Tensor):
        if substrate.shape != x.shape:
            raise InputError(f"substrate is {list(substrate.shape)}, x is {list(x.shape)}")
        return substrate.to(x)
    if substrate == "constant":
        return torch.full_like(x, float(value))
    if substrate == "blur":
        if not sigma > 0:
            raise InputError(f"sigma must be > 0 for the blurred substrate, got {sigma!r}")
        return blur(x, float(sigma))
    raise InputError(f"substrate must be 'constant', 'blur' or a tensor, got {substrate!r}")


def perturbation_curves(
    model: Classifier | nn.Module,
    x: torch.Tensor,
    attribution: Any,
    *,
    targets: Any = None,
    mode: str = "deletion",
    order: str = "morf",
    substrate: str | torch.Tensor = "constant",
    value: float = 0.0,
    sigma: float = 5.0,
    steps: int = 20,
    fractions: Sequence[float] | None = None,
    pixels_per_step: int | None = None,
    output: str | None = None,
    noise: float = 0.01,
    seed: int = 0,
    engine: Engine | None = None,
) -> Curves:
    """Deletion / insertion / ROAD curves for every (image, label) pair.

    Args:
        model: an xraylens Classifier (or a plain module mapping x to scores [N, L]).
        x: the explained images [N, C, H, W], as given to the attributor.
        attribution: an :class:`~xraylens.Attribution` of ``x``, or maps [N, T, (C,) H, W]
            with ``targets`` (label names or indices, as for attributors).
        mode: ``"deletion"``, ``"insertion"`` or ``"road"``; order: ``"morf"`` or ``"lerf"``.
        substrate, value, sigma: what replaces pixels in deletion/insertion (module doc).
        steps: K - 1 equal steps over [0, 1] ([0, 0.9] for ROAD); or explicit ``fractions``;
            or ``pixels_per_step`` pixels at a time (Quantus' ``features_in_step``).
        output: ``"logits"``, ``"probs"`` (sigmoid) or ``"softmax"``; None: the
            Attribution's ``output`` (logits for plain maps).
        noise, seed: ROAD's imputation noise (std, in input units) and its generator seed.
        engine: device and memory budget (default: a fresh :class:`~xraylens.Engine`).
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(model, Classifier):
        x = model.check_input(x)
    elif not (torch.is_tensor(x) and x.dim() == 4):
        raise InputError(f"x must be a tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values")
    maps, index, mask, labels, default_output = _pairs(model, attribution, targets, x)
    output = default_output if output is None else output
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    n, t, h, w = maps.shape
    if n != x.shape[0] or (h, w) != tuple(x.shape[-2:]):
        raise InputError(
            f"attribution maps are [{n}, {t}, {h}, {w}], x is {list(x.shape)}: explain x itself"
        )
    frac = _fractions(steps, fractions, pixels_per_step, h * w, mode)
    counts = torch.round(frac * (h * w)).long()
    engine = engine or Engine()
    forward, module = _forward(model)
    device = engine.resolve_device(module)
    x = x.to(device)
    base = None if mode == "road" else _substrate(x, substrate, value, sigma)

    pair_img, pair_slot = mask.nonzero(as_tuple=True)
    # rank of each pixel in the pair's order: 0 = first perturbed (ties: pixel order)
    flat = maps[pair_img, pair_slot].reshape(-1, h * w)
    sort = torch.argsort(flat, dim=-1, descending=(order == "morf"), stable=True)
    rank = torch.empty(sort.shape, dtype=torch.int32)
    rank.scatter_(1, sort, torch.arange(h * w, dtype=torch.int32).expand_as(sort).contiguous())

    # items: (pair, step); steps that perturb nothing or everything are shared per image
    shared = (counts == 0) | ((counts == h * w) & (mode != "road"))
    own_steps = (~shared).nonzero()[:, 0]
    shared_steps = shared.nonzero()[:, 0]
    # item i: (pair, own step) for the pairs' own steps, then (image, shared step)
    n_own = len(pair_img) * len(own_steps)
    item_pair = torch.arange(len(pair_img)).repeat_interleave(len(own_steps))
    item_img = torch.cat(
        [pair_img[item_pair], torch.arange(n).repeat_interleave(len(shared_steps))]
    )
    item_count = torch.cat(
        [counts[own_steps].repeat(len(pair_img)), counts[shared_steps].repeat(n)]
    )

    def perturbed(start: int, stop: int) -> torch.Tensor:
        img, cnt = item_img[start:stop], item_count[start:stop]
        # own steps: the pair's first `count` pixels; shared steps: none or all of them
        removed = torch.empty(stop - start, h * w, dtype=torch.bool)
        own = min(stop, n_own) - start
        if own > 0:
            removed[:own] = rank[item_pair[start : start + own]] < cnt[:own, None]
        if own < stop - start:
            removed[max(own, 0) :] = (cnt[max(own, 0) :] > 0)[:, None]
        removed = removed.view(-1, 1, h, w).to(device)
        xi = x[img.to(device)]
        if mode == "road":
            out = linear_imputation(xi, removed)
            if noise > 0:  # one generator per item: the same noise whatever the chunking
                eps = torch.stack([_noise(seed, j, xi.shape[1:]) for j in range(start, stop)])
                out = out + noise * eps.to(out) * removed
            return out
        if mode == "deletion":
            return torch.where(removed, base[img.to(device)], xi)
        return torch.where(removed, xi, base[img.to(device)])  # insertion reveals

    def run(start: int, stop: int) -> torch.Tensor:
        xp = engine.prepare_input(perturbed(start, stop))
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad on the CPU)
        with torch.inference_mode(), engine.autocast(device):
            s = forward(xp).float()
        if output == "probs":
            s = torch.sigmoid(s)
        elif output == "softmax":
            s = torch.softmax(s, dim=-1)
        return s.double().cpu()

    with eval_mode(module):
        n_items = len(item_img)
        chunk = engine.plan(
            n_items, module=forward, example=x[:1], grad=False, what=f"{mode} steps"
        )
        scores_all = torch.cat(engine.map_chunks(run, n_items, chunk=chunk, desc=mode))
    if not torch.isfinite(scores_all).all():
        raise InputError(f"{mode}: the model returned NaN or infinite scores for perturbed input")
    out = torch.full((n, t, len(frac)), torch.nan, dtype=torch.float64)
    own = scores_all[:n_own].view(len(pair_img), len(own_steps), -1)
    lab = index[pair_img, pair_slot]
    if len(own_steps):
        out[pair_img[:, None], pair_slot[:, None], own_steps[None]] = own.gather(
            2, lab[:, None, None].expand(-1, len(own_steps), 1)
        )[..., 0]
    if len(shared_steps):
        sh = scores_all[n_own:].view(n, len(shared_steps), -1)
        per_pair = sh[pair_img]  # [P, S, L]
        out[pair_img[:, None], pair_slot[:, None], shared_steps[None]] = per_pair.gather(
            2, lab[:, None, None].expand(-1, len(shared_steps), 1)
        )[..., 0]
    return Curves(out, frac, labels, mask, mode, order, output)


__all__ = ["Curves", "MODES", "ORDERS", "OUTPUTS", "perturbation_curves"]
