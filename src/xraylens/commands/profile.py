"""``xraylens profile``: Neuron Activation Profiles of a dataset, with plots.

DATA is a folder in one of the two dataset layouts, a data root holding both (e.g.
``../shared/data``), or a plain folder of images (see :mod:`xraylens.commands.datasets`). Groups:
label names for the dataset layouts (``--groups "COVID-19,Pneumonia,No Finding"``, the
default), the data source with ``--group-by source``, or sub-folders / ``--groups-csv`` for
plain folders.

Outputs in OUT: ``nap.npz`` (:meth:`NAPResult.save`), ``input.png`` (mean image and NAP per
group), ``nap_<layer>.png`` (groups x top feature maps per layer), ``inactive.png`` and
``summary.json``. An existing ``nap.npz`` is reused (plots redrawn) unless ``--force``.
Unreadable images are reported and skipped (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xraylens.commands.common import (
    UsageError,
    add_command,
    load_classifier,
    resolve_device,
    say,
    split_list,
    warn,
)


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    """Register ``profile`` on the subparsers ``sub``."""
    p = add_command(
        sub, "profile", __doc__, "Neuron Activation Profiles of a dataset, with plots", parents
    )
    p.add_argument("data", metavar="DATA", type=Path, help="data folder (see above)")
    p.add_argument("--model", default="resnet18", help="classifier name (default: resnet18)")
    p.add_argument(
        "--weights",
        help="weights file (.pt/.pth/.safetensors; default: random), or the .json manifest of "
        "a saved xl.Ensemble (then --model is not used)",
    )
    p.add_argument(
        "--groups",
        help="comma-separated group names (labels, sources or folder groups); default: "
        "COVID-19,Pneumonia,No Finding (labels), every source, or every folder group",
    )
    p.add_argument(
        "--group-by",
        choices=("label", "source"),
        default="label",
        help="dataset layouts: groups are labels (default) or data sources",
    )
    p.add_argument("--groups-csv", help="plain folders: CSV with columns path,group")
    p.add_argument("--layers", help="comma-separated layers (default: input + the model's)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default: 224)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, help="profile a seeded random sample of this many images")
    p.add_argument("--seed", type=int, default=0, help="seed of --limit's sample")
    p.add_argument("--top", type=int, default=8, help="feature maps per layer plot (default 8)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--force", action="store_true", help="recompute an existing nap.npz")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def _safe(layer: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in layer)


def write_plots(result, out: Path, *, top: int = 8) -> list[Path]:
    """The NAP plots of ``result`` into ``out``; returns the files written."""
    from xraylens import viz

    written = []
    layers = list(result.layers)
    if "input" in layers:
        written.append(viz.save_figure(viz.plot_input_nap(result), out / "input.png"))
    for layer in layers:
        if layer == "input":
            continue
        k = min(top, result.shape(layer)[0])
        fig = viz.plot_nap_grid(result, layer, k=k)
        written.append(viz.save_figure(fig, out / f"nap_{_safe(layer)}.png", dpi=90))
    written.append(viz.save_figure(viz.plot_inactive_fraction(result), out / "inactive.png"))
    return written


def run(args: argparse.Namespace) -> int:
    """Profile DATA; 0 when every image was read, 1 when some were skipped."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    import xraylens as xl
    from xraylens.commands.datasets import membership, open_data
    from xraylens.core.atomic import atomic_write_text
    from xraylens.errors import ImageReadError, InputError
    from xraylens.profile import NAPResult

    for name in ("size", "batch_size", "top"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    out: Path = args.out
    npz = out / "nap.npz"
    if npz.exists() and not args.force:
        result = NAPResult.load(npz)
        write_plots(result, out, top=args.top)
        say(f"profile: {npz} exists (use --force to recompute); plots redrawn", quiet=args.quiet)
        return 0
    device = resolve_device(args.device)
    ds, described = open_data(args.data, args.size, groups_csv=args.groups_csv)
    groups = split_list(args.groups) if args.groups else None
    member, names = membership(ds, groups, args.group_by)
    if args.weights and str(args.weights).endswith(".json"):  # a saved ensemble's manifest
        clf = _ensemble(args.weights, device)
    else:
        clf = load_classifier(args.model, args.weights, device, quiet=args.quiet)
    layers = split_list(args.layers) if args.layers else None
    try:
        prof = xl.get_profiler("nap", layers=layers, groups=names)
    except InputError as exc:
        raise UsageError(f"--layers: {exc}") from exc
    order = np.arange(len(ds))
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")
        order = np.sort(np.random.default_rng(args.seed).permutation(len(ds))[: args.limit])
    q = args.quiet
    say(f"profile: {described}; groups {list(names)}; {clf.name} at {args.size} px", quiet=q)
    started = time.perf_counter()
    failed: dict[str, str] = {}
    bar = tqdm(total=len(order), desc="profile", unit="img", disable=args.quiet or None)
    try:
        for start in range(0, len(order), args.batch_size):
            idx, images = [], []
            for i in order[start : start + args.batch_size]:
                try:
                    images.append(ds[int(i)][0])
                    idx.append(int(i))
                except ImageReadError as exc:
                    failed[str(ds.records[int(i)]["path"])] = exc.cause
            if idx:
                try:
                    prof.update(clf, torch.stack(images), member[idx])
                except InputError as exc:
                    if "layer" in str(exc) and prof.n_images == 0:
                        raise UsageError(f"--layers: {exc}") from exc
                    raise
            bar.update(len(order[start : start + args.batch_size]))
    finally:
        bar.close()
    if prof.n_images == 0:
        raise UsageError("no image could be read")
    result = prof.result()
    result.save(npz)
    plots = write_plots(result, out, top=args.top)
    elapsed = time.perf_counter() - started
    summary = {
        "data": str(args.data),
        "model": clf.name,
        "weights": args.weights,
        "size": args.size,
        "groups": result.counts,
        "n_images": result.n_images,
        "inactive_fraction": result.inactive_fraction,
        "zero_fraction": result.zero_fraction,
        "failed": failed,
        "seconds": round(elapsed, 2),
        "files": [p.name for p in [npz, *plots]],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    say(f"profile: {result.n_images} images in {elapsed:.1f} s; counts {result.counts}", quiet=q)
    for layer, frac in result.inactive_fraction.items():
        say(f"  {layer:<24} inactive feature maps {100 * frac:5.1f} %", quiet=args.quiet)
    say(f"profile: outputs in {out}", quiet=args.quiet)
    if failed:
        warn(f"{len(failed)} image(s) could not be read and were skipped:")
        for path, cause in failed.items():
            warn(f"  {path}: {cause}")
        return 1
    return 0


def _ensemble(path: str, device):
    import xraylens as xl

    return xl.Ensemble.load(path, device=device)
