"""Step ``explain``: every method x model x test image x label, saved and drawn.

For each fold of ``explain_folds``, a sample of ``explain_images`` test images balanced over
the NAP groups (every test image when None) is explained by every backbone, and by their
``ensemble`` (an :class:`xl.Ensemble`, mean of probabilities; its CAM maps sum the members'
CAM layers, see :class:`xl.attr.GradCam`), with every method of the profile. Each model
explains, per image, the labels that are **true or predicted** by that model (probability
above the threshold), as per-image targets; the explained output is the sigmoid probability
(``explain_output="probs"``, as the paper) or the logit.

Outputs in ``explain/fold<k>/<image>/``:

- ``targets.json``: the image id, its true labels, each model's probabilities and targets;
- ``<backbone>/<method>.npz``: the :class:`xl.Attribution` (lossless; ``Attribution.load``);
- ``<backbone>/<method>.png``: the image with one overlay per explained label;
- ``figure_<label>.png``: the paper's layout for one label, rows = models, columns = methods.

Resumable: an output is skipped when its files exist (``--force`` redoes them); every file is
written atomically, so an interrupted run loses nothing it finished and never leaves half a file.
Under ``torchrun`` each rank explains every ``world``-th image; rank 0 then writes ``index.json``.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import xraylens as xl
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import read_json, round_robin, update_json
from examples.covid_cxr.ensemble import explains, load_ensemble
from examples.covid_cxr.inference import load_model
from examples.covid_cxr.prepare import Prepared, load_prepared
from examples.covid_cxr.profile import exclusive_membership
from xraylens.errors import InputError


def image_key(image_id: str) -> str:
    """A folder name for an image id: ``kermany:test/NORMAL/IM-1.jpeg`` -> ``kermany__test__...``"""
    stem = re.sub(r"\.(png|jpe?g|dcm)$", "", image_id, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "__", stem)


def label_slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def build_attributors(run: Run) -> tuple[dict[str, xl.Attributor], list[str]]:
    """One attributor per method of the profile; notes on presets that do not exist."""
    p = run.profile
    known = xl.list_attributors()
    missing = [m for m in p.methods if m not in known]
    if missing:
        raise InputError(
            f"attribution methods {missing} are not registered (registered: {known}); "
            "pass --methods with registered ones"
        )
    attributors, notes = {}, []
    for method in p.methods:
        params = dict(p.method_params.get(method, {}))
        preset = params.pop("preset", None)
        if preset is not None:
            presets = getattr(type(xl.get_attributor(method)), "presets", {})
            if preset in presets:
                params["preset"] = preset
            else:
                notes.append(f"{method}: no {preset!r} preset, defaults used")
        attributors[method] = xl.get_attributor(method, **params)
    return attributors, notes


def targets_of(probs: torch.Tensor, truth: torch.Tensor, labels, threshold: float) -> list[str]:
    """Labels true for the image or predicted by the model (label order)."""
    on = (truth > 0.5) | (probs > threshold)
    return [labels[i] for i in torch.nonzero(on).flatten().tolist()]


def explain_image(
    run: Run,
    prep: Prepared,
    pos: int,
    folder: Path,
    models: dict[str, xl.Classifier],
    attributors: dict[str, xl.Attributor],
) -> dict[str, Any]:
    """All outputs of one image (skipping those already written); ``info["written"]`` counts
    the files written now. The maps go through :func:`xraylens.pipeline.explain_images`
    (atomic, resumable per (image, method), probabilities in every ``.npz`` and PNG)."""
    from xraylens import pipeline, viz

    p, d = run.profile, run.dist
    x, y = prep.store.batch([pos])
    image_id = prep.store.ids[pos]
    info: dict[str, Any] = {
        "id": image_id,
        "truth": [prep.labels[i] for i in torch.nonzero(y[0] > 0.5).flatten().tolist()],
        "models": {},
    }
    written = 0

    def counted(key: str, method: str) -> None:
        nonlocal written
        written += 2  # the .npz and its PNG
        run.work_done("explain")

    for backbone, clf in models.items():
        probs = clf.predict_proba(x.to(d.device))[0].float().cpu()
        targets = targets_of(probs, y[0], prep.labels, p.threshold)
        info["models"][backbone] = {
            "targets": targets,
            "probs": {lab: round(float(v), 6) for lab, v in zip(prep.labels, probs)},
        }
        pipeline.explain_images(
            clf,
            {m: a for m, a in attributors.items() if explains(a, clf)},  # EigenCAM: no ensemble map
            [pipeline.Item(key=f"{folder.name}/{backbone}", load=lambda: x[0], id=image_id)],
            folder.parent,
            targets=lambda _probs, _items, t=targets: [t],  # true or predicted, as above
            output=p.explain_output,
            batch_size=1,
            force=run.force,
            progress=False,
            shard=pipeline.Shard(),  # this rank's images were chosen by the caller
            on_map=counted,
        )
    update_json(folder / "targets.json", info)  # a rerun leaves finished images untouched
    explained = []
    for backbone in models:
        explained += [t for t in info["models"][backbone]["targets"] if t not in explained]
    for label in explained:
        path = folder / f"figure_{label_slug(label)}.png"
        if path.is_file() and not run.force:
            continue
        results = {
            b: {
                m: xl.Attribution.load(folder / b / f"{m}.npz")
                for m in attributors
                if explains(attributors[m], models[b])
            }
            for b in models
        }
        fig = viz.plot_models_methods(x[0], results, label, title=f"{label}: {info['id']}")
        viz.save_figure(fig, path)
        written += 1
        run.work_done("explain")
    return {**info, "written": written}


def chosen_images(run: Run, prep: Prepared, fold: int) -> list[int]:
    """Store positions of the test images to explain: every one, or a seeded sample balanced
    over the NAP groups (COVID-19, other pneumonia, No Finding; images in none come last)."""
    return balanced_sample(run, prep, prep.part(fold, "test"), run.profile.explain_images, fold)


def balanced_sample(
    run: Run, prep: Prepared, positions: list[int], n: int | None, fold: int
) -> list[int]:
    """``n`` of the store ``positions`` (all when None or more), drawn round-robin over the NAP
    groups with the fold's seed, in store order."""
    if n is None or n >= len(positions):
        return list(positions)
    groups = run.profile.nap_groups
    member = exclusive_membership(prep.store.targets[positions], prep.labels, groups)
    rng = np.random.default_rng(run.profile.seed + fold)
    queues = [
        list(rng.permutation(torch.nonzero(member[:, g]).flatten().tolist()))
        for g in range(len(groups))
    ]
    rest = list(rng.permutation(torch.nonzero(~member.any(dim=1)).flatten().tolist()))
    chosen = round_robin(queues, n)
    chosen += [int(i) for i in rest[: n - len(chosen)]]
    return [positions[i] for i in sorted(chosen)]


