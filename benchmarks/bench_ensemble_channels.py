"""The channel adapter and the Ensemble, timed against their baselines in one process.

- RGB ResNet18 (torchvision, random weights) on greyscale input: saliency for 14 labels with
  ``channels="fold"`` vs. ``channels="repeat"`` (the baseline: the grey image repeated).
- ``xl.Ensemble`` of ResNet18 + ResNet34 (``mean_logits``): saliency and DeepLIFT for 14 labels
  in one call vs. one call per member (the baseline: the sum of the members' times).

CPU default: one 224 px image, best of 3.

    python benchmarks/bench_ensemble_channels.py
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from _common import best_time, environment, markdown_table, write_results

import xraylens as xl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu")
    torch.manual_seed(0)
    x = torch.rand(1, 1, args.size, args.size)
    labels = xl.data.PAPER_LABELS
    rows = []

    rgb = torchvision.models.resnet18(weights=None, num_classes=14).eval()
    sal = xl.get_attributor("saliency")
    times = {}
    for mode in ("repeat", "fold"):
        clf = xl.Classifier(rgb, labels, channels=mode)
        sal.attribute(clf, x, "all")  # warm-up (probe, surgery caches)
        times[mode] = best_time(lambda c=clf: sal.attribute(c, x, "all"), args.repeats, device)[0]
    for mode in ("repeat", "fold"):
        rows.append({"case": f"saliency, RGB ResNet18, channels={mode!r}", "seconds": times[mode],
                     "x vs baseline": times[mode] / times["repeat"]})  # fmt: skip

    members = [xl.get_classifier(n) for n in ("resnet18", "resnet34")]
    ens = xl.Ensemble(members)
    for method in ("saliency", "deeplift"):
        att = xl.get_attributor(method)
        for clf in (*members, ens):
            att.attribute(clf, x, "all")  # warm-up
        separate = sum(
            best_time(lambda c=c, a=att: a.attribute(c, x, "all"), args.repeats, device)[0]
            for c in members
        )
        one = best_time(lambda a=att: a.attribute(ens, x, "all"), args.repeats, device)[0]
        rows.append({"case": f"{method}: one call per member (sum)", "seconds": separate,
                     "x vs baseline": 1.0})  # fmt: skip
        rows.append({"case": f"{method}: one Ensemble call", "seconds": one,
                     "x vs baseline": one / separate})  # fmt: skip

    print(markdown_table(rows, ["case", "seconds", "x vs baseline"]))
    path = write_results(
        "ensemble_channels_cpu", {"environment": environment(device), "rows": rows, **vars(args)}
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
