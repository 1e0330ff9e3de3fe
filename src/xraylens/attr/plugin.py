"""The built-in gradient-based attributors as an xraylens plugin."""

from __future__ import annotations

from xraylens.attr.cam import GradCam, GuidedGradCam
from xraylens.attr.deeplift import DeepLift, DeepLiftShap
from xraylens.attr.gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from xraylens.attr.integrated_gradients import GradientShap, IntegratedGradients
from xraylens.hookspecs import hookimpl

ATTRIBUTORS = (
    Saliency,
    InputXGradient,
    GuidedBackprop,
    Deconvolution,
    IntegratedGradients,
    DeepLift,
    DeepLiftShap,
    GradientShap,
    GradCam,
    GuidedGradCam,
)


@hookimpl
def register_attributors(register):
    for cls in ATTRIBUTORS:
        register(cls.name, cls)