def explain(run: Run) -> dict[str, Any]:
    """Explain the chosen test images of every fold in ``explain_folds``."""
    t0 = time.perf_counter()
    attributors, notes = build_attributors(run)
    prep = load_prepared(run)
    d = run.dist
    index: dict[str, Any] = {}
    written = 0
    for fold in run.profile.explain_folds:
        images = chosen_images(run, prep, fold)
        models = {b: load_model(run, b, fold) for b in run.profile.backbones}
        models["ensemble"] = load_ensemble(run, fold, models)  # explained like a sixth model
        root = run.explain_dir(fold)
        mine = d.shard(images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # captum's per-call chatter
            for k, pos in enumerate(mine):
                if run.show_progress:
                    print(
                        f"explain fold {fold}: image {k + 1}/{len(mine)} (rank {d.rank})",
                        flush=True,
                    )
                info = explain_image(
                    run, prep, pos, root / image_key(prep.store.ids[pos]), models, attributors
                )
                written += info["written"]
        d.barrier()
        if d.is_main:
            entries = []
            for pos in images:
                key = image_key(prep.store.ids[pos])
                entry = read_json(root / key / "targets.json")
                entry["folder"] = key
                entry["figures"] = sorted(f.name for f in (root / key).glob("figure_*.png"))
                entries.append(entry)
            index[f"fold{fold}"] = entries
            update_json(
                root / "index.json",
                {
                    "methods": list(attributors),
                    "params": {m: a.params for m, a in attributors.items()},
                    "notes": notes,
                    "output": run.profile.explain_output,
                    "threshold": run.profile.threshold,
                    "images": entries,
                },
            )
    written = sum(d.gather_objects(written))
    if written:
        run.record_time(
            "explain", time.perf_counter() - t0, methods=list(attributors), files=written
        )
    d.barrier()
    return index
