"""SmoothGrad / VarGrad for any gradient method (Captum's ``NoiseTunnel`` semantics).

Each image becomes ``nt_samples`` units ``x + noise`` (Gaussian, ``stdevs`` in input units);
the method explains every unit and the pair's map is the mean of the units' maps
(``"smoothgrad"``), the mean of their squares (``"smoothgrad_sq"``) or their variance
``E[a^2] - E[a]^2`` (``"vargrad"``). Baselines are not noised. The noise is drawn up front for
all images, in Captum's order (image-major), so chunking never changes it; with ``seed=None``
it comes from the global torch generator exactly as in Captum.

Delta with a noise tunnel: for ``"smoothgrad"`` the mean of the units' deltas (the
completeness error of the averaged map against the averaged output difference); None for the
squared variants, which have no completeness property.
"""

from __future__ import annotations

import attrs
import torch

from xraylens.errors import InputError


@attrs.define(eq=False)
class Units:
    """The inputs a method explains.

    Attributes:
        x: [U, C, H, W], U = N * per_image (image-major: image i's units are contiguous).
        image: [U] image index of each unit (CPU LongTensor).
        per_image: units per image (1 without a noise tunnel).
        kind: the noise tunnel type, or None.
    """

    x: torch.Tensor
    image: torch.Tensor
    per_image: int
    kind: str | None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A torch generator seeded with ``seed`` on ``device`` (None: use the global one)."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def gaussian_noise(
    shape, stdev: float, device: torch.device, gen: torch.Generator | None
) -> torch.Tensor:
    """``N(0, stdev)`` noise drawn as Captum's NoiseTunnel draws it (float32)."""
    std = torch.tensor(stdev, device=device).repeat(tuple(shape))
    return torch.normal(0, std, generator=gen)


def make_units(x: torch.Tensor, kind: str | None, config, gen: torch.Generator | None) -> Units:
    """The units of ``x`` [N, C, H, W]: the images, or ``nt_samples`` noisy copies of each
    (noise drawn from ``gen``; None: the global generator)."""
    n = x.shape[0]
    if kind is None:
        return Units(x, torch.arange(n), 1, None)
    s = int(config.nt_samples)
    noise = gaussian_noise((n * s, *x.shape[1:]), float(config.stdevs), x.device, gen)
    units = x.repeat_interleave(s, dim=0) + noise.to(x.dtype)
    return Units(units, torch.arange(n).repeat_interleave(s), s, kind)


def aggregate(kind: str | None, mean: torch.Tensor, mean_sq: torch.Tensor | None) -> torch.Tensor:
    """Pair maps from the units' mean map (and mean squared map)."""
    if kind in (None, "smoothgrad"):
        return mean
    if mean_sq is None:
        raise InputError(f"noise tunnel {kind!r} needs the squared maps")
    if kind == "smoothgrad_sq":
        return mean_sq
    return mean_sq - mean * mean
