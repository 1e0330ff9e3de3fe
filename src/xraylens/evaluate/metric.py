"""The :class:`Metric` base class: one number per map of an Attribution, as a plugin kind.

A metric plugin registers a factory with ``register_metrics(register)``;
``xl.get_metric(name, **params)`` builds it and :meth:`Metric.compute` scores an
:class:`~xraylens.Attribution`. What a metric needs besides the maps is declared in
:attr:`Metric.needs`: ``"region"`` (masks), ``"model"`` and ``"x"`` (the classifier and the
explained images), ``"method"`` (an attributor to run again, for randomisation checks).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from xraylens.errors import InputError

NEEDS = ("region", "model", "x", "method")


@attrs.frozen
class NoParams:
    """A metric without parameters."""


class Metric(abc.ABC):
    """Base class of evaluation metrics.

    Subclasses set ``name``, ``family`` (``"localisation"``, ``"faithfulness"``,
    ``"randomisation"`` or ``"complexity"``), ``needs``, ``higher_is_better`` and ``Config``
    (an attrs class of their parameters), and implement :meth:`score`.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    higher_is_better: ClassVar[bool | None] = True
    Config: ClassVar[type] = NoParams

    def __init__(self, **params: Any) -> None:
        try:
            self.config = self.Config(**params)
        except TypeError as exc:
            known = [f.name for f in attrs.fields(self.Config)]
            raise InputError(f"metric {self.name!r}: {exc}; parameters: {known}") from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.params})"

    @property
    def params(self) -> dict[str, Any]:
        """The metric's parameters."""
        return attrs.asdict(self.config, recurse=False)

    def compute(self, attribution: Any, **inputs: Any) -> torch.Tensor:
        """Score every map of ``attribution``: float64 [N, T] (NaN where undefined or empty).

        ``inputs``: ``region`` bool [N, H, W] or [N, T, H, W]; ``model`` (a Classifier) and
        ``x`` [N, C, H, W]; ``method`` (an Attributor); ``engine`` (an Engine). Only those in
        :attr:`needs` are required; others are ignored.
        """
        self._check(inputs)
        return self._masked(attribution, self.score(attribution, **inputs))

    def _check(self, inputs: dict[str, Any]) -> None:
        unknown = sorted(set(inputs) - {*NEEDS, "engine"})
        if unknown:
            raise InputError(f"metric {self.name!r}: unknown inputs {unknown}")
        missing = sorted(n for n in self.needs if inputs.get(n) is None)
        if missing:
            raise InputError(f"metric {self.name!r} needs {missing}")

    @staticmethod
    def _masked(attribution: Any, out: torch.Tensor) -> torch.Tensor:
        mask = getattr(attribution, "mask", None)
        if mask is not None:
            out = torch.where(mask.to(torch.bool), out, torch.nan)
        return out

    @abc.abstractmethod
    def score(self, attribution: Any, **inputs: Any) -> torch.Tensor:
        """The metric's values [N, T] for the maps of ``attribution``."""

    def curves(self, attribution: Any, **inputs: Any) -> tuple[torch.Tensor, Any]:
        """The values [N, T] of :meth:`compute` and the curves behind them (a
        :class:`~xraylens.evaluate.Curves` or
        :class:`~xraylens.evaluate.RandomisationResult`), or None for a metric without
        curves. Metrics with curves override :meth:`trace` and :meth:`reduce`."""
        self._check(inputs)
        trace = self.trace(attribution, **inputs)
        out = self.score(attribution, **inputs) if trace is None else self.reduce(trace)
        return self._masked(attribution, out), trace

    def trace(self, attribution: Any, **inputs: Any) -> Any:
        """The full curves of a curve metric (None: this metric has none)."""
        return None

    def reduce(self, trace: Any) -> torch.Tensor:
        """The values [N, T] of a :meth:`trace`."""
        raise NotImplementedError(f"metric {self.name!r} has no curves")

    def results(
        self,
        attribution: Any,
        *,
        labels: Sequence[str] | None = None,
        image_ids: Sequence[Any] | None = None,
        patient_ids: Sequence[Any] | None = None,
        model_name: str | None = None,
        method_name: str | None = None,
        curves: Any = None,
        **inputs: Any,
    ):
        """:meth:`compute` as a tidy :class:`~xraylens.evaluate.Results` table (metric column:
        :attr:`name`). ``curves``: a :class:`~xraylens.evaluate.CurveTable` that gets this
        metric's curves (deletion, insertion, ROAD, randomisation) from the same run."""
        from xraylens.evaluate.results import CurveTable, Results

        model = model_name if model_name is not None else getattr(attribution, "model", "")
        method = method_name if method_name is not None else getattr(attribution, "method", "")
        if curves is None:
            values = self.compute(attribution, **inputs)
        else:
            values, trace = self.curves(attribution, **inputs)
            if trace is not None:
                curves.extend(CurveTable.of(trace, model=model or "", method=method or "",
                                            image_ids=image_ids))  # fmt: skip
        return Results.from_scores(
            values,
            metric=self.name,
            labels=labels if labels is not None else attribution.labels,
            image_ids=image_ids,
            patient_ids=patient_ids,
            model=model,
            method=method,
            mask=getattr(attribution, "mask", None),
        )
