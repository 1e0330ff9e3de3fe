"""DeepLIFT summation-to-delta on every backbone: xraylens vs. Captum without and with surgery.

Relative completeness error ``max |sum(attribution) - (f(x) - f(x0))| / max(1, |f(x) - f(x0)|)``
over the labels, one random image against a random reference, float64, random weights with
randomised BatchNorm (the same setup as ``tests/test_attr_deeplift.py``, which asserts the
bounds; this script prints the figures quoted in ``docs/methods.md``):

- xraylens: ``get_attributor("deeplift")`` (surgery + the exact max-pool rule), all labels:
  its delta (computed in float64 inside) and the error of its float32 maps;
- Captum, no surgery: ``captum.attr.DeepLift`` on the model as built;
- Captum after the structural surgery steps, with Captum's own max-pool rule.

    python benchmarks/deeplift_completeness.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch
from _common import environment, markdown_table, write_results

import xraylens as xl
from xraylens.surgery import PIPELINES, Surgery

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_guard import backbone, tiny_input  # noqa: E402  (the tests' random-BN setup)

#: the DeepLIFT surgery without the speed-ups (no effect on completeness)
STRUCTURAL = [s for s in PIPELINES["deeplift"] if s not in ("merge_batchnorm", "fast_input_grad")]


def relative(delta: torch.Tensor, diff: torch.Tensor) -> float:
    """max |delta| / max(1, |f(x) - f(x0)|) over the labels."""
    return float((delta.abs() / diff.abs().clamp_min(1)).max())


def captum_error(clf: xl.Classifier, inner, x, x0, labels, diff) -> float | str:
    """Captum's own convergence delta, relative, max over ``labels``; the error's type if it
    refuses the model."""
    from captum.attr import DeepLift

    dl = DeepLift(clf.forward_module(inner))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deltas = torch.stack(
                [dl.attribute(x, x0, target=t, return_convergence_delta=True)[1]
                 for t in labels], 1)  # fmt: skip
    except RuntimeError as exc:
        return f"raises ({str(exc).splitlines()[0][:60]})"
    return relative(deltas, diff)


def measure(name: str, n_labels: int) -> dict:
    clf = backbone(name, torch.float64)
    x, x0 = tiny_input(clf, n=1, seed=1), tiny_input(clf, n=1, seed=2)
    labels = list(range(n_labels))
    res = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, labels)
    with torch.no_grad():
        diff = (clf(x) - clf(x0))[:, labels]
    structural = copy.deepcopy(clf.module)
    Surgery(STRUCTURAL).apply(structural)
    return {
        "model": name,
        "input": "x".join(map(str, x.shape[-2:])),
        "xraylens_delta": relative(res.delta, diff),
        "xraylens_float32_maps": relative(res.values.double().sum((2, 3, 4)) - diff, diff),
        "captum_no_surgery": captum_error(clf, copy.deepcopy(clf.module), x, x0, labels, diff),
        "captum_after_surgery": captum_error(clf, structural, x, x0, labels, diff),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(xl.list_classifiers()))
    p.add_argument("--labels", type=int, default=14, help="labels explained (default 14)")
    args = p.parse_args(argv)
    rows = [measure(m, args.labels) for m in args.models.split(",")]
    cols = ["model", "input", "xraylens_delta", "xraylens_float32_maps", "captum_no_surgery",
            "captum_after_surgery"]  # fmt: skip
    print(markdown_table(rows, cols))
    payload = {"environment": environment(), "rows": rows}
    write_results("deeplift_completeness", payload)
    return payload


if __name__ == "__main__":
    main()
