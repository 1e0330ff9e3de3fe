"""Typed parameters of the gradient-based attributors, their defaults and presets.

Every config is an attrs class; its fields are the keyword arguments of
``xl.get_attributor(name, **fields)``. Validation happens on construction, so a bad value is an
:class:`~xraylens.errors.InputError` naming the parameter.

Baselines (``baseline=``, IG and DeepLIFT): a number (every pixel), or a tensor broadcastable
to one image ``[C, H, W]`` / ``[1, C, H, W]``, or one per image ``[N, C, H, W]``.

Baseline distributions (``baselines=``, DeepLiftShap and GradientShap): ``"uniform"`` (default:
``n_baselines`` images of uniform noise in [0, 1]), ``"blur"`` (``n_baselines`` Gaussian blurs of
each image, sigma from 1/64 to 1/4 of the image side), a number, or a tensor ``[B, C, H, W]``
(or one image ``[C, H, W]``). Random draws use ``seed`` (default 0: reproducible); ``seed=None``
draws from the global torch / NumPy generators in Captum's order (results then equal Captum's
under the same global seeds).
"""

from __future__ import annotations

import attrs
import torch

from xraylens.errors import InputError

NOISE_TUNNELS = (None, "smoothgrad", "smoothgrad_sq", "vargrad")
IG_METHODS = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
#: layouts of a Grad-CAM layer's output (see :class:`GradCamConfig`)
CAM_LAYOUTS = ("auto", "nchw", "nhwc", "tokens")


