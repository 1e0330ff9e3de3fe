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


def profile(run: Run) -> dict[str, Any]:
    """NAPs of every backbone on every fold's test images (skips finished ones)."""
    t0 = time.perf_counter()
    prep = load_prepared(run)
    done: dict[str, Any] = {}
    for fold in range(run.profile.folds):
        for backbone in run.profile.backbones:
            folder = run.nap_dir(backbone, fold)
            if (folder / "summary.json").is_file() and not run.force:
                continue
            result = profile_model(run, prep, backbone, fold)
            if run.dist.is_main:
                result.save(folder / "nap.npz")
                plots = save_plots(result, folder)
                summary = {
                    "model": backbone,
                    "fold": fold,
                    "images": result.n_images,
                    "counts": result.counts,
                    "layers": list(result.layers),
                    "inactive_fraction": result.inactive_fraction,
                    "zero_fraction": result.zero_fraction,
                    "plots": plots,
                    "world_size": run.dist.world,
                }
                write_json(folder / "summary.json", summary)
                done[f"{backbone}/fold{fold}"] = summary
            run.dist.barrier()
    if done:
        run.record_time("profile", time.perf_counter() - t0, models=sorted(done))
    return done
