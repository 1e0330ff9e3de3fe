"""The base of the perturbation methods: forwards of perturbed images, batched, for all labels.

A perturbation method (occlusion, feature ablation, LIME, KernelSHAP, RISE, Score-CAM) makes
``S`` perturbed copies of each image, runs them through the model and turns the scores into
maps. A forward pass yields the scores of **every** label, so one set of perturbed forwards
serves every requested label of an image; Captum's methods run the whole set once per label.

:class:`PerturbationAttributor` holds what they share: the model to run (the caller's module in
eval mode, or a copy on the engine's device; :attr:`needs_copy` methods get a prepared copy they
may hook), the reference forward ``f(x)``, and :meth:`Perturbation.scores`, which runs
``n_images x S`` perturbed inputs in chunks planned by the :class:`~xraylens.core.engine.Engine`
under its memory budget (with its out-of-memory back-off and progress bars), all under
``torch.inference_mode``. Subclasses implement :meth:`PerturbationAttributor.pair_maps`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import ClassVar

import attrs
import torch
from torch import nn

from xraylens.core.attributor import Attributor
from xraylens.core.classifier import Classifier, eval_mode
from xraylens.core.targets import TargetPlan
from xraylens.errors import InputError

#: ``make(image, sample)`` -> perturbed inputs [B, C, H, W]; image: positions into ``ctx.x``
MakeBatch = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@attrs.define(eq=False)
class Perturbation:
    """One ``attribute`` call of a perturbation method.

    Attributes:
        attributor: the method; clf: the classifier; output: ``"logits"`` or ``"probs"``.
        model: [0, 1] input [B, C, H, W] -> scores [B, L] (on ``x``'s device).
        prep: the prepared copy (:func:`xraylens.attr._prepare.prepare`) for ``needs_copy``
            methods, else None.
        x: the images that have pairs [n, C, H, W]; index: their indices in the batch [n]
            (CPU); batch_size: N, the number of images in the call.
        pair_image: position in ``x`` of each pair's image [P]; pair_label: its label [P].
    """

    attributor: PerturbationAttributor
    clf: Classifier
    output: str
    model: nn.Module
    prep: object
    x: torch.Tensor
    index: torch.Tensor
    pair_image: torch.Tensor
    pair_label: torch.Tensor
    batch_size: int
    _reference: torch.Tensor | None = None
    _probe: tuple[int, str] | None = None

    @property
    def engine(self):
        return self.attributor.engine

    @property
    def device(self) -> torch.device:
        return self.x.device

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores float64 [B, L] of a batch of inputs (autocast and memory format as set)."""
        engine = self.engine
        with engine.autocast(batch.device):
            out = self.model(engine.prepare_input(batch))
        if out.dim() != 2:
            raise InputError(
                f"{self.attributor.name} needs model outputs [N, L], got {tuple(out.shape)} "
                "(xraylens.attr.perturbation)"
            )
        return out.double()

    def plan(self, n_items: int, what: str) -> int:
        """Inputs per forward pass for ``n_items`` perturbed images (one no-grad probe per
        call, remembered for later plans)."""
        engine = self.engine
        if engine.chunk is None and self._probe is None:
            self._probe = engine.probe(self.model, self.x[:1], grad=False)
        return engine.plan(
            n_items, module=self.model, example=self.x[:1], grad=False, what=what,
            probed=self._probe,
        )  # fmt: skip

    def reference(self) -> torch.Tensor:
        """``f(x)`` float64 [n, L] on ``x``'s device (computed once)."""
        if self._reference is None:
            name = self.attributor.name
            chunk = self.plan(len(self.x), f"{name} references")
            parts = self.engine.map_chunks(
                lambda a, b: self.forward(self.x[a:b]), len(self.x), chunk=chunk, desc=name
            )
            self._reference = torch.cat(parts)
        return self._reference

    def scores(
        self,
        n_samples: int | list[int],
        make: MakeBatch,
        *,
        reduce: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object] | None = None,
    ) -> list[torch.Tensor]:
        """Scores of ``S_i`` perturbed copies of each image ``i``: float64 CPU [S_i, L] each.

        ``n_samples``: one count for every image, or one per image. Items are (image, sample)
        in image-major order; ``make(image, sample)`` builds a chunk of them ([B] positions
        into ``x``, [B] sample numbers, on ``x``'s device) as inputs [B, C, H, W]. Chunks may
        straddle images. With ``reduce(image, sample, scores)`` each chunk's scores [B, L] (on
        the device) are handed to it instead of being kept, and an empty list is returned
        (RISE sums its maps on the fly instead of keeping every mask).
        """
        name = self.attributor.name
        n_images = len(self.x)
        counts = [int(n_samples)] * n_images if isinstance(n_samples, int) else list(n_samples)
        offsets = torch.tensor([0, *counts]).cumsum(0)
        total = int(offsets[-1])
        chunk = self.plan(max(total, 1), f"{name} perturbations")
        starts = offsets[1:-1].to(self.device)

        def run(start: int, stop: int):
            item = torch.arange(start, stop, device=self.device)
            image = torch.searchsorted(starts, item, right=True)
            sample = item - offsets.to(self.device)[image]
            out = self.forward(make(image, sample))
            return out.cpu() if reduce is None else reduce(image, sample, out)

        parts = self.engine.map_chunks(run, total, chunk=chunk, desc=name)
        if reduce is not None:
            return []
        flat = torch.cat(parts) if parts else torch.zeros((0, self.clf.num_classes))
        return list(flat.double().split(counts))

    def baseline(self, value) -> torch.Tensor:
        """A ``baseline`` parameter as a tensor [1 or n, C, H, W] aligned with ``x``."""
        shape = (self.batch_size, *self.x.shape[1:])
        base = baseline_tensor(value, shape, self.x, self.attributor.name)
        return base[self.index.to(base.device)] if base.shape[0] > 1 else base

    def pair_rows(self, per_image: torch.Tensor) -> torch.Tensor:
        """Pick each pair's row from a per-image, per-label tensor [n, L, ...] -> [P, ...]."""
        return per_image[self.pair_image.to(per_image.device), self.pair_label.to(per_image.device)]


