"""Multi-label occlusion: one pass over the sliding windows explains every label at once.

A window of the baseline value slides over the image; the attribution of a pixel for label
``l`` is the mean, over the windows that cover it, of ``f_l(x) - f_l(x with the window
occluded)``. That is Captum's ``Occlusion`` exactly (same window placement, same per-pixel
averaging), but each occluded image goes through the model once and yields the score change of
**all** labels, where Captum needs one full pass over the windows per label. Perturbations are
batched by the :class:`~xraylens.core.engine.Engine` under ``torch.inference_mode``.

Window placement (as Captum): windows start at ``0, stride, 2 * stride, ...`` along each axis,
``ceil((size - window) / stride) + 1`` positions, so the last window may stick out of the image
and is cut off there. Every pixel is covered when ``stride <= window``.

Channels: a window covers all channels at once (greyscale X-rays have one), so the map is the
same in every channel; this equals Captum with ``sliding_window_shapes=(C, h, w)``.

Road map: occlusion that recomputes only what a patch changes (the receptive field of the
window in each layer) would cut the cost per window for early layers; not built yet.
"""

from __future__ import annotations

import math

import attrs
import torch

from xraylens.attr.perturbation import Perturbation, PerturbationAttributor
from xraylens.errors import InputError
from xraylens.hookspecs import hookimpl

Size = tuple[int | float, int | float]


