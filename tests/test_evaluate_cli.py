"""``xraylens evaluate`` on a small ``xraylens explain`` output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from xraylens.cli import main
from xraylens.evaluate import Results, Summary


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    (root / "masks").mkdir()
    for i in range(3):
        Image.fromarray((rng.random((80, 64)) * 255).astype(np.uint8)).save(
            root / "imgs" / f"im{i}.png"
        )
        if i < 2:  # the third image has no mask
            m = np.zeros((80, 64), np.uint8)
            m[10:60, 8 + i : 40] = 255
            Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    bad = root / "badmasks"
    bad.mkdir()
    Image.fromarray(np.full((30, 90), 255, np.uint8)).save(bad / "im0.png")
    code = main(["explain", str(root / "imgs"), "--method", "saliency", "--labels",
                 "COVID-19,Pneumonia", "--size", "64", "--out", str(root / "out"), "--no-png",
                 "-q"])  # fmt: skip
    assert code == 0
    return root


def test_evaluate_writes_table_and_summary(explained):
    out = explained / "ev"
    code = main(["evaluate", str(explained / "out"), "--masks", str(explained / "masks"),
                 "--metrics", "region_share,pointing_game,sparseness", "--n-boot", "50",
                 "--out", str(out), "-q"])  # fmt: skip
    assert code == 0
    table = Results.read(out / "results.csv")
    # 2 images with masks x 2 labels x 2 mask metrics + 3 images x 2 labels x sparseness
    assert len(table) == 2 * 2 * 2 + 3 * 2
    assert {r["image_id"] for r in table.filter(metric="region_share")} == {"im0", "im1"}
    assert len(Results.read(out / "results.json")) == len(table)
    summary = Summary.read(out / "summary.csv")
    assert {(r["label"], r["metric"]) for r in summary} == {
        (lab, m) for lab in ("COVID-19", "Pneumonia")
        for m in ("region_share", "pointing_game", "sparseness")
    }  # fmt: skip
    assert json.loads((out / "summary.json").read_text())[0]["n"] >= 2


def test_mask_of_another_geometry_is_reported(explained, capsys):
    args = ["--metrics", "region_share,entropy", "--out", str(explained / "ev2"), "-q"]
    code = main(["evaluate", str(explained / "out"), "--masks", str(explained / "badmasks"), *args])
    assert code == 1
    err = capsys.readouterr().err
    assert "im0" in err and "not the same geometry" in err


def test_usage_errors(explained, capsys):
    assert main(["evaluate", str(explained / "out")]) == 2
    assert "--masks" in capsys.readouterr().err
    assert main(["evaluate", str(explained / "out"), "--masks", str(explained / "masks"),
                 "--metrics", "region_shar"]) == 2  # fmt: skip
    assert "region_share" in capsys.readouterr().err


@pytest.mark.realdata
def test_evaluate_with_the_datasets_lung_masks(shared_data, tmp_path):
    masks = sorted((shared_data / "lung-masks" / "covid-chestxray").glob("*.png"))[:2]
    images = [next((shared_data / "covid-chestxray" / "images").glob(f"{m.stem}.*")) for m in masks]
    out = str(tmp_path / "out")
    assert main(["explain", *map(str, images), "--method", "saliency", "--labels", "COVID-19",
                 "--size", "64", "--out", out, "--no-png", "-q"]) == 0  # fmt: skip
    assert main(["evaluate", str(tmp_path / "out"), "--data", str(shared_data), "--metrics",
                 "region_share,pointing_game", "--n-boot", "20", "-q"]) == 0  # fmt: skip
    table = Results.read(tmp_path / "out" / "evaluation" / "results.csv")
    assert len(table) == 2 * 2
    assert all(r["patient_id"].startswith("covid-chestxray:") for r in table)
    assert all(0 <= r["value"] <= 1 for r in table)


def test_curve_metrics_save_their_curves_and_the_report_draws_them(explained):
    """deletion's curves land in curves.csv; their areas are the table's values; `xraylens
    report` over the folder draws them (no 'only the areas were saved' note)."""
    from xraylens.evaluate import CurveTable

    out = explained / "ev_curves"
    code = main(["evaluate", str(explained / "out"), "--masks", str(explained / "masks"),
                 "--metrics", "deletion,region_share", "-p", "deletion.steps=4", "--n-boot",
                 "20", "--out", str(out), "-q"])  # fmt: skip
    assert code == 0
    curves = CurveTable.read(out / "curves.csv")
    # 3 images x 2 labels x 5 points (0, 1/4, ..., 1) of deletion; region_share has no curve
    assert len(curves) == 3 * 2 * 5
    assert {r["curve"] for r in curves} == {"deletion"}
    table = Results.read(out / "results.csv")
    for row in table.filter(metric="deletion"):
        key = (row["image_id"], row["label"])
        pts = sorted((r["x"], r["y"]) for r in curves if (r["image_id"], r["label"]) == key)
        xs, ys = np.array(pts).T
        assert row["value"] == pytest.approx(np.trapezoid(ys, xs) / (xs[-1] - xs[0]), rel=1e-9)
    page_dir = explained / "rep_curves"
    code = main(["report", "--explain", str(explained / "out"), "--evaluate", str(out),
                 "--out", str(page_dir), "-q"])  # fmt: skip
    assert code == 0
    page = next(page_dir.glob("*.html")).read_text()
    assert "Faithfulness and randomisation curves" in page
    assert "curves themselves were not saved" not in page
