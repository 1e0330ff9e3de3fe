"""The tidy Results table: rows, files, aggregation with patient-level bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.evaluate import COLUMNS, Results, Summary


def _table():
    scores = torch.tensor([[0.1, 0.9], [0.3, float("nan")], [0.5, 0.7]])
    return Results.from_scores(
        scores,
        metric="share",
        labels=("COVID-19", "Pneumonia"),
        image_ids=["a.png", "b.png", "c.png"],
        patient_ids=["p1", "p1", None],
        model="resnet18",
        method="saliency",
    )


def test_columns_and_rows():
    t = _table()
    assert t.columns == COLUMNS == (
        "model", "method", "label", "image_id", "patient_id", "metric", "value",
    )  # fmt: skip
    assert len(t) == 6
    assert t[1] == {
        "model": "resnet18", "method": "saliency", "label": "Pneumonia", "image_id": "a.png",
        "patient_id": "p1", "metric": "share", "value": pytest.approx(0.9),
    }  # fmt: skip
    assert t[5]["patient_id"] is None
    assert math.isnan(t[3]["value"])


def test_from_scores_skips_empty_slots_and_takes_per_image_labels():
    t = Results.from_scores(
        torch.tensor([[1.0, 2.0], [3.0, 0.0]]),
        metric="m",
        labels=[("a", "b"), ("c",)],
        mask=torch.tensor([[True, True], [True, False]]),
    )
    assert [(r["image_id"], r["label"], r["value"]) for r in t] == [
        ("0", "a", 1.0), ("0", "b", 2.0), ("1", "c", 3.0),
    ]  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_round_trip(tmp_path, suffix):
    t = _table()
    path = tmp_path / f"results{suffix}"
    getattr(t, f"to_{suffix[1:]}")(path)
    back = Results.read(path)
    assert len(back) == len(t)
    for a, b in zip(back, t):
        assert {k: v for k, v in a.items() if k != "value"} == {
            k: v for k, v in b.items() if k != "value"
        }
        assert (math.isnan(a["value"]) and math.isnan(b["value"])) or a["value"] == b["value"]
    s = t.aggregate(n_boot=50)
    getattr(s, f"to_{suffix[1:]}")(tmp_path / f"summary{suffix}")
    assert Summary.read(tmp_path / f"summary{suffix}").rows == s.rows


def test_aggregate_columns_mean_and_n_leave_out_nan():
    s = _table().aggregate(n_boot=200)
    assert s.columns == ("model", "method", "label", "metric", "mean", "ci_low", "ci_high", "n")
    rows = {r["label"]: r for r in s}
    assert rows["COVID-19"]["mean"] == pytest.approx(0.3) and rows["COVID-19"]["n"] == 3
    assert rows["Pneumonia"]["mean"] == pytest.approx(0.8) and rows["Pneumonia"]["n"] == 2
    for r in s:
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    assert s.rows == _table().aggregate(n_boot=200).rows  # seeded: reproducible


def test_bootstrap_resamples_patients_not_images():
    # Two patients: one with 9 images of value 1, one with 1 image of value 0. Resampling
    # patients, the pooled mean is either 1, 0, or 0.9 (both drawn): the CI spans [0, 1].
    # Resampling images would give a narrow CI around 0.9.
    values = [1.0] * 9 + [0.0]
    rows = [
        ("m", "x", "l", str(i), "A" if i < 9 else "B", "share", v) for i, v in enumerate(values)
    ]
    by_patient = Results(rows).aggregate(n_boot=400)[0]
    assert by_patient["mean"] == pytest.approx(0.9)
    assert by_patient["ci_low"] == 0.0 and by_patient["ci_high"] == 1.0
    rows = [(m, x, lab, i, None, k, v) for m, x, lab, i, _, k, v in rows]
    by_image = Results(rows).aggregate(n_boot=400)[0]
    assert 0.5 < by_image["ci_low"] < 0.9 < by_image["ci_high"] <= 1.0


def test_bootstrap_ci_matches_a_direct_resampling():
    rng = np.random.default_rng(5)
    values = rng.random(40)
    rows = [("m", "x", "l", str(i), None, "s", float(v)) for i, v in enumerate(values)]
    r = Results(rows).aggregate(n_boot=300, ci=0.9, seed=7)[0]
    draw = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    lo, hi = np.quantile(values[draw].mean(-1), [0.05, 0.95])
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)


def test_bad_input():
    with pytest.raises(xl.InputError, match="missing"):
        Results([{"model": "m", "value": 1.0}])
    with pytest.raises(xl.InputError, match="value must be a number"):
        Results([("m", "x", "l", "i", None, "s", "high")])
    with pytest.raises(xl.InputError, match="by must name"):
        _table().aggregate(by=("value",))
    with pytest.raises(xl.InputError, match="2 labels for 3"):
        Results.from_scores(torch.zeros(1, 3), metric="m", labels=("a", "b"))
    with pytest.raises(xl.InputError, match=".csv or .json"):
        Results.read("results.txt")