def _prefix_tokens(_inst, _attr, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InputError(f"prefix_tokens must be None or an int >= 0, got {value!r}")


DISTRIBUTIONS = ("uniform", "blur")


def _in(options, name):
    def check(_inst, _attr, value):
        if value not in options:
            raise InputError(f"{name} must be one of {list(options)}, got {value!r}")

    return check


def _positive_int(name):
    def check(_inst, _attr, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")

    return check


def _optional_positive_int(name):
    def check(inst, attr, value):
        if value is not None:
            _positive_int(name)(inst, attr, value)

    return check


def _non_negative(name):
    def check(_inst, _attr, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{name} must be a number >= 0, got {value!r}")

    return check


def _seed(_inst, _attr, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"seed must be an int or None, got {value!r}")


def baseline_value(value):
    """Validate a baseline: a number or a tensor (shape checked against the input later)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise InputError(
            f"baseline must be a number or a tensor [C, H, W] / [1 or N, C, H, W], got {value!r}"
        )
    if isinstance(value, torch.Tensor) and value.dim() not in (0, 3, 4):
        raise InputError(
            f"baseline tensor must be [C, H, W] or [1 or N, C, H, W], got {tuple(value.shape)}"
        )
    return float(value) if isinstance(value, int) else value


def distribution_value(value):
    """Validate a baseline distribution: a name, a number or a tensor."""
    if isinstance(value, str):
        if value not in DISTRIBUTIONS:
            raise InputError(
                f"baselines must be one of {list(DISTRIBUTIONS)}, a number or a "
                f"tensor [B, C, H, W], got {value!r}"
            )
        return value
    if isinstance(value, torch.Tensor) and value.dim() not in (0, 3, 4):
        raise InputError(f"baselines tensor must be [B, C, H, W], got {tuple(value.shape)}")
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise InputError(
            f"baselines must be 'uniform', 'blur', a number or a tensor, got {value!r}"
        )
    return value


@attrs.define
class NoiseTunnelConfig:
    """SmoothGrad / VarGrad on top of a method (Captum's ``NoiseTunnel``).

    Attributes:
        noise_tunnel: None (off), ``"smoothgrad"`` (mean of the maps of ``nt_samples`` noisy
            copies), ``"smoothgrad_sq"`` (mean of squared maps) or ``"vargrad"`` (their
            variance).
        nt_samples: noisy copies per image (Captum's default 5).
        stdevs: standard deviation of the Gaussian noise in input units (inputs are in
            [0, 1]; 0.15 is SmoothGrad's recommended 10-20 % of the range; Captum's default 1.0
            assumes standardised inputs).
        seed: seed of the noise (None: global generators, Captum's order).
    """

    noise_tunnel: str | None = attrs.field(
        default=None, validator=_in(NOISE_TUNNELS, "noise_tunnel")
    )
    nt_samples: int = attrs.field(default=5, validator=_positive_int("nt_samples"))
    stdevs: float = attrs.field(default=0.15, validator=_non_negative("stdevs"))
    seed: int | None = attrs.field(default=0, validator=_seed)


@attrs.define
class SaliencyConfig(NoiseTunnelConfig):
    """Saliency (Simonyan et al. 2014): the gradient of the output.

    Attributes:
        abs: absolute value of the gradient (Captum's default, and the paper's saliency maps).
    """

    abs: bool = True


@attrs.define
class InputXGradientConfig(NoiseTunnelConfig):
    """Input x gradient: no parameters besides the noise tunnel."""


@attrs.define
class GuidedBackpropConfig(NoiseTunnelConfig):
    """Guided backpropagation (Springenberg et al. 2015): ReLU gradients clipped at zero."""


@attrs.define
class DeconvolutionConfig(NoiseTunnelConfig):
    """Deconvolution (Zeiler & Fergus 2014): ReLU backward applied to the gradient itself."""


@attrs.define
class IntegratedGradientsConfig(NoiseTunnelConfig):
    """Integrated gradients (Sundararajan et al. 2017).

    Attributes:
        baseline: the reference input (a number or a tensor, see the module docstring); 0.0
            is a black image.
        n_steps: points of the path integral (the paper: 50).
        method: quadrature, as Captum: ``"gausslegendre"`` (default, the paper's) or a Riemann
            rule (``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"``,
            ``"riemann_middle"``).
        internal_batch_size: path points per forward/backward pass (Captum's knob); None:
            the engine chooses from the memory budget.
    """

    baseline: float | torch.Tensor = attrs.field(default=0.0, converter=baseline_value)
    n_steps: int = attrs.field(default=50, validator=_positive_int("n_steps"))
    method: str = attrs.field(default="gausslegendre", validator=_in(IG_METHODS, "method"))
    internal_batch_size: int | None = attrs.field(
        default=None, validator=_optional_positive_int("internal_batch_size")
    )


@attrs.define
class DeepLiftConfig(NoiseTunnelConfig):
    """DeepLIFT with the rescale rule (Shrikumar et al. 2017), exact max pooling.

    Attributes:
        baseline: the reference input (a number or a tensor); 0.0 is a black image.
        eps: where a non-linearity's input differs from its reference by less than this, its
            gradient is used instead of the difference quotient (Captum's ``eps``).
    """

    baseline: float | torch.Tensor = attrs.field(default=0.0, converter=baseline_value)
    eps: float = attrs.field(default=1e-10, validator=_non_negative("eps"))


@attrs.define
class DeepLiftShapConfig(NoiseTunnelConfig):
    """DeepLiftShap: DeepLIFT averaged over a distribution of baselines.

    Attributes:
        baselines: the distribution (see the module docstring); default ``"uniform"``.
        n_baselines: how many baselines ``"uniform"`` / ``"blur"`` generate (default 8).
        eps: as DeepLIFT's.
    """

    baselines: str | float | torch.Tensor = attrs.field(
        default="uniform", converter=distribution_value
    )
    n_baselines: int = attrs.field(default=8, validator=_positive_int("n_baselines"))
    eps: float = attrs.field(default=1e-10, validator=_non_negative("eps"))


@attrs.define
class GradientShapConfig:
    """GradientShap (Lundberg & Lee 2017, as Captum): expected gradients at random points
    between random baselines and (optionally noisy) inputs.

    Attributes:
        baselines: the distribution (see the module docstring); default ``"uniform"``.
        n_baselines: how many baselines ``"uniform"`` / ``"blur"`` generate (default 8).
        n_samples: random (baseline, point) samples per image (Captum's default 5).
        stdevs: Gaussian noise added to the input per sample (Captum's default 0.0).
        seed: seed of the baselines, sample choice, noise and path points (None: global
            generators in Captum's order).
    """

    baselines: str | float | torch.Tensor = attrs.field(
        default="uniform", converter=distribution_value
    )
    n_baselines: int = attrs.field(default=8, validator=_positive_int("n_baselines"))
    n_samples: int = attrs.field(default=5, validator=_positive_int("n_samples"))
    stdevs: float = attrs.field(default=0.0, validator=_non_negative("stdevs"))
    seed: int | None = attrs.field(default=0, validator=_seed)


@attrs.define
class GradCamConfig(NoiseTunnelConfig):
    """Grad-CAM (Selvaraju et al. 2017) on a convolutional layer, upsampled to the input.

    Attributes:
        layer: module name (``clf.module.named_modules()``); None: the classifier's
            ``cam_layer``.
        relu: keep only positive evidence (the Grad-CAM paper; Captum's default is False).
        interpolate: upsampling mode (``"bilinear"``, ``"nearest"``, ...).
        reshape: layout of the layer's output: ``"nchw"`` [N, K, h, w], ``"nhwc"``
            [N, h, w, K] (Swin), ``"tokens"`` [N, T, K] (ViT; ``prefix_tokens`` class/register
            tokens first, then an h x w grid), or ``"auto"``: inferred from the shape and the
            input's aspect ratio; an ambiguous shape is an error asking for one of the others.
        prefix_tokens: tokens before the grid (``"tokens"`` layout); None: 0 or 1, inferred.
    """

    layer: str | None = None
    relu: bool = True
    interpolate: str = attrs.field(default="bilinear", validator=_in(INTERPOLATIONS, "interpolate"))
    reshape: str = attrs.field(default="auto", validator=_in(CAM_LAYOUTS, "reshape"))
    prefix_tokens: int | None = attrs.field(default=None, validator=_prefix_tokens)


@attrs.define
class GuidedGradCamConfig(NoiseTunnelConfig):
    """Guided Grad-CAM: guided backprop times the (ReLU-ed) upsampled Grad-CAM.

    Attributes:
        layer, reshape, prefix_tokens: as Grad-CAM's.
        interpolate: upsampling mode of the CAM (Captum's default is ``"nearest"``).
    """

    layer: str | None = None
    interpolate: str = attrs.field(default="bilinear", validator=_in(INTERPOLATIONS, "interpolate"))
    reshape: str = attrs.field(default="auto", validator=_in(CAM_LAYOUTS, "reshape"))
    prefix_tokens: int | None = attrs.field(default=None, validator=_prefix_tokens)
