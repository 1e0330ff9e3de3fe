"""Ablation-CAM (Desai & Ramaswamy 2020) for every requested label from one set of ablations.

Channel ``k`` of the layer's activation ``A`` [K, h, w] is set to an ablation value, the rest
of the network runs on, and the score drop ``w_k = (f(x) - f_k) / f(x)`` weighs ``A_k``: map
``Σ_k w_k A_k``, then ReLU and upsampling as Grad-CAM. As pytorch-grad-cam's ``AblationCAM``
(tested equal per label), with two differences in cost, not in value:

- the ``K`` ablated forwards of an image serve every label (pytorch-grad-cam repeats them per
  call, so per label);
- the layers before the ablated one run once per batch of ablated copies, on the image alone:
  the layer's output is replaced by the batch of ablated activations and the rest of the network
  broadcasts over it. A model whose rest cannot take that batch (a skip connection from before
  the layer added in place, a concatenation) falls back to repeating the image, which is exact
  too. Each image's first ablated batch carries one unablated copy; its output must equal the
  image's own forward, otherwise :class:`~xraylens.errors.InputError`.

The ablation value (``value=None``) follows pytorch-grad-cam: 0 where the image's activation
minimum is 0 (after a ReLU), else that minimum minus 1e7. (pytorch-grad-cam lowers it by
another 1e7 for each further copy in its batch of ``batch_size``; xraylens uses the value of
its first copy for every channel, which is pytorch-grad-cam's with ``batch_size=1``.)
"""

from __future__ import annotations

import torch

from xraylens.attr import cam_configs
from xraylens.attr.cam_family import CamFromActivation
from xraylens.core.engine import is_oom
from xraylens.core.memory import fixed_bytes as module_fixed_bytes
from xraylens.errors import InputError

#: pytorch-grad-cam's offset below the activation minimum for layers that are not ReLU-ed
ABLATION_OFFSET = 1e7


