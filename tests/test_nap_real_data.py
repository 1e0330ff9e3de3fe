"""NAPs over the real chest X-rays (``../shared/data``; skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xraylens as xl
from xraylens.profile import membership_from_records, membership_from_targets
from xraylens.viz.nap import plot_input_nap, plot_nap_grid, save_figure

pytestmark = [pytest.mark.realdata, pytest.mark.filterwarnings("ignore::xraylens.data.DataWarning")]
GROUPS = ("COVID-19", "Pneumonia", "No Finding")


def border(a: np.ndarray, band: int = 6) -> float:
    """Mean of an [H, W] map over its outer frame of ``band`` pixels."""
    frame = np.ones_like(a, dtype=bool)
    frame[band:-band, band:-band] = False
    return float(a[frame].mean())


def test_random_resnet18_over_real_images(shared_data, tmp_path):
    covid = xl.data.CovidChestXray(shared_data / "covid-chestxray", size=64)
    kermany = xl.data.Kermany(shared_data / "chest_xray", size=64)
    gen = np.random.default_rng(0)
    data = xl.data.combine(
        covid.subset(sorted(gen.permutation(len(covid))[:30].tolist())),
        kermany.subset(sorted(gen.permutation(len(kermany))[:30].tolist())),
    )
    clf = xl.get_classifier("resnet18", labels=data.labels)
    prof = xl.get_profiler("nap", groups=GROUPS)
    by_source = xl.get_profiler("nap", layers=["input"], groups=("covid-chestxray", "kermany"))
    loader = torch.utils.data.DataLoader(data, batch_size=16, collate_fn=xl.data.collate)
    targets = []
    for x, y, records in loader:
        prof.update(clf, x, membership_from_targets(y, data.labels, GROUPS))
        by_source.update(
            clf, x, membership_from_records(records, lambda r: r["source"], by_source.groups)
        )
        targets.append(y)
    res, src = prof.result(), by_source.result()
    y = torch.cat(targets)
    expected = {g: int(y[:, data.labels.index(g)].sum()) for g in GROUPS}
    assert res.counts == expected and res.n_images == 60
    assert all(res.counts[g] > 0 for g in GROUPS)
    assert src.counts == {"covid-chestxray": 30, "kermany": 30}
    for layer in ("input", *clf.nap_layers):
        for g in GROUPS:
            assert np.isfinite(res.nap[layer][g]).all()
    # The two sources differ at the borders: the covid-collection images (COVID-19) are
    # brighter there than the paediatric Kermany images (No Finding); the NAP shows it.
    assert border(res.nap["input"]["COVID-19"][0]) > 0 > border(res.nap["input"]["No Finding"][0])
    assert border(src.mean["input"]["covid-chestxray"][0]) > border(src.mean["input"]["kermany"][0])
    save_figure(plot_input_nap(res), tmp_path / "input.png")
    save_figure(plot_nap_grid(res, "layer1", k=4), tmp_path / "layer1.png")
    assert (tmp_path / "input.png").stat().st_size > 0
