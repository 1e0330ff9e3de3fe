"""The demo: its measures, the default run end to end (the README's ``xraylens demo``), and the
real-data variant."""

from __future__ import annotations

import json
import math

import attrs
import numpy as np
import pytest
import torch

from xraylens.cli import main
from xraylens.demo import PRESETS, DemoConfig, metrics, run_demo
from xraylens.demo.real import border_mask


# --------------------------------------------------------------------------- measures
def test_concentration_against_chance():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:10, 5:10] = True  # 25 of 400 pixels
    on_mask = metrics.concentration(mask.astype(float), mask)
    assert on_mask == {"share": 1.0, "chance": 0.0625, "ratio": 16.0}
    uniform = metrics.concentration(np.ones((20, 20)), mask)
    assert uniform["share"] == pytest.approx(0.0625) and uniform["ratio"] == pytest.approx(1.0)
    signed = np.where(mask, 1.0, -5.0)  # negative evidence outside does not count
    assert metrics.concentration(torch.tensor(signed)[None], mask)["share"] == 1.0
    empty = metrics.concentration(np.zeros((20, 20)), mask)
    assert math.isnan(empty["share"]) and math.isnan(empty["ratio"])


def test_pointing_game_with_tolerance():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:10, 5:10] = True
    peak = np.zeros((20, 20))
    peak[11, 7] = 1.0  # two pixels below the mask
    assert not metrics.pointing_hit(peak, mask)
    assert not metrics.pointing_hit(peak, mask, tolerance=1)
    assert metrics.pointing_hit(peak, mask, tolerance=2)
    assert not metrics.pointing_hit(np.zeros((20, 20)), mask)  # an empty map never hits


def test_energy_concentration_resamples_the_region():
    region = np.zeros((32, 32), dtype=bool)
    region[:8, :8] = True  # the top-left cell of a 4 x 4 grid
    nap = np.zeros((3, 4, 4))
    nap[1, 0, 0] = -2.0  # |NAP| counts, whatever the sign
    nap[2, 3, 3] = 2.0
    out = metrics.energy_concentration(nap, region)
    assert out["share"] == pytest.approx(0.5) and out["chance"] == pytest.approx(1 / 16)
    assert out["ratio"] == pytest.approx(8.0) and out["peak_inside"] == 1.0
    np.testing.assert_allclose(metrics.area_fractions(region, (2, 2)), [[0.25, 0], [0, 0]])


def test_auc_equals_pair_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert metrics.auc(scores, labels) == pytest.approx(pairs)
    assert math.isnan(metrics.auc(scores, np.ones(60)))


def test_border_mask():
    m = border_mask(10, 0.1)
    assert m.sum() == 100 - 64 and not m[1:-1, 1:-1].any()


def test_presets_differ_only_in_size_and_budget():
    """``--quick`` runs the same steps as the default, on less: only these fields differ."""
    default, quick = attrs.asdict(PRESETS["default"]), attrs.asdict(PRESETS["quick"])
    differ = {k for k in default if default[k] != quick[k]}
    assert differ <= {
        "size",
        "n_train",
        "n_test",
        "steps",
        "time_limit",
        "explain_per_class",
        "ig_steps",
    }