def _size_pair(value, name: str) -> Size:
    """``value`` as (height, width): ints are pixels, floats in (0, 1] fractions of the side."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise InputError(f"occlusion {name} must be one size or (height, width), got {value!r}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"occlusion {name} must hold ints or floats, got {value!r}")
        if isinstance(v, int) and v < 1:
            raise InputError(f"occlusion {name} in pixels must be >= 1, got {value!r}")
        if isinstance(v, float) and not 0 < v <= 1:
            raise InputError(
                f"occlusion {name} {value!r}: floats are fractions of the image side in (0, 1]; "
                "use ints for pixels"
            )
    return items  # type: ignore[return-value]


def _baseline(value):
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise InputError(f"occlusion baseline must be a number or a tensor, got {value!r}")
    return value


@attrs.define
class OcclusionConfig:
    """Parameters of occlusion.

    Attributes:
        window: window (height, width), or one size for both: ints are pixels, floats in
            (0, 1] a fraction of the image side. Default: 1/8 of the side (64 px at 512 px).
        stride: step between window positions, same forms. Default: 1/16 of the side (32 px at
            512 px: 15 x 15 windows at any input size). Must not exceed the window.
        baseline: the value an occluded pixel takes: a number, or a tensor broadcastable to
            the input [N, C, H, W] (e.g. [C, H, W] or one per image [N, C, H, W]).
    """

    window: Size = attrs.field(default=(0.125, 0.125), converter=lambda v: _size_pair(v, "window"))
    stride: Size = attrs.field(
        default=(0.0625, 0.0625), converter=lambda v: _size_pair(v, "stride")
    )
    baseline: float | torch.Tensor = attrs.field(default=0.0, converter=_baseline)


def _pixels(size: Size, shape: tuple[int, int]) -> tuple[int, int]:
    return tuple(
        v if isinstance(v, int) else max(1, round(v * side)) for v, side in zip(size, shape)
    )  # type: ignore[return-value]


@attrs.frozen
class WindowGrid:
    """Placement of the occlusion windows on an H x W image (Captum's placement).

    Attributes:
        height, width: image size; window: (wh, ww); stride: (sh, sw).
        rows, cols: number of window positions along each axis; ``len(grid) = rows * cols``.
    """

    height: int
    width: int
    window: tuple[int, int]
    stride: tuple[int, int]

    @classmethod
    def build(cls, window: Size, stride: Size, height: int, width: int) -> WindowGrid:
        """The grid for ``window``/``stride`` (pixels or fractions) on an image; checks them."""
        win = _pixels(_size_pair(window, "window"), (height, width))
        step = _pixels(_size_pair(stride, "stride"), (height, width))
        for w, s, side, axis in zip(win, step, (height, width), ("height", "width")):
            if w > side:
                raise InputError(
                    f"occlusion window {win} is larger than the image ({height}x{width}) in {axis}"
                )
            if s > w and w < side:
                raise InputError(
                    f"occlusion stride {step} exceeds the window {win} in {axis}: some pixels "
                    "would never be occluded"
                )
        return cls(height, width, win, step)

    @property
    def rows(self) -> int:
        return math.ceil((self.height - self.window[0]) / self.stride[0]) + 1

    @property
    def cols(self) -> int:
        return math.ceil((self.width - self.window[1]) / self.stride[1]) + 1

    def __len__(self) -> int:
        return self.rows * self.cols

    def masks(self, index: torch.Tensor) -> torch.Tensor:
        """Bool [B, H, W]: True inside window ``index[b]`` (row-major window order)."""
        device = index.device
        top = (index // self.cols) * self.stride[0]
        left = (index % self.cols) * self.stride[1]
        ys = torch.arange(self.height, device=device)
        xs = torch.arange(self.width, device=device)
        in_rows = (ys >= top[:, None]) & (ys < top[:, None] + self.window[0])
        in_cols = (xs >= left[:, None]) & (xs < left[:, None] + self.window[1])
        return in_rows[:, :, None] & in_cols[:, None, :]

    def _cover(self, axis: int) -> torch.Tensor:
        """Float64 [size, positions]: 1 where the window at that position covers the pixel."""
        size = (self.height, self.width)[axis]
        n = (self.rows, self.cols)[axis]
        start = torch.arange(n, dtype=torch.float64) * self.stride[axis]
        pixel = torch.arange(size, dtype=torch.float64)[:, None]
        return ((pixel >= start) & (pixel < start + self.window[axis])).double()

    def average(self, values: torch.Tensor) -> torch.Tensor:
        """Per-pixel mean over covering windows: [P, rows * cols] -> float64 [P, H, W].

        The windows form a product grid, so the sum over covering windows is
        ``cover_h @ V @ cover_w.T`` and the count is the outer product of the axis counts.
        """
        cover_h, cover_w = self._cover(0), self._cover(1)
        grid = values.double().reshape(-1, self.rows, self.cols)
        total = cover_h @ grid @ cover_w.T
        count = cover_h.sum(1)[:, None] * cover_w.sum(1)[None, :]
        return total / count


class Occlusion(PerturbationAttributor):
    """Sliding-window occlusion for every requested label in one pass over the windows.

    ``xl.get_attributor("occlusion", window=(50, 50), stride=(4, 4), baseline=0.0)``; the
    ``"paper"`` preset is the paper's 50 px window with stride 4 (at 512 px that is 117 x 117
    = 13,689 windows with Captum's placement, the last one per axis cut off at the border).
    Engine options (``max_memory``, ``device``, ``amp``, ``channels_last``) set how many
    perturbed images go through the model per forward pass.
    """

    name = "occlusion"
    Config = OcclusionConfig
    presets = {"paper": OcclusionConfig(window=(50, 50), stride=(4, 4), baseline=0.0)}

    def pair_maps(self, ctx: Perturbation) -> torch.Tensor:
        """Maps [P, H, W] (float32): per pixel, the mean score change of its windows."""
        height, width = ctx.x.shape[-2:]
        grid = WindowGrid.build(self.config.window, self.config.stride, height, width)
        baseline = ctx.baseline(self.config.baseline)
        ref = ctx.reference()

        def occluded(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
            inside = grid.masks(window)[:, None]  # [B, 1, H, W]
            base = baseline[image] if baseline.shape[0] > 1 else baseline
            return torch.where(inside, base, ctx.x[image])

        diffs = ref.cpu()[:, None] - torch.stack(ctx.scores(len(grid), occluded))  # [n, K, L]
        rows = diffs[ctx.pair_image, :, ctx.pair_label]  # [P, K]
        out = torch.empty((len(rows), height, width), dtype=torch.float32)
        step = 16  # pairs averaged at once: bounds the float64 temporaries
        for p in range(0, len(rows), step):
            out[p : p + step] = grid.average(rows[p : p + step]).float()
        return out


@hookimpl
def register_attributors(register):
    """Occlusion and the other perturbation methods (one plugin: they share the base)."""
    from xraylens.attr.feature_ablation import FeatureAblation
    from xraylens.attr.kernel_shap import KernelShap
    from xraylens.attr.lime import Lime
    from xraylens.attr.rise import Rise
    from xraylens.attr.score_cam import ScoreCam

    for cls in (Occlusion, FeatureAblation, Lime, KernelShap, Rise, ScoreCam):
        register(cls.name, cls)
