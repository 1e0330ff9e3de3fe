"""LIME, KernelSHAP and Score-CAM for 14 labels: one xraylens call vs. one reference call per
label (Captum's Lime / KernelShap with the same samples; pytorch-grad-cam's ScoreCAM), in one
process.

ResNet18 (random weights), one 224 px greyscale phantom chest X-ray, 14 labels; LIME and
KernelSHAP with 200 samples over 50 SLIC superpixels (the same mask and the same samples for
both libraries; Captum gets ``perturbations_per_eval`` = the xraylens chunk). Score-CAM on
``layer4`` (512 channels, 512 masked forwards per call); pytorch-grad-cam is timed on
``--cam-labels`` labels (default 2) and scaled to 14, since its calls per label are
independent and equally costly (``--cam-labels 14`` times them all).

    python benchmarks/bench_perturbation.py
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from _common import best_time, environment, markdown_table, write_results

import xraylens as xl
from xraylens.attr import features
from xraylens.data.phantoms import make_phantom


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--superpixels", type=int, default=50)
    p.add_argument("--cam-labels", type=int, default=2, help="grad-cam labels timed (scaled)")
    p.add_argument("--skip", default="", help="comma list of lime,kernel_shap,score_cam")
    p.add_argument("--name", default="perturbation_cpu")
    return p.parse_args(argv)


def given(z: torch.Tensor):
    """A Captum perturb_func yielding the rows of ``z`` (the same samples as xraylens)."""

    def perturb(_inputs, **_kw):
        for row in z:
            yield row[None].long()

    return perturb


def bench_surrogate(name, cls, clf, x, labels, args, rows, errors):
    att = xl.get_attributor(name, n_samples=args.samples, n_features=args.superpixels)
    mask = features.segment(x, att.config)[0]
    n_features = int(mask.max()) + 1
    z = att.samples_for([n_features])[0]
    att = xl.get_attributor(name, features=mask, samples=z)  # the same for every run
    t_ours, _ = best_time(lambda: att.attribute(clf, x, labels), 1, x.device)
    chunk = att.engine.last_plan.chunk
    module = clf.forward_module()
    method = cls(module)
    method.perturb_func = given(z)
    maps = []

    def captum_loop():
        maps.clear()
        for t in labels:
            maps.append(method.attribute(x, target=t, feature_mask=mask[None, None],
                                         n_samples=len(z), baselines=0.0,
                                         perturbations_per_eval=chunk))  # fmt: skip

    print(f"{name}: xraylens {t_ours:.1f} s ({n_features} features); Captum loop ...", flush=True)
    t_captum, _ = best_time(captum_loop, 1, x.device)
    ours = att.attribute(clf, x, labels).values[0]
    scale = max(float(torch.stack(maps).abs().max()), 1e-12)
    errors[name] = max(float((ours[t] - m[0]).abs().max()) for t, m in zip(labels, maps)) / scale
    rows.append({"method": f"{name}: xraylens, one call, {len(labels)} labels",
                 "seconds": t_ours, "x": 1.0, "features": n_features})  # fmt: skip
    rows.append({"method": f"{name}: Captum, one call per label (ppe={chunk})",
                 "seconds": t_captum, "x": t_captum / t_ours, "features": n_features})  # fmt: skip


def bench_score_cam(clf, x, labels, args, rows, errors):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    att = xl.get_attributor("score_cam", layer="layer4")
    t_ours, _ = best_time(lambda: att.attribute(clf, x, labels), 1, x.device)
    ours = att.attribute(clf, x, labels).values[0, :, 0]
    module = clf.forward_module()
    cam = ScoreCAM(model=module, target_layers=[clf.module.layer4])
    cam.batch_size = att.engine.last_plan.chunk
    timed = labels[: args.cam_labels]
    maps = []

    def grad_cam_loop():
        maps.clear()
        for t in timed:
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(t)])[0])

    print(f"score_cam: xraylens {t_ours:.1f} s; pytorch-grad-cam ...", flush=True)
    t_ref, _ = best_time(grad_cam_loop, 1, x.device)
    t_ref_all = t_ref * len(labels) / len(timed)
    err = 0.0
    for t, m in zip(timed, maps):
        o = ours[t] - ours[t].min()
        o = o / (1e-7 + o.max())
        err = max(err, float(np.abs(o.numpy() - m).max()))
    errors["score_cam"] = err
    note = "" if len(timed) == len(labels) else f" (timed on {len(timed)}, scaled)"
    print(f"score_cam: {cam.batch_size} masked inputs per forward (both libraries)")
    rows.append({"method": f"score_cam: xraylens, one call, {len(labels)} labels",
                 "seconds": t_ours, "x": 1.0, "features": 512})  # fmt: skip
    rows.append({"method": f"score_cam: pytorch-grad-cam, one call per label{note}",
                 "seconds": t_ref_all, "x": t_ref_all / t_ours, "features": 512})  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from captum.attr import KernelShap, Lime

    torch.manual_seed(0)
    clf = xl.get_classifier("resnet18", weights=None)
    clf.module.eval()
    image = make_phantom("COVID-19", args.size, seed=0).image
    x = torch.from_numpy(image)[None, None].float()
    labels = list(range(len(clf.labels)))
    with torch.inference_mode():  # warm-up: library initialisation is nobody's cost
        clf.forward_module()(x.expand(4, -1, -1, -1).contiguous())
    import sklearn.linear_model  # noqa: F401  (imported by both LIMEs on first use)

    rows: list[dict] = []
    errors: dict[str, float] = {}
    skip = set(args.skip.split(","))
    if "lime" not in skip:
        bench_surrogate("lime", Lime, clf, x, labels, args, rows, errors)
    if "kernel_shap" not in skip:
        bench_surrogate("kernel_shap", KernelShap, clf, x, labels, args, rows, errors)
    if "score_cam" not in skip:
        bench_score_cam(clf, x, labels, args, rows, errors)
    print(markdown_table(rows, ["method", "seconds", "x", "features"]))
    print("max |xraylens - reference| / max |reference| per method:", errors)
    payload = {"environment": environment(), "args": vars(args), "rows": rows, "errors": errors}
    print("results:", write_results(args.name, payload))
    return payload


if __name__ == "__main__":
    main()
