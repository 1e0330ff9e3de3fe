"""The shortcut audit: does a model read borders, corners and burnt-in markers instead of the
lungs? (DeGrave et al., Nature Machine Intelligence 2021, found COVID-19 classifiers doing so.)

- :mod:`~xraylens.audit.regions`: border band, corners, markers detected in the image, lungs;
- :func:`audit_maps`: tidy rows of region share vs area share per map;
- :func:`summarise`, :func:`flag`, :func:`verdicts`: means with bootstrap CIs, and the flags of
  :data:`THRESHOLDS` ("reads markers", "reads borders", "ignores the lungs");
- :func:`nap_outside_lungs`: the NAP energy outside the lungs, layer by layer.
"""

from xraylens.audit.nap import nap_outside_lungs
from xraylens.audit.regions import border_band, corners, detect_markers, stack_regions
from xraylens.audit.shortcuts import (
    REGIONS,
    THRESHOLDS,
    audit_maps,
    describe_thresholds,
    flag,
    summarise,
    verdicts,
)

__all__ = [
    "REGIONS",
    "THRESHOLDS",
    "audit_maps",
    "border_band",
    "corners",
    "describe_thresholds",
    "detect_markers",
    "flag",
    "nap_outside_lungs",
    "stack_regions",
    "summarise",
    "verdicts",
]
