"""Gradient methods for 14 labels: one xraylens call vs. one Captum call per label.

Saliency, Integrated Gradients and DeepLIFT on ResNet18, measured in one process with the
same parameters (read from the xraylens attributor's config). The Captum baseline for DeepLIFT
runs on a copy of the model whose residual blocks get their own ReLU modules (Captum refuses
torchvision's shared ``self.relu``); the forward function is unchanged.

CPU default: one 224 px image. ``--paper``: 512 px on CUDA.

    python benchmarks/bench_gradients.py
    python benchmarks/bench_gradients.py --paper
"""

from __future__ import annotations

import argparse
import copy
import logging
import types

import captum.attr as ca
import torch
from _common import best_time, environment, markdown_table, write_results
from torch import nn

import xraylens as xl

METHODS = ("saliency", "integrated_gradients", "deeplift")


def separate_relus(model: nn.Module) -> nn.Module:
    """A copy of a torchvision ResNet whose blocks use two non-inplace ReLU modules."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
        if isinstance(m, BasicBlock):
            m.relu_out = nn.ReLU()

            def forward(self, x):
                identity = x if self.downsample is None else self.downsample(x)
                out = self.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                return self.relu_out(out + identity)

            m.forward = types.MethodType(forward, m)
        elif isinstance(m, Bottleneck):
            raise NotImplementedError("Bottleneck blocks: use a BasicBlock ResNet here")
    return model


def captum_call(method: str, module: nn.Module, params: dict):
    """``f(x, label)`` running the Captum counterpart of ``method`` for one label."""
    if method == "saliency":
        sal = ca.Saliency(module)
        return lambda x, t: sal.attribute(x, target=t, abs=params.get("abs", True))
    if method == "integrated_gradients":
        ig = ca.IntegratedGradients(module)
        kw = {"n_steps": params.get("n_steps", 50), "method": params.get("method", "gausslegendre")}
        base = params.get("baseline", 0.0)
        return lambda x, t: ig.attribute(x, baselines=base, target=t, **kw)
    if method == "deeplift":
        dl = ca.DeepLift(module)
        base = params.get("baseline", 0.0)
        return lambda x, t: dl.attribute(x, baselines=base, target=t)
    raise ValueError(method)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paper", action="store_true", help="512 px on CUDA")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--max-memory", default=None)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    if args.paper:
        args.size, args.device = 512, args.device or "cuda"
    device = torch.device(args.device or "cpu")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    available = xl.list_attributors()
    torch.manual_seed(0)
    clf = xl.get_classifier(args.model)
    clf.module.to(device).eval()
    labels = list(range(len(clf.labels)))
    x = torch.rand(args.images, clf.in_channels, args.size, args.size)
    xd = x.to(device)
    rows, missing = [], []
    for method in args.methods.split(","):
        if method not in available:
            missing.append(method)
            print(f"{method}: not registered yet; skipped")
            continue
        att = xl.get_attributor(method, max_memory=args.max_memory)
        module = clf.forward_module(separate_relus(clf.module) if method == "deeplift" else None)
        call = captum_call(method, module, att.params)
        ours_t, captum_t = [], []
        for _ in range(args.repeats):  # interleaved: a busy machine hurts both alike
            ours_t.append(best_time(lambda a=att: a.attribute(clf, x, "all"), 1, device)[0])
            captum_t.append(best_time(lambda c=call: [c(xd, t) for t in labels], 1, device)[0])
        res = att.attribute(clf, x, "all")
        ref = torch.stack([call(xd, t).detach().cpu() for t in labels], 1)
        scale = ref.abs().max().item()
        rows.append({
            "method": method, "labels": len(labels), "xraylens_s": min(ours_t),
            "captum_per_label_s": min(captum_t), "speedup": min(captum_t) / min(ours_t),
            "max_rel_diff": (res.values - ref.float()).abs().max().item() / max(scale, 1e-12),
            "chunk": getattr(att.engine.last_plan, "chunk", None),
            "params": {k: v for k, v in att.params.items() if not isinstance(v, torch.Tensor)},
        })  # fmt: skip
        print(rows[-1], flush=True)
    cols = ["method", "labels", "xraylens_s", "captum_per_label_s", "speedup", "max_rel_diff",
            "chunk"]  # fmt: skip
    print(markdown_table(rows, cols))
    if missing:
        print("not measured (attributor not registered):", ", ".join(missing))
    payload = {
        "setup": vars(args) | {"device": str(device)},
        "environment": environment(device),
        "rows": rows,
        "missing": missing,
        "target": "speedup >= 2 for every method",
    }
    name = "gradients_paper" if args.paper else "gradients_cpu"
    print("wrote", write_results(name, payload))
    return payload


if __name__ == "__main__":
    main()
