"""Every method x every backbone at 512 px under a memory budget: peak memory and time per map.

One image, one label, ``max_memory=4GB`` (default) on the CPU; occlusion with window 64 and
stride 32. Each run is a child process reporting its own peak RSS, so one run's memory cannot
hide another's. ``peak`` is the whole process (interpreter, torch, model, inputs, work);
``above start`` is the growth during ``attribute`` (the part the budget governs).
``within_budget``: the whole process's peak <= the budget; ``work_within_budget``: the growth
<= the budget. ``--whole-process`` gives the engine the budget minus what the process holds
before the work, so that the whole process stays within it.

    python benchmarks/bench_all_methods.py
    python benchmarks/bench_all_methods.py --methods occlusion,saliency --models resnet18
    python benchmarks/bench_all_methods.py --whole-process --name all_methods_cpu_whole
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import child_report, environment, markdown_table, run_child, write_results

import xraylens as xl
from xraylens.core import memory
from xraylens.core.engine import parse_memory

#: the attributor names promised by the public API contract
CONTRACT_METHODS = (
    "saliency", "input_x_gradient", "guided_backprop", "deconvolution", "integrated_gradients",
    "deeplift", "deeplift_shap", "gradient_shap", "grad_cam", "guided_grad_cam", "occlusion",
)  # fmt: skip


def method_params(method: str, window: int, stride: int) -> dict:
    return {"window": window, "stride": stride} if method == "occlusion" else {}


def child(
    method: str, model: str, size: int, budget: str, window: int, stride: int, whole: bool
) -> None:
    clf = xl.get_classifier(model)
    x = torch.rand(1, clf.in_channels, size, size)
    att = xl.get_attributor(method, max_memory=budget, **method_params(method, window, stride))
    with torch.inference_mode():  # library initialisation is nobody's cost
        clf.forward_module().eval()(x)
    memory.reset_peak_rss()
    rss0 = memory.current_rss()
    if whole:  # the engine budgets working memory: give it what the process does not hold yet
        att.engine.max_memory = parse_memory(budget) - rss0
    start = time.perf_counter()
    res = att.attribute(clf, x, [0])
    seconds = time.perf_counter() - start
    plan = att.engine.last_plan
    child_report(
        seconds=seconds, rss0=rss0, finite=bool(torch.isfinite(res.values).all()),
        chunk=None if plan is None else plan.chunk, items=None if plan is None else plan.n_items,
    )  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=None, help="default: every registered attributor")
    p.add_argument("--models", default=",".join(xl.list_classifiers()))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--budget", default="4GB")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--stride", type=int, default=32)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--name", default="all_methods_cpu")
    p.add_argument(
        "--whole-process", action="store_true",
        help="cap the whole process at the budget: max_memory = budget - the RSS before the work",
    )  # fmt: skip
    p.add_argument("--child", nargs=7)
    args = p.parse_args(argv)
    if args.child:
        method, model, size, budget, window, stride, whole = args.child
        child(method, model, int(size), budget, int(window), int(stride), whole == "1")
        return {}
    registered = xl.list_attributors()
    methods = args.methods.split(",") if args.methods else registered
    missing = [m for m in CONTRACT_METHODS if m not in registered]
    budget = parse_memory(args.budget)
    rows = []
    for model in args.models.split(","):
        for method in methods:
            if method not in registered:
                rows.append({"model": model, "method": method, "error": "not registered"})
                continue
            r = run_child([__file__, "--child", method, model, str(args.size), args.budget,
                           str(args.window), str(args.stride), str(int(args.whole_process))],
                          timeout=args.timeout)  # fmt: skip
            ok = r.get("returncode") == 0
            peak = r.get("peak_rss")
            rows.append({
                "model": model, "method": method, "seconds": r.get("seconds"),
                "peak_GB": peak / 1e9 if ok and peak else None,
                "above_start_GB": (peak - r["rss0"]) / 1e9 if ok and peak else None,
                "work_within_budget": bool(ok and peak and peak - r["rss0"] <= budget),
                "within_budget": bool(ok and peak and peak <= budget),
                "chunk": r.get("chunk"), "items": r.get("items"), "finite": r.get("finite"),
                "error": None if ok else (r.get("stderr") or str(r.get("returncode")))[-300:],
            })  # fmt: skip
            print({k: v for k, v in rows[-1].items()}, flush=True)
    cols = ["model", "method", "seconds", "peak_GB", "above_start_GB", "work_within_budget",
            "within_budget", "chunk", "items", "error"]  # fmt: skip
    print(markdown_table(rows, cols))
    done = [r for r in rows if r.get("peak_GB") is not None]
    summary = {
        "runs": len(rows),
        "completed": len(done),
        "all_work_within_budget": bool(done) and all(r["work_within_budget"] for r in done),
        "all_within_budget": bool(done) and all(r["within_budget"] for r in done),
        "max_peak_GB": max((r["peak_GB"] for r in done), default=None),
        "not_registered": missing,
    }
    print(summary)
    payload = {"setup": vars(args), "environment": environment(), "rows": rows,
               "summary": summary}  # fmt: skip
    print("wrote", write_results(args.name, payload))
    return payload


if __name__ == "__main__":
    main()
