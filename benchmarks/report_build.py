"""Build time and size of a report of 5 models x 6 methods x 8 images from existing outputs.

Writes synthetic ``xraylens explain`` outputs (8 PNG images with a burnt-in marker, 224 px,
maps of two labels per image for 6 methods and 5 models), an evaluate output with its
``curves.csv`` (deletion and insertion, 11 points, and cascading randomisation, 8 layers, for
every map), a profile output per model (``nap.npz``) and lung masks into a temporary folder,
then times ``xraylens.report.outputs.build`` + ``write_report`` (HTML and Markdown) against the
baseline of merely loading every map file once (``Attribution.load``), in the same process,
best of ``--repeats``. Prints the ratio and the HTML size (acceptance: under 20 MB, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results  # noqa: E402

from xraylens.core.attribution import Attribution  # noqa: E402
from xraylens.evaluate import Summary  # noqa: E402
from xraylens.evaluate.results import CurveTable  # noqa: E402
from xraylens.profile import NAPResult  # noqa: E402
from xraylens.report import write_report  # noqa: E402
from xraylens.report.outputs import build  # noqa: E402

MODELS = ("resnet18", "resnet34", "inception_v3", "inception_resnet_v2", "densenet161")
METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "deeplift",
    "grad_cam",
    "occlusion",
)


def make_outputs(root: Path, n_images: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    inputs = {}
    for i in range(n_images):
        img = (rng.random((size, size)) * 150).astype(np.uint8)
        img[6:18, 8:30] = 255
        path = root / "imgs" / f"case{i}.png"
        Image.fromarray(img).save(path)
        inputs[f"case{i}"] = str(path)
    folders = []
    for model in MODELS:
        folder = root / model
        for key in inputs:
            for method in METHODS:
                values = torch.from_numpy(rng.normal(size=(1, 2, 1, size, size)).astype(np.float32))
                (folder / key).mkdir(parents=True, exist_ok=True)
                Attribution(values, ("COVID-19", "Pneumonia"), method=method, model=model).save(
                    folder / key / f"{method}.npz"
                )
        summary = {"model": model, "weights": None, "methods": {m: {} for m in METHODS},
                   "labels": ["COVID-19", "Pneumonia"], "size": size, "inputs": inputs,
                   "explained": n_images, "seconds": 1.0}  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(summary))
        folders.append(folder)
    return folders


def make_evaluate_and_profiles(root: Path, n_images: int, size: int) -> tuple[Path, list[Path]]:
    """An evaluate folder (summary.json with the curves' areas, curves.csv) and one profile
    folder per model (a NAP of 3 groups at the input and two feature layers); masks/."""
    rng = np.random.default_rng(1)
    rows, summary = [], []
    for model in MODELS:
        for method in METHODS:
            for label in ("COVID-19", "Pneumonia"):
                for curve, xs in (("deletion", np.linspace(0, 1, 11)),
                                  ("insertion", np.linspace(0, 1, 11)),
                                  ("randomisation", np.arange(1.0, 9.0))):  # fmt: skip
                    for i in range(n_images):
                        ys = np.sort(rng.random(len(xs)))[:: -1 if curve != "insertion" else 1]
                        key = dict(model=model, method=method, label=label, image_id=f"case{i}")
                        rows += [key | dict(curve=curve, x=float(x), y=float(y))
                                 for x, y in zip(xs, ys)]  # fmt: skip
                    summary.append(dict(model=model, method=method, label=label, metric=curve,
                                        mean=0.5, ci_low=0.4, ci_high=0.6, n=n_images))  # fmt: skip
    ev = root / "evaluate"
    ev.mkdir()
    CurveTable(rows).to_csv(ev / "curves.csv")
    Summary(summary, columns=list(summary[0])).to_json(ev / "summary.json")
    (root / "masks").mkdir()
    for i in range(n_images):
        m = np.zeros((size, size), np.uint8)
        m[size // 6 : -size // 8, size // 8 : -size // 8] = 255
        Image.fromarray(m).save(root / "masks" / f"case{i}.png")
    profiles = []
    shapes = {"input": (1, size, size), "layer2": (128, 28, 28), "layer4": (512, 7, 7)}
    for model in MODELS:
        sums = {k: rng.random((3, *s)) for k, s in shapes.items()}
        lo = {k: np.zeros(s[0]) for k, s in shapes.items()}
        hi = {k: np.ones(s[0]) for k, s in shapes.items()}
        nap = NAPResult(tuple(shapes), ("COVID-19", "Pneumonia", "No Finding"), sums,
                        [3, 3, 2], 8, lo, hi, model=model)  # fmt: skip
        (root / "naps" / model).mkdir(parents=True)
        nap.save(root / "naps" / model / "nap.npz")
        profiles.append(root / "naps" / model)
    return ev, profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = make_outputs(root, args.images, args.size)
        npz = sorted(root.rglob("*.npz"))
        ev, profiles = make_evaluate_and_profiles(root, args.images, args.size)

        def load_all():
            for f in npz:
                Attribution.load(f)

        def report():
            doc = build(folders, [ev], profiles, masks=root / "masks", title="benchmark")
            return write_report(doc, root / "report")

        times = {"load maps (baseline)": [], "build + write report": []}
        for _ in range(args.repeats):  # interleaved, best of each
            for name, fn in (("load maps (baseline)", load_all), ("build + write report", report)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        best = {k: min(v) for k, v in times.items()}
        html_mb = (root / "report" / "report.html").stat().st_size / 2**20
        md_files = [p for p in (root / "report").rglob("*") if p.is_file() and p.suffix != ".html"]
        md_mb = sum(p.stat().st_size for p in md_files) / 2**20
    ratio = best["build + write report"] / best["load maps (baseline)"]
    print(f"{len(MODELS)} models x {len(METHODS)} methods x {args.images} images "
          f"({len(npz)} map files, {args.size} px; curves and {len(MODELS)} NAP profiles), "
          f"best of {args.repeats}:")  # fmt: skip
    for name, t in best.items():
        print(f"  {name:<24} {t:7.2f} s")
    print(f"  ratio report / load       {ratio:7.1f}")
    print(f"  report.html {html_mb:.1f} MB; report.md + PNGs {md_mb:.1f} MB "
          f"(load average at start {env['load_average_at_start'][0]:.1f})")  # fmt: skip
    write_results("report_build", {"env": env, "seconds": best, "all": times, "ratio": ratio,
                                  "html_mb": html_mb, "md_mb": md_mb,
                                  "maps": len(npz)})  # fmt: skip


if __name__ == "__main__":
    main()
