"""The CAM family (:mod:`.cam_family`, :mod:`.ablation_cam`) as an xraylens plugin."""

from __future__ import annotations

from xraylens.attr.ablation_cam import AblationCam
from xraylens.attr.cam_family import EigenCam, GradCamPlusPlus, HiResCam, LayerCam, XGradCam
from xraylens.hookspecs import hookimpl

CAM_FAMILY = (GradCamPlusPlus, XGradCam, HiResCam, LayerCam, EigenCam, AblationCam)


@hookimpl
def register_attributors(register):
    for cls in CAM_FAMILY:
        register(cls.name, cls)