class AblationCam(CamFromActivation):
    """Ablation-CAM on ``layer`` (default: the classifier's ``cam_layer``)."""

    name = "ablation_cam"
    Config = cam_configs.AblationCamConfig
    uses_gradient = False
    multi_layer = (
        "Ablation-CAM replaces one layer's output by its ablated copies in one forward; "
        "ablating several members' layers at once is not defined"
    )

    def setup(self, ctx):
        super().setup(ctx)
        # the layer Grad-CAM hooks (its name in ``ctx.extra`` where Grad-CAM resolved it)
        name = ctx.extra.get("layer_name") or self.config.layer or ctx.clf.cam_layer
        if not name:
            raise InputError(f"{self.name}: the classifier has no cam_layer; pass layer=...")
        layer = ctx.prep.layer(name)
        ctx.extra["ablate_name"] = name

        def replace(_m, _args, out):
            job = ctx.extra.get("ablate")
            if job is None:
                return None
            job["calls"] += 1
            return job["batch"]

        ctx.extra["ablate_hook"] = layer.register_forward_hook(replace)

    def teardown(self, ctx):
        if "ablate_hook" in ctx.extra:
            ctx.extra.pop("ablate_hook").remove()
        for key in ("ablate", "ablated", "ablate_chunk", "ablate_repeat", "ablate_repeat_chunk"):
            ctx.extra.pop(key, None)
        super().teardown(ctx)

    def row_maps(self, ctx, rows, out, grad_out, retain):
        cached = ctx.extra.get("ablated")
        if cached is None or cached[0] is not rows:
            kind = getattr(ctx.extra.get("layout"), "kind", "nchw")
            if kind != "nchw":
                raise InputError(
                    f"{self.name}: layer {ctx.extra['ablate_name']!r} outputs a {kind!r} "
                    "layout; Ablation-CAM ablates the channels of [N, K, h, w] outputs only"
                )
            raw = ctx.extra.get("activation")
            if raw is None:
                raise InputError(f"{self.name}: the layer did not run in the forward pass")
            act = raw.detach()
            try:
                scores = self._ablated_scores(ctx, rows, act, out.detach())
            finally:  # the ablated forwards ran Grad-CAM's hook too
                ctx.extra.pop("ablate", None)
                ctx.extra["activation"] = raw
            cached = ctx.extra["ablated"] = (rows, act, scores)
        _, act, ablated = cached  # ablated: [r, K, L] scores with channel k ablated
        has = grad_out.any(dim=1)
        base = (out.detach() * grad_out).sum(dim=1)  # [r] the label's score
        if bool((has & (base == 0)).any()):
            raise InputError(
                f"{self.name}: a score is exactly 0, so its relative drop is undefined; "
                "explain the other output (logits / probs)"
            )
        score_k = (ablated * grad_out[:, None, :].to(ablated.dtype)).sum(dim=2)  # [r, K]
        safe = torch.where(has, base, torch.ones_like(base))[:, None]
        weights = torch.where(has[:, None], (safe - score_k) / safe, torch.zeros_like(score_k))
        cam = (weights[:, :, None, None].to(act.dtype) * act).sum(dim=1, keepdim=True)
        return self.finish(ctx, cam, self.config.relu).expand(-1, ctx.x.shape[1], -1, -1)

    def _ablated_scores(self, ctx, rows, act, clean) -> torch.Tensor:
        """Scores [r, K, L] of every row with each channel ablated in turn."""
        if act.dim() != 4:
            raise InputError(f"{self.name}: layer must output [N, K, h, w]")
        r, k = act.shape[:2]
        scores = act.new_empty((r, k, clean.shape[1]), dtype=clean.dtype)
        batch = self._batch_size(ctx, rows, k + 1)
        for j in range(r):
            value = self._value(act[j])
            image = rows.inputs[j : j + 1].detach()
            # channel -1: the unablated check copy
            channels = torch.arange(-1, k, device=act.device)
            for start in range(0, k + 1, batch):
                chans = channels[start : start + batch]
                got = self._forward(ctx, image, act[j], chans, value)
                if start == 0:
                    self._check(ctx, got[0], clean[j])
                    got, chans = got[1:], chans[1:]
                scores[j, chans] = got
        return scores

    def _value(self, a: torch.Tensor) -> float:
        if self.config.value is not None:
            return float(self.config.value)
        low = float(a.min())
        return 0.0 if low == 0 else low - ABLATION_OFFSET

    def _forward(self, ctx, image, a, chans, value) -> torch.Tensor:
        """Outputs [b, L] for the activation ``a`` [K, h, w] with channel ``chans[i]`` set to
        ``value`` in copy ``i`` (-1: none)."""
        b = len(chans)
        batch = a.expand(b, *a.shape).clone()
        keep = chans >= 0
        batch[keep.nonzero().flatten(), chans[keep]] = value
        if not ctx.extra.get("ablate_repeat"):
            out = self._run(ctx, image, batch, broadcast=True)
            if out is not None:
                return out
            ctx.extra["ablate_repeat"] = True  # for the rest of this call
        step = self._repeat_chunk(ctx, image, b)
        parts = [self._run(ctx, image, batch[i : i + step], False) for i in range(0, b, step)]
        return torch.cat(parts)

    def _run(self, ctx, image, batch, broadcast: bool) -> torch.Tensor | None:
        """The model's outputs [b, L] with the layer's output replaced by ``batch`` [b, ...],
        from the image [1, C, H, W] alone (``broadcast``; None where the rest of the model does
        not take it) or repeated ``b`` times."""
        b = len(batch)
        job = {"batch": batch, "calls": 0}
        ctx.extra["ablate"] = job
        inputs = image if broadcast else image.expand(b, *image.shape[1:])
        try:
            with torch.no_grad():
                out = ctx.prep.model(self.engine.prepare_input(inputs))
        except RuntimeError as exc:
            if not broadcast or is_oom(exc):
                raise
            return None
        finally:
            ctx.extra.pop("ablate", None)
        if job["calls"] != 1:
            raise InputError(
                f"{self.name}: layer {ctx.extra['ablate_name']!r} ran {job['calls']} times in "
                "one forward; ablate a layer that runs once"
            )
        if tuple(out.shape) != (b, ctx.clf.num_classes):
            if broadcast:
                return None
            raise InputError(f"{self.name}: the model returned {tuple(out.shape)} for {b} copies")
        return out

    def _repeat_chunk(self, ctx, image, n: int) -> int:
        """Copies per forward when the whole model runs on each copy."""
        if self.config.batch_size is not None:
            return self.config.batch_size
        if "ablate_repeat_chunk" not in ctx.extra:
            saved = ctx.extra.get("activation")
            try:  # the probe runs the model: Grad-CAM's hook records the probe's activation
                ctx.extra["ablate_repeat_chunk"] = self.engine.plan(
                    n, module=ctx.prep.model, example=image, grad=False,
                    what=f"{self.name} ablated copies",
                )  # fmt: skip
            finally:
                ctx.extra["activation"] = saved
        return ctx.extra["ablate_repeat_chunk"]

    def _check(self, ctx, got: torch.Tensor, clean: torch.Tensor) -> None:
        tol = 1e-4 * max(1.0, float(clean.abs().max()))
        if float((got - clean).abs().max()) > tol:
            raise InputError(
                f"{self.name}: the model's output from layer {ctx.extra['ablate_name']!r}'s "
                "unablated activation differs from its forward (a layer that depends on more "
                "than its input, or randomness in eval mode); its ablations would be wrong"
            )

    def _batch_size(self, ctx, rows, n: int) -> int:
        """Ablated copies per forward: ``batch_size``, else from the memory budget, with the
        working memory of one copy measured on the layers after the ablated one (the layers
        before run once per forward, on the image alone)."""
        if self.config.batch_size is not None:
            return self.config.batch_size
        eng, device = self.engine, rows.inputs.device
        if eng.chunk is not None:
            return eng.chunk_size(n, 0, device)
        if "ablate_chunk" not in ctx.extra:
            saved = ctx.extra.get("activation")
            try:  # the probe runs the model: Grad-CAM's hook records the probe's activation
                prefix, suffix = self._probe(ctx, rows.inputs[:1].detach(), saved[:1].detach())
            finally:
                ctx.extra["activation"] = saved
                ctx.extra.pop("ablate", None)
            row = saved[:1].numel() * saved.element_size()
            fixed = prefix + module_fixed_bytes(ctx.prep.model, device)
            ctx.extra["ablate_chunk"] = eng.chunk_size(n, suffix + 2 * row, device, fixed)
        return ctx.extra["ablate_chunk"]

    def _probe(self, ctx, image, a) -> tuple[int, int]:
        """Bytes of the leaf outputs of one ablated forward before / after the ablated layer."""
        job = {"batch": a.clone(), "calls": 0}
        sizes = [0, 0]

        def count(_m, _args, out):
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    sizes[min(job["calls"], 1)] += t.numel() * t.element_size()

        model = ctx.prep.model
        leaves = [m for m in model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        ctx.extra["ablate"] = job
        try:
            with torch.no_grad():
                model(self.engine.prepare_input(image))
        finally:
            for h in handles:
                h.remove()
        return sizes[0], sizes[1]
