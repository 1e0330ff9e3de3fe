"""The recipe's ``report`` step writes ``report.html`` whose Table 2 is the evaluate step's."""

from __future__ import annotations

import html
import json

import numpy as np

import xraylens as xl
from examples.covid_cxr import config
from examples.covid_cxr.context import Run
from examples.covid_cxr.evaluate import save_predictions, score_model
from examples.covid_cxr.metrics import fmt
from examples.covid_cxr.report import report


def test_report_html_holds_the_evaluate_numbers(tmp_path):
    run = Run(profile=config.get_profile("smoke"), data="phantoms", out=tmp_path, progress=False)
    labels = list(xl.data.PAPER_LABELS)
    rng = np.random.default_rng(0)
    for backbone in run.profile.backbones:  # predictions as the evaluate step stores them
        for fold in range(run.profile.folds):
            targets = (rng.random((30, len(labels))) < 0.3).astype(np.float32)
            probs = np.clip(targets * 0.6 + rng.random(targets.shape) * 0.5, 0, 1)
            save_predictions(run.predictions(backbone, fold), probs, targets,
                             [f"img{i}" for i in range(30)])  # fmt: skip
    scored = {b: score_model(run, b, labels, run.profile.folds) for b in run.profile.backbones}
    models = {b: s["summary"] for b, s in scored.items()}
    (tmp_path / "metrics" / "models.json").write_text(
        json.dumps({"threshold": run.profile.threshold, "labels": labels, "models": models})
    )
    report(run)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page.split("<main>")[1]
    checked = 0
    for s in models.values():
        for avg in ("micro", "macro"):
            for fig in ("precision", "recall", "f1"):
                cell = fmt(s[avg][fig])
                assert f"<td>{html.escape(cell)}</td>" in page and f"| {cell} |" in md
                checked += 1
    assert checked == 6 * len(models)
    first = next(iter(models.values()))["per_label"]
    for lab in labels:  # per-label F1: one row per label, a cell per model
        cells = [f"{lab} ({first[lab]['support']})"] + [fmt(s["per_label"][lab]["f1"]) for s in
                                                        models.values()]  # fmt: skip
        assert "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" in page
    assert "Provenance" in page and "Results on the test splits" in page


def test_report_html_holds_the_audit_panels_curves_and_nap_energy(tmp_path):
    """The steps the report reads, on phantoms (lung masks of their own): the audit table and
    flags, panels image x model x method with probabilities, the deletion / insertion curves
    (the numbers of report/curves_fold0.csv) and the NAP energy outside the lungs (the audit's
    own numbers)."""
    from examples.covid_cxr import cli
    from examples.covid_cxr.evaluate_maps import lung_masks
    from examples.covid_cxr.prepare import load_prepared
    from xraylens import audit
    from xraylens.evaluate.results import CurveTable
    from xraylens.profile import NAPResult
    from xraylens.report.outputs import typical_lungs

    out = tmp_path / "run"
    steps = "prepare,train,explain,evaluate-maps,profile,report"
    assert cli.main([steps, "--profile", "smoke", "--data", "phantoms", "--out", str(out),
                     "--no-progress"]) == 0  # fmt: skip
    page = (out / "report.html").read_text(encoding="utf-8")
    for heading in ("Attribution inside the lungs", "Shortcut audit",
                    "Deletion and insertion curves (fold 0)",
                    "Per-image maps (fold 0)", "Neuron Activation Profiles"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page, heading
    assert "share lungs (x area)" in page and "reads markers" in page  # the rules, the table
    assert "(truth: " in page and "for <strong>" in page  # panels: probability beside each map
    curves = CurveTable.read(out / "report" / "curves_fold0.csv")
    assert {r["curve"] for r in curves} == {"deletion", "insertion"}
    for (_, _, _), (_, ys, _) in curves.mean().items():
        for y in ys:
            assert f'data-v="{y!r}">{y:.3f}</td>' in page  # the exact value, shown to 3
    run = Run(profile=config.get_profile("smoke"), data="phantoms", out=out, progress=False)
    prep = load_prepared(run)
    ids = [prep.store.ids[i] for i in prep.part(0, "test")]
    nap = NAPResult.load(run.nap_dir("resnet18", 0) / "nap.npz")
    rows = audit.nap_outside_lungs(nap, typical_lungs(list(lung_masks(run, ids).values())))
    assert rows and all(f'data-v="{float(r["ratio"])!r}">' in page for r in rows)
    from xraylens.evaluate import Summary

    lungs = Summary.read(out / "evaluate_maps" / "summary.csv")  # the evaluate-maps numbers
    assert len(lungs) and all(f'data-v="{float(r["mean"])!r}">' in page for r in lungs)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert all(f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" in md for r in lungs)
