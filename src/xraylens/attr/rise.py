"""RISE (Petsiuk et al. 2018) for every requested label from one set of masked forwards.

``n_masks`` random masks: a ``grid x grid`` array of cells kept with probability ``p``,
upsampled bilinearly to ``(grid + 1)`` cells of ``ceil(H / grid) x ceil(W / grid)`` pixels and
cropped at a random shift below one cell (the paper's smooth masks; torch's bilinear resize
clamps at the border where the paper's scikit-image resize reflects). A masked input is
``x * M + baseline * (1 - M)``; the map of label ``l`` is ``sum_i f_l(masked_i) M_i / (n p)``.
The masks are the same for every image (one seeded draw) and are built chunk by chunk, never
all at once; each masked input goes through the model once for all labels.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F

from xraylens.attr.lime import _positive_int, _seed
from xraylens.attr.perturbation import Perturbation, PerturbationAttributor, check_baseline
from xraylens.errors import InputError


def _probability(_inst, _attr, value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0 < value < 1:
        raise InputError(f"p must be a probability in (0, 1), got {value!r}")


@attrs.define
class RiseConfig:
    """RISE.

    Attributes:
        n_masks: random masks per image (the paper: 4000 for ResNet50, ``preset="paper"``;
            the default 1000 costs a quarter of that, with noisier maps).
        grid: cells per side of the low-resolution masks (the paper: 7).
        p: probability that a cell is kept (the paper: 0.5).
        baseline: what a masked-out pixel becomes (0: the paper's ``x * M``): a number or a
            tensor broadcastable to the input [N, C, H, W].
        seed: seed of the masks.
    """

    n_masks: int = attrs.field(default=1000, validator=_positive_int("n_masks"))
    grid: int = attrs.field(default=7, validator=_positive_int("grid"))
    p: float = attrs.field(default=0.5, validator=_probability)
    baseline: float | torch.Tensor = attrs.field(default=0.0, converter=check_baseline("baseline"))
    seed: int = attrs.field(default=0, converter=_seed)


@attrs.frozen
class RiseMasks:
    """The masks of one call, built on demand: ``masks(index)`` -> [B, H, W] in [0, 1].

    Attributes:
        cells: bool [n_masks, grid, grid]; shift: int64 [n_masks, 2] (rows, columns).
        size: (H, W); cell: (cell height, cell width) in pixels.
    """

    cells: torch.Tensor
    shift: torch.Tensor
    size: tuple[int, int]
    cell: tuple[int, int]

    @classmethod
    def draw(cls, n: int, grid: int, p: float, size: tuple[int, int], seed: int) -> RiseMasks:
        g = torch.Generator().manual_seed(seed)
        cells = torch.rand(n, grid, grid, generator=g) < p
        cell = (math.ceil(size[0] / grid), math.ceil(size[1] / grid))
        shift = torch.stack(
            [torch.randint(0, c, (n,), generator=g) for c in cell], dim=1
        )  # shift below one cell along each axis
        return cls(cells, shift, size, cell)

    def masks(self, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        device = index.device
        cells = self.cells.to(device)[index][:, None].to(dtype)  # [B, 1, g, g]
        grid = cells.shape[-1]
        # the paper's code: resize the grid to (grid + 1) cells (bilinear; torch clamps at the
        # border where it reflects), then crop H x W at the shift
        up = (grid + 1) * self.cell[0], (grid + 1) * self.cell[1]
        full = F.interpolate(cells, size=up, mode="bilinear", align_corners=False)
        shift = self.shift.to(device)[index]
        rows = shift[:, 0, None] + torch.arange(self.size[0], device=device)  # [B, H]
        cols = shift[:, 1, None] + torch.arange(self.size[1], device=device)  # [B, W]
        b = torch.arange(len(index), device=device)[:, None, None]
        return full[b, 0, rows[:, :, None], cols[:, None, :]]


class Rise(PerturbationAttributor):
    """RISE: ``xl.get_attributor("rise", n_masks=4000, grid=7, p=0.5)``."""

    name = "rise"
    Config = RiseConfig
    presets = {"paper": RiseConfig(n_masks=4000, grid=7, p=0.5)}

    def pair_maps(self, ctx: Perturbation) -> torch.Tensor:
        height, width = ctx.x.shape[-2:]
        cfg = self.config
        masks = RiseMasks.draw(cfg.n_masks, cfg.grid, cfg.p, (height, width), cfg.seed)
        baseline = ctx.baseline(cfg.baseline)
        pairs_of = [torch.nonzero(ctx.pair_image == i).flatten() for i in range(len(ctx.x))]
        total = torch.zeros((len(ctx.pair_image), height * width), dtype=torch.float64,
                            device=ctx.device)  # fmt: skip
        last: dict[str, torch.Tensor] = {}

        def masked(image: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
            m = masks.masks(sample, ctx.x.dtype)[:, None]  # [B, 1, H, W]
            last["m"] = m
            base = baseline[image] if baseline.shape[0] > 1 else baseline
            return ctx.x[image] * m + base * (1 - m)

        def accumulate(image: torch.Tensor, sample: torch.Tensor, scores: torch.Tensor):
            m = last.pop("m").flatten(1).double()  # [B, H * W]
            for i in torch.unique(image).tolist():
                rows = image == i
                pairs = pairs_of[i].to(ctx.device)
                labels = ctx.pair_label.to(ctx.device)[pairs]
                total[pairs] += scores[rows][:, labels].T @ m[rows]

        ctx.scores(cfg.n_masks, masked, reduce=accumulate)
        return (total / (cfg.n_masks * cfg.p)).reshape(-1, height, width)
