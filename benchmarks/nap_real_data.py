"""NAPs of a random-init ResNet18 over the real chest X-rays in ``../shared/data``.

Profiles every image of the COVID-19 collection and the Kermany subset (the paper's combination)
for the groups COVID-19, Pneumonia and No Finding (label groups; they overlap: COVID-19 images
are also Pneumonia), and the input layer alone by source. Writes the results (``.npz``), the
plots (PNG) and a JSON summary of border/centre intensities per group to ``--out``.

    python benchmarks/nap_real_data.py --size 224 --out /tmp/nap_real
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import xraylens as xl
from xraylens.profile import membership_from_records, membership_from_targets
from xraylens.viz.nap import plot_inactive_fraction, plot_input_nap, plot_nap_grid, save_figure

GROUPS = ("COVID-19", "Pneumonia", "No Finding")
SOURCES = ("covid-chestxray", "kermany")
REPO = Path(__file__).resolve().parents[1]


def region_means(image: np.ndarray, band: float = 0.1) -> dict[str, float]:
    """Mean intensity of an [H, W] image in its top/bottom/left/right bands and its centre."""
    h, w = image.shape
    bh, bw = max(1, int(h * band)), max(1, int(w * band))
    return {
        "top": float(image[:bh].mean()),
        "bottom": float(image[-bh:].mean()),
        "left": float(image[:, :bw].mean()),
        "right": float(image[:, -bw:].mean()),
        "centre": float(image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean()),
        "all": float(image.mean()),
    }


def load_data(root: Path, size: int, limit: int | None, seed: int):
    covid = xl.data.CovidChestXray(root / "covid-chestxray", size=size)
    kermany = xl.data.Kermany(root / "chest_xray", size=size)
    if limit:  # a random subset of each source (tests, quick looks)
        gen = np.random.default_rng(seed)
        covid = covid.subset(sorted(gen.permutation(len(covid))[:limit].tolist()))
        kermany = kermany.subset(sorted(gen.permutation(len(kermany))[:limit].tolist()))
    return xl.data.combine(covid, kermany)


def profile(
    root: Path,
    size: int = 224,
    limit: int | None = None,
    batch: int = 32,
    seed: int = 0,
    workers: int = 1,
):
    """(label-group result, source-group input result, seconds) over the real data."""
    data = load_data(root, size, limit, seed)
    torch.manual_seed(seed)
    clf = xl.get_classifier("resnet18", labels=data.labels, weights=None)
    by_label = xl.get_profiler("nap", groups=GROUPS)
    by_source = xl.get_profiler("nap", layers=["input"], groups=SOURCES)
    loader = DataLoader(data, batch_size=batch, num_workers=workers, collate_fn=xl.data.collate)
    start = time.perf_counter()
    for x, targets, records in loader:
        by_label.update(clf, x, membership_from_targets(targets, data.labels, GROUPS))
        source = membership_from_records(records, lambda r: r["source"], SOURCES)
        by_source.update(clf, x, source)
    return by_label.result(), by_source.result(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=None, help="images per source")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=8, help="feature maps per grid")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nap_real"))
    args = parser.parse_args()
    res, src, seconds = profile(args.data, args.size, args.limit, args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    res.save(args.out / "nap_groups.npz")
    src.save(args.out / "nap_sources.npz")
    save_figure(plot_input_nap(res), args.out / "input_groups.png")
    save_figure(plot_input_nap(src), args.out / "input_sources.png")
    save_figure(plot_inactive_fraction(res), args.out / "inactive.png")
    for layer in res.layers[1:]:
        save_figure(plot_nap_grid(res, layer, k=args.k), args.out / f"grid_{layer}.png")
    summary = {
        "size": args.size,
        "images": res.n_images,
        "seconds": round(seconds, 1),
        "counts": res.counts,
        "source_counts": src.counts,
        "inactive_fraction": res.inactive_fraction,
        "zero_fraction": res.zero_fraction,
        "input_mean_regions": {g: region_means(res.mean["input"][g][0]) for g in res.groups},
        "input_nap_regions": {g: region_means(res.nap["input"][g][0]) for g in res.groups},
        "source_mean_regions": {g: region_means(src.mean["input"][g][0]) for g in src.groups},
        "top_maps": {layer: res.top_maps(layer, args.k).tolist() for layer in res.layers},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
