"""Command line: ``python -m examples.covid_cxr <step>[,<step>...] [options]``.

Steps: prepare, train, evaluate, ensemble, explain, evaluate-maps (attribution inside the lung
masks, :mod:`examples.covid_cxr.evaluate_maps`), profile, report, or all (every step in that
order). Run it from the repository root; under ``torchrun --nproc_per_node=N -m
examples.covid_cxr ...`` the steps use N processes (see :mod:`examples.covid_cxr.distributed`).
Later steps read the settings that ``prepare`` stored in ``<out>/run.json``, so
``python -m examples.covid_cxr report --out DIR`` needs no other option.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from examples.covid_cxr import config
from examples.covid_cxr.context import Run
from examples.covid_cxr.data import read_json, resolve_data
from examples.covid_cxr.distributed import setup, teardown
from xraylens.errors import XraylensError

STEPS = (
    "prepare", "train", "evaluate", "ensemble", "explain", "evaluate-maps", "profile", "report",
)  # fmt: skip


def _step_functions() -> dict[str, Callable[[Run], object]]:
    from examples.covid_cxr.ensemble import ensemble
    from examples.covid_cxr.evaluate import evaluate
    from examples.covid_cxr.evaluate_maps import evaluate_maps
    from examples.covid_cxr.explain import explain
    from examples.covid_cxr.prepare import prepare
    from examples.covid_cxr.profile import profile
    from examples.covid_cxr.report import report
    from examples.covid_cxr.train import train

    return {
        "prepare": prepare,
        "train": train,
        "evaluate": evaluate,
        "ensemble": ensemble,
        "explain": explain,
        "evaluate-maps": evaluate_maps,
        "profile": profile,
        "report": report,
    }


def parse_steps(text: str) -> list[str]:
    steps: list[str] = []
    for name in (s.strip() for s in text.split(",") if s.strip()):
        if name == "all":
            steps += list(STEPS)
        elif name in STEPS:
            steps.append(name)
        else:
            raise XraylensError(f"unknown step {name!r}; steps: {', '.join(STEPS)}, all")
    return steps


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m examples.covid_cxr",
        description="The paper's recipe end to end: prepare, train, evaluate, ensemble, explain, "
        "evaluate-maps, profile, report.",
    )
    ap.add_argument("steps", help=f"one of {', '.join(STEPS)}, all; or several, comma-separated")
    ap.add_argument(
        "--profile",
        choices=sorted(config.PROFILES),
        help="settings (default: those stored in --out by prepare, else quick)",
    )
    ap.add_argument("--data", help="data folder (default ../shared/data) or 'phantoms'")
    ap.add_argument("--out", type=Path, help="output folder (default runs/covid_cxr/<profile>)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    ap.add_argument("--force", action="store_true", help="redo finished work of these steps")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = ap.add_argument_group("profile overrides")
    g.add_argument("--backbones", help="comma-separated classifier names")
    g.add_argument("--folds", type=int)
    g.add_argument("--scheme", choices=config.SCHEMES)
    g.add_argument("--size", type=int)
    g.add_argument("--limit", type=int, help="use a class-balanced slice of N images")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="images per optimizer step (all ranks)")
    g.add_argument("--accumulate", type=int, help="micro-batches per step on each rank")
    g.add_argument("--lr", type=float)
    g.add_argument("--scheduler", choices=config.SCHEDULERS)
    g.add_argument("--select", choices=config.CRITERIA)
    g.add_argument("--dtype", choices=config.DTYPES)
    g.add_argument("--pretrained", help="published weights, e.g. imagenet (needs internet)")
    g.add_argument("--seed", type=int)
    g.add_argument("--threshold", type=float)
    g.add_argument("--methods", help="comma-separated attribution methods")
    g.add_argument("--explain-images", type=int, help="test images explained per fold")
    g.add_argument("--evaluate-images", type=int, help="masked test images evaluate-maps scores")
    g.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA")
    return ap


OVERRIDES = (
    "backbones",
    "folds",
    "scheme",
    "size",
    "limit",
    "epochs",
    "batch_size",
    "accumulate",
    "lr",
    "scheduler",
    "select",
    "dtype",
    "pretrained",
    "seed",
    "threshold",
    "methods",
    "explain_images",
    "evaluate_images",
)


def resolve_profile(args) -> tuple[config.Profile, Path, str | None]:
    """The profile (named, or stored in ``--out``), the output folder and the stored data."""
    overrides = {k: getattr(args, k) for k in OVERRIDES}
    if args.no_amp:
        overrides["amp"] = False
    stored = None
    if args.out is not None and (args.out / "run.json").is_file():
        stored = read_json(args.out / "run.json")
    if args.profile is None and stored is not None:
        settings = dict(stored["settings"])
        named = config.PROFILES.get(settings.get("name"))
        if named is not None:  # fields added since the run was prepared: the profile's own
            settings = {**named.to_dict(), **settings}
        base = config.Profile(**settings)
        changes = {k: v for k, v in overrides.items() if v is not None}
        profile = base.replace(**changes) if changes else base
    else:
        profile = config.get_profile(args.profile or "quick", **overrides)
    out = args.out if args.out is not None else Path("runs") / "covid_cxr" / profile.name
    return profile, out, (stored or {}).get("data")


@contextlib.contextmanager
def deterministic():
    """Reproducible kernels for the block: deterministic algorithms (warn-only), no cuDNN
    autotuning; the previous global settings are restored afterwards."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the steps; returns the exit status (2 for a usage or data error, message on stderr)."""
    args = build_parser().parse_args(argv)
    with deterministic():
        return _main(args)


def _main(args) -> int:
    dist = None
    try:
        steps = parse_steps(args.steps)
        profile, out, stored_data = resolve_profile(args)
        data = resolve_data(args.data if args.data is not None else stored_data)
        dist = setup(args.device)
        run = Run(profile, data, out, dist, force=args.force, progress=not args.no_progress)
        functions = _step_functions()
        for step in steps:
            t0 = time.perf_counter()
            functions[step](run)
            if dist.is_main:
                print(
                    f"[covid_cxr] {step}: done in {time.perf_counter() - t0:.1f} s ({out})",
                    flush=True,
                )
    except XraylensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist is not None:
            teardown(dist)
    return 0
