"""DeepLIFT summation-to-delta and speed on every backbone and every zoo model, vs. Captum.

Relative completeness error ``max |sum(attribution) - (f(x) - f(x0))| / |f(x) - f(x0)|`` over
the labels (labels whose change is below 1e-3 of the largest are judged against that), one
random image against a random reference, float64, random weights with randomised BatchNorm
(the setup of ``tests/test_attr_deeplift.py`` and ``tests/test_zoo_deeplift.py``, which assert
the bounds; this script prints the figures quoted in ``docs/methods.md``):

- xraylens: ``get_attributor("deeplift")`` and ``"deeplift_shap"`` (2 baselines), all labels:
  their delta (computed in float64 inside);
- Captum: ``captum.attr.DeepLift`` on the model as built, and after the structural surgery
  steps (pipeline ``"guided"``: unshared, non-in-place ReLU modules, functional calls as
  modules), one call per label.

``activations`` is the zoo's activation chain with 3x its mixers' weights, as in the tests (at
the default init it is flat: ``|f(x) - f(x0)| ~ 1e-16``).

Speed (``--time``): float32, the same input, every label: one xraylens DeepLIFT call against
one Captum call per label on the surgery copy (best of ``--repeats``), ratio = Captum /
xraylens (> 1: xraylens faster).

    python benchmarks/deeplift_completeness.py            # backbones and zoo
    python benchmarks/deeplift_completeness.py --time --models resnet18 --zoo ''
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch
from _common import best_time, environment, markdown_table, write_results

import xraylens as xl
from xraylens.surgery import PIPELINES, Surgery

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_guard import backbone, tiny_input  # noqa: E402  (the tests' random-BN setup)
from test_zoo_deeplift import _activations  # noqa: E402  (the zoo chain, not flat)
from zoo import ZOO, zoo_input, zoo_model  # noqa: E402

#: the structural surgery Captum needs (no speed-ups)
STRUCTURAL = [s for s in PIPELINES["guided"] if s not in ("merge_batchnorm", "fast_input_grad")]


def relative(delta: torch.Tensor, diff: torch.Tensor) -> float:
    """max |delta| / |f(x) - f(x0)| over the labels (floor: 1e-3 of the largest change)."""
    delta, diff = delta.reshape(diff.shape).double(), diff.double()
    return float((delta.abs() / diff.abs().clamp_min(1e-3 * diff.abs().max())).max())


def _captum_deltas(clf, inner, x, x0, labels):
    from captum.attr import DeepLift

    dl = DeepLift(clf.forward_module(inner))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.stack(
            [dl.attribute(x, x0, target=t, return_convergence_delta=True)[1]
             for t in labels], 1)  # fmt: skip


def captum_error(clf, inner, x, x0, labels, diff) -> float | str:
    """Captum's own convergence delta, relative; the error if it refuses the model."""
    try:
        return relative(_captum_deltas(clf, inner, x, x0, labels), diff)
    except Exception as exc:
        return f"raises ({type(exc).__name__}: {str(exc).splitlines()[0][:50]})"


def _structural(module):
    inner = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Surgery(STRUCTURAL).apply(inner)
    return inner


def measure(kind: str, name: str, timing: bool, repeats: int) -> dict:
    if kind == "zoo":
        clf = _activations() if name == "activations" else zoo_model(name, torch.float64)
        x, refs = zoo_input(clf, n=1, seed=3), zoo_input(clf, n=2, seed=4)
    else:
        clf = backbone(name, torch.float64)
        x, refs = tiny_input(clf, n=1, seed=3), tiny_input(clf, n=2, seed=4)
    x0 = refs[:1]
    labels = list(range(clf.num_classes))
    dl = xl.get_attributor("deeplift", baseline=x0).attribute(clf, x, "all")
    shap = xl.get_attributor("deeplift_shap", baselines=refs).attribute(clf, x, "all")
    with torch.no_grad():
        fx, fr = clf(x), clf(refs)
    diff = fx - fr[:1]
    row = {
        "model": name,
        "input": "x".join(map(str, x.shape[-2:])),
        "xraylens_deeplift": relative(dl.delta, diff),
        "xraylens_deeplift_shap": relative(shap.delta, fx - fr.mean(0, keepdim=True)),
        "captum_as_built": captum_error(clf, copy.deepcopy(clf.module), x, x0, labels, diff),
        "captum_after_surgery": captum_error(clf, _structural(clf.module), x, x0, labels, diff),
    }
    if timing:
        row.update(_timing(kind, name, repeats))
    return row


def _timing(kind: str, name: str, repeats: int) -> dict:
    clf = zoo_model(name, torch.float32) if kind == "zoo" else backbone(name)
    x = tiny_input(clf, n=1, seed=3)
    x0 = tiny_input(clf, n=1, seed=4)
    labels = list(range(clf.num_classes))
    att = xl.get_attributor("deeplift", baseline=x0)
    inner = _structural(clf.module)
    ours, _ = best_time(lambda: att.attribute(clf, x, "all"), repeats, x.device)
    try:
        theirs, _ = best_time(lambda: _captum_deltas(clf, inner, x, x0, labels), repeats, x.device)
    except Exception:
        return {"xraylens_s": ours, "captum_per_label_s": "raises", "ratio": "-"}
    return {"xraylens_s": ours, "captum_per_label_s": theirs, "ratio": theirs / ours}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(xl.list_classifiers()))
    p.add_argument("--zoo", default=",".join(ZOO), help="zoo models ('' for none)")
    p.add_argument("--time", action="store_true", help="also time against Captum per label")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    cases = [("backbone", m) for m in args.models.split(",") if m]
    cases += [("zoo", m) for m in args.zoo.split(",") if m]
    rows = [measure(k, m, args.time, args.repeats) for k, m in cases]
    cols = ["model", "input", "xraylens_deeplift", "xraylens_deeplift_shap", "captum_as_built",
            "captum_after_surgery"]  # fmt: skip
    if args.time:
        cols += ["xraylens_s", "captum_per_label_s", "ratio"]
    print(markdown_table(rows, cols))
    payload = {"environment": environment(), "rows": rows}
    write_results("deeplift_completeness", payload)
    return payload


if __name__ == "__main__":
    main()
