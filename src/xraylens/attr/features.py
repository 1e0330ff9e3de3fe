"""Feature masks of the feature-based perturbation methods (LIME, KernelSHAP, feature ablation).

A feature is a set of pixels switched on and off together. :func:`segment` gives one int64 map
[H, W] per image: ``0 .. F-1`` are features, ``-1`` marks pixels that are never perturbed (they
keep the image's values and get attribution 0). Sources:

- ``"slic"`` (default), ``"quickshift"``, ``"felzenszwalb"``: scikit-image superpixels computed
  on the greyscale image itself (no RGB conversion; a 3-channel input is segmented in colour);
- ``"grid"``: a regular grid of about ``n_features`` cells;
- a user mask: an int tensor [H, W] (every image) or [N, H, W] (one per image of the batch);
  negative ids are never perturbed.

``region`` (bool [H, W] or [N, H, W], e.g. the lung mask) restricts the features to it: pixels
outside become ``-1`` (SLIC places its segments inside the region only). Feature ids are
renumbered ``0 .. F-1`` in increasing order of the given ids.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch

from xraylens.errors import InputError

SEGMENTERS = ("slic", "quickshift", "felzenszwalb", "grid")

#: scikit-image parameters used unless ``feature_params`` overrides them (for [0, 1] grey
#: levels: skimage's own defaults assume Lab colour or 0-255 values). SLIC runs as SLICO
#: (``slic_zero``: the compactness adapts per superpixel): plain SLIC with a fixed compactness
#: collapses to one segment on noisy images (measured: uniform noise at 32 and 224 px).
DEFAULT_PARAMS = {
    "slic": {"compactness": 0.1, "slic_zero": True},
    "quickshift": {"kernel_size": 3, "max_dist": 6.0, "ratio": 0.5},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
    "grid": {},
}


def _features(value):
    if isinstance(value, str):
        if value not in SEGMENTERS:
            raise InputError(f"features must be one of {list(SEGMENTERS)} or a mask, got {value!r}")
        return value
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.dim() not in (2, 3):
        raise InputError(
            f"features must be one of {list(SEGMENTERS)} or an int mask [H, W] / [N, H, W], "
            f"got {type(value).__name__}"
        )
    if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
        raise InputError(f"features mask must hold integer ids, got dtype {value.dtype}")
    return value.detach().cpu().long()


def _region(value):
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.dim() not in (2, 3):
        raise InputError("region must be a bool mask [H, W] or [N, H, W] (True: perturbed)")
    return value.detach().cpu().bool()


def _positive(name):
    def check(_inst, _attr, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")

    return check


def _params(value):
    if not isinstance(value, dict):
        raise InputError(f"feature_params must be a dict of scikit-image arguments, got {value!r}")
    return dict(value)


@attrs.define
class FeatureConfig:
    """Feature-mask parameters shared by LIME, KernelSHAP and feature ablation.

    Attributes:
        features: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"``, ``"grid"`` or an int mask
            [H, W] / [N, H, W] (negative ids: never perturbed).
        n_features: SLIC's ``n_segments`` and the grid's cell count (quickshift and
            felzenszwalb choose their own count).
        feature_params: extra keyword arguments of the scikit-image function.
        region: bool [H, W] or [N, H, W]: perturb only these pixels (e.g. the lungs).
    """

    features: str | torch.Tensor = attrs.field(default="slic", converter=_features)
    n_features: int = attrs.field(default=50, validator=_positive("n_features"))
    feature_params: dict = attrs.field(factory=dict, converter=_params)
    region: torch.Tensor | None = attrs.field(default=None, converter=_region)


def _per_image(mask: torch.Tensor, n: int, shape, name: str, index=None) -> torch.Tensor:
    """A [H, W] or [N, H, W] mask as [len(index), H, W] (the images ``index`` of a batch of
    ``n``; None: all), checked against the batch."""
    if mask.dim() == 2:
        mask = mask[None].expand(n, -1, -1)
    if tuple(mask.shape) != (n, *shape):
        raise InputError(
            f"{name} of shape {tuple(mask.shape)} does not fit the input: needs [H, W] = "
            f"{list(shape)} or [N, H, W] = {[n, *shape]}"
        )
    return mask if index is None else mask[index]


def _superpixels(image: np.ndarray, method: str, n_features: int, params: dict, region):
    """skimage labels [H, W] of one image [C, H, W] (float64); outside ``region``: -1."""
    from skimage import segmentation

    grey = image.shape[0] == 1
    data = image[0] if grey else np.moveaxis(image, 0, -1)
    kw = DEFAULT_PARAMS[method] | params
    if method == "slic":
        kw = {"n_segments": n_features, "start_label": 1, **kw}
        labels = segmentation.slic(data, channel_axis=None if grey else -1, mask=region, **kw)
        return labels.astype(np.int64) - 1  # outside the region slic gives 0
    if method == "felzenszwalb":
        labels = segmentation.felzenszwalb(data, channel_axis=None if grey else -1, **kw)
    else:  # quickshift needs 3 channels: a grey image repeated, scaled so that the colour
        # distance equals the grey-level difference
        rgb = np.repeat(data[..., None] / math.sqrt(3), 3, -1) if grey else data
        labels = segmentation.quickshift(rgb, convert2lab=not grey, channel_axis=-1, **kw)
    labels = labels.astype(np.int64)
    if region is not None:
        labels[~region] = -1
    return labels


def _grid(height: int, width: int, n_features: int) -> torch.Tensor:
    """A regular grid of about ``n_features`` cells, row-major ids [H, W]."""
    rows = max(1, min(height, round(math.sqrt(n_features * height / width))))
    cols = max(1, min(width, math.ceil(n_features / rows)))
    ys = torch.arange(height) * rows // height
    xs = torch.arange(width) * cols // width
    return ys[:, None] * cols + xs[None, :]


def renumber(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Ids [H, W] -> (ids 0 .. F-1 in increasing order of the given ones, -1 kept; F)."""
    inside = ids >= 0
    values, inverse = torch.unique(ids[inside], return_inverse=True)
    out = torch.full_like(ids, -1)
    out[inside] = inverse
    return out, len(values)


