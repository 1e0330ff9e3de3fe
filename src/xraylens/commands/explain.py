"""``xraylens explain``: attribution maps for image files, saved as ``.npz`` and PNG overlays.

Outputs, for an input ``<key>`` (its path below the inputs' common folder, without suffix) and
each method: ``OUT/<key>/<method>.npz`` (:meth:`xraylens.Attribution.save`, one image, with
the model's probability of every label) and ``OUT/<key>/<method>.png`` (the image and one
overlay per label, titled with the label's probability), plus ``OUT/summary.json`` (with every
image's probabilities). Every file is written atomically as soon as its image is done, so a
rerun skips what exists (``--force`` redoes it) and Ctrl-C loses at most the images in flight.
Unreadable images are reported, skipped and listed; the exit status is then 1. Under
``torchrun --nproc_per_node N`` the images are shared over N processes (same files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xraylens.commands.common import (
    UsageError,
    add_command,
    expand_inputs,
    load_classifier,
    memory,
    output_keys,
    parse_value,
    resolve_device,
    say,
    split_list,
    warn,
)

SPECIAL_LABELS = ("all", "predicted")


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    """Register ``explain`` on the subparsers ``sub``."""
    p = add_command(
        sub, "explain", __doc__, "attribution maps for image files (.npz + PNG overlays)", parents
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    p.add_argument("--model", default="resnet18", help="classifier name (default: resnet18)")
    p.add_argument(
        "--weights",
        help="weights file (.pt/.pth/.safetensors; default: random), or the .json manifest of "
        "a saved xl.Ensemble (then --model is not used)",
    )
    p.add_argument(
        "--method",
        action="append",
        required=True,
        metavar="M",
        help="attribution method; repeat or comma-separate for several, 'all' for every "
        "registered one (see `xraylens list`)",
    )
    p.add_argument(
        "--labels",
        default="all",
        help="'all', 'predicted' (probability >= --threshold, else the top label) or "
        "comma-separated label names (default: all)",
    )
    p.add_argument(
        "--threshold", type=_probability, default=0.5, help="for --labels predicted, in (0, 1)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--size", type=int, help="input side in pixels (default: the model's)")
    p.add_argument("--output", choices=("logits", "probs"), default="logits")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="[METHOD.]KEY=VALUE",
        help="method parameter, e.g. n_steps=20 or occlusion.window=16,16 (repeatable)",
    )
    p.add_argument("--preset", help="named parameter preset (e.g. paper) for methods having it")
    p.add_argument("--max-memory", help="memory budget, e.g. 4GB (default: half the free)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--batch-size", type=int, default=4, help="images per attribution call")
    _figure_flags(p)
    p.add_argument("--no-png", action="store_true", help="write only the .npz files")
    p.add_argument("--force", action="store_true", help="redo outputs that already exist")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress output (the final line stays)"
    )
    p.set_defaults(func=run)
    return p


def _bounded(low: float, high: float, closed: str, expected: str):
    """An argparse type: a float in the interval from ``low`` to ``high``; ``closed`` says which
    ends belong to it (``"low"``, ``"high"``, ``"both"`` or ``""``); ``expected`` names it in
    the message for text that is no number."""
    left, right = (
        "[" if closed in ("low", "both") else "(",
        "]" if closed in ("high", "both") else ")",
    )
    interval = f"{left}{low:g}, {high:g}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        above = value >= low if left == "[" else value > low
        below = value <= high if right == "]" else value < high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    return parse


_probability = _bounded(0.0, 1.0, "", "a number in (0, 1)")  # strictly between 0 and 1
_percent = _bounded(0.0, 100.0, "low", "a percentage")  # [0, 100)
_unit = _bounded(0.0, 1.0, "both", "a number in [0, 1]")


def _figure_flags(p: argparse.ArgumentParser) -> None:
    """The PNG options; defaults from :data:`xraylens.viz.DEFAULTS` (as the demo and recipe)."""
    from xraylens.viz.overlay import ALPHA_SCALINGS, DEFAULTS, SCALINGS, SIGNS

    g = p.add_argument_group("figures")
    g.add_argument(
        "--sign",
        choices=SIGNS,
        default=DEFAULTS["sign"],
        help=f"what the overlays show; signed (= all): diverging map (default: {DEFAULTS['sign']})",
    )
    g.add_argument(
        "--clip",
        type=_percent,
        default=DEFAULTS["outlier_perc"],
        metavar="PERCENT",
        help="outlier clipping: the strongest PERCENT of the pixels saturate, 0: scale to the "
        f"maximum (default: {DEFAULTS['outlier_perc']:g})",
    )
    g.add_argument(
        "--scaling",
        choices=SCALINGS,
        default=DEFAULTS["scaling"],
        help="clipping rule: percentile of |map|, Captum's cumulative-sum rule, or max "
        f"(default: {DEFAULTS['scaling']})",
    )
    g.add_argument(
        "--alpha", type=_unit, default=DEFAULTS["alpha"], help="overlay opacity (default: 0.7)"
    )
    g.add_argument(
        "--alpha-scaling",
        choices=ALPHA_SCALINGS,
        default=DEFAULTS["alpha_scaling"],
        help=f"opacity per pixel vs its value (default: {DEFAULTS['alpha_scaling']})",
    )
    g.add_argument(
        "--scale-per-label",
        action="store_true",
        help="scale each label's panel alone (default: one scale for the labels of an image)",
    )


def _methods(values: list[str]) -> list[str]:
    from xraylens import plugins
    from xraylens.errors import UnknownPluginError

    names: list[str] = []
    for value in values:
        for name in split_list(value):
            if name == "all":
                names += [n for n in plugins.names("attributor") if n not in names]
                continue
            try:
                entry = plugins.lookup("attributor", name)
            except UnknownPluginError as exc:
                raise UsageError(f"--method: {exc}") from exc
            if entry.name not in names:
                names.append(entry.name)
    if not names:
        raise UsageError("--method: give at least one method")
    return names


def _config_fields(name: str) -> set[str] | None:
    """Parameter names of attributor ``name`` (None when its factory does not say)."""
    import attrs

    from xraylens import plugins

    config = getattr(plugins.lookup("attributor", name).factory, "Config", None)
    return {f.name for f in attrs.fields(config)} if attrs.has(config) else None


def _method_params(methods: list[str], params: list[str]) -> dict[str, dict[str, Any]]:
    """``--param`` values per method; an unprefixed key goes to every method having it."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {item!r}: expected [METHOD.]KEY=VALUE")
        method, dot, field = key.strip().rpartition(".")
        value = parse_value(value.strip())
        if dot:
            if method not in out:
                raise UsageError(f"--param {item!r}: {method!r} is not one of --method {methods}")
            fields = _config_fields(method)
            if fields is not None and field not in fields:
                raise UsageError(f"--param {item!r}: {method} has parameters {sorted(fields)}")
            out[method][field] = value
            continue
        takers = [m for m in methods if field in (_config_fields(m) or {field})]
        if not takers:
            raise UsageError(f"--param {item!r}: no chosen method has a parameter {field!r}")
        for m in takers:
            out[m][field] = value
    return out


