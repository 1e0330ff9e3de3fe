"""Shared machinery: every requested (image, label) pair from one forward per chunk of rows.

Vocabulary:

- **unit**: one input to explain: an image, or one of its ``nt_samples`` noisy copies
  (noise tunnel). ``U = N * S`` units.
- **row**: one input that goes through the model: a unit itself (saliency), a point on its IG
  path, the unit paired with one baseline (DeepLiftShap), ... ``R`` rows per unit.
- **round**: the labels are explained in rounds; round ``k`` backpropagates, for every row,
  the one-hot of the ``k``-th requested label of the row's image. ``T`` rounds per chunk, one
  shared forward.

Cost per chunk of rows: one forward, then ``T`` backward passes (retained graph), instead of
``T`` forward+backward passes (one Captum call per label). The engine sizes the chunks from a
probe of one row; on out-of-memory it halves them (a chunk commits its results only when all
its rounds are done, so a retry never counts twice).

A method (subclass of :class:`GradientAttributor`) says how units become rows (:meth:`make_rows`)
and how a row's gradient becomes its share of the unit's map (:meth:`row_maps`).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from xraylens.attr._prepare import Prepared, prepare
from xraylens.attr._rules import RuleHooks
from xraylens.attr.noise_tunnel import Units, aggregate, generator, make_units
from xraylens.core.attributor import Attributor
from xraylens.core.classifier import Classifier
from xraylens.core.targets import TargetPlan
from xraylens.errors import InputError


@attrs.define(eq=False)
class Rows:
    """One chunk of rows.

    Attributes:
        unit: unit index of each row [r].
        inputs: what goes through the model [r, C, H, W] (gradients are taken here).
        scale: factor of the row's gradient in the unit's map (broadcastable to
            [r, C, H, W]); None: 1.
        refs: DeepLIFT references [r, C, H, W] (reference pass), or None.
        diff_weight: [r] weight of ``f(input) - f(ref)`` in the unit's output difference
            (DeepLIFT family), or None.
        ends: ``(end, start, unit, weight)``: extra no-grad forwards whose weighted difference
            ``f(end) - f(start)`` adds to the units' output differences (IG, GradientShap).
    """

    unit: torch.Tensor
    inputs: torch.Tensor
    scale: torch.Tensor | None = None
    refs: torch.Tensor | None = None
    diff_weight: torch.Tensor | None = None
    ends: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None


@attrs.define(eq=False)
class Context:
    """What one ``attribute_pairs`` call works with (methods may keep data in ``extra``)."""

    clf: Classifier
    prep: Prepared
    x: torch.Tensor
    plan: TargetPlan
    units: Units
    rows_per_unit: int
    round_label: torch.Tensor  # [T, N] label index of round k for image i, -1: none
    round_pair: torch.Tensor  # [T, N] pair index, -1: none
    rules: RuleHooks | None = None
    gen: torch.Generator | None = None  # seeded generator of this call (None: global)
    extra: dict[str, Any] = attrs.Factory(dict)

    @property
    def n_rows(self) -> int:
        return self.units.n * self.rows_per_unit


log = logging.getLogger("xraylens.engine")

#: classifier module -> {(input shape, dtype, device, ...): (probed bytes of one row, how)}
_Probes = dict[tuple, tuple[int, str]]
_PROBES: weakref.WeakKeyDictionary[nn.Module, _Probes] = weakref.WeakKeyDictionary()


def _rounds(plan: TargetPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Label [T, N] and pair index [T, N] of each round and image (-1: none): round ``k`` of an
    image is its ``k``-th slot (slots are filled in order)."""
    label = torch.full((plan.n_slots, plan.n_images), -1, dtype=torch.long)
    pair = torch.full_like(label, -1)
    label[plan.slot, plan.image] = plan.label
    pair[plan.slot, plan.image] = torch.arange(plan.n_pairs)
    return label, pair


