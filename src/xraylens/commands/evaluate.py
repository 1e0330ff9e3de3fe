"""``xraylens evaluate``: score the maps that ``xraylens explain`` wrote, against masks.

EXPLAIN_OUT is an ``xraylens explain`` output folder (``<key>/<method>.npz`` and
``summary.json``). Masks come from ``--masks FOLDER`` (a mask file named like the image's key
or file stem, any image format, non-zero = inside) or ``--data ROOT`` (the datasets' own lung
masks, e.g. ``../shared/data``, which also gives patient ids). Masks are brought to the maps'
geometry with the image's own resize and padding (``preprocess_mask``).

Metrics (``--metrics``, default the localisation and complexity ones; see ``xraylens list
--kind metric``) that need the model and images (``deletion``, ``insertion``, ``road``,
``randomisation``) rebuild them from ``summary.json`` (``--weights`` overrides).

Outputs in OUT (default EXPLAIN_OUT/evaluation): ``results.csv`` / ``results.json`` (one row
per image x label x metric), ``summary.csv`` / ``summary.json`` (mean and bootstrap CI per
model, method, label and metric, resampling patients when known) and, for curve metrics,
``curves.csv`` (every point of every deletion / insertion / ROAD / randomisation curve, which
``xraylens report`` draws). Images without a mask are
counted and skipped by the metrics that need one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from xraylens.commands.common import (
    IMAGE_SUFFIXES,
    UsageError,
    add_command,
    load_classifier,
    parse_value,
    resolve_device,
    say,
    split_list,
    warn,
)

DEFAULT_METRICS = (
    "region_share",
    "share_ratio",
    "pointing_game",
    "iou",
    "rank_accuracy",
    "pixel_auroc",
    "sparseness",
    "entropy",
)


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the subparsers ``sub``."""
    p = add_command(
        sub,
        "evaluate",
        __doc__,
        "score explained maps against masks (tidy table + summary with CIs)",
        parents,
    )
    p.add_argument("explained", metavar="EXPLAIN_OUT", type=Path, help="xraylens explain output")
    p.add_argument("--masks", type=Path, help="folder of mask files named like the images")
    p.add_argument("--data", type=Path, help="dataset root whose lung masks to use")
    p.add_argument(
        "--metrics",
        help=f"comma-separated metric names (default: {','.join(DEFAULT_METRICS)})",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="METRIC.KEY=VALUE",
        help="metric parameter, e.g. pointing_game.tolerance=5 (repeatable)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: EXPLAIN_OUT/evaluation)")
    p.add_argument("--weights", help="weights for metrics that run the model (default: "
                   "summary.json's)")  # fmt: skip
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def _metrics(text: str | None, params: list[str]):
    import xraylens as xl
    from xraylens.errors import InputError, UnknownPluginError

    names = split_list(text) if text else list(DEFAULT_METRICS)
    kwargs: dict[str, dict[str, Any]] = {n: {} for n in names}
    for item in params:
        key, sep, value = item.partition("=")
        metric, dot, field = key.strip().rpartition(".")
        if not sep or not dot or metric not in kwargs:
            raise UsageError(f"--param {item!r}: expected METRIC.KEY=VALUE for a chosen metric")
        kwargs[metric][field] = parse_value(value.strip())
    try:
        return {n: xl.get_metric(n, **kwargs[n]) for n in names}
    except (UnknownPluginError, InputError) as exc:
        raise UsageError(f"--metrics: {exc}") from exc


def _explained(folder: Path) -> tuple[dict, list[tuple[str, str, Path]]]:
    if not folder.is_dir():
        raise UsageError(f"EXPLAIN_OUT {folder} is not a folder")
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    files = []
    for npz in sorted(folder.rglob("*.npz")):
        key = npz.parent.relative_to(folder).as_posix()
        files.append((key, npz.stem, npz))
    if not files:
        raise UsageError(f"EXPLAIN_OUT {folder} holds no .npz maps (run xraylens explain first)")
    return summary, files


def _mask_finder(args, summary: dict):
    """``find(key) -> (mask path or None, patient id or None)``."""
    inputs = {k: Path(v) for k, v in summary.get("inputs", {}).items()}
    if args.masks is not None:
        if not args.masks.is_dir():
            raise UsageError(f"--masks {args.masks} is not a folder")
        by_stem: dict[str, Path] = {}
        for f in sorted(args.masks.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                by_stem.setdefault(f.stem, f)

        def find(key: str):
            for suffix in IMAGE_SUFFIXES:
                if (args.masks / f"{key}{suffix}").is_file():
                    return args.masks / f"{key}{suffix}", None
            stem = inputs[key].stem if key in inputs else Path(key).name
            return by_stem.get(stem), None

        return find
    from xraylens.commands.datasets import open_data

    ds, _ = open_data(args.data, size=int(summary.get("size") or 224))
    by_path = {Path(r["path"]).resolve(): r for r in ds.records}

    def find_in_data(key: str):
        path = inputs.get(key)
        rec = by_path.get(path.resolve()) if path is not None else None
        if rec is None:
            return None, None
        return rec.get("mask_path"), rec.get("patient_id")

    return find_in_data


def _region(mask_path, image_path, size: int):
    """The mask [1, size, size] at the maps' geometry; its aspect checked against the image."""
    from PIL import Image

    import xraylens as xl
    from xraylens.errors import InputError

    mask = xl.data.read_mask(mask_path)
    if image_path is not None and Path(image_path).is_file():
        with Image.open(image_path) as im:
            w, h = im.size
        if abs(mask.shape[0] / mask.shape[1] - h / w) > 0.01 * (h / w):
            raise InputError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, its image {w}x{h}: not "
                "the same geometry"
            )
    if not mask.any():
        raise InputError(f"mask {mask_path} is empty")
    return xl.data.preprocess_mask(mask, size)[None]