def _attributors(args: argparse.Namespace, methods: list[str], device):
    import xraylens as xl
    from xraylens import plugins
    from xraylens.errors import InputError

    params = _method_params(methods, args.param)
    max_memory = memory(args.max_memory)
    presets = {m: getattr(plugins.lookup("attributor", m).factory, "presets", {}) for m in methods}
    if args.preset and not any(args.preset in presets[m] for m in methods):
        raise UsageError(f"--preset {args.preset!r}: none of {methods} has that preset")
    out = {}
    for m in methods:
        kw = dict(params[m], device=device, max_memory=max_memory)
        if args.preset and args.preset in presets[m]:
            kw["preset"] = args.preset
        try:
            out[m] = xl.get_attributor(m, **kw)
        except InputError as exc:
            raise UsageError(f"--method {m}: {exc}") from exc
    return out


def _labels(text: str, clf) -> Any:
    from xraylens.errors import InputError

    if text in SPECIAL_LABELS:
        return text
    names = split_list(text)
    if not names:
        raise UsageError("--labels: give 'all', 'predicted' or label names")
    try:  # case-insensitive, with did-you-mean
        return [clf.labels[clf.label_index(name)] for name in names]
    except InputError as exc:
        raise UsageError(f"--labels: {clf.name}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    """Explain every input with every method; 0 when all worked, 1 when some images failed."""
    from xraylens import pipeline

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    methods = _methods(args.method)
    shard = pipeline.join(args.device)
    device = pipeline.local_device(resolve_device(args.device))
    quiet = args.quiet or not shard.is_main
    try:
        return _run(args, methods, device, shard, quiet)
    finally:
        shard.close()


def _run(args, methods, device, shard, quiet) -> int:
    from xraylens import pipeline
    from xraylens.core.atomic import atomic_write_text

    paths = expand_inputs(args.images)
    if not paths:
        raise UsageError("no input images found")
    if args.weights and str(args.weights).endswith(".json"):  # a saved ensemble's manifest
        clf = _ensemble(args.weights, device)
    else:
        clf = load_classifier(args.model, args.weights, device, quiet=quiet)
    size = args.size or clf.input_size
    if args.size is not None and args.size < clf.min_input_size:
        raise UsageError(
            f"--size {args.size}: {clf.name} needs at least {clf.min_input_size} px per side"
        )
    labels = _labels(args.labels, clf)
    attributors = _attributors(args, methods, device)
    out: Path = args.out
    items = pipeline.items_from_paths(paths, output_keys(paths))
    figure = pipeline.FigureOptions(
        sign=args.sign,
        outlier_perc=args.clip,
        scaling=args.scaling,
        alpha=args.alpha,
        alpha_scaling=args.alpha_scaling,
        shared_scale=not args.scale_per_label,
    )
    world = f" on {shard.world} processes" if shard.world > 1 else ""
    say(
        f"explain: {len(paths)} image(s) x {len(methods)} method(s) {methods} with {clf.name} "
        f"at {size} px{world} -> {out}",
        quiet=quiet,
    )

    def summary(report) -> None:
        data = {
            "model": clf.name,
            "weights": args.weights,
            "methods": {m: attributors[m].params for m in methods},
            "labels": labels if labels in SPECIAL_LABELS else list(labels),
            "threshold": args.threshold,
            "output": args.output,
            "size": size,
            "figures": attrs_dict(figure),
            "inputs": {it.key: it.path for it in items},
            "predictions": dict(sorted(report.predictions.items())),
            "explained_labels": dict(sorted(report.targets.items())),
            "explained": report.images_explained,
            "skipped_existing": report.images_skipped,
            "maps_written": report.written,
            "maps_skipped_existing": report.skipped,
            "failed": dict(sorted(report.failed.items())),
            "interrupted": report.interrupted,
            "processes": report.world,
            "seconds": report.seconds,
        }
        text = json.dumps(data, indent=2, default=str) + "\n"
        atomic_write_text(out / "summary.json", text)

    try:
        report = pipeline.explain_images(
            clf,
            attributors,
            items,
            out,
            targets=labels,
            threshold=args.threshold,
            output=args.output,
            size=size,
            batch_size=args.batch_size,
            force=args.force,
            png=not args.no_png,
            figure=figure,
            progress=not quiet,
            log=lambda line: print(f"xraylens explain: {line}", file=sys.stderr, flush=True),
            shard=shard,
        )
    except KeyboardInterrupt as exc:
        report = getattr(exc, "report", None)
        if report is not None and shard.world == 1:
            summary(report)
        print(f"xraylens explain: interrupted; outputs kept in {out}", file=sys.stderr)
        return 130
    failed = report.failed
    if shard.is_main:
        summary(report)
    # the one-line summary stays under -q (only the progress output goes)
    if shard.is_main:
        print(
            f"explain: {report.images_explained} explained, {report.images_skipped} already "
            f"done, {len(failed)} failed ({report.written} maps written) in "
            f"{report.seconds:.1f} s{world}; outputs in {out}",
            flush=True,
        )
    if failed:
        if shard.is_main:
            warn(f"{len(failed)} image(s) could not be read and were skipped:")
            by_key = {it.key: it.path for it in items}
            for key, cause in failed.items():
                warn(f"  {by_key[key]}: {cause}")
        return 1
    return 0


def attrs_dict(obj) -> dict:
    import attrs

    return attrs.asdict(obj)


def _ensemble(path: str, device):
    import xraylens as xl

    return xl.Ensemble.load(path, device=device)
