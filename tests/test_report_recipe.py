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
