"""The :class:`Attributor` base class: one ``attribute`` call explains every requested label."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from xraylens.core.attribution import Attribution
from xraylens.core.classifier import Classifier
from xraylens.core.engine import Engine
from xraylens.core.targets import TargetPlan, resolve_targets
from xraylens.errors import InputError

OUTPUTS = ("logits", "probs")


@attrs.define
class NoConfig:
    """Parameters of a method that has none."""


class SigmoidOutput(nn.Module):
    """``sigmoid(model(x))``: explain probabilities instead of logits (as the paper did)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


class Attributor(abc.ABC):
    """Base class of attribution methods.

    Subclasses set ``name``, ``Config`` (an attrs class of the method's parameters, with the
    defaults users should get) and optionally ``presets`` (named configs, e.g. ``"paper"``), and
    implement :meth:`attribute_pairs`. Keyword arguments of the constructor (and so of
    ``xl.get_attributor``) are fields of ``Config``; ``device``, ``max_memory``, ``amp``,
    ``channels_last`` and ``progress`` configure the :class:`~xraylens.core.engine.Engine`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    presets: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        config: Any = None,
        *,
        preset: str | None = None,
        device: str | torch.device | None = None,
        max_memory: int | float | str | None = None,
        amp: str | None = None,
        channels_last: bool = False,
        progress: bool = False,
        **params: Any,
    ):
        if config is not None and preset is not None:
            raise InputError("give either config or preset, not both")
        if preset is not None:
            if preset not in self.presets:
                raise InputError(
                    f"{self.name}: unknown preset {preset!r}; presets: {sorted(self.presets)}"
                )
            config = self.presets[preset]
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise InputError(f"{self.name}: config must be a {self.Config.__name__}")
        unknown = set(params) - {f.name for f in attrs.fields(self.Config)}
        if unknown:
            known = [f.name for f in attrs.fields(self.Config)]
            raise InputError(
                f"{self.name}: unknown parameter(s) {sorted(unknown)}; parameters: {known} and "
                "device, max_memory, amp, channels_last, progress, preset"
            )
        self.config = attrs.evolve(config, **params)
        self.engine = Engine(
            device=device,
            max_memory=max_memory,
            amp=amp,
            channels_last=channels_last,
            progress=progress,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @property
    def params(self) -> dict[str, Any]:
        """The method's parameters, as stored with every result."""
        return attrs.asdict(self.config, recurse=False)

    def attribute(
        self,
        clf: Classifier,
        x: torch.Tensor,
        targets: Any = "all",
        *,
        output: str = "logits",
    ) -> Attribution:
        """Explain ``clf`` on ``x`` [N, C, H, W] in [0, 1] for every requested label.

        Args:
            targets: ``"all"``, label names/indices, a per-image list of them, or a bool
                [N, L] mask (see :mod:`xraylens.core.targets`).
            output: ``"logits"`` (default) or ``"probs"`` (sigmoid probabilities).
        Returns:
            an :class:`Attribution` with values [N, T, C, H, W] (float32, CPU).
        """
        if not isinstance(clf, Classifier):
            raise InputError(f"clf must be an xraylens Classifier, got {type(clf).__name__}")
        if output not in OUTPUTS:
            raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
        x = clf.check_input(x)
        plan = resolve_targets(targets, clf.labels, n_images=x.shape[0])
        values, delta = self.attribute_pairs(clf, x, plan, output=output)
        return Attribution(
            values=plan.scatter(values.detach().float().cpu()),
            labels=plan.labels,
            mask=plan.mask,
            delta=None if delta is None else plan.scatter(delta.detach().cpu(), fill=0.0),
            method=self.name,
            params=self.params,
            output=output,
            model=clf.name,
        )

    @abc.abstractmethod
    def attribute_pairs(
        self, clf: Classifier, x: torch.Tensor, plan: TargetPlan, *, output: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Maps for the plan's P (image, label) pairs.

        Args:
            x: validated input [N, C, H, W] on the classifier's device and dtype.
            plan: ``plan.image[p]``, ``plan.label[p]`` give pair p's image and label index.
        Returns:
            values [P, C, H, W] and the convergence delta [P] (or None).
        """

    @staticmethod
    def output_module(clf: Classifier, output: str, module: nn.Module | None = None) -> nn.Module:
        """The module to explain: [0, 1] input -> logits, or -> probabilities for ``"probs"``."""
        forward = clf.forward_module(module)
        return SigmoidOutput(forward) if output == "probs" else forward
