"""Step ``profile``: Neuron Activation Profiles of every model (backbone x fold) on its fold's
test images.

Groups (the paper's): each test image joins the *first* group of ``nap_groups`` whose label it
carries, so with ``("COVID-19", "Pneumonia", "No Finding")`` the groups are COVID-19, other
pneumonia, and healthy, disjoint. Images in no group still count for the inactive-map figures.

Sharding: each rank profiles every ``world``-th test image; the float64 sums, counts and
extremes are then all-reduced (:meth:`NAPResult.all_reduce`), which is exact up to float64
summation order: the result equals a one-process run to float64 rounding.

Outputs per model and fold in ``naps/<backbone>/fold<k>/``: ``nap.npz`` (the raw, mergeable
state), ``summary.json`` (group sizes, inactive share per layer), ``input.png`` (mean image and
input NAP per group), ``inactive.png`` and ``nap_<layer>.png`` (top feature maps per layer).

The ``ensemble`` (:func:`examples.covid_cxr.ensemble.load_ensemble`) gets the same outputs in
``naps/ensemble/fold<k>/``: the NAPs of an :class:`xl.Ensemble` are its members' NAPs (each
member sees the same images), so they are assembled from the backbones' results
(:func:`ensemble_result`, exact, no forward pass), with layers named by member
(``members.<i>.<layer>``, ``i`` the backbone's place in ``backbones``; ``summary.json`` lists
the ``members``) and the input NAP once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import write_json
from examples.covid_cxr.inference import load_model
from examples.covid_cxr.prepare import Prepared, load_prepared
from xraylens.errors import InputError
from xraylens.profile import NAPResult


def exclusive_membership(
    targets: torch.Tensor, labels: Sequence[str], groups: Sequence[str]
) -> torch.Tensor:
    """bool [N, G]: image i is in the first group g (in order) whose label it has, else none."""
    missing = [g for g in groups if g not in labels]
    if missing:
        raise InputError(f"NAP groups {missing} are not labels; labels: {list(labels)}")
    has = targets[:, [list(labels).index(g) for g in groups]] > 0.5  # [N, G]
    first = has & (has.cumsum(dim=1) == 1)
    return first


def profile_model(run: Run, prep: Prepared, backbone: str, fold: int) -> NAPResult:
    """The NAPs of one model on its fold's test images (sharded; every rank gets the result)."""
    d, p = run.dist, run.profile
    test = prep.part(fold, "test")
    if len(test) < d.world:
        raise InputError(
            f"fold {fold}: {len(test)} test images cannot be shared by {d.world} ranks"
        )
    clf = load_model(run, backbone, fold)
    prof = xl.get_profiler("nap", groups=p.nap_groups)
    mine = d.shard(test)
    for start in tqdm(
        range(0, len(mine), p.eval_batch),
        desc=f"NAP {backbone} fold {fold}",
        disable=not run.show_progress,
        leave=False,
    ):
        x, y = prep.store.batch(mine[start : start + p.eval_batch])
        prof.update(clf, x.to(d.device), exclusive_membership(y, prep.labels, p.nap_groups))
    result = prof.result()
    if d.active:
        result = result.all_reduce(device=d.comm_device)
    return result


def ensemble_result(members: Sequence[NAPResult], model: str = "ensemble") -> NAPResult:
    """The NAPs of the :class:`xl.Ensemble` of models whose NAPs (on the same images and
    groups) are ``members``: layer ``members.<i>.<layer>`` is member i's ``layer``; ``input``
    is the first member's (the same images)."""
    first = members[0]
    layers, sums, lo, hi = [], {}, {}, {}
    for i, res in enumerate(members):
        if (res.groups, res.n_images) != (first.groups, first.n_images) or not (
            res.group_counts == first.group_counts
        ).all():
            raise InputError(f"member {i}'s NAPs cover other images or groups than member 0's")
        for layer in res.layers:
            if layer == "input" and i:
                continue
            name = layer if layer == "input" else f"members.{i}.{layer}"
            layers.append(name)
            sums[name], lo[name], hi[name] = res.sums[layer], res.minimum[layer], res.maximum[layer]
    return NAPResult(layers, first.groups, sums, first.group_counts, first.n_images, lo, hi,
                     weighting=first.weighting, model=model)  # fmt: skip


def save_plots(result: NAPResult, folder) -> list[str]:
    """The NAP figures of one result; returns the file names written."""
    from xraylens import viz

    figures = {
        "input.png": viz.plot_input_nap(result),
        "inactive.png": viz.plot_inactive_fraction(result),
    }
    for layer in result.layers:
        if layer != "input":
            figures[f"nap_{layer.replace('.', '_')}.png"] = viz.plot_nap_grid(result, layer, k=8)
    for name, fig in figures.items():
        viz.save_figure(fig, folder / name)
    return list(figures)


def _summary(run: Run, result: NAPResult, model: str, fold: int, plots) -> dict[str, Any]:
    return {
        "model": model,
        "fold": fold,
        "images": result.n_images,
        "counts": result.counts,
        "layers": list(result.layers),
        "inactive_fraction": result.inactive_fraction,
        "zero_fraction": result.zero_fraction,
        "plots": plots,
        "world_size": run.dist.world,
    }


def profile(run: Run) -> dict[str, Any]:
    """NAPs of every backbone, and of their ensemble, on every fold's test images (skips
    finished ones)."""
    t0 = time.perf_counter()
    prep = load_prepared(run)
    done: dict[str, Any] = {}
    backbones = run.profile.backbones
    for fold in range(run.profile.folds):
        for backbone in backbones:
            folder = run.nap_dir(backbone, fold)
            if (folder / "summary.json").is_file() and not run.force:
                continue
            result = profile_model(run, prep, backbone, fold)
            if run.dist.is_main:
                result.save(folder / "nap.npz")
                plots = save_plots(result, folder)
                summary = _summary(run, result, backbone, fold, plots)
                write_json(folder / "summary.json", summary)
                done[f"{backbone}/fold{fold}"] = summary
            run.dist.barrier()
        folder = run.nap_dir("ensemble", fold)
        redo = run.force or any(f"{b}/fold{fold}" in done for b in backbones)
        if run.dist.is_main and (redo or not (folder / "summary.json").is_file()):
            members = [NAPResult.load(run.nap_dir(b, fold) / "nap.npz") for b in backbones]
            result = ensemble_result(members)
            result.save(folder / "nap.npz")
            summary = _summary(run, result, "ensemble", fold, save_plots(result, folder))
            summary["members"] = list(backbones)
            write_json(folder / "summary.json", summary)
            done[f"ensemble/fold{fold}"] = summary
        run.dist.barrier()
    if done:
        run.record_time("profile", time.perf_counter() - t0, models=sorted(done))
    return done