# --------------------------------------------------------------------------- the default run
@pytest.mark.slow
def test_default_demo_end_to_end(tmp_path, capsys):
    """The README's first command: ``xraylens demo`` with every default. It must write the
    report and both claims must hold: the maps concentrate on the lesions, the NAPs show the
    planted marker.

    ``--time-limit 0`` switches off the training safeguard only, so that a busy test machine
    gets the same (deterministic) result as an idle one instead of an under-trained model; on
    an idle two-core machine the safeguard (120 s) is never reached and the runs are equal."""
    out = tmp_path / "xraylens-demo"
    code = main(["demo", "--out", str(out), "--time-limit", "0"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for phase in range(1, 8):
        assert f"[{phase}/7]" in printed
    for claim in ("lesions", "shortcut", "audit"):
        assert f"check {claim}: passed" in printed
    result = json.loads((out / "results.json").read_text())
    expected = attrs.asdict(attrs.evolve(DemoConfig(), time_limit=None))
    assert result["config"] == json.loads(json.dumps(expected))
    assert result["train"]["steps"] == DemoConfig().steps and not result["train"]["stopped_early"]
    ratios = {m: a["lesion_ratio"] for m, a in result["attribution"].items()}
    assert sum(r >= 2.0 for r in ratios.values()) * 2 >= len(ratios), ratios
    assert max(a["pointing"] for a in result["attribution"].values()) >= 0.5
    assert result["profile"]["input"]["marker"]["ratio"] >= 2.0
    assert result["profile"]["input"]["marker"]["peak_inside"] == 1.0
    assert min(result["test"]["auc"].values()) > 0.9, result["test"]["auc"]
    # the marker-confounded model really uses the marker (the clean one does not), and the
    # audit says so from the maps alone
    used = result["shortcut_model"]["reliance"]["No Finding"]
    clean = result["reliance"]["No Finding"]
    assert used["with_marker"] - used["without_marker"] >= 0.3, used
    assert clean["with_marker"] - clean["without_marker"] < 0.1, clean
    verdicts = result["audit"]["verdicts"]
    assert "reads markers" in verdicts["marker"] and "reads markers" not in verdicts["clean"]
    assert result["audit"]["markers_found"] == result["audit"]["markers_planted"] > 0
    page = (out / "report.html").read_text()
    assert "Shortcut audit" in page and "reads markers" in page and "http://" not in page
    report = (out / "report.md").read_text()
    for figure in ("attribution.png", "nap_input.png", "nap_energy.png", "training.png"):
        assert f"]({figure})" in report and (out / figure).stat().st_size > 0
    for method in result["methods"]:
        assert f"| `{method}` |" in report
    from xraylens.profile import NAPResult

    assert NAPResult.load(out / "nap.npz").counts == result["nap_counts"]


# --------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_demo_on_real_data(shared_data, tmp_path):
    cfg = DemoConfig(
        size=48, n_train=64, n_test=40, steps=4, explain_per_class=1, methods=("occlusion",)
    )
    result = run_demo(tmp_path / "real", data=shared_data, config=cfg, log=lambda m: None)
    assert result["mode"] == "real" and result["n_train"] == 64 and result["n_test"] == 40
    assert result["checks"] == {}  # real data: measured, no pass/fail claim
    att = result["attribution"]["occlusion"]
    assert 0 < att["lung_chance"] < 1 and 0 <= att["lung_share"] <= 1
    by_source = result["profile"]["sources"]["input"]
    assert set(by_source) == {"covid-chestxray", "kermany"}
    report = (tmp_path / "real" / "report.md").read_text()
    assert "lung" in report and "border" in report
    page = (tmp_path / "real" / "report.html").read_text()
    assert "Attribution inside the lungs" in page and 'src="data:image/png;base64,' in page
    for name in ("nap_input_labels.png", "nap_input_sources.png", "attribution.png"):
        assert (tmp_path / "real" / name).stat().st_size > 0


def test_checks_and_report_sentences_follow_the_numbers():
    from xraylens.demo.report import _depth_sentence, _reliance_sentence, checks

    def result(ratios, marker_ratios):
        return {
            "attribution": {f"m{i}": {"lesion_ratio": r} for i, r in enumerate(ratios)},
            "profile": {
                layer: {"marker": {"ratio": r}}
                for layer, r in zip(("input", "maxpool"), marker_ratios)
            },
        }

    assert checks(result([3.0, 1.0], [10.0, 5.0])) == {"lesions": True, "shortcut": True}
    assert checks(result([3.0, 1.0, float("nan")], [10.0, 1.5])) == {
        "lesions": False,
        "shortcut": False,
    }
    used = {"without_marker": 0.05, "with_marker": 0.7, "flipped": 0.8}
    unused = {"without_marker": 0.01, "with_marker": 0.02, "flipped": 0.0}
    assert _reliance_sentence(used, unused).startswith("**yes**")
    assert _reliance_sentence(unused, unused).startswith("**no**")
    text = _depth_sentence(
        {"input": {"marker": {"ratio": 9.0}}, "layer4": {"marker": {"ratio": 1.0}}}
    )
    assert "`input`" in text and "fades in `layer4`" in text