def run(args: argparse.Namespace) -> int:
    """Run ``xraylens evaluate``; returns the exit status."""
    from tqdm.auto import tqdm

    import xraylens as xl
    from xraylens.errors import InputError, XraylensError
    from xraylens.evaluate import CurveTable, Results

    if (args.masks is None) == (args.data is None):
        raise UsageError("give one of --masks FOLDER or --data ROOT")
    if args.n_boot < 0:
        raise UsageError("--n-boot must be >= 0")
    metrics = _metrics(args.metrics, args.param)
    summary, files = _explained(args.explained)
    out = args.out or args.explained / "evaluation"
    find = _mask_finder(args, summary)
    inputs = summary.get("inputs", {})
    needs_model = any({"model", "x"} & m.needs for m in metrics.values())
    clf = None
    if needs_model:
        if not summary.get("model"):
            raise UsageError(f"{args.explained}/summary.json names no model; metrics "
                             f"{[n for n, m in metrics.items() if m.needs & {'model', 'x'}]} "
                             "need it")  # fmt: skip
        weights = args.weights or summary.get("weights")
        clf = load_classifier(summary["model"], weights, resolve_device(args.device),
                              quiet=args.quiet)  # fmt: skip
    started = time.perf_counter()
    table = Results()
    curves = CurveTable()
    no_mask: set[str] = set()
    failed: dict[str, str] = {}
    regions: dict[str, Any] = {}
    bar = tqdm(files, desc="evaluate", disable=args.quiet, leave=False)
    try:
        for key, method_name, npz in bar:
            try:
                res = xl.Attribution.load(npz)
                size = res.values.shape[-1]
                if key not in regions:
                    mask_path, patient = find(key)
                    region = _region(mask_path, inputs.get(key), size) if mask_path else None
                    regions[key] = (region, patient)
                region, patient = regions[key]
                extra: dict[str, Any] = {}
                if clf is not None:
                    img = xl.data.preprocess(xl.data.read_image(inputs[key]), size=size)
                    extra.update(model=clf, x=img[None])
                for metric in metrics.values():
                    if "region" in metric.needs and region is None:
                        no_mask.add(key)
                        continue
                    if "method" in metric.needs:
                        extra["method"] = xl.get_attributor(res.method, **res.params)
                    got = {
                        k: v for k, v in {**extra, "region": region}.items() if k in metric.needs
                    }
                    table.extend(metric.results(res, image_ids=[key], patient_ids=[patient],
                                                model_name=res.model or "", curves=curves,
                                                **got))  # fmt: skip
            except (XraylensError, InputError, OSError, KeyError) as exc:
                failed[f"{key}/{method_name}"] = str(exc)
    finally:
        bar.close()
    if not len(table):
        raise UsageError(
            f"nothing to evaluate: {len(no_mask)} image(s) without a mask, {len(failed)} failed"
            + (f" (first: {next(iter(failed.values()))})" if failed else "")
        )
    agg = table.aggregate(n_boot=args.n_boot, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv")
    table.to_json(out / "results.json")
    agg.to_csv(out / "summary.csv")
    agg.to_json(out / "summary.json")
    if len(curves):
        curves.to_csv(out / "curves.csv")
    elapsed = time.perf_counter() - started
    say(f"evaluate: {len(table)} rows from {len({k for k, _, _ in files})} images, "
        f"{len(no_mask)} without a mask, {len(failed)} failed in {elapsed:.1f} s; outputs in "
        f"{out}", quiet=args.quiet)  # fmt: skip
    if not args.quiet and len(agg) <= 40:  # longer summaries: see summary.csv
        for row in agg:
            ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            say(f"  {row['method']:<20} {row['label']:<22} {row['metric']:<14} "
                f"{row['mean']:.3f} {ci} n={row['n']}")  # fmt: skip
    if failed:
        warn(f"{len(failed)} map file(s) could not be evaluated:")
        for what, cause in failed.items():
            warn(f"  {what}: {cause}")
        return 1
    return 0