class PerturbationAttributor(Attributor):
    """Base class of the perturbation methods (see the module docstring).

    Subclasses set ``name``, ``Config`` and implement :meth:`pair_maps`; ``needs_copy = True``
    gives them a prepared copy of the model (``ctx.prep``) on which they may register hooks.
    """

    needs_copy: ClassVar[bool] = False

    def attribute_pairs(
        self, clf: Classifier, x: torch.Tensor, plan: TargetPlan, *, output: str
    ) -> tuple[torch.Tensor, None]:
        """Maps [P, C, H, W] (float32, CPU) for the plan's pairs; no convergence delta."""
        n, c, height, width = x.shape
        images = torch.unique(plan.image)  # only images that have pairs
        position = torch.full((n,), -1, dtype=torch.long)
        position[images] = torch.arange(len(images))
        with self._model(clf, output) as (model, prep, device):
            ctx = Perturbation(
                attributor=self,
                clf=clf,
                output=output,
                model=model,
                prep=prep,
                x=x.to(device)[images.to(device)],
                index=images,
                pair_image=position[plan.image],
                pair_label=plan.label.clone(),
                batch_size=n,
            )
            with torch.inference_mode():
                maps = self.pair_maps(ctx)
        if maps.dim() == 3:  # one map for every channel
            maps = maps[:, None]
        out = maps.detach().float().cpu()
        return out.expand(plan.n_pairs, c, height, width).contiguous(), None

    @contextlib.contextmanager
    def _model(self, clf: Classifier, output: str):
        """(model, prepared copy or None, device) for the duration of the call."""
        if self.needs_copy:
            from xraylens.attr._prepare import prepare

            prep = prepare(clf, output, (), self.engine)  # no surgery: the model as it is
            yield prep.model, prep, prep.device
            return
        module = self.output_module(clf, output)
        device = self.engine.resolve_device(clf.module)
        if device != clf.device:  # work on a copy: the caller's model stays where it is
            module = copy.deepcopy(module).to(device)
        with eval_mode(module):
            yield module, None, device

    def pair_maps(self, ctx: Perturbation) -> torch.Tensor:
        """Maps for ctx's pairs: [P, H, W] (the same in every channel) or [P, C, H, W]."""
        raise NotImplementedError


def baseline_tensor(value, shape: tuple, like: torch.Tensor, method: str) -> torch.Tensor:
    """A baseline (number or tensor broadcastable to the input ``shape`` [N, C, H, W]) as a
    tensor [1 or N, C, H, W] on ``like``'s device and dtype."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise InputError(f"{method} baseline must be a number or a tensor, got {value!r}")
    base = torch.as_tensor(value).detach().to(device=like.device, dtype=like.dtype)
    target = tuple(shape)
    ok = base.dim() <= 4
    if ok:
        base = base.reshape((1,) * (4 - base.dim()) + tuple(base.shape))
        try:
            ok = torch.broadcast_shapes(base.shape, target) == target
        except RuntimeError:
            ok = False
    if not ok:
        raise InputError(
            f"{method} baseline of shape {tuple(torch.as_tensor(value).shape)} does not "
            f"broadcast to the input {target}"
        )
    return base.expand((base.shape[0], *target[1:]))


def check_baseline(method: str):
    """An attrs converter accepting a number or a tensor as ``baseline``."""

    def convert(value):
        if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
            raise InputError(f"{method} baseline must be a number or a tensor, got {value!r}")
        return value

    return convert
