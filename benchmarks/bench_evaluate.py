"""Evaluation speed: deletion and ROAD for 14 labels, xraylens vs. Quantus looped over labels;
localisation metrics for 14 labels x 500 images.

Faithfulness: ResNet18 (random init), 8 images at 224 px, 14 labels, random maps. Both sides
use the same steps: deletion removes ``P / steps`` pixels per step (Quantus ``PixelFlipping``,
``features_in_step``, black baseline, ``softmax=False``); ROAD removes 10%, ..., 90%
(Quantus ``ROAD(percentages=...)``, noise 0.01). Quantus is single-label, so it is called once
per label; with ``--quantus-labels K < 14`` it runs K labels and its time is scaled by 14 / K
(each label is an identical, independent call: the loop is linear), which the table says.
ROAD runs 2 of the 14 labels on the Quantus side by default (``--road-labels``): its sparse
solve takes seconds per image and step at 224 px.

Bare forwards: the same number of images as xraylens forwards for the curve (its own steps of
every (image, label) pair, plus the unperturbed / fully deleted image once per image), random
images through the same module under ``inference_mode`` in batches of xraylens' chunk size: the
floor for any implementation that makes those forwards. ``xraylens / bare`` and
``Quantus / bare`` say how far each side is above it.

Localisation: region share, share ratio, pointing game, IoU (Otsu), rank accuracy, pixel AUROC
of [500, 14, 224, 224] maps against one mask per image, xraylens only (seconds), next to the
same measures from Quantus (PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy, AUC)
on ``--loc-quantus-images`` images, scaled.

    python benchmarks/bench_evaluate.py
    python benchmarks/bench_evaluate.py --images 2 --loc-images 50 --quantus-labels 1  # quick
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _common import environment, markdown_table, write_results

import xraylens as xl
from xraylens import evaluate as ev


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def quantus_curve(metric_cls, model, x, maps, labels, **kw):
    """Quantus called once per label (it has no multi-label support)."""
    out = []
    for t in labels:
        metric = metric_cls(disable_warnings=True, abs=False, normalise=False, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(metric(model=model, x_batch=x.numpy(), y_batch=np.full(len(x), t),
                              a_batch=maps[:, t].numpy(), softmax=False, device="cpu"))  # fmt: skip
    return out


def forwards_of(curves, n_pixels: int) -> int:
    """Images xraylens forwards for ``curves``: each pair's own steps, shared steps per image."""
    counts = torch.round(curves.fractions * n_pixels).long()
    shared = (counts == 0) | ((counts == n_pixels) & (curves.mode != "road"))
    n_images, pairs = curves.mask.shape[0], int(curves.mask.sum())
    return pairs * int((~shared).sum()) + n_images * int(shared.sum())


def bare_forwards(module, n_images: int, batch: int, shape) -> float:
    """Seconds to forward ``n_images`` random images in batches of ``batch`` (inference mode)."""
    x = torch.rand(batch, *shape)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n_images, batch):
            module(x[: min(batch, n_images - i)])
    return time.perf_counter() - start


def faithfulness(args, rows):
    import quantus

    torch.manual_seed(0)
    clf = xl.get_classifier("resnet18", num_classes=14, in_channels=1, weights=None)
    module = clf.forward_module().eval()
    x = torch.rand(args.images, 1, args.size, args.size)
    maps = torch.rand(args.images, 14, 1, args.size, args.size)
    res = xl.Attribution(values=maps, labels=clf.labels, method="random", model=clf.name)
    n_pix = args.size * args.size
    per_step = n_pix // args.steps
    cases = [
        ("deletion", dict(mode="deletion", pixels_per_step=per_step),
         quantus.PixelFlipping, dict(features_in_step=per_step, perturb_baseline=0.0)),
        ("road", dict(mode="road", fractions=[p / 100 for p in range(10, 100, 10)], noise=0.01),
         quantus.ROAD, dict(percentages=list(range(10, 100, 10)), noise=0.01)),
    ]  # fmt: skip
    for name, ours_kw, q_cls, q_kw in cases:
        if name in args.skip:
            continue
        q_labels = list(range(args.quantus_labels if name == "deletion" else args.road_labels))
        scale = 14 / len(q_labels)
        engine = xl.Engine()
        t_ours, curves = _time(
            lambda kw=ours_kw, e=engine: ev.perturbation_curves(clf, x, res, engine=e, **kw)
        )
        n_fwd = forwards_of(curves, n_pix)
        batch = engine.last_plan.chunk
        t_bare = bare_forwards(module, n_fwd, batch, x.shape[1:])
        t_q, _ = _time(
            lambda c=q_cls, kw=q_kw, ql=q_labels: quantus_curve(c, module, x, maps, ql, **kw)
        )
        rows.append({
            "what": f"{name}, 14 labels x {args.images} images, {args.size} px, "
                    f"{curves.scores.shape[-1]} points",
            "xraylens_s": t_ours, "quantus_s": t_q * scale,
            "quantus_labels_run": len(q_labels), "speedup": t_q * scale / t_ours,
            "bare_forwards_s": t_bare, "forwards": n_fwd, "batch": batch,
            "xraylens_over_bare": t_ours / t_bare, "quantus_over_bare": t_q * scale / t_bare,
        })  # fmt: skip
        print(rows[-1], flush=True)


