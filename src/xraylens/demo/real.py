"""``xraylens demo --data DIR``: the demo on real chest X-rays, where no lesion mask exists.

DIR holds the two datasets in their own layouts (covid-chestxray with ``metadata.csv``, Kermany
``{train,test}/{NORMAL,PNEUMONIA}``), or one of them, e.g. ``../shared/data``. Steps:

1. a patient-level 60/40 split (:func:`xraylens.data.splits.paper_splits`), a seeded sample of
   ``n_train`` / ``n_test`` images, preprocessed at ``size`` px;
2. train a ResNet18 on the labels with enough positives;
3. test AUC per label, and per data source the mean COVID-19 probability;
4. explain test images that have a lung mask (a few per group that the model has as a label),
   each for that label, and measure
   the share of positive attribution inside the lungs against the lungs' area share (chance),
   and the pointing game on the lungs;
5. NAPs of the test images for the groups COVID-19, Pneumonia and No Finding (as the paper)
   and for the data sources; measure how much of each NAP's energy lies in the image border
   (the outer ``BORDER`` of each side), where the sources differ (padding, exposure, text);
6. a report (Markdown + PNGs + ``results.json``).

Real data carries no ground truth for "the right reason"; the report measures and shows, and
makes no pass/fail claim.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

import xraylens as xl
from xraylens.demo import metrics
from xraylens.demo.config import DemoConfig, Phases
from xraylens.demo.train import predict
from xraylens.errors import ImageReadError, InputError

GROUPS = ("COVID-19", "Pneumonia", "No Finding")
BORDER = 0.1  # share of each side counted as border
MIN_POSITIVES = 10  # a label is trained when the training sample has this many positives


def border_mask(size: int, share: float = BORDER) -> np.ndarray:
    """Bool [size, size]: True in the outer ``share`` of each side."""
    b = max(1, round(share * size))
    m = np.zeros((size, size), dtype=bool)
    m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
    return m


def _sample(indices: list[int], n: int, rng: np.random.Generator) -> list[int]:
    if len(indices) <= n:
        return list(indices)
    return sorted(rng.choice(indices, size=n, replace=False).tolist())


def _load(ds, indices: list[int], log) -> tuple[torch.Tensor, list[int], dict[str, str]]:
    images, kept, failed = [], [], {}
    for i in indices:
        try:
            images.append(ds[i][0])
            kept.append(i)
        except ImageReadError as exc:
            failed[str(ds.records[i]["path"])] = exc.cause
    if failed:
        log(f"    skipped {len(failed)} unreadable images")
    if not images:
        raise InputError("no image of the sample could be read")
    return torch.stack(images), kept, failed


def _lung_mask(record: dict, size: int) -> np.ndarray | None:
    if not record.get("mask_path"):
        return None
    try:
        return xl.data.preprocess_mask(xl.data.read_mask(record["mask_path"]), size).numpy()
    except (ImageReadError, InputError):
        return None


def run_real(cfg: DemoConfig, root: Path, out: Path, log: Callable[[str], None] = print):
    """Run the real-data demo on ``root`` into ``out``; returns the measured numbers."""
    from xraylens.core.atomic import atomic_write_text
    from xraylens.data.folders import open_data
    from xraylens.demo.report_real import real_document, real_markdown, write_real_figures
    from xraylens.demo.synthetic import _train_summary, attributor, train_logged
    from xraylens.profile import membership_from_records, membership_from_targets

    phases = Phases(6, log)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    with phases.phase("data", f"reading a sample of {root} at {cfg.size} px"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds, described = open_data(root, cfg.size)
        if not hasattr(ds, "targets"):
            raise InputError(f"--data {root}: expected the covid-chestxray or Kermany layout")
        log(f"    {described}")
        split = xl.data.paper_splits(ds, 1, seed=cfg.seed)[0].indices(ds)
        x_train, train_idx, bad_train = _load(ds, _sample(split["train"], cfg.n_train, rng), log)
        x_test, test_idx, bad_test = _load(ds, _sample(split["test"], cfg.n_test, rng), log)
        counts = ds.targets[train_idx].sum(0)
        labels = tuple(name for name, c in zip(ds.labels, counts.tolist()) if c >= MIN_POSITIVES)
        cols = [ds.labels.index(name) for name in labels]
        y_train, y_test = ds.targets[train_idx][:, cols], ds.targets[test_idx][:, cols]
        records = [ds.records[i] for i in test_idx]
    clf = xl.get_classifier("resnet18", labels=labels, input_size=cfg.size)
    with phases.phase("train", f"training resnet18 ({cfg.steps} steps, {len(labels)} labels)"):
        fit = train_logged(clf, x_train, y_train, cfg, log)
    with phases.phase("evaluate", f"evaluating on {len(test_idx)} test images"):
        probs = predict(clf, x_test)
        auc = {name: metrics.auc(probs[:, j], y_test[:, j]) for j, name in enumerate(labels)}
        sources = sorted({r["source"] for r in records})
        by_source = {}
        if "COVID-19" in labels:
            j = labels.index("COVID-19")
            for s in sources:
                rows = [n for n, r in enumerate(records) if r["source"] == s]
                by_source[s] = float(probs[rows, j].mean())
        log(f"    test AUC {', '.join(f'{k} {v:.3f}' for k, v in auc.items())}")
    methods = [m for m in cfg.methods if m in xl.list_attributors()]
    missing = [m for m in cfg.methods if m not in methods]
    per_group = max(1, cfg.explain_per_class)
    chosen, lungs = [], []
    explained = [g for g in GROUPS if g in labels] or list(labels)
    for group in explained:
        picked = 0
        for n, rec in enumerate(records):
            if picked >= per_group or n in chosen or group not in rec["labels"]:
                continue
            mask = _lung_mask(rec, cfg.size)
            if mask is not None and mask.any():
                chosen.append(n)
                lungs.append(mask)
                picked += 1
    targets = [[next(g for g in explained if g in records[n]["labels"])] for n in chosen]
    attribution: dict[str, dict[str, Any]] = {}
    maps: dict[str, np.ndarray] = {}
    with phases.phase("explain", f"explaining {len(chosen)} test images with {methods}"):
        for method in methods if chosen else []:
            start = time.perf_counter()
            res = attributor(method, cfg).attribute(clf, x_test[chosen], targets)
            maps[method] = res.values[:, 0].sum(1).numpy()
            rows = [metrics.concentration(maps[method][k], lungs[k]) for k in range(len(chosen))]
            hits = [metrics.pointing_hit(maps[method][k], lungs[k]) for k in range(len(chosen))]
            attribution[method] = {
                "seconds": time.perf_counter() - start,
                "lung_share": float(np.nanmean([r["share"] for r in rows])),
                "lung_chance": float(np.mean([r["chance"] for r in rows])),
                "lung_ratio": float(np.nanmean([r["ratio"] for r in rows])),
                "pointing": float(np.mean(hits)),
            }
            a = attribution[method]
            log(
                f"    {method:<22} share in the lungs {a['lung_share']:.2f} (chance "
                f"{a['lung_chance']:.2f}, x{a['lung_ratio']:.1f}), pointing game "
                f"{a['pointing']:.0%} ({a['seconds']:.1f} s)"
            )
    with phases.phase("profile", f"NAPs of {len(test_idx)} test images"):
        test_targets = ds.targets[test_idx]
        present = [g for g in GROUPS if test_targets[:, ds.labels.index(g)].any()]
        naps = {}
        prof = xl.get_profiler("nap", groups=present)
        member = membership_from_targets(test_targets, ds.labels, present)
        src = xl.get_profiler("nap", layers=("input", "maxpool", "layer1"), groups=sources)
        src_member = membership_from_records(records, lambda r: r["source"], sources)
        for start in range(0, len(test_idx), 50):
            stop = start + 50
            prof.update(clf, x_test[start:stop], member[start:stop])
            src.update(clf, x_test[start:stop], src_member[start:stop])
        naps["labels"], naps["sources"] = prof.result(), src.result()
        border = border_mask(cfg.size)
        profile: dict[str, dict[str, Any]] = {}
        for kind, nap in naps.items():
            profile[kind] = {
                layer: {
                    g: metrics.energy_concentration(nap.nap[layer][g], border) for g in nap.groups
                }
                for layer in nap.layers
            }
        for kind, table in profile.items():
            layer = next(iter(table))
            shares = ", ".join(
                f"{g} {v['share']:.2f} (x{v['ratio']:.1f})" for g, v in table[layer].items()
            )
            log(f"    {kind}: {layer} NAP energy in the border: {shares}")
    result: dict[str, Any] = {
        "mode": "real",
        "data": str(root),
        "config": attrs.asdict(cfg),
        "labels": list(labels),
        "methods": methods,
        "missing_methods": missing,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "failed": {**bad_train, **bad_test},
        "train": _train_summary(fit),
        "test": {"auc": auc, "covid_probability_by_source": by_source},
        "attribution": attribution,
        "profile": profile,
        "nap_counts": {k: v.counts for k, v in naps.items()},
        "border": BORDER,
    }
    with phases.phase("report", f"writing figures to {out}"):
        files = write_real_figures(
            out,
            result,
            images=x_test[chosen].numpy() if chosen else None,
            maps=maps,
            lungs=lungs,
            labels=[t[0] for t in targets],
            naps=naps,
            border=border,
        )
    result["timings"] = phases.table()
    result["checks"] = {}
    report = out / "report.md"
    atomic_write_text(report, real_markdown(result, files))
    from xraylens.report import write_report

    html = write_report(real_document(result, files, out), out, formats=("html",))["html"]
    result["report"] = str(report)
    result["report_html"] = str(html)
    return result
