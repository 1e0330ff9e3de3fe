"""Benchmark of the ``nap`` profiler: memory against the number of images, throughput against
plain forward passes, and the cost of float64 accumulation.

    python benchmarks/bench_nap.py                      # ResNet18, 224 px, defaults below
    python benchmarks/bench_nap.py --images 300 --size 224 --memory-images 40

1. Memory: two fresh processes profile N and 10 N random images (generated batch by batch, so
   the data set itself is never in memory) and report the accumulator size, peak RSS, RSS after
   every batch, and the tracemalloc peak of Python-side allocations.
2. Throughput, with 1 thread and with all threads: plain forward passes (eval, inference mode)
   and profiled passes over the same batches, interleaved; ratio = profiled throughput / plain
   throughput, from the fastest pass of each kind (the least disturbed on a shared machine; the
   ratio of medians is reported too).
3. float64 accumulation: the per-batch accumulation step alone, float64 (what the profiler does)
   against the same step in float32, on the activations of one batch (CPU time, 1 thread).

Timings are given as wall time and as process CPU time (on a busy machine OpenMP threads that
spin while waiting inflate CPU time; ``--threads 1`` avoids that).

Writes ``benchmarks/results/bench_nap.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import torch

import xraylens as xl
from xraylens.core.atomic import atomic_write_text
from xraylens.core.classifier import eval_mode
from xraylens.profile.nap import _Batch

GROUPS = ("COVID-19", "Pneumonia", "No Finding")
RESULTS = Path(__file__).resolve().parent / "results" / "bench_nap.json"


def batches(n_images: int, batch: int, size: int, seed: int = 0):
    """Random [B, 1, size, size] images and overlapping memberships, made one batch at a time."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n_images, batch):
        b = min(batch, n_images - start)
        yield torch.rand(b, 1, size, size, generator=gen), torch.rand(b, 3, generator=gen) < 0.5


