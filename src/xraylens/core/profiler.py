"""The :class:`Profiler` base class: global statistics streamed over batches."""

from __future__ import annotations

import abc
from typing import Any

import torch

from xraylens.core.classifier import Classifier


class Profiler(abc.ABC):
    """Base class of global (dataset-level) methods such as Neuron Activation Profiles.

    Profilers stream: call :meth:`update` once per batch, then :meth:`result`. Memory must not
    grow with the number of images seen.
    """

    name: str = ""

    @abc.abstractmethod
    def update(self, clf: Classifier, x: torch.Tensor, membership: torch.Tensor) -> None:
        """Add a batch: ``x`` [N, C, H, W] in [0, 1]; ``membership`` bool [N, G], one column per
        group (groups may overlap)."""

    @abc.abstractmethod
    def result(self) -> Any:
        """The result of everything seen so far (the profiler can keep streaming afterwards)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything seen."""
