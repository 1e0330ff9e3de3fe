"""Peak memory and time of Integrated Gradients (50 steps) on DenseNet161 at 512 px.

Each run is a child process that reports its own peak RSS (CPU) or peak CUDA memory:

- ``xraylens``: ``xl.get_attributor("integrated_gradients", n_steps=50, max_memory=BUDGET)``;
- ``engine + Captum``: Captum's IG with ``internal_batch_size`` chosen by the xraylens engine
  from the same budget (the engine alone, independent of the attributor);
- ``Captum unbounded``: Captum's IG with ``internal_batch_size=None`` (all steps in one batch).
  On a CPU machine that cannot hold all steps at once it runs with the most steps that fit
  in 60% of the available RAM and its time is scaled to the full step count (marked).

    python benchmarks/bench_ig_memory.py                  # CPU, budget 4GB
    python benchmarks/bench_ig_memory.py --paper          # CUDA
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import child_report, environment, markdown_table, run_child, write_results

import xraylens as xl
from xraylens.core import memory
from xraylens.core.engine import Engine, available_cpu_memory, parse_memory


def child(mode: str, model: str, size: int, steps: int, budget: str, device: str) -> None:
    import captum.attr as ca

    dev = torch.device(device)
    clf = xl.get_classifier(model)
    clf.module.to(dev).eval()
    x = torch.rand(1, clf.in_channels, size, size)
    module = clf.forward_module()
    with torch.inference_mode():  # library initialisation is nobody's cost
        module(x.to(dev))
    if mode == "probe":
        engine = Engine(max_memory=budget)
        child_report(step_bytes=engine.item_bytes(module, x.to(dev), grad=True))
        return
    chunk = None
    memory.reset_peak_rss()
    rss0 = memory.current_rss()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        cuda0 = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    try:
        if mode == "xraylens":
            att = xl.get_attributor("integrated_gradients", n_steps=steps, max_memory=budget)
            att.attribute(clf, x, [0])
            chunk = getattr(att.engine.last_plan, "chunk", None)
        else:
            xd = x.to(dev)
            if mode == "engine":
                chunk = Engine(max_memory=budget).plan(
                    steps, module=module, example=xd, grad=True, what="IG steps"
                )
            ig = ca.IntegratedGradients(module)
            ig.attribute(xd, baselines=0.0, target=0, n_steps=steps, internal_batch_size=chunk)
        error = None
    except torch.OutOfMemoryError as exc:
        error = f"out of memory: {str(exc)[:200]}"
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    report = {"seconds": seconds, "rss0": rss0, "chunk": chunk, "error": error}
    if dev.type == "cuda":
        report["cuda_peak"] = torch.cuda.max_memory_allocated(dev) - cuda0
    child_report(**report)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paper", action="store_true", help="on CUDA")
    p.add_argument("--model", default="densenet161")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budget", default="4GB")
    p.add_argument("--device", default=None)
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="steps for the unbounded Captum run (default: all that fit)")  # fmt: skip
    p.add_argument("--modes", default="xraylens,engine,captum")
    p.add_argument("--child", nargs=6)
    args = p.parse_args(argv)
    if args.child:
        mode, model, size, steps, budget, device = args.child
        child(mode, model, int(size), int(steps), budget, device)
        return {}
    device = args.device or ("cuda" if args.paper else "cpu")
    budget = parse_memory(args.budget)

    def run(mode, steps):
        r = run_child([__file__, "--child", mode, args.model, str(args.size), str(steps),
                       args.budget, device])  # fmt: skip
        print(mode, steps, {k: v for k, v in r.items() if k != "stderr"}, flush=True)
        if r.get("returncode") != 0:
            print(r.get("stderr", ""))
        return r

    baseline_steps, scaled = args.baseline_steps or args.steps, False
    probe = None
    if device == "cpu" and args.baseline_steps is None:
        probe = run("probe", args.steps)
        fit = int(0.6 * available_cpu_memory() // max(1, probe["step_bytes"]))
        if fit < args.steps:
            baseline_steps, scaled = max(1, fit), True
    rows, by_mode = [], {}
    labels = {"xraylens": f"xraylens, budget {args.budget}",
              "engine": f"Captum, internal_batch_size from the engine ({args.budget})",
              "captum": "Captum, internal_batch_size=None"}  # fmt: skip
    for mode in args.modes.split(","):
        steps = baseline_steps if mode == "captum" else args.steps
        if mode == "xraylens" and "integrated_gradients" not in xl.list_attributors():
            by_mode[mode] = {"run": labels[mode], "error": "integrated_gradients not registered"}
            rows.append(by_mode[mode])
            continue
        r = run(mode, steps)
        seconds = r.get("seconds")
        note = ""
        if mode == "captum" and scaled and seconds is not None:
            seconds, note = (
                seconds * args.steps / steps,
                f"{steps} steps, time x{args.steps}/{steps}",
            )
        peak = r.get("cuda_peak") if device != "cpu" else r.get("peak_rss")
        above = None if peak is None or device != "cpu" else peak - r["rss0"]
        rows.append({
            "run": labels[mode], "steps": steps, "chunk": r.get("chunk"), "seconds": seconds,
            "peak_GB": None if peak is None else peak / 1e9,
            "above_start_GB": None if above is None else above / 1e9,
            "error": r.get("error") or (None if r.get("returncode") == 0 else "failed"),
            "note": note,
        })  # fmt: skip
        by_mode[mode] = rows[-1]
    cols = ["run", "steps", "chunk", "seconds", "peak_GB", "above_start_GB", "error", "note"]
    print(markdown_table(rows, cols))
    base = by_mode.get("captum", {})
    summary = {"budget_bytes": budget, "device": device}
    for key in ("xraylens", "engine"):
        r = by_mode.get(key, {})
        if r.get("seconds") and base.get("seconds"):
            summary[f"{key}_time_ratio_vs_unbounded"] = r["seconds"] / base["seconds"]
        if r.get("peak_GB") is not None:
            summary[f"{key}_peak_within_budget"] = r["peak_GB"] * 1e9 <= budget
    summary["targets"] = {"peak": "<= budget", "time_ratio_vs_unbounded": "<= 1.25"}
    print(summary)
    payload = {
        "setup": vars(args) | {"device": device, "baseline_steps": baseline_steps},
        "environment": environment(device),
        "probe": probe,
        "rows": rows,
        "summary": summary,
        "note": None if not scaled else (
            f"Captum unbounded needs about {args.steps} x {probe['step_bytes'] / 1e9:.2f} GB "
            f"= {args.steps * probe['step_bytes'] / 1e9:.0f} GB (probe); ran {baseline_steps} "
            "steps and scaled the time"
        ),
    }  # fmt: skip
    name = "ig_memory_paper" if args.paper else "ig_memory_cpu"
    print("wrote", write_results(name, payload))
    return payload


if __name__ == "__main__":
    main()
