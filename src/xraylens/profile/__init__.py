"""Profiler plugins: Neuron Activation Profiles (NAPs, Krug et al.) and inactive feature maps."""

from xraylens.profile.groups import (
    group_names,
    membership_from_records,
    membership_from_targets,
)
from xraylens.profile.nap import NAPProfiler
from xraylens.profile.result import NAPResult, UnknownLayerError

__all__ = [
    "NAPProfiler",
    "NAPResult",
    "UnknownLayerError",
    "group_names",
    "membership_from_records",
    "membership_from_targets",
]
