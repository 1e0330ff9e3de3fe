"""A small, deterministic multi-label training loop for the demo (CPU-friendly).

Not the paper's recipe (that is ``examples/covid_cxr``): just enough to get a classifier that
has learned something on phantoms or a small real sample within about a minute on two cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import torch
from torch.nn import functional as F

from xraylens.core.classifier import Classifier
from xraylens.errors import InputError


@attrs.frozen
class TrainResult:
    """What training did: steps run, seconds, the loss per step, and whether the time limit
    stopped it early."""

    steps: int
    seconds: float
    losses: tuple[float, ...]
    stopped_early: bool


def train_classifier(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    time_limit: float | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    progress: bool | None = False,
) -> TrainResult:
    """Train ``clf.module`` in place with BCE-with-logits, AdamW and a one-cycle schedule.

    Args:
        x: images [N, C, H, W] in [0, 1]; y: 0/1 targets [N, L] (L = ``clf.num_classes``).
        steps: optimiser steps (the schedule's length); ``time_limit`` seconds stop it earlier.
        augment: optional ``augment(batch, generator) -> batch``.
        progress: a tqdm bar (None: only when stderr is a terminal).
    Leaves the module in eval mode.
    """
    from tqdm.auto import tqdm

    if x.dim() != 4 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise InputError(
            f"x must be [N, C, H, W] and y [N, L]; got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if y.shape[1] != clf.num_classes:
        raise InputError(f"y has {y.shape[1]} columns, the classifier {clf.num_classes} labels")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    module = clf.forward_module()
    params = [p for p in clf.module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if steps >= 4:  # warm up a quarter of the steps (at least two), then anneal
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=max(0.25, 2 / steps)
        )
    else:  # too short for a schedule
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, x.shape[0])
    losses: list[float] = []
    started = time.perf_counter()
    stopped = False
    order = torch.randperm(x.shape[0], generator=gen)
    cursor = 0
    clf.module.train()
    bar = tqdm(
        total=steps,
        desc="train",
        unit="step",
        disable=None if progress is None else not progress,
        leave=False,
    )
    try:
        for _ in range(steps):
            if cursor + batch_size > x.shape[0]:
                order, cursor = torch.randperm(x.shape[0], generator=gen), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            xb = x[idx].to(clf.device, clf.dtype)
            if augment is not None:
                xb = augment(xb, gen)
            loss = F.binary_cross_entropy_with_logits(module(xb), y[idx].to(clf.device, clf.dtype))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if time_limit is not None and time.perf_counter() - started > time_limit:
                stopped = len(losses) < steps
                break
    finally:
        bar.close()
        clf.module.eval()
    return TrainResult(len(losses), time.perf_counter() - started, tuple(losses), stopped)


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Sigmoid probabilities [N, L] of ``clf`` on ``x`` [N, C, H, W], in batches (CPU)."""
    out = [clf.predict_proba(x[i : i + batch_size]).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


__all__ = ["TrainResult", "predict", "train_classifier"]
