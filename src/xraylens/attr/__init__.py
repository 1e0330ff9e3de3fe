"""Attributor plugins: gradient methods (on :class:`GradientAttributor`), perturbation methods
(on :class:`PerturbationAttributor`: occlusion, feature ablation, LIME, KernelSHAP, RISE,
Score-CAM) and the CAM family.

Users get them by name (``xl.get_attributor("deeplift", baseline=0.0)``); the classes and their
configs are importable from here for subclassing and type hints. Model surgery lives in
:mod:`xraylens.surgery`.
"""

from xraylens.attr._pairs import GradientAttributor, PairAttributor
from xraylens.attr.ablation_cam import AblationCam
from xraylens.attr.cam import GradCam, GuidedGradCam
from xraylens.attr.cam_family import EigenCam, GradCamPlusPlus, HiResCam, LayerCam, XGradCam
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
from xraylens.attr.feature_ablation import FeatureAblation
from xraylens.attr.gradient import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from xraylens.attr.integrated_gradients import GradientShap, IntegratedGradients
from xraylens.attr.kernel_shap import KernelShap
from xraylens.attr.lime import Lime
from xraylens.attr.occlusion import Occlusion
from xraylens.attr.perturbation import PerturbationAttributor
from xraylens.attr.rise import Rise
from xraylens.attr.score_cam import ScoreCam

__all__ = [
    "AblationCam",
    "Deconvolution",
    "DeconvolutionConfig",
    "DeepLift",
    "DeepLiftConfig",
    "DeepLiftShap",
    "DeepLiftShapConfig",
    "EigenCam",
    "FeatureAblation",
    "GradCam",
    "GradCamConfig",
    "GradCamPlusPlus",
    "GradientAttributor",
    "GradientShap",
    "GradientShapConfig",
    "GuidedBackprop",
    "GuidedBackpropConfig",
    "GuidedGradCam",
    "GuidedGradCamConfig",
    "HiResCam",
    "InputXGradient",
    "InputXGradientConfig",
    "IntegratedGradients",
    "IntegratedGradientsConfig",
    "KernelShap",
    "LayerCam",
    "Lime",
    "NoiseTunnelConfig",
    "Occlusion",
    "PairAttributor",
    "PerturbationAttributor",
    "Rise",
    "Saliency",
    "SaliencyConfig",
    "ScoreCam",
    "XGradCam",
]