def rss_bytes() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_run(n_images: int, batch: int, size: int) -> dict:
    """Profile ``n_images`` in this process; memory figures (run in a fresh process)."""
    torch.manual_seed(0)
    clf = xl.get_classifier("resnet18")
    prof = xl.get_profiler("nap", groups=GROUPS)
    tracemalloc.start()
    rss = []
    for i, (x, m) in enumerate(batches(n_images, batch, size)):
        prof.update(clf, x, m)
        rss.append(rss_bytes())
        if i == 1:  # after two batches allocator pools and accumulators are in place
            tracemalloc.reset_peak()
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    res = prof.result()
    warm = rss[min(1, len(rss) - 1)]
    return {
        "images": res.n_images,
        "batches": len(rss),
        "accumulator_bytes": prof.state_bytes,
        "rss_after_2_batches": warm,
        "rss_max_after_2_batches": max(rss[1:] or rss),
        "rss_growth_after_2_batches": max(rss[1:] or rss) - warm,
        "rss_end": rss[-1],
        "rss_per_batch_mib": [r // 2**20 for r in rss],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tracemalloc_peak_after_2_batches": py_peak,
    }


def throughput(n_images: int, batch: int, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    clf = xl.get_classifier("resnet18")
    data = list(batches(n_images, batch, size))
    module = clf.forward_module()

    def plain() -> None:
        with eval_mode(clf.module), torch.inference_mode():
            for x, _ in data:
                module(clf.check_input(x))

    def profiled() -> None:
        prof = xl.get_profiler("nap", groups=GROUPS)
        for x, m in data:
            prof.update(clf, x, m)
        prof.result()

    plain()  # warm-up: allocator, thread pool
    profiled()
    wall = {"plain": [], "profiled": []}
    cpu = {"plain": [], "profiled": []}
    for _ in range(repeats):  # interleaved, so that a busy machine hurts both alike
        for name, fn in (("plain", plain), ("profiled", profiled)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in wall.items()}
    best = {k: min(v) for k, v in wall.items()}
    cpu_best = {k: min(v) for k, v in cpu.items()}
    return {
        "images": n_images,
        "threads": torch.get_num_threads(),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "images_per_second_best": {k: n_images / v for k, v in best.items()},
        # the least-disturbed pass of each kind: the usual estimate on a shared machine
        "throughput_ratio": best["plain"] / best["profiled"],
        "throughput_ratio_median": med["plain"] / med["profiled"],
        "throughput_ratio_cpu_time": cpu_best["plain"] / cpu_best["profiled"],
    }


def accumulation_cost(batch: int, size: int, repeats: int) -> dict:
    """Seconds per image of the accumulation step alone, float64 vs float32."""
    torch.manual_seed(0)
    clf = xl.get_classifier("resnet18")
    x, m = next(batches(batch, batch, size))
    acts = {"input": x}
    hooks = [
        clf.module.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, _n=name: acts.__setitem__(_n, out.clone())
        )
        for name in clf.nap_layers
    ]
    with eval_mode(clf.module), torch.inference_mode():
        forward = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            clf.forward_module()(x)
            forward = min(forward, time.process_time() - t0)
    for h in hooks:
        h.remove()

    def step(dtype: torch.dtype) -> float:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            with torch.inference_mode():
                b = _Batch(m.to(dtype).T.contiguous())
                for name, a in acts.items():
                    if dtype == torch.float64:
                        b.add(name, a)
                    else:  # the same work with float32 products
                        rows = a.reshape(a.shape[0] * a.shape[1], -1)
                        rows.amin(dim=1).view(a.shape[0], -1).amin(dim=0)
                        rows.amax(dim=1).view(a.shape[0], -1).amax(dim=0)
                        b.weights @ a.reshape(a.shape[0], -1)
            best = min(best, time.process_time() - t0)
        return best / batch

    f64, f32 = step(torch.float64), step(torch.float32)
    return {
        "activation_values_per_image": sum(a[0].numel() for a in acts.values()),
        "seconds_per_image": {"float64": f64, "float32": f32, "forward": forward / batch},
        "float64_over_float32": f64 / f32,
        "float64_share_of_forward": f64 / (forward / batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--images", type=int, default=200, help="throughput run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all); throughput also 1"
    )
    parser.add_argument("--memory-images", type=int, default=40, help="1x; 10x is also run")
    parser.add_argument("--memory-run", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_run is not None:  # child process of the memory comparison
        print(json.dumps(memory_run(args.memory_run, args.batch, args.size)))
        return
    load_start = os.getloadavg()
    memory = {}
    for factor in (1, 10):
        n = args.memory_images * factor
        cmd = [
            sys.executable,
            __file__,
            "--memory-run",
            str(n),
            "--batch",
            str(args.batch),
            "--size",
            str(args.size),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        memory[f"{factor}x"] = json.loads(out.strip().splitlines()[-1])
        print(f"memory {factor}x:", memory[f"{factor}x"], flush=True)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a CPU-time comparison of small kernels: no OpenMP spinning
    accumulation = accumulation_cost(args.batch, args.size, args.repeats)
    print("accumulation (1 thread):", accumulation, flush=True)
    speed = {}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        speed[f"{threads}_threads"] = throughput(args.images, args.batch, args.size, args.repeats)
        print(f"throughput, {threads} threads:", speed[f"{threads}_threads"], flush=True)
    torch.set_num_threads(default_threads)
    report = {
        "benchmark": "nap",
        "model": "resnet18 (random init), default nap layers + input, 3 overlapping groups",
        "size": args.size,
        "batch": args.batch,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": default_threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg(),
        },
        "memory": memory,
        "peak_rss_ratio_10x_over_1x": memory["10x"]["peak_rss"] / memory["1x"]["peak_rss"],
        "accumulation": accumulation,
        "throughput": speed,
    }
    atomic_write_text(args.out, json.dumps(report, indent=1))
    for key, value in speed.items():
        print(
            f"{key}: throughput ratio {value['throughput_ratio']:.3f} (fastest passes), "
            f"{value['throughput_ratio_median']:.3f} (medians), "
            f"{value['throughput_ratio_cpu_time']:.3f} (CPU time)"
        )
    print(f"peak RSS 10x/1x {report['peak_rss_ratio_10x_over_1x']:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