class GradientAttributor(Attributor):
    """Base of the gradient-based attributors (see the module docstring).

    Subclasses set ``pipeline`` (surgery), ``rules`` (None, ``"deeplift"``, ``"guided"``,
    ``"deconv"``), ``has_delta`` and ``item_scale`` (memory of one row relative to a plain
    forward+backward), and implement :meth:`make_rows`.
    """

    pipeline: ClassVar[str] = "gradient"
    rules: ClassVar[str | None] = None
    has_delta: ClassVar[bool] = False
    item_scale: ClassVar[float] = 1.0
    _amp_warned: bool = False  # set per instance on the first call with ``amp``

    # --- method hooks ---------------------------------------------------------------------
    def rows_per_unit(self, ctx: Context) -> int:
        """Rows of each unit (IG: steps; DeepLiftShap: baselines)."""
        return 1

    def setup(self, ctx: Context) -> None:
        """Prepare per-call data (baselines, random draws from ``ctx.gen``) in ``ctx.extra``."""

    def teardown(self, ctx: Context) -> None:
        """Release what :meth:`setup` or :meth:`install` installed (always called)."""

    def inspect(
        self, clf: Classifier, x: torch.Tensor, model: nn.Module, inner: nn.Module, extra: dict
    ) -> tuple[str, ...]:
        """Look at the prepared copy before surgery (``model`` wraps ``inner``, on ``x``'s
        device); may keep data in ``extra`` (becomes ``ctx.extra``). Returns the surgery steps
        to leave out."""
        return ()

    def install(self, ctx: Context) -> None:
        """Install forward hooks that must see each module's final output: called after the
        backward rules' hooks are registered (so they run after them), before any forward."""

    def make_rows(self, ctx: Context, start: int, stop: int) -> Rows:
        """Rows ``start:stop`` (row ``j`` belongs to unit ``j // rows_per_unit``)."""
        raise NotImplementedError

    def row_maps(
        self, ctx: Context, rows: Rows, out: torch.Tensor, grad_out: torch.Tensor, retain: bool
    ) -> torch.Tensor:
        """The rows' maps [r, C, H, W] for one round (``grad_out`` [r, L], one-hot or 0)."""
        grad = torch.autograd.grad(out, rows.inputs, grad_out, retain_graph=retain)[0]
        return grad if rows.scale is None else grad * rows.scale

    def chunk_rows(self, ctx: Context) -> int | None:
        """A fixed number of rows per pass (e.g. IG's ``internal_batch_size``); None: plan."""
        return None

    def rule_eps(self) -> float:
        return float(getattr(self.config, "eps", 1e-10))

    # --- the shared loop --------------------------------------------------------------------
    def attribute_pairs(
        self, clf: Classifier, x: torch.Tensor, plan: TargetPlan, *, output: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.engine.amp is not None and not self._amp_warned:
            self._amp_warned = True
            log.warning("%s: amp=%r is ignored: gradient methods run in full precision",
                        self.name, self.engine.amp)  # fmt: skip
        extra: dict[str, Any] = {}

        def inspect(model, inner, device):
            return self.inspect(clf, x.to(device), model, inner, extra)

        prep = prepare(clf, output, self.pipeline, self.engine, inspect)
        x = x.to(prep.device)
        gen = generator(getattr(self.config, "seed", None), x.device)
        units = make_units(x, getattr(self.config, "noise_tunnel", None), self.config, gen)
        label, pair = _rounds(plan)
        ctx = Context(clf, prep, x, plan, units, 1, label, pair, gen=gen, extra=extra)
        self.setup(ctx)
        try:
            ctx.rows_per_unit = self.rows_per_unit(ctx)
            if self.rules is not None:
                ctx.rules = RuleHooks(prep.model, self.rules, eps=self.rule_eps())
            acc = _Accumulator(ctx, self.has_delta)
            chunk = self.chunk_rows(ctx) or self._plan(ctx, output)
            with ctx.rules if ctx.rules is not None else contextlib.nullcontext():
                self.install(ctx)
                self.engine.map_chunks(
                    lambda a, b: acc.commit(b, *self._run_chunk(ctx, a, b)),
                    ctx.n_rows,
                    chunk=chunk,
                    desc=self.name,
                )
        finally:
            self.teardown(ctx)
        values, delta = acc.result()
        return values, (delta if self.has_delta else None)

    def _plan(self, ctx: Context, output: str) -> int:
        """Rows per pass: the engine's plan for a per-row cost of the probed forward + backward
        (times ``item_scale``) plus the row's maps of every round. The probe depends only on
        the architecture and the input shape, so it is remembered per classifier."""
        eng, x, model = self.engine, ctx.x, ctx.prep.model
        probed = None
        if eng.chunk is None:
            known = _PROBES.setdefault(ctx.clf.module, {})
            key = (tuple(x.shape[1:]), x.dtype, x.device, output, self.pipeline,
                   sum(1 for _ in ctx.clf.module.modules()))  # fmt: skip
            remembered = key in known
            if not remembered:
                known[key] = eng.probe(model, x[:1], grad=True)
            probe_bytes, how = known[key]
            probed = (probe_bytes, f"{how}, remembered" if remembered else how)
        image_bytes = x[:1].numel() * x.element_size()
        return eng.plan(
            ctx.n_rows, module=model, example=x[:1], grad=True, what=f"{self.name} rows",
            item_scale=self.item_scale, extra_item_bytes=image_bytes * (ctx.plan.n_slots + 2),
            probed=probed,
        )  # fmt: skip

    def _run_chunk(self, ctx: Context, start: int, stop: int):
        rows = self.make_rows(ctx, start, stop)
        eng = self.engine
        first_unit = int(rows.unit.min())
        local = (rows.unit - first_unit).to(rows.inputs.device)
        n_local = int(local.max()) + 1
        n_labels = ctx.clf.num_classes
        diffs = None
        if rows.ends is not None or rows.diff_weight is not None:
            diffs = rows.inputs.new_zeros(n_local, n_labels)
        if rows.ends is not None:
            end, begin, unit, weight = rows.ends
            with torch.no_grad():
                both = ctx.prep.model(eng.prepare_input(torch.cat([end, begin])))
            d = (both[: len(end)] - both[len(end) :]) * weight[:, None]
            diffs.index_add_(0, (unit - first_unit).to(diffs.device), d.to(diffs.dtype))
        with torch.enable_grad():
            out_ref = None
            if rows.refs is not None:
                with torch.no_grad(), ctx.rules.reference():
                    out_ref = ctx.prep.model(eng.prepare_input(rows.refs))
            rows.inputs = eng.prepare_input(rows.inputs.detach()).requires_grad_(True)
            with ctx.rules.main() if ctx.rules is not None else contextlib.nullcontext():
                out = ctx.prep.model(rows.inputs)
            _check_output(out, len(rows.unit), n_labels)
            if out_ref is not None and rows.diff_weight is not None:
                d = (out.detach() - out_ref) * rows.diff_weight[:, None]
                diffs.index_add_(0, local, d.to(diffs.dtype))
            image = ctx.units.image[rows.unit.cpu()]
            labels = ctx.round_label[:, image]  # [T, r]
            n_rounds = int((labels >= 0).any(dim=1).sum())
            maps = rows.inputs.new_zeros((n_rounds, n_local, *ctx.x.shape[1:]))
            for k in range(n_rounds):
                lab = labels[k].to(out.device)
                grad_out = torch.zeros_like(out)
                has = lab >= 0
                grad_out[has.nonzero().flatten(), lab[has]] = 1
                m = self.row_maps(ctx, rows, out, grad_out, retain=k < n_rounds - 1)
                maps[k].index_add_(0, local, m.detach().to(maps.dtype))
        return first_unit, maps, diffs


def _check_output(out, rows: int, n_labels: int) -> None:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows, n_labels):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"the model returned {shape} for {rows} inputs; expected logits [{rows}, {n_labels}]"
        )


