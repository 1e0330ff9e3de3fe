"""The offline demo on synthetic phantoms, where the ground truth is known.

1. Data: phantoms (:mod:`xraylens.data.phantoms`) of three classes (No Finding, COVID-19,
   Bacterial Pneumonia) with known lesion masks, and a planted shortcut: a bright corner marker
   in most COVID-19 images and few others.
2. Train two ResNet18s (greyscale, the labels that occur): one on clean phantoms, one on
   phantoms where the marker is in every COVID-19 image and no other (a perfect shortcut).
3. Evaluate: test AUC per label, and the shortcut's pull: the model's COVID-19 probability on
   the same phantoms drawn without and with the marker.
4. Explain test images with several methods, each for its finding; measure how much positive
   attribution lands in the lesion (vs. the lesion's area share: chance), the pointing game,
   and on marker images how much lands on the marker.
5. Audit both models (:mod:`xraylens.audit`): the share of attribution on the lungs, the
   border, the corners and the markers found in each image, against their area; flags.
6. Profile the test set with NAPs (groups COVID-19, Bacterial Pneumonia, No Finding); measure
   how much of the COVID-19 NAP's energy lies in the marker region, layer by layer.
7. Write the report (Markdown + PNGs, and one self-contained HTML file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import xraylens as xl
from xraylens.demo import metrics
from xraylens.demo.config import DemoConfig, Phases
from xraylens.demo.report import _json
from xraylens.demo.train import predict, train_classifier

CLASSES = ("No Finding", "COVID-19", "Bacterial Pneumonia")
LESION_CLASSES = ("COVID-19", "Bacterial Pneumonia")
SHORTCUT_LABEL = "COVID-19"
NAP_GROUPS = ("COVID-19", "Bacterial Pneumonia", "No Finding")


def _available(methods: tuple[str, ...]) -> tuple[list[str], list[str]]:
    known = set(xl.list_attributors())
    return [m for m in methods if m in known], [m for m in methods if m not in known]


def attributor(method: str, cfg: DemoConfig):
    """The demo's attributor ``method`` with its demo settings (IG steps, occlusion window)."""
    if method == "integrated_gradients":
        return xl.get_attributor(method, n_steps=cfg.ig_steps)
    if method == "occlusion":
        return xl.get_attributor(method, window=cfg.occlusion_window, stride=cfg.occlusion_stride)
    return xl.get_attributor(method)


def _pick(records: list[dict], finding: str, shortcut: bool, k: int) -> list[int]:
    return [
        i for i, r in enumerate(records) if r["finding"] == finding and r["shortcut"] == shortcut
    ][:k]


def _counterfactual(clf, cfg: DemoConfig, finding: str, n: int) -> dict[str, float]:
    """Mean P(COVID-19) on ``n`` phantoms of ``finding`` drawn without and with the marker
    (same seed: identical images but for the marker)."""
    pairs = [
        [
            torch.from_numpy(
                xl.data.make_phantom(finding, cfg.size, seed=(cfg.seed + 7, i), shortcut=sc).image
            )
            for i in range(n)
        ]
        for sc in (None, "marker")
    ]
    j = clf.label_index(SHORTCUT_LABEL)
    without, with_marker = (predict(clf, torch.stack(p)[:, None])[:, j] for p in pairs)
    return {
        "without_marker": float(without.mean()),
        "with_marker": float(with_marker.mean()),
        "flipped": float(((without < 0.5) & (with_marker >= 0.5)).float().mean()),
    }