def localisation(args, rows):
    import quantus

    g = torch.Generator().manual_seed(0)
    n, s = args.loc_images, args.size
    maps = torch.rand(n, 14, s, s, generator=g)
    region = torch.zeros(n, s, s, dtype=torch.bool)
    region[:, s // 5 : 4 * s // 5, s // 8 : 7 * s // 8] = True
    fns = (ev.region_share, ev.share_ratio, ev.pointing_game, ev.iou, ev.rank_accuracy,
           ev.pixel_auroc)  # fmt: skip
    total = 0.0
    for fn in fns:
        t, _ = _time(lambda f=fn: f(maps, region))
        rows.append({"what": f"{fn.__name__}, 14 labels x {n} images", "xraylens_s": t})
        total += t
        print(rows[-1], flush=True)
    k = args.loc_quantus_images
    a = maps[:k, :, None].numpy()
    m = region[:k, None].numpy().astype(np.float32)
    q_total = 0.0
    for q in (quantus.PointingGame, quantus.RelevanceMassAccuracy,
              quantus.RelevanceRankAccuracy, quantus.AUC):  # fmt: skip

        def run(q=q):
            for t in range(14):
                metric = q(disable_warnings=True, abs=False, normalise=False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    metric(model=None, x_batch=np.zeros_like(a[:, t]), y_batch=np.zeros(k, int),
                           a_batch=a[:, t], s_batch=m)  # fmt: skip

        q_total += _time(run)[0] * n / k
    ours4 = sum(r["xraylens_s"] for r in rows[-len(fns):] if r["what"].split(",")[0] in
                ("region_share", "pointing_game", "rank_accuracy", "pixel_auroc"))  # fmt: skip
    rows.append({"what": f"all six measures, 14 x {n}", "xraylens_s": total})
    rows.append({"what": f"the four Quantus also has, 14 x {n}", "xraylens_s": ours4,
                 "quantus_s": q_total, "quantus_labels_run": f"14 x {k} images, scaled",
                 "speedup": q_total / ours4})  # fmt: skip
    print(rows[-1], flush=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=16, help="deletion steps (P / steps per step)")
    p.add_argument("--quantus-labels", type=int, default=14, help="deletion: Quantus labels run")
    p.add_argument("--road-labels", type=int, default=2, help="ROAD: Quantus labels run")
    p.add_argument("--loc-images", type=int, default=500)
    p.add_argument("--loc-quantus-images", type=int, default=50)
    p.add_argument(
        "--skip", default="", help="comma list of: faithfulness, deletion, road, localisation"
    )
    args = p.parse_args(argv)
    env = environment("cpu")
    rows: list[dict] = []
    if "faithfulness" not in args.skip:
        faithfulness(args, rows)
    if "localisation" not in args.skip:
        localisation(args, rows)
    cols = ["what", "xraylens_s", "quantus_s", "quantus_labels_run", "speedup"]
    cols += ["bare_forwards_s", "forwards", "batch", "xraylens_over_bare", "quantus_over_bare"]
    print(markdown_table(rows, cols))
    payload = {"environment": env, "args": vars(args), "rows": rows}
    write_results("evaluate_cpu", payload)
    return payload


if __name__ == "__main__":
    main()
