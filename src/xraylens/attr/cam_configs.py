"""Parameters of the CAM family (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, EigenCAM,
Ablation-CAM): Grad-CAM's fields (``layer``, ``relu``, ``interpolate``, the noise tunnel) plus
each method's own. Defaults are pytorch-grad-cam's (``relu=True``: it clips every CAM at 0).
"""

from __future__ import annotations

import attrs

from xraylens.attr.configs import GradCamConfig, _non_negative, _optional_positive_int
from xraylens.errors import InputError


def _optional_number(name):
    def check(_inst, _attr, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{name} must be a number or None, got {value!r}")

    return check


@attrs.define
class GradCamPlusPlusConfig(GradCamConfig):
    """Grad-CAM++ (Chattopadhay et al. 2018).

    Attributes:
        eps: added to the denominator of the pixel weights alpha (pytorch-grad-cam: 1e-6).
    """

    eps: float = attrs.field(default=1e-6, validator=_non_negative("eps"))


@attrs.define
class XGradCamConfig(GradCamConfig):
    """XGrad-CAM (Fu et al. 2020).

    Attributes:
        eps: added to each channel's activation sum (pytorch-grad-cam: 1e-7).
    """

    eps: float = attrs.field(default=1e-7, validator=_non_negative("eps"))


@attrs.define
class HiResCamConfig(GradCamConfig):
    """HiResCAM (Draelos & Carin 2020): Grad-CAM's fields only."""


@attrs.define
class LayerCamConfig(GradCamConfig):
    """LayerCAM (Jiang et al. 2021): Grad-CAM's fields only."""


@attrs.define
class EigenCamConfig(GradCamConfig):
    """EigenCAM (Muhammad & Yeasin 2020): label-independent.

    Attributes:
        sign_correction: flip a map whose most negative value is larger in magnitude than its
            largest (Seg-Eigen-CAM's correction of the arbitrary SVD sign); False: the sign
            NumPy's SVD returns, as pytorch-grad-cam's ``EigenCAM``.
    """

    sign_correction: bool = False


@attrs.define
class AblationCamConfig(GradCamConfig):
    """Ablation-CAM (Desai & Ramaswamy 2020).

    Attributes:
        value: what an ablated channel is set to; None: pytorch-grad-cam's rule (0 where the
            image's activation minimum is 0, else that minimum minus 1e7).
        batch_size: ablated copies per forward; None: the engine plans from the memory budget.
    """

    value: float | None = attrs.field(default=None, validator=_optional_number("value"))
    batch_size: int | None = attrs.field(
        default=None, validator=_optional_positive_int("batch_size")
    )