def _nanmean(values: list[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _explain_one(method: str, cfg: DemoConfig, clf, x, targets, records) -> tuple:
    """Maps [n, H, W] of ``method`` and their measures against the known masks."""
    start = time.perf_counter()
    res = attributor(method, cfg).attribute(clf, x, targets)
    maps = res.values[:, 0].sum(1).numpy()  # channels summed: [n, H, W]
    rows = []
    for n, rec in enumerate(records):
        row = {"finding": rec["finding"], "shortcut": rec["shortcut"]}
        if rec["finding"] in LESION_CLASSES and not rec["shortcut"]:
            row["lesion"] = metrics.concentration(maps[n], rec["lesion_mask"])
            row["lungs"] = metrics.concentration(maps[n], rec["lung_mask"])
            tolerance = max(1, cfg.size // 48)
            row["hit"] = metrics.pointing_hit(maps[n], rec["lesion_mask"], tolerance=tolerance)
        if rec["shortcut"]:
            row["marker"] = metrics.concentration(maps[n], rec["shortcut_mask"])
        rows.append(row)
    lesion = [r for r in rows if "lesion" in r]
    marker = [r for r in rows if "marker" in r]
    summary = {
        "seconds": time.perf_counter() - start,
        "lesion_share": _nanmean([r["lesion"]["share"] for r in lesion]),
        "lesion_chance": _nanmean([r["lesion"]["chance"] for r in lesion]),
        "lesion_ratio": _nanmean([r["lesion"]["ratio"] for r in lesion]),
        "lung_share": _nanmean([r["lungs"]["share"] for r in lesion]),
        "pointing": _nanmean([float(r["hit"]) for r in lesion]),
        "marker_share": _nanmean([r["marker"]["share"] for r in marker]),
        "marker_chance": _nanmean([r["marker"]["chance"] for r in marker]),
        "marker_ratio": _nanmean([r["marker"]["ratio"] for r in marker]),
        "images": rows,
    }
    return maps, summary


def _profile(clf, test) -> tuple[Any, dict[str, Any], np.ndarray]:
    """NAPs of the test set and, per layer, the COVID-19 NAP's energy in the marker region and
    in the COVID-19 lesion region."""
    from xraylens.profile import membership_from_targets

    prof = xl.get_profiler("nap", groups=NAP_GROUPS)
    member = membership_from_targets(test.targets, test.labels, NAP_GROUPS)
    for start in range(0, len(test), 50):
        prof.update(clf, test.images[start : start + 50], member[start : start + 50])
    nap = prof.result()
    marker_region = np.any([r["shortcut_mask"] for r in test.records], axis=0)
    covid = [r["lesion_mask"] for r in test.records if r["finding"] == SHORTCUT_LABEL]
    lesion_region = np.any(covid, axis=0)
    profile = {
        layer: {
            "shape": list(nap.shape(layer)),
            "marker": metrics.energy_concentration(nap.nap[layer][SHORTCUT_LABEL], marker_region),
            "lesion": metrics.energy_concentration(nap.nap[layer][SHORTCUT_LABEL], lesion_region),
        }
        for layer in nap.layers
    }
    return nap, profile, marker_region


def _train_summary(fit) -> dict[str, Any]:
    return {
        "steps": fit.steps,
        "seconds": fit.seconds,
        "stopped_early": fit.stopped_early,
        "final_loss": float(np.mean(fit.losses[-10:])),
        "losses": list(fit.losses),
    }


def train_logged(clf, x, y, cfg: DemoConfig, log: Callable[[str], None]):
    """:func:`train_classifier` with the demo's settings; says so when the limit cut it short."""
    fit = train_classifier(
        clf,
        x,
        y,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        time_limit=cfg.time_limit,
        progress=None,
    )
    if fit.stopped_early:
        log(
            f"    time limit {cfg.time_limit:.0f} s reached after {fit.steps} of {cfg.steps} "
            "steps (a busy or slow machine): the model is under-trained"
        )
    return fit


def _audit(models: dict[str, dict[str, np.ndarray]], x, records, targets) -> dict[str, Any]:
    """The shortcut audit of every model's maps on the explained images (lungs known)."""
    from xraylens import audit
    from xraylens.evaluate import Results

    lungs = np.stack([r["lung_mask"] for r in records])
    regions = audit.stack_regions(x, lungs)
    ids = [str(i) for i in range(len(records))]
    rows = Results.concat(
        audit.audit_maps(
            maps[:, None],
            x,
            model=model,
            method=method,
            labels=targets,
            image_ids=ids,
            regions=regions,
        )  # fmt: skip
        for model, by_method in models.items()
        for method, maps in by_method.items()
    )
    summary = audit.summarise(rows)
    flags = audit.flag(summary)
    return {
        "summary": summary,
        "flags": flags,
        "verdicts": audit.verdicts(summary, flags),
        "thresholds": audit.describe_thresholds(),
        "markers_found": int(regions["markers"].any(axis=(1, 2)).sum()),
        "markers_planted": int(sum(bool(r["shortcut"]) for r in records)),
    }


def _evaluate(clf, cfg: DemoConfig, test, y_test, labels, log, name: str) -> dict[str, Any]:
    probs = predict(clf, test.images)
    auc = {lab: metrics.auc(probs[:, j], y_test[:, j]) for j, lab in enumerate(labels)}
    accuracy = float(((probs >= 0.5) == (y_test > 0.5)).float().mean())
    n_cf = max(8, cfg.n_test // 6)
    reliance = {
        f: _counterfactual(clf, cfg, f, n_cf) for f in ("No Finding", "Bacterial Pneumonia")
    }
    cf = reliance["No Finding"]
    log(
        f"    {name}: test AUC {', '.join(f'{k} {v:.3f}' for k, v in auc.items())}; "
        f"P(COVID-19) on No Finding phantoms {cf['without_marker']:.3f} without the marker, "
        f"{cf['with_marker']:.3f} with it"
    )
    return {"auc": auc, "accuracy": accuracy, "n": len(test)}, reliance, probs


def run_synthetic(cfg: DemoConfig, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the phantom demo into ``out``; returns every measured number (and the report path).

    Two ResNet18s: ``clean`` (trained without any marker) and ``marker`` (trained on phantoms
    where the marker is a perfect COVID-19 shortcut); both are tested on the same phantoms."""
    import attrs

    from xraylens.core.atomic import atomic_write_text
    from xraylens.demo.report import checks, write_synthetic_figures
    from xraylens.demo.report_doc import synthetic_document

    methods, missing = _available(cfg.methods)
    if not methods:
        raise xl.XraylensError(
            f"none of the demo's methods {list(cfg.methods)} is registered; "
            f"attributors: {xl.list_attributors()}"
        )
    phases = Phases(7, log)
    torch.manual_seed(cfg.seed)
    with phases.phase(
        "data", f"drawing 2 x {cfg.n_train} + {cfg.n_test} phantoms at {cfg.size} px"
    ):
        shortcut = xl.data.Shortcut("marker", SHORTCUT_LABEL, cfg.shortcut_p, cfg.shortcut_p_other)
        confound = xl.data.Shortcut("marker", SHORTCUT_LABEL, cfg.confound_p, cfg.confound_p_other)
        train = xl.data.Phantoms(cfg.n_train, cfg.size, seed=cfg.seed, classes=CLASSES)
        train_m = xl.data.Phantoms(
            cfg.n_train, cfg.size, seed=cfg.seed, classes=CLASSES, shortcut=confound
        )
        test = xl.data.Phantoms(
            cfg.n_test, cfg.size, seed=cfg.seed + 1, classes=CLASSES, shortcut=shortcut
        )
        present = train.targets.sum(0) > 0
        labels = tuple(name for name, p in zip(train.labels, present.tolist()) if p)
        cols = [train.labels.index(name) for name in labels]
        y_test = test.targets[:, cols]
    clf = xl.get_classifier("resnet18", labels=labels, input_size=cfg.size)
    clf_m = xl.get_classifier("resnet18", labels=labels, input_size=cfg.size)
    with phases.phase(
        "train", f"training two resnet18s, clean and marker-confounded ({cfg.steps} steps each)"
    ):
        fit = train_logged(clf, train.images, train.targets[:, cols], cfg, log)
        fit_m = train_logged(clf_m, train_m.images, train_m.targets[:, cols], cfg, log)
    with phases.phase("evaluate", "evaluating both on the test phantoms"):
        test_sum, reliance, probs = _evaluate(clf, cfg, test, y_test, labels, log, "clean")
        test_m, reliance_m, probs_m = _evaluate(clf_m, cfg, test, y_test, labels, log, "marker")
    k = cfg.explain_per_class
    chosen = [i for f in LESION_CLASSES for i in _pick(test.records, f, False, k)]
    chosen += _pick(test.records, SHORTCUT_LABEL, True, max(1, k // 2))
    chosen += _pick(test.records, "No Finding", True, max(1, k // 4))
    records = [test.records[i] for i in chosen]
    x = test.images[chosen]
    targets = [[rec["finding"]] for rec in records]
    maps: dict[str, np.ndarray] = {}
    maps_m: dict[str, np.ndarray] = {}
    attribution: dict[str, dict[str, Any]] = {}
    attribution_m: dict[str, dict[str, Any]] = {}
    with phases.phase(
        "explain", f"explaining {len(chosen)} test images with {methods}, both models"
    ):
        for method in methods:
            maps[method], a = _explain_one(method, cfg, clf, x, targets, records)
            maps_m[method], am = _explain_one(method, cfg, clf_m, x, targets, records)
            attribution[method], attribution_m[method] = a, am
            log(
                f"    {method:<22} clean: lesion share {a['lesion_share']:.2f} (chance "
                f"{a['lesion_chance']:.2f}, x{a['lesion_ratio']:.1f}), pointing game "
                f"{a['pointing']:.0%}; marker model: marker share {am['marker_share']:.2f} "
                f"({a['seconds'] + am['seconds']:.1f} s)"
            )
    with phases.phase("audit", "shortcut audit of both models' maps"):
        audit = _audit({"clean": maps, "marker": maps_m}, x, records, targets)
        for model, raised in audit["verdicts"].items():
            log(f"    {model}: {', '.join(raised) if raised else 'no flag'}")
    with phases.phase("profile", f"NAPs of {len(test)} test phantoms, groups {list(NAP_GROUPS)}"):
        nap, profile, marker_region = _profile(clf, test)
        for layer, p in profile.items():
            m = p["marker"]
            log(
                f"    {layer:<10} COVID-19 NAP energy in the marker region {m['share']:.2f} "
                f"(area {m['chance']:.3f}, x{m['ratio']:.1f}), peak there: "
                f"{'yes' if m['peak_inside'] else 'no'}"
            )
        from xraylens.audit import nap_outside_lungs

        lung_region = np.mean([r["lung_mask"] for r in test.records], axis=0) >= 0.5
        outside = nap_outside_lungs(nap, lung_region, groups=[SHORTCUT_LABEL])
    result: dict[str, Any] = {
        "mode": "synthetic",
        "config": attrs.asdict(cfg),
        "labels": list(labels),
        "methods": methods,
        "missing_methods": missing,
        "train": _train_summary(fit),
        "test": test_sum,
        "reliance": reliance,
        "attribution": attribution,
        "shortcut_model": {
            "train": _train_summary(fit_m),
            "test": test_m,
            "reliance": reliance_m,
            "attribution": attribution_m,
        },
        "audit": audit,
        "profile": profile,
        "nap_outside_lungs": outside,
        "nap_counts": nap.counts,
    }
    with phases.phase("report", f"writing figures and the report to {out}"):
        files = write_synthetic_figures(
            out,
            result,
            images=x.numpy(),
            maps=maps,
            records=records,
            nap=nap,
            marker_region=marker_region,
        )
        result["timings"] = phases.table()
        result["checks"] = checks(result)
        doc = synthetic_document(
            result,
            files,
            out,
            images=x.numpy()[:, 0],
            maps={"clean": maps, "marker": maps_m},
            probs={"clean": probs[chosen], "marker": probs_m[chosen]},
            records=records,
        )
        from xraylens.report import write_report

        written = write_report(doc, out)
    result["timings"] = phases.table()
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=_json) + "\n")
    result["report"] = str(written["md"])
    result["report_html"] = str(written["html"])
    return result
