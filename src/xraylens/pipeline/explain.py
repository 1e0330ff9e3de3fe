"""Explaining many images: read and preprocess, batch, resume, write each image's outputs.

Outputs, for an :class:`~xraylens.pipeline.Item` with key ``<key>`` and each method:
``OUT/<key>/<method>.npz`` (:meth:`xraylens.Attribution.save`, one image, with the model's
probabilities of every label) and ``OUT/<key>/<method>.png`` (the image and one overlay per
label, titled with the label's probability). Every file is written atomically as soon as its
image is done, so Ctrl-C loses at most the images in flight; a rerun skips every (image,
method) whose ``.npz`` exists (``force=True`` redoes them) and draws missing PNGs from it.

Work unit: one *chunk* = one batch of up to ``batch_size`` images x one method, i.e. one
``attribute`` call. Progress is counted in (image, method) maps, per chunk, with an ETA.
Under ``torchrun`` the batches are shared over the ranks (:mod:`xraylens.pipeline.shard`); the
files are the same as one process writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import numpy as np
import torch

from xraylens.core.attribution import Attribution
from xraylens.core.attributor import Attributor
from xraylens.core.classifier import Classifier
from xraylens.errors import ImageReadError, InputError
from xraylens.pipeline.items import FigureOptions, Item
from xraylens.pipeline.shard import Shard, join

#: ``targets`` of :func:`explain_images`: "all", "predicted", label names, or a function
#: ``(probs [B, L], items) -> one list of label names per item``.
Targets = str | Sequence[str] | Callable[[torch.Tensor, list[Item]], list[list[str]]]


@attrs.define
class ExplainReport:
    """What :func:`explain_images` did (on every rank, after gathering).

    ``written``: (image, method) maps written now; ``skipped``: already there; ``failed``:
    item key -> why it could not be read; ``predictions``: key -> {label: probability} of every
    image explained now or before; ``targets``: key -> explained labels; ``interrupted``: a
    Ctrl-C stopped the run (what it finished is kept). ``images_explained``: images with work
    done now (maps or missing PNGs); ``images_skipped``: images whose outputs all existed.
    """

    written: int = 0
    skipped: int = 0
    images_explained: int = 0
    images_skipped: int = 0
    failed: dict[str, str] = attrs.field(factory=dict)
    predictions: dict[str, dict[str, float]] = attrs.field(factory=dict)
    targets: dict[str, list[str]] = attrs.field(factory=dict)
    complete: list[str] = attrs.field(factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    world: int = 1

    def merge(self, other: ExplainReport) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.images_explained += other.images_explained
        self.images_skipped += other.images_skipped
        self.failed.update(other.failed)
        self.predictions.update(other.predictions)
        self.targets.update(other.targets)
        self.complete += other.complete
        self.interrupted |= other.interrupted
        self.seconds = max(self.seconds, other.seconds)


def output_paths(out: Path, key: str, method: str) -> tuple[Path, Path]:
    """``(npz, png)`` of one (image, method)."""
    return out / key / f"{method}.npz", out / key / f"{method}.png"


def read_probs(npz: Path) -> dict[str, float] | None:
    """The probabilities stored in an Attribution ``.npz`` (None when it has none)."""
    import json

    with np.load(npz, allow_pickle=False) as data:
        if "probs" not in data:
            return None
        classes = json.loads(str(data["meta"])).get("classes") or []
        return {c: round(float(p), 6) for c, p in zip(classes, data["probs"][0])}


def _resolve_targets(targets: Targets, clf: Classifier, probs, items, threshold):
    """Per-image label lists (or one list / "all" for every image)."""
    if callable(targets):
        chosen = targets(probs, items)
        if len(chosen) != len(items):
            raise InputError(f"targets() returned {len(chosen)} lists for {len(items)} images")
        return [list(c) for c in chosen]
    if targets == "predicted":
        out = []
        for row in probs:
            idx = torch.nonzero(row >= threshold).flatten().tolist() or [int(row.argmax())]
            out.append([clf.labels[i] for i in idx])
        return out
    return targets


class _Progress:
    """tqdm over (image, method) maps, updated per chunk (its rate gives the ETA)."""

    def __init__(self, total: int, enabled: bool, shard: Shard):
        from tqdm.auto import tqdm

        desc = "explain" if shard.world == 1 else f"explain [rank {shard.rank}]"
        self.bar = tqdm(total=total, desc=desc, unit="map", disable=not enabled or None)

    def chunk(self, method: str, keys: list[str]) -> None:
        first = keys[0] if len(keys) == 1 else f"{keys[0]} +{len(keys) - 1}"
        self.bar.set_postfix_str(f"{method}: {first}", refresh=True)

    def done(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def explain_images(
    clf: Classifier,
    attributors: Mapping[str, Attributor],
    items: Sequence[Item],
    out: str | Path,
    *,
    targets: Targets = "all",
    threshold: float = 0.5,
    output: str = "logits",
    size: int | None = None,
    batch_size: int = 4,
    force: bool = False,
    png: bool = True,
    figure: FigureOptions | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    shard: Shard | None = None,
    on_map: Callable[[str, str], None] | None = None,
) -> ExplainReport:
    """Explain ``items`` with every attributor and write their outputs below ``out``.

    Args:
        attributors: method name -> attributor (the name is the output file's stem).
        targets: ``"all"``, ``"predicted"`` (probability >= ``threshold``, else the top
            label), label names, or ``targets(probs [B, L], items) -> per-image lists``.
        size: input side for items read from files (default ``clf.input_size``).
        shard: this process's share (default: from ``torchrun``'s environment, else all);
            ``Shard()`` explains every item here (e.g. when the caller has sharded already).
        on_map: ``on_map(key, method)`` after each (image, method) is written.

    Returns the :class:`ExplainReport` of every rank. On Ctrl-C it logs what was kept, then
    raises ``KeyboardInterrupt`` again (``report`` attached as ``.report``).
    """
    out = Path(out)
    if not attributors:
        raise InputError("attributors is empty: give at least one method")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be in (0, 1), got {threshold}")
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        raise InputError("items must have unique keys")
    figure = figure or FigureOptions()
    _check_figure(figure)
    size = size or clf.input_size
    shard = shard or join(str(clf.device))
    methods = list(attributors)
    started = time.perf_counter()
    report = ExplainReport(world=shard.world)
    blocks = shard.blocks(list(items), batch_size)

    def todo(item: Item) -> tuple[list[str], list[str]]:
        compute, redraw = [], []
        for m in methods:
            npz, png_path = output_paths(out, item.key, m)
            if force or not npz.exists():
                compute.append(m)
            elif png and not png_path.exists():
                redraw.append(m)
        return compute, redraw

    plans = {it.key: todo(it) for block in blocks for it in block}
    total = sum(len(plans[k][0]) for k in plans)
    report.skipped = sum(len(methods) - len(plans[k][0]) for k in plans)
    report.images_skipped = sum(not any(plan) for plan in plans.values())
    bar = _Progress(total, progress, shard)
    opt = {
        "targets": targets,
        "threshold": threshold,
        "output": output,
        "size": size,
        "png": png,
        "figure": figure,
        "on_map": on_map,
    }
    try:
        for block in blocks:
            _run_block(clf, attributors, block, plans, out, report, bar, opt)
    except KeyboardInterrupt as exc:
        report.interrupted = True
        bar.close()
        report.seconds = round(time.perf_counter() - started, 2)
        log(
            f"interrupted: kept {report.written} map(s) written in this run "
            f"({len(report.complete)} image(s) complete) plus {report.skipped} from before; "
            "the images in flight were lost; rerun the same command to complete the rest"
        )
        exc.report = report
        raise
    bar.close()
    report.images_explained = sum(
        any(plan) and key not in report.failed for key, plan in plans.items()
    )
    for key, (compute, _) in plans.items():
        if not compute and key not in report.predictions:
            probs = read_probs(output_paths(out, key, methods[0])[0])
            if probs is not None:
                report.predictions[key] = probs
    report.seconds = round(time.perf_counter() - started, 2)
    if shard.world > 1:
        parts = shard.gather(report)
        report = parts[0]
        for part in parts[1:]:
            report.merge(part)
        report.world = shard.world
    return report


def _check_figure(figure: FigureOptions) -> None:
    from xraylens.viz.overlay import ALPHA_SCALINGS, SCALINGS, SIGNS

    for name, value, allowed in (
        ("sign", figure.sign, SIGNS),
        ("scaling", figure.scaling, SCALINGS),
        ("alpha_scaling", figure.alpha_scaling, ALPHA_SCALINGS),
    ):
        if value not in allowed:
            raise InputError(f"figure {name} must be one of {allowed}, got {value!r}")
    if not 0.0 <= figure.outlier_perc < 100.0:
        raise InputError(f"figure outlier_perc must be in [0, 100), got {figure.outlier_perc}")
    if not 0.0 <= figure.alpha <= 1.0:
        raise InputError(f"figure alpha must be in [0, 1], got {figure.alpha}")


def _read(item: Item, size: int) -> torch.Tensor:
    if item.load is not None:
        return item.load()
    from xraylens.data.io import read_image
    from xraylens.data.preprocess import preprocess

    return preprocess(read_image(item.path), size=size)


def _draw(path: Path, image: torch.Tensor, res: Attribution, item: Item, figure) -> None:
    from xraylens import viz

    fig = viz.plot_attribution(image, res, index=0, image_id=item.name, **figure.kwargs())
    viz.save_figure(fig, path, dpi=figure.dpi)


def _run_block(clf, attributors, block, plans, out, report, bar, opt) -> None:
    """One batch: read, predict, then one ``attribute`` call (a chunk) per method."""
    todo = [it for it in block if any(plans[it.key])]
    images, ready = [], []
    for it in todo:
        try:
            images.append(_read(it, opt["size"]))
            ready.append(it)
        except ImageReadError as exc:
            report.failed[it.key] = exc.cause
            bar.done(len(plans[it.key][0]))
    if not ready:
        return
    x = torch.stack(images)
    probs = clf.predict_proba(x).float().cpu()  # [B, L]
    targets = _resolve_targets(opt["targets"], clf, probs, ready, opt["threshold"])
    per_image = isinstance(targets, list) and bool(targets) and isinstance(targets[0], list)
    for j, it in enumerate(ready):
        report.predictions[it.key] = {
            lab: round(float(p), 6) for lab, p in zip(clf.labels, probs[j])
        }
        for m in plans[it.key][1]:  # an earlier run wrote the .npz but not the PNG
            npz, png = output_paths(out, it.key, m)
            _draw(png, x[j], Attribution.load(npz), it, opt["figure"])
    left = {it.key: len(plans[it.key][0]) for it in ready}
    for m, att in attributors.items():
        need = [j for j, it in enumerate(ready) if m in plans[it.key][0]]
        if not need:
            continue
        bar.chunk(m, [ready[j].key for j in need])
        tgt = [targets[j] for j in need] if per_image else targets
        res = att.attribute(clf, x[need], tgt, output=opt["output"])
        res.probs, res.classes = probs[need], clf.labels
        for i, j in enumerate(need):
            it = ready[j]
            single = res.image(i)
            npz, png = output_paths(out, it.key, m)
            single.save(npz)
            if opt["png"]:
                _draw(png, x[j], single, it, opt["figure"])
            report.written += 1
            report.targets[it.key] = list(single.labels_of(0))
            if opt["on_map"] is not None:
                opt["on_map"](it.key, m)
            left[it.key] -= 1
            if left[it.key] == 0:
                report.complete.append(it.key)
        bar.done(len(need))


__all__ = ["ExplainReport", "Targets", "explain_images", "output_paths", "read_probs"]
