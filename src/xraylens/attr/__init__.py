"""Attributor plugins: gradient methods (this package), occlusion (:mod:`.occlusion`).

Users get them by name (``xl.get_attributor("deeplift", baseline=0.0)``); the classes and their
configs are importable from here for subclassing and type hints. Model surgery lives in
:mod:`xraylens.surgery`.
"""

from xraylens.attr._pairs import PairAttributor
from xraylens.attr.cam import GradCam, GuidedGradCam
from xraylens.attr.configs import (
    DeconvolutionConfig,
    DeepLiftConfig,
    DeepLiftShapConfig,
    GradCamConfig,
    GradientShapConfig,
    GuidedBackpropConfig,
    GuidedGradCamConfig,
    InputXGradientConfig,
    IntegratedGradientsConfig,
    NoiseTunnelConfig,
    SaliencyConfig,
)
from xraylens.attr.deeplift import DeepLift, DeepLiftShap
from xraylens.attr.gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from xraylens.attr.integrated_gradients import GradientShap, IntegratedGradients

__all__ = [
    "Deconvolution",
    "DeconvolutionConfig",
    "DeepLift",
    "DeepLiftConfig",
    "DeepLiftShap",
    "DeepLiftShapConfig",
    "GradCam",
    "GradCamConfig",
    "GradientShap",
    "GradientShapConfig",
    "GuidedBackprop",
    "GuidedBackpropConfig",
    "GuidedGradCam",
    "GuidedGradCamConfig",
    "InputXGradient",
    "InputXGradientConfig",
    "IntegratedGradients",
    "IntegratedGradientsConfig",
    "NoiseTunnelConfig",
    "PairAttributor",
    "Saliency",
    "SaliencyConfig",
]
