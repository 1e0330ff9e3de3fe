"""The CAM family for 14 labels: one xraylens call vs. one pytorch-grad-cam call per label.

Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, EigenCAM and Ablation-CAM on ResNet18's
``layer4`` (the classifier's ``cam_layer``), random weights, measured in one process,
interleaved. pytorch-grad-cam's Ablation-CAM costs the same for every label (it ablates every
channel again in each call), so it is timed once on ``--ablation-labels`` labels and scaled to
all; the table says so. The maps are compared with pytorch-grad-cam's unscaled maps (its
min-max scaling patched out, outside the timing).

CPU default: one 224 px image.

    python benchmarks/bench_cam_family.py
    python benchmarks/bench_cam_family.py --methods grad_cam_pp,ablation_cam --layer layer3
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytorch_grad_cam as pgc
import torch
import torch.nn.functional as F
from _common import best_time, environment, markdown_table, write_results
from pytorch_grad_cam import base_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import xraylens as xl

REFERENCE = {
    "grad_cam_pp": pgc.GradCAMPlusPlus,
    "xgrad_cam": pgc.XGradCAM,
    "hires_cam": pgc.HiResCAM,
    "layer_cam": pgc.LayerCAM,
    "eigen_cam": pgc.EigenCAM,
    "ablation_cam": pgc.AblationCAM,
}


class Logits(nn.Module):
    """``clf(x)`` as a module, so pytorch-grad-cam sees the same [0, 1] greyscale input."""

    def __init__(self, clf: xl.Classifier):
        super().__init__()
        self.clf = clf
        self.net = clf.module

    def forward(self, x):
        return self.clf(x)


def _unscaled(cam, target_size=None):
    if target_size is None:
        return cam
    t = torch.from_numpy(np.ascontiguousarray(cam))[:, None]
    return F.interpolate(t, size=target_size[::-1], mode="bilinear")[:, 0].numpy()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--layer", default=None, help="module name; default: the cam_layer")
    p.add_argument("--methods", default=",".join(REFERENCE))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--ablation-labels", type=int, default=1,
        help="labels pytorch-grad-cam's Ablation-CAM is timed on (then scaled to all)",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.manual_seed(0)
    clf = xl.get_classifier(args.model)
    layer_name = args.layer or clf.cam_layer
    labels = list(range(len(clf.labels)))
    x = torch.rand(args.images, clf.in_channels, args.size, args.size)
    model = Logits(clf)
    layer = model.net.get_submodule(layer_name)
    rows = []
    for method in args.methods.split(","):
        att = xl.get_attributor(method, layer=layer_name)
        kw = {"batch_size": 64} if method == "ablation_cam" else {}
        cam = REFERENCE[method](model, [layer], **kw)
        timed = labels[: args.ablation_labels] if method == "ablation_cam" else labels

        def theirs(cam=cam, timed=timed):
            return [cam(x, [ClassifierOutputTarget(t)] * len(x)) for t in timed]

        ours_t, theirs_t = [], []
        for r in range(args.repeats):  # interleaved: a busy machine hurts both alike
            ours_t.append(best_time(lambda a=att: a.attribute(clf, x, "all"), 1, x.device)[0])
            if r == 0 or method != "ablation_cam":  # minutes per label: timed once
                theirs_t.append(best_time(theirs, 1, x.device)[0] * len(labels) / len(timed))
        res = att.attribute(clf, x, "all").values[:, :, 0]
        scale = base_cam.scale_cam_image
        base_cam.scale_cam_image = _unscaled
        try:
            ref = torch.stack([torch.from_numpy(m) for m in theirs()], dim=1)
        finally:
            base_cam.scale_cam_image = scale
        err = (res[:, : len(timed)] - ref).abs().max().item() / max(ref.abs().max().item(), 1e-12)
        rows.append({
            "method": method, "labels": len(labels), "xraylens_s": min(ours_t),
            "pgc_per_label_s": min(theirs_t), "speedup": min(theirs_t) / min(ours_t),
            "pgc_labels_timed": len(timed), "max_rel_diff": err,
        })  # fmt: skip
        print(rows[-1], flush=True)
    total_ours = sum(r["xraylens_s"] for r in rows)
    total_theirs = sum(r["pgc_per_label_s"] for r in rows)
    rows.append({
        "method": "family (sum)", "labels": len(labels), "xraylens_s": total_ours,
        "pgc_per_label_s": total_theirs, "speedup": total_theirs / total_ours,
    })  # fmt: skip
    cols = ["method", "labels", "xraylens_s", "pgc_per_label_s", "speedup", "pgc_labels_timed",
            "max_rel_diff"]  # fmt: skip
    print(markdown_table(rows, cols))
    payload = {
        "setup": vars(args) | {"layer": layer_name},
        "environment": environment("cpu") | {"grad_cam": _version("grad-cam")},
        "rows": rows,
        "target": "speedup >= 5 for the family",
    }
    name = "cam_family_cpu" + ("" if args.layer is None else f"_{args.layer}")
    print("wrote", write_results(name, payload))
    return payload


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