class _Accumulator:
    """Sums the rows' maps per unit, finishes complete units, aggregates units into pairs."""

    def __init__(self, ctx: Context, with_delta: bool):
        self.ctx = ctx
        self.with_delta = with_delta
        self.open: dict[int, torch.Tensor] = {}
        self.open_diff: dict[int, torch.Tensor] = {}
        self.n_pairs_of = (ctx.round_pair >= 0).sum(dim=0)  # [N]
        shape = (ctx.plan.n_pairs, *ctx.x.shape[1:])
        self.sum = ctx.x.new_zeros(shape)
        self.sq = ctx.x.new_zeros(shape) if ctx.units.kind in ("smoothgrad_sq", "vargrad") else None
        self.delta = ctx.x.new_zeros(ctx.plan.n_pairs)

    def commit(
        self, stop: int, first_unit: int, maps: torch.Tensor, diffs: torch.Tensor | None
    ) -> None:
        """Add a chunk's maps [rounds, units, C, H, W] (units from ``first_unit``); rows before
        ``stop`` are done."""
        for j in range(maps.shape[1]):
            u = first_unit + j
            t = int(self.n_pairs_of[int(self.ctx.units.image[u])])
            if u in self.open:
                self.open[u] += maps[:t, j]
            else:
                self.open[u] = maps[:t, j].clone()
            if diffs is not None:
                self.open_diff[u] = (
                    self.open_diff[u] + diffs[j] if u in self.open_diff else (diffs[j].clone())
                )
        for u in sorted(self.open):
            if (u + 1) * self.ctx.rows_per_unit <= stop:
                self._finish(u)

    def _finish(self, u: int) -> None:
        ctx = self.ctx
        unit_map = self.open.pop(u)
        diff = self.open_diff.pop(u, None)
        i = int(ctx.units.image[u])
        s = ctx.units.per_image
        for k in range(unit_map.shape[0]):
            p = int(ctx.round_pair[k, i])
            m = unit_map[k]
            self.sum[p] += m / s
            if self.sq is not None:
                self.sq[p] += m * m / s
            if self.with_delta and diff is not None:
                self.delta[p] += (m.sum() - diff[int(ctx.round_label[k, i])]) / s

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.open:
            raise RuntimeError(f"units {sorted(self.open)} were not completed")
        values = aggregate(self.ctx.units.kind, self.sum, self.sq)
        delta = self.delta if self.ctx.units.kind in (None, "smoothgrad") else None
        return values, delta


#: The name of :class:`GradientAttributor` before 0.2 (kept for plugins that subclass it).
PairAttributor = GradientAttributor