def segment(
    x: torch.Tensor,
    config: FeatureConfig | None = None,
    *,
    index: torch.Tensor | None = None,
    batch_size: int | None = None,
    **params,
) -> torch.Tensor:
    """Feature ids int64 [n, H, W] (``0 .. F_i-1``; ``-1``: never perturbed) for images
    ``x`` [n, C, H, W] in [0, 1]; ``params`` are :class:`FeatureConfig` fields.

    ``index`` [n]: the positions of ``x``'s images in a batch of ``batch_size`` (per-image
    masks and regions [N, H, W] are indexed by it); None: ``x`` is the whole batch.
    """
    config = attrs.evolve(config or FeatureConfig(), **params)
    n, _c, height, width = x.shape
    total = n if index is None else int(batch_size)
    pick = None if index is None else index.cpu()
    region = None
    if config.region is not None:
        region = _per_image(config.region, total, (height, width), "region", pick)
        empty = [i for i in range(n) if not region[i].any()]
        if empty:
            raise InputError(f"region is empty for image(s) {empty}: no feature to perturb")
    if isinstance(config.features, torch.Tensor):
        raw = _per_image(config.features, total, (height, width), "features mask", pick).clone()
        if region is not None:
            raw[~region] = -1
    elif config.features == "grid":
        raw = _grid(height, width, config.n_features)[None].repeat(n, 1, 1)
        if region is not None:
            raw[~region] = -1
    else:
        images = x.detach().cpu().double().numpy()
        raw = torch.stack(
            [
                torch.from_numpy(
                    _superpixels(
                        images[i],
                        config.features,
                        config.n_features,
                        config.feature_params,
                        None if region is None else region[i].numpy(),
                    )
                )
                for i in range(n)
            ]
        )
    out = torch.empty((n, height, width), dtype=torch.long)
    for i in range(n):
        out[i], count = renumber(raw[i])
        if count == 0:
            raise InputError(
                f"image {i} has no feature to perturb (empty region or a mask without ids >= 0)"
            )
    return out


def count(ids: torch.Tensor) -> list[int]:
    """Features per image of ids [N, H, W] from :func:`segment`."""
    return [int(m.max()) + 1 for m in ids]


def keep_pixels(ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, H, W]: pixels that keep the image's value, from ids [B, H, W] and the kept
    features [B, F] (pixels with id -1 are always kept)."""
    inside = ids >= 0
    kept = torch.gather(keep, 1, ids.clamp_min(0).flatten(1)).reshape(ids.shape)
    return (kept | ~inside)[:, None]


def paint(ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Maps [P, H, W]: pixel value ``values[p, ids[p]]`` (0 where the id is -1);
    ids [P, H, W], values [P, F]."""
    padded = torch.nn.functional.pad(values, (0, 1))  # column F: the never-perturbed pixels
    index = torch.where(ids >= 0, ids, values.shape[1]).flatten(1)
    return torch.gather(padded, 1, index).reshape(ids.shape)
