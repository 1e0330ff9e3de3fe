"""Occlusion for 14 labels: xraylens vs. the paper-style Captum loop, Captum's best batching,
and the limit (plain batched forward throughput x number of windows), in one process.

CPU default (a few minutes on 2 cores): ResNet18, one 224 px image, window 32, stride 16
(13 x 13 = 169 windows). ``--paper``: 512 px, window 50, stride 4 (117 x 117 = 13,689 windows)
on CUDA; the paper-style loop is then timed on ``--paper-loop-labels`` labels (default 1) and
scaled to 14, and Captum's batching is tried with 256 and 1024 perturbations per forward.

    python benchmarks/bench_occlusion.py
    python benchmarks/bench_occlusion.py --paper
"""

from __future__ import annotations

import argparse
import logging
import math

import torch
from _common import best_time, environment, markdown_table, write_results
from captum.attr import Occlusion as CaptumOcclusion

import xraylens as xl
from xraylens.attr.occlusion import WindowGrid


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paper", action="store_true", help="512 px, window 50, stride 4, on CUDA")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--stride", type=int, default=16)
    p.add_argument("--device", default=None, help="default: cuda with --paper, else cpu")
    p.add_argument("--max-memory", default=None, help="xraylens budget, e.g. 4GB")
    p.add_argument("--repeats", type=int, default=3, help="xraylens and limit runs (best)")
    p.add_argument("--captum-ppe", default="16,64,all", help="perturbations_per_eval to try")
    p.add_argument("--paper-loop-labels", type=int, default=None,
                   help="labels to time the paper loop on (scaled to all); default all (CPU), "
                        "1 with --paper")  # fmt: skip
    p.add_argument("--no-channels-last", action="store_true", help="skip the channels_last run")
    p.add_argument("--name", default=None, help="results file name (default from the setup)")
    args = p.parse_args(argv)
    if args.paper:
        args.size, args.window, args.stride = 512, 50, 4
        args.device = args.device or "cuda"
        if args.paper_loop_labels is None:
            args.paper_loop_labels = 1
        if args.captum_ppe == "16,64,all":  # all 13,689 at once would not fit a GPU
            args.captum_ppe = "256,1024"
    args.device = torch.device(args.device or "cpu")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    device = args.device
    torch.manual_seed(0)
    clf = xl.get_classifier(args.model)
    clf.module.to(device).eval()
    labels = list(range(len(clf.labels)))
    x = torch.rand(1, clf.in_channels, args.size, args.size)
    grid = WindowGrid.build(args.window, args.stride, args.size, args.size)
    k = len(grid)
    print(f"{args.model} {args.size}px window {args.window} stride {args.stride}: {k} windows, "
          f"{len(labels)} labels on {device}")  # fmt: skip
    module = clf.forward_module()
    xd = x.to(device)
    with torch.inference_mode():  # warm-up: library initialisation is nobody's cost
        module(xd.expand(4, -1, -1, -1).contiguous())

    def xraylens_run(channels_last=False):
        att = xl.get_attributor(
            "occlusion", window=args.window, stride=args.stride, max_memory=args.max_memory,
            channels_last=channels_last,
        )  # fmt: skip
        return att, att.attribute(clf, x, labels)

    att, ours = xraylens_run()
    chunk = att.engine.last_plan.chunk
    batch = xd.expand(chunk, -1, -1, -1).contiguous()

    def limit_run():
        with torch.inference_mode():
            for start in range(0, k, chunk):
                module(batch[: min(chunk, k - start)])

    # interleave the repeats so that a busy machine hurts both alike; keep the best of each
    t_ours, t_limit = [], []
    for _ in range(args.repeats):
        t_ours.append(best_time(lambda: xraylens_run(), 1, device)[0])
        t_limit.append(best_time(limit_run, 1, device)[0])
    rows = [
        {"method": f"xraylens (engine: {chunk} per forward)", "seconds": min(t_ours)},
        {"method": f"limit: {k} windows in batches of {chunk}", "seconds": min(t_limit)},
    ]
    # the best plain batching of all: is the engine's chunk a good one?
    t_sizes = {}
    for size in sorted({1, 4, 8, 16, 32, k, chunk}):
        plain = xd.expand(min(size, k), -1, -1, -1).contiguous()

        def sized_run(size=size, plain=plain):
            with torch.inference_mode():
                for start in range(0, k, size):
                    module(plain[: min(size, k - start)])

        t_sizes[size] = min(best_time(sized_run, 1, device)[0] for _ in range(2))
    best_size = min(t_sizes, key=t_sizes.get)
    rows.append({"method": f"best plain batching: {k} windows in batches of {best_size}",
                 "seconds": t_sizes[best_size]})  # fmt: skip
    t_cl = None
    if not args.no_channels_last:
        t_cl = min(best_time(lambda: xraylens_run(True), 1, device)[0] for _ in range(2))
        rows.append({"method": "xraylens, channels_last", "seconds": t_cl})

    captum = CaptumOcclusion(module)

    def captum_call(label, ppe):
        return captum.attribute(
            xd, sliding_window_shapes=(clf.in_channels, args.window, args.window),
            strides=(clf.in_channels, args.stride, args.stride), baselines=0.0, target=label,
            perturbations_per_eval=ppe,
        )  # fmt: skip

    # paper-style loop: one Captum call per label, one perturbation per forward
    n_loop = args.paper_loop_labels or len(labels)
    max_err = 0.0
    t_loop, maps = 0.0, []
    for label in labels[:n_loop]:
        t, _ = best_time(lambda lb=label: maps.append(captum_call(lb, 1)), 1, device)
        t_loop += t
    for label, m in zip(labels, maps):
        max_err = max(max_err, (ours.values[0, label] - m.cpu()).abs().max().item())
    t_loop_all = t_loop * len(labels) / n_loop
    note = "" if n_loop == len(labels) else f" (timed on {n_loop} labels, scaled)"
    rows.append({"method": f"Captum loop, ppe=1 (paper style){note}", "seconds": t_loop_all})

    ppes = [k if p == "all" else int(p) for p in args.captum_ppe.split(",")]
    captum_best = (math.inf, None)
    for ppe in ppes:
        t = sum(best_time(lambda lb=lb, p=ppe: captum_call(lb, p), 1, device)[0] for lb in labels)
        rows.append({"method": f"Captum, one call per label, ppe={ppe}", "seconds": t})
        captum_best = min(captum_best, (t, ppe))
    best = min(t_ours)
    for row in rows:
        row["x vs xraylens"] = row["seconds"] / best
    summary = {
        "windows": k,
        "labels": len(labels),
        "chunk": chunk,
        "xraylens_s": best,
        "limit_s": min(t_limit),
        "fraction_of_limit": min(t_limit) / best,
        "fraction_of_best_batching": t_sizes[best_size] / best,
        "plain_seconds_by_batch": t_sizes,
        "speedup_vs_paper_loop": t_loop_all / best,
        "speedup_vs_captum_best": captum_best[0] / best,
        "captum_best_ppe": captum_best[1],
        "channels_last_s": t_cl,
        "max_abs_diff_vs_captum": max_err,
        "targets": {"speedup_vs_paper_loop": ">= 10", "fraction_of_limit": ">= 0.8"},
    }
    print(markdown_table(rows, ["method", "seconds", "x vs xraylens"]))
    for key in ("speedup_vs_paper_loop", "speedup_vs_captum_best", "fraction_of_limit",
                "fraction_of_best_batching",
                "max_abs_diff_vs_captum"):  # fmt: skip
        print(f"{key}: {summary[key]:.4g}")
    name = args.name or ("occlusion_paper" if args.paper else "occlusion_cpu")
    payload = {
        "setup": vars(args) | {"device": str(device)},
        "environment": environment(device),
        "rows": rows,
        "summary": summary,
        "times": {"xraylens": t_ours, "limit": t_limit},
    }
    print("wrote", write_results(name, payload))
    return payload


if __name__ == "__main__":
    main()
