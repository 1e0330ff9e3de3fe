"""Calibrate the engine's CPU memory probe: measured peak RSS per item vs. leaf-output bytes.

For each backbone, batch size and mode (backward to the input, or a no-grad forward) a child
process builds the model, resets its peak RSS, runs the batch and reports the peak above the
RSS before. ``predicted_MB`` is what the engine plans for the batch (fixed overhead + batch x
the probe of one item, ``xraylens/core/memory.py``); it must be at least ``measured_MB`` (the
peak RSS growth): ``measured / predicted`` <= 1 everywhere, close to 1 where the probe is tight.

    python benchmarks/calibrate_cpu_probe.py            # five backbones, 512 px, batch 1 and 4
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _common import child_report, environment, markdown_table, run_child, write_results

import xraylens as xl
from xraylens.core import memory


def child(name: str, size: int, batch: int, grad: bool) -> None:
    clf = xl.get_classifier(name)
    module = clf.forward_module().eval()
    x = torch.rand(batch, clf.in_channels, size, size)
    estimate = memory.activation_bytes(module, x[:1])
    fixed = memory.fixed_bytes(module, x.device)
    per_item, _ = memory.probe_item_bytes(module, x[:1], grad=grad)
    memory.reset_peak_rss()
    rss0 = memory.current_rss()
    start = time.perf_counter()
    if grad:
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(module(xi)[:, 0].sum(), xi)
    else:
        with torch.inference_mode():
            module(x)
    seconds = time.perf_counter() - start
    peak = memory.peak_rss()
    child_report(
        estimate=estimate, fixed=fixed, inputs=x.numel() * x.element_size(),
        predicted=fixed + batch * per_item, rss0=rss0, peak_rss=peak, seconds=seconds,
    )  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(xl.list_classifiers()))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--child", nargs=4, metavar=("MODEL", "SIZE", "BATCH", "GRAD"))
    args = p.parse_args(argv)
    if args.child:
        name, size, batch, grad = args.child
        child(name, int(size), int(batch), grad == "1")
        return {}
    rows = []
    for name in args.models.split(","):
        for grad in (True, False):
            for batch in (int(b) for b in args.batches.split(",")):
                r = run_child([__file__, "--child", name, str(args.size), str(batch),
                               "1" if grad else "0"])  # fmt: skip
                if r.get("returncode") != 0:
                    rows.append({"model": name, "grad": grad, "batch": batch, "error": r})
                    continue
                measured = r["peak_rss"] - r["rss0"]
                rows.append({
                    "model": name, "grad": grad, "batch": batch,
                    "leaf_outputs_MB": r["estimate"] / 1e6, "measured_MB": measured / 1e6,
                    "predicted_MB": r["predicted"] / 1e6,
                    "measured_over_predicted": measured / r["predicted"],
                    "covered": r["predicted"] >= measured, "rss_before_GB": r["rss0"] / 1e9,
                    "seconds": r["seconds"],
                })  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
    cols = ["model", "grad", "batch", "leaf_outputs_MB", "measured_MB", "predicted_MB",
            "measured_over_predicted", "covered", "rss_before_GB", "seconds"]  # fmt: skip
    print(markdown_table(rows, cols))
    worst = {
        g: max(
            (r["factor_needed"] for r in rows if r.get("grad") == g and "covered" in r),
            default=None,
        )
        for g in (True, False)
    }
    summary = {
        "worst_factor_needed_grad": worst[True],
        "worst_factor_needed_no_grad": worst[False],
        "all_covered": all(r.get("covered", False) for r in rows),
        "factor_grad": memory.CPU_FACTOR_GRAD,
        "factor_no_grad": memory.CPU_FACTOR_NO_GRAD,
        "factors_cover_worst": all(
            w is None or w <= f
            for w, f in (
                (worst[True], memory.CPU_FACTOR_GRAD),
                (worst[False], memory.CPU_FACTOR_NO_GRAD),
            )
        ),  # fmt: skip
    }
    print(summary)
    payload = {"setup": vars(args), "environment": environment(), "rows": rows,
               "summary": summary}  # fmt: skip
    print("wrote", write_results("calibrate_cpu_probe", payload))
    return payload


if __name__ == "__main__":
    main()
