"""The whole method set on every zoo model (tests/zoo.py): one xraylens call per method vs.
Captum called once per label, in the same process.

Each model is a random-init torchvision / timm model at a small size (float32, 32 px; the
activation zoo 16 px), 2 images, all 5 labels. Per model and repeat, a *fresh* classifier is
built so that xraylens's remembered probes do not carry over (a first call pays its probe,
layer probe and surgery tracing, as a user's first batch does). Both libraries are warmed up
once on a throw-away model first (imports, first-use set-up). Methods where either library
refuses the model (e.g. DeepLIFT on a model without an exact rule, or Captum on in-place
ops) are left out of both totals and listed. ``ratio`` = Captum seconds / xraylens seconds
(best of the repeats, per method, summed).

    python benchmarks/bench_zoo.py
    python benchmarks/bench_zoo.py --models regnet_y_400mf,resnet18_tv --repeats 3
    python benchmarks/bench_zoo.py --methods saliency,deeplift --name zoo_some
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from pathlib import Path

import torch
from _common import environment, markdown_table, write_results

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from test_attr_captum import captum_maps  # noqa: E402
from zoo import ZOO, zoo_input, zoo_model  # noqa: E402

import xraylens as xl  # noqa: E402

LABELS = list(range(5))
METHODS = (
    "saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "guided_backprop",
    "deconvolution", "grad_cam", "guided_grad_cam", "deeplift", "deeplift_shap",
)  # fmt: skip
#: CAM layers for models whose default does not exist (token models) or is trivial
CAM_LAYER = {
    "vit_tv": "conv_proj",
    "vit_timm_fused": "blocks.0.norm1",
    "vit_timm_unfused": "blocks.0.norm1",
}


def params(method: str, name: str, clf: xl.Classifier) -> dict:
    base = zoo_input(clf, n=4, seed=7)
    if method == "gradient_shap":
        return {"baselines": base, "n_samples": 5, "seed": None}
    if method == "deeplift_shap":
        return {"baselines": base}
    if method in ("grad_cam", "guided_grad_cam") and name in CAM_LAYER:
        return {"layer": CAM_LAYER[name]}
    return {}


def time_one(fn) -> float | Exception:
    """Seconds of ``fn()``, or the exception it raised."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as exc:  # noqa: BLE001  (a refusal: reported, not timed)
        return exc
    return time.perf_counter() - start


def run_model(name: str, repeats: int, methods=METHODS) -> dict:
    best_x: dict[str, float] = {}
    best_c: dict[str, float] = {}
    failed: dict[str, str] = {}
    for _ in range(repeats):
        clf = zoo_model.__wrapped__(name, torch.float32)  # fresh: no remembered probes
        x = zoo_input(clf)
        for method in methods:
            if method in failed:
                continue
            p = params(method, name, clf)
            att = xl.get_attributor(method, **p)
            tx = time_one(functools.partial(att.attribute, clf, x, LABELS))
            full = dict(att.params)
            if method in ("grad_cam", "guided_grad_cam"):
                full["layer"] = p.get("layer") or _default_layer(clf, x)
            tc = time_one(functools.partial(captum_maps, method, clf, x, full, LABELS))
            for who, t in (("xraylens", tx), ("captum", tc)):
                if isinstance(t, Exception):
                    failed[method] = f"{who}: {type(t).__name__}: {str(t)[:90]}"
            if method in failed:
                continue
            best_x[method] = min(best_x.get(method, float("inf")), tx)
            best_c[method] = min(best_c.get(method, float("inf")), tc)
    xs, cs = sum(best_x.values()), sum(best_c.values())
    return {
        "model": name,
        "family": ZOO[name].family,
        "methods": len(best_x),
        "xraylens_s": xs,
        "captum_s": cs,
        "ratio": cs / xs if xs else None,
        "per_method": {m: {"xraylens": best_x[m], "captum": best_c[m]} for m in best_x},
        "left_out": failed,
    }


def _default_layer(clf, x) -> str:
    from xraylens.attr._cam_layer import default_layer, layer_probe
    from xraylens.attr._prepare import copy_module

    inner = copy_module(clf.module)
    return default_layer(layer_probe(clf.module, inner, inner, x[:1]), inner, x.shape[-2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--labels", type=int, default=5, help="labels explained (the first ones)")
    ap.add_argument("--name", default="zoo_cpu")
    args = ap.parse_args()
    LABELS[:] = range(args.labels)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    warm = zoo_model.__wrapped__("densenet_small", torch.float32)  # first-use costs, untimed
    for method in METHODS:
        att = xl.get_attributor(method, **params(method, "densenet_small", warm))
        xw, full = zoo_input(warm), dict(att.params) | {"layer": "features"}
        time_one(functools.partial(att.attribute, warm, xw, LABELS))
        time_one(functools.partial(captum_maps, method, warm, xw, full, LABELS))
    rows = []
    for name in args.models.split(","):
        row = run_model(name, args.repeats, args.methods.split(","))
        rows.append(row)
        print(f"{name}: xraylens {row['xraylens_s']:.2f} s, captum {row['captum_s']:.2f} s, "
              f"ratio {row['ratio']:.2f}; left out {sorted(row['left_out'])}",
              flush=True)  # fmt: skip
    cols = ["model", "family", "methods", "xraylens_s", "captum_s", "ratio"]
    print(markdown_table(rows, cols))
    for row in rows:
        for m, why in row["left_out"].items():
            print(f"- {row['model']} {m}: {why}")
    path = write_results(args.name, {"environment": environment(), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
