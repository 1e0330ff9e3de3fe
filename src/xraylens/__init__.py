"""xraylens: see why chest X-ray classifiers decide what they decide.

The public API (see ``docs/``): registry functions (``list_*``, ``get_*``, for classifiers,
attributors, profilers and metrics), the base classes
``Classifier``, ``Attributor``, ``Profiler``, the ``Attribution`` result, and ``xraylens.data``.
"""

from __future__ import annotations

from typing import Any

from xraylens import data
from xraylens.core.attribution import Attribution
from xraylens.core.attributor import Attributor
from xraylens.core.classifier import Classifier, classifier_factory, eval_mode, set_registry_build
from xraylens.core.engine import Engine
from xraylens.core.ensemble import Ensemble
from xraylens.core.profiler import Profiler
from xraylens.errors import (
    ImageReadError,
    InputError,
    PluginConflictError,
    UnknownPluginError,
    WeightsError,
    XraylensError,
)
from xraylens.hookspecs import hookimpl, hookspec
from xraylens.plugins import create as _create
from xraylens.plugins import names as _names
from xraylens.plugins import register_plugin, unregister_plugin

__version__ = "0.1.0.dev0"


def list_classifiers() -> list[str]:
    """Sorted names of the registered classifiers."""
    return _names("classifier")


def list_attributors() -> list[str]:
    """Sorted names of the registered attributors."""
    return _names("attributor")


def list_profilers() -> list[str]:
    """Sorted names of the registered profilers."""
    return _names("profiler")


def list_metrics() -> list[str]:
    """Sorted names of the registered evaluation metrics."""
    return _names("metric")


def get_classifier(name: str, **kwargs: Any) -> Classifier:
    """Build the classifier ``name`` (e.g. ``"resnet18"``); kwargs go to its factory.

    Unknown name: :class:`UnknownPluginError` listing close matches.
    """
    return _create("classifier", name, kwargs)


set_registry_build(get_classifier, lambda: list_classifiers())  # for Classifier.load,
# Ensemble.load: core builds registered names without importing the registry


def get_attributor(name: str, **kwargs: Any) -> Attributor:
    """Build the attributor ``name`` (e.g. ``"deeplift"``); kwargs are its parameters."""
    return _create("attributor", name, kwargs)


def get_profiler(name: str, **kwargs: Any) -> Profiler:
    """Build the profiler ``name`` (e.g. ``"nap"``); kwargs are its parameters."""
    return _create("profiler", name, kwargs)


def get_metric(name: str, **kwargs: Any):
    """Build the evaluation metric ``name`` (e.g. ``"region_share"``); kwargs are its
    parameters. Returns a :class:`xraylens.evaluate.Metric`."""
    return _create("metric", name, kwargs)


__all__ = [
    "Attribution",
    "Attributor",
    "Classifier",
    "Engine",
    "Ensemble",
    "ImageReadError",
    "InputError",
    "PluginConflictError",
    "Profiler",
    "UnknownPluginError",
    "WeightsError",
    "XraylensError",
    "classifier_factory",
    "data",
    "eval_mode",
    "get_attributor",
    "get_classifier",
    "get_metric",
    "get_profiler",
    "hookimpl",
    "hookspec",
    "list_attributors",
    "list_classifiers",
    "list_metrics",
    "list_profilers",
    "register_plugin",
    "unregister_plugin",
]
