"""Core interfaces: Classifier, Attributor, Profiler, Attribution, targets and the engine."""

from xraylens.core.attribution import Attribution
from xraylens.core.attributor import Attributor
from xraylens.core.classifier import Classifier
from xraylens.core.engine import Engine
from xraylens.core.profiler import Profiler
from xraylens.core.targets import TargetPlan, resolve_targets

__all__ = [
    "Attribution",
    "Attributor",
    "Classifier",
    "Engine",
    "Profiler",
    "TargetPlan",
    "resolve_targets",
]
