"""Curves in the report: the tidy CurveTable (curves.csv), one figure per model with a line per
method, the plotted numbers in a table, evaluate outputs with and without saved curves."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from xraylens.errors import InputError
from xraylens.evaluate import Curves, RandomisationResult, Summary
from xraylens.evaluate.results import CURVE_COLUMNS, CurveTable
from xraylens.report import Document, Image, Table, render_html, render_markdown
from xraylens.report.curves import curves_section
from xraylens.report.outputs import build

HOSTILE = "<img src=x onerror=alert(1)>"


def _curves(mode: str, seed: int) -> Curves:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(2, 2, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    return Curves(scores, torch.linspace(0, 1, 5, dtype=torch.float64), ("COVID-19", HOSTILE),
                  mask, mode, "morf", "probs")  # fmt: skip


def _randomisation(seed: int) -> RandomisationResult:
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(3, 2, 2, generator=g, dtype=torch.float64)  # [K, N, T]
    mask = torch.tensor([[True, True], [True, False]])
    return RandomisationResult("saliency", "cascading", ("fc", "layer4", "layer3"),
                               {"spearman_abs": sim}, ("COVID-19", HOSTILE), mask, 0.5)  # fmt: skip


def table() -> CurveTable:
    t = CurveTable()
    for model in ("shortcut", "clean"):
        for k, method in enumerate(("saliency", "occlusion")):
            for mode in ("deletion", "insertion"):
                t.extend(CurveTable.from_curves(_curves(mode, k), model=model, method=method,
                                                image_ids=["a", "b"]))  # fmt: skip
        t.extend(
            CurveTable.from_randomisation(_randomisation(0), model=model, image_ids=["a", "b"])
        )
    return t


def test_curve_table_rows_and_round_trip(tmp_path):
    c = _curves("deletion", 0)
    t = CurveTable.from_curves(c, model="m", method="saliency", image_ids=["a", "b"])
    assert t.columns == CURVE_COLUMNS and len(t) == 3 * 5  # 3 filled pairs x 5 fractions
    rows = t.rows
    assert rows[0] == {"model": "m", "method": "saliency", "label": "COVID-19", "image_id": "a",
                       "curve": "deletion", "x": 0.0, "y": float(c.scores[0, 0, 0])}  # fmt: skip
    r = CurveTable.from_randomisation(_randomisation(1), model="m", image_ids=["a", "b"])
    assert len(r) == 3 * 3 and {row["x"] for row in r} == {1.0, 2.0, 3.0}
    assert {row["method"] for row in r} == {"saliency"}
    t.extend(r)
    for path in (tmp_path / "curves.csv", tmp_path / "curves.json"):
        (t.to_csv if path.suffix == ".csv" else t.to_json)(path)
        assert CurveTable.read(path).rows == t.rows
    (tmp_path / "bad.csv").write_text("model,x\nm,1\n")
    with pytest.raises(InputError, match="columns"):
        CurveTable.read(tmp_path / "bad.csv")


def test_mean_is_over_images_and_labels():
    t = CurveTable.from_curves(_curves("insertion", 2), model="m", method="s", image_ids=["a", "b"])
    x, y, n = t.mean()[("m", "s", "insertion")]
    c = _curves("insertion", 2)
    expected = torch.stack([c.scores[0, 0], c.scores[0, 1], c.scores[1, 0]]).mean(0)
    assert n == 3 and x == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(y, expected.numpy())


def test_section_draws_one_figure_per_model_and_tables_the_plotted_points(tmp_path):
    t = table()
    s = curves_section(t)
    images = [b for b in s.blocks if isinstance(b, Image)]
    assert len(images) == 2  # one per model
    for img in images:
        w, h = PILImage.open(io.BytesIO(img.png)).size
        assert 400 < w < 1400 and 150 < h < 400  # small and readable
    (points,) = [b for b in s.blocks if isinstance(b, Table)]
    means = t.mean()
    assert len(points.rows) == sum(len(x) for x, _, _ in means.values())
    for model, method, curve, x, y, n in points.rows:  # the table holds what is plotted
        xs, ys, count = means[(model, method, curve)]
        assert y == ys[xs.index(x)] and n == count
    text = " ".join(b.text for b in s.blocks if hasattr(b, "text"))
    assert "dashed line (0.5)" in text and "Deletion" in text and "Insertion" in text
    doc = Document("curves")
    doc.sections.append(s)
    page = render_html(doc)
    assert page.count('src="data:image/png;base64,') == 2
    assert f"{means[('clean', 'occlusion', 'deletion')][1][2]:.3f}" in page
    md = render_markdown(doc, tmp_path)
    assert len(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)) == 2
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_section_without_randomisation_says_nothing_of_it():
    t = CurveTable.from_curves(_curves("deletion", 0), model="m", method="s")
    text = " ".join(b.text for b in curves_section(t).blocks if hasattr(b, "text"))
    assert "Deletion" in text and "Randomisation" not in text and "Insertion" not in text


def _evaluate_folder(folder, curves: CurveTable | None):
    folder.mkdir()
    Summary(
        [{"model": "clean", "method": "saliency", "label": "COVID-19", "metric": "deletion",
          "mean": 0.4, "ci_low": 0.3, "ci_high": 0.5, "n": 2}],
        columns=("model", "method", "label", "metric", "mean", "ci_low", "ci_high", "n"),
    ).to_json(folder / "summary.json")  # fmt: skip
    if curves is not None:
        curves.to_csv(folder / "curves.csv")
    return folder


def test_build_draws_saved_curves_and_says_where_only_areas_were_saved(tmp_path):
    with_curves = _evaluate_folder(tmp_path / "ev1", table())
    areas_only = _evaluate_folder(tmp_path / "ev2", None)
    doc = build(evaluate=[with_curves, areas_only])
    (sec,) = [s for s in doc.sections if s.title == "Faithfulness and randomisation curves"]
    assert sum(isinstance(b, Image) for b in sec.blocks) == 2
    page = render_html(doc)
    assert "curves themselves were not saved" in page and str(areas_only) in page
    assert HOSTILE not in page  # a label from the data stays text
    doc = build(evaluate=[areas_only])  # only the note: no figure, no crash
    (sec,) = [s for s in doc.sections if s.title.startswith("Faithfulness")]
    assert not any(isinstance(b, Image) for b in sec.blocks)
    (tmp_path / "ev3").mkdir()
    with pytest.raises(InputError, match="no results"):
        build(evaluate=[tmp_path / "ev3"])
