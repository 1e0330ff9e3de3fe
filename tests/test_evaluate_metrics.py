"""The metric plugin kind: every registered metric is tested here automatically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import xraylens as xl
from xraylens import plugins
from xraylens.evaluate import Metric, Results

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    clf = xl.get_classifier("resnet18", num_classes=3, in_channels=1, weights=None)
    x = torch.rand(2, 1, 32, 32)
    method = xl.get_attributor("saliency")
    res = method.attribute(clf, x, targets=[[0, 2], [1]])  # per image: one empty slot
    region = torch.zeros(2, 32, 32, dtype=torch.bool)
    region[:, 8:24, 6:20] = True
    return {"clf": clf, "x": x, "method": method, "res": res, "region": region}


@pytest.mark.parametrize("name", xl.list_metrics())
def test_every_metric_scores_every_filled_slot(case, name):
    metric = xl.get_metric(name)
    assert isinstance(metric, Metric) and metric.name == name
    inputs = {"region": case["region"], "model": case["clf"], "x": case["x"],
              "method": case["method"]}  # fmt: skip
    values = metric.compute(case["res"], **{k: v for k, v in inputs.items() if k in metric.needs})
    assert values.shape == (2, 2) and values.dtype == torch.float64
    assert values[1, 1].isnan()  # image 1 has one target: its second slot is empty
    filled = values[case["res"].mask]
    assert torch.isfinite(filled).all(), (name, values)
    table = metric.results(case["res"], image_ids=["a", "b"], patient_ids=["p", "q"],
                           **{k: v for k, v in inputs.items() if k in metric.needs})  # fmt: skip
    assert isinstance(table, Results) and len(table) == 3
    assert {r["metric"] for r in table} == {name}
    assert [r["label"] for r in table] == list(case["res"].labels[0]) + list(case["res"].labels[1])


@pytest.mark.parametrize("name", xl.list_metrics())
def test_asking_for_curves_changes_no_value(case, name):
    """results(curves=...) scores as results() does; metrics with curves add them (one row per
    point of each filled slot), and the curve's reduction is the value."""
    from xraylens.evaluate import CurveTable

    metric = xl.get_metric(name)
    inputs = {"region": case["region"], "model": case["clf"], "x": case["x"],
              "method": case["method"]}  # fmt: skip
    got = {k: v for k, v in inputs.items() if k in metric.needs}
    plain = metric.results(case["res"], image_ids=["a", "b"], **got)
    curves = CurveTable()
    traced = metric.results(case["res"], image_ids=["a", "b"], curves=curves, **got)
    assert [r["value"] for r in traced] == pytest.approx([r["value"] for r in plain], nan_ok=True)
    values, trace = metric.curves(case["res"], **got)
    if trace is None:
        assert len(curves) == 0
        return
    assert len(curves) > 0 and len(curves) % 3 == 0  # 3 filled slots, same points each
    assert {r["image_id"] for r in curves} == {"a", "b"}
    torch.testing.assert_close(values, metric.compute(case["res"], **got), equal_nan=True)


@pytest.mark.parametrize("name", xl.list_metrics())
def test_every_metric_names_what_it_needs(case, name):
    metric = xl.get_metric(name)
    for need in metric.needs:
        with pytest.raises(xl.InputError, match=need):
            metric.compute(case["res"])


@pytest.mark.parametrize(
    "name",
    sorted(n for n, e in plugins.entries("metric").items() if e.plugin.startswith("xraylens.")),
)
def test_builtin_metric_documented(name):
    assert f"### `{name}`" in (DOCS / "evaluation.md").read_text(), f"docs/evaluation.md: {name}"


def test_unknown_metric_and_bad_parameter():
    with pytest.raises(xl.UnknownPluginError, match="region_share"):
        xl.get_metric("region_shar")
    with pytest.raises(xl.InputError, match="tolerance"):
        xl.get_metric("iou", tolerance=3)


def test_a_plugin_can_add_a_metric(case):
    class MaxValue(Metric):
        name = "max_value"
        family = "complexity"

        def score(self, attribution, **_):
            return attribution.values.flatten(2).amax(-1).double()

    class Plugin:
        @staticmethod
        @xl.hookimpl
        def register_metrics(register):
            register("max_value", MaxValue)

    xl.register_plugin(Plugin, name="max-value-plugin")
    try:
        assert "max_value" in xl.list_metrics()
        v = xl.get_metric("max_value").compute(case["res"])
        assert torch.equal(v[0], case["res"].values[0].flatten(1).amax(-1).double())
    finally:
        xl.unregister_plugin("max-value-plugin")
    assert "max_value" not in xl.list_metrics()
