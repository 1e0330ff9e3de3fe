"""Shared helpers of the benchmark scripts: timing, tables, JSON results, child processes.

Every script measures its baselines in the same process (or, for peak memory, in child
processes started by the same parent), prints a table and writes JSON to
``benchmarks/results/<name>.json`` (atomically).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from xraylens.core.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def environment(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on (load average flags a busy machine)."""
    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()),
        "argv": sys.argv,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import captum

        info["captum"] = captum.__version__
    except ImportError:
        pass
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, list]:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds) and all the times."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times), times


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``rows`` (dicts) with the given columns."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict) -> Path:
    """Write ``payload`` to ``benchmarks/results/<name>.json`` atomically; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    return path


def run_child(args: Sequence[str], timeout: float | None = None) -> dict:
    """Run ``python <args>`` in a child process that prints one JSON line last.

    Returns that JSON (the child reports its own peak RSS, ``VmHWM``, in it), ``returncode``
    and, on failure, the tail of its stderr.
    """
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"returncode": "timeout", "stderr": err[-2000:]}
    result: dict = {"returncode": proc.returncode}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if lines:
        result.update(json.loads(lines[-1]))
    if proc.returncode != 0:
        result["stderr"] = err[-2000:]
    return result


def child_report(**values) -> None:
    """Print the child's result as the last JSON line (with its peak RSS)."""
    from xraylens.core.memory import peak_rss

    values.setdefault("peak_rss", peak_rss())
    print(json.dumps(values, default=str), flush=True)
