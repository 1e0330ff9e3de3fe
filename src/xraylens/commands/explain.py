"""``xraylens explain``: attribution maps for image files, saved as ``.npz`` and PNG overlays.

Outputs, for an input ``<key>`` (its path below the inputs' common folder, without suffix) and
each method: ``OUT/<key>/<method>.npz`` (:meth:`xraylens.Attribution.save`, one image) and
``OUT/<key>/<method>.png`` (the image and one overlay per label), plus ``OUT/summary.json``.
Every file is written atomically, so a rerun skips what exists (``--force`` redoes it) and an
interrupted run loses nothing already written. Unreadable images are reported, skipped and
listed; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from xraylens.commands.common import (
    UsageError,
    expand_inputs,
    load_classifier,
    memory,
    output_keys,
    parse_value,
    plain,
    resolve_device,
    say,
    split_list,
    warn,
)

SPECIAL_LABELS = ("all", "predicted")


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    """Register ``explain`` on the subparsers ``sub``."""
    p = sub.add_parser(
        "explain",
        parents=list(parents),
        help="attribution maps for image files (.npz + PNG overlays)",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    p.add_argument("--model", default="resnet18", help="classifier name (default: resnet18)")
    p.add_argument("--weights", help="weights file (.pt/.pth/.safetensors); default: random")
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
    p.add_argument("--threshold", type=float, default=0.5, help="for --labels predicted")
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
    p.add_argument(
        "--sign",
        choices=("positive", "absolute", "negative", "all"),
        default="positive",
        help="what the PNG overlays show (default: positive)",
    )
    p.add_argument("--no-png", action="store_true", help="write only the .npz files")
    p.add_argument("--force", action="store_true", help="redo outputs that already exist")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


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
    if text in SPECIAL_LABELS:
        return text
    names = split_list(text)
    if not names:
        raise UsageError("--labels: give 'all', 'predicted' or label names")
    for name in names:
        if name not in clf.labels:
            raise UsageError(f"--labels: {clf.name} has no label {name!r}; labels: {clf.labels}")
    return names


def _targets(labels: Any, clf, x, threshold: float):
    if labels != "predicted":
        return labels
    import torch

    probs = clf.predict_proba(x).cpu()
    chosen = []
    for row in probs:
        idx = torch.nonzero(row >= threshold).flatten().tolist() or [int(row.argmax())]
        chosen.append([clf.labels[i] for i in idx])
    return chosen


def _one_image(res, i: int):
    """The :class:`Attribution` of image ``i`` of ``res`` alone (N = 1)."""
    from xraylens.core.attribution import Attribution

    return Attribution(
        values=res.values[i : i + 1],
        labels=[res.labels[i]] if res.per_image else res.labels,
        mask=res.mask[i : i + 1],
        delta=None if res.delta is None else res.delta[i : i + 1],
        method=res.method,
        params=res.params,
        output=res.output,
        model=res.model,
    )


def _write_png(path: Path, image, res, sign: str) -> None:
    from xraylens import viz

    fig = viz.plot_attribution(image, res, index=0, sign=sign)
    viz.save_figure(fig, path, dpi=90)


def run(args: argparse.Namespace) -> int:
    """Explain every input with every method; 0 when all worked, 1 when some images failed."""
    import torch
    from tqdm.auto import tqdm

    import xraylens as xl
    from xraylens.core.attribution import Attribution
    from xraylens.errors import ImageReadError

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.size is not None and args.size < 1:
        raise UsageError("--size must be positive")
    methods = _methods(args.method)
    device = resolve_device(args.device)
    paths = expand_inputs(args.images)
    if not paths:
        raise UsageError("no input images found")
    clf = load_classifier(args.model, args.weights, device, quiet=args.quiet)
    labels = _labels(args.labels, clf)
    attributors = _attributors(args, methods, device)
    size = args.size or clf.input_size
    out: Path = args.out
    keys = output_keys(paths)

    def outputs(key: str, method: str) -> tuple[Path, Path]:
        return out / key / f"{method}.npz", out / key / f"{method}.png"

    def todo(key: str) -> tuple[list[str], list[str]]:
        """Methods to compute, and methods whose .npz exists but whose PNG is missing."""
        compute, png_only = [], []
        for m in methods:
            npz, png = outputs(key, m)
            if args.force or not npz.exists():
                compute.append(m)
            elif not args.no_png and not png.exists():
                png_only.append(m)
        return compute, png_only

    say(
        f"explain: {len(paths)} image(s) x {len(methods)} method(s) {methods} with {clf.name} "
        f"at {size} px -> {out}",
        quiet=args.quiet,
    )
    started = time.perf_counter()
    failed: dict[str, str] = {}
    done = skipped = 0
    bar = tqdm(total=len(paths), desc="explain", unit="img", disable=args.quiet or None)

    def batches():
        """Readable images that still need work, ``batch_size`` at a time."""
        batch, images = [], []
        nonlocal skipped
        for path, key in zip(paths, keys):
            if not any(todo(key)):
                skipped += 1
                bar.update(1)
                continue
            try:
                images.append(xl.data.preprocess(xl.data.read_image(path), size=size))
                batch.append(key)
            except ImageReadError as exc:
                failed[str(path)] = exc.cause
                bar.update(1)
                continue
            if len(batch) == args.batch_size:
                yield batch, torch.stack(images)
                batch, images = [], []
        if batch:
            yield batch, torch.stack(images)

    try:
        for batch, x in batches():
            plans = [todo(key) for key in batch]
            for j, key in enumerate(batch):  # finish what an interrupted run left: PNGs only
                for m in plans[j][1]:
                    npz, png = outputs(key, m)
                    _write_png(png, x[j], Attribution.load(npz), args.sign)
            targets = _targets(labels, clf, x, args.threshold)
            per_image = isinstance(targets, list) and isinstance(targets[0], list)
            for m in methods:
                need = [j for j in range(len(batch)) if m in plans[j][0]]
                if not need:
                    continue
                tgt = [targets[j] for j in need] if per_image else targets
                res = attributors[m].attribute(clf, x[need], tgt, output=args.output)
                for i, j in enumerate(need):
                    npz, png = outputs(batch[j], m)
                    single = _one_image(res, i)
                    single.save(npz)
                    if not args.no_png:
                        _write_png(png, x[j], single, args.sign)
            done += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    summary = {
        "model": clf.name,
        "weights": args.weights,
        "methods": {m: attributors[m].params for m in methods},
        "labels": labels if labels in SPECIAL_LABELS else list(labels),
        "output": args.output,
        "size": size,
        "inputs": {k: str(p) for p, k in zip(paths, keys)},
        "explained": done,
        "skipped_existing": skipped,
        "failed": failed,
        "seconds": round(elapsed, 2),
    }
    from xraylens.core.atomic import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    say(
        f"explain: {done} explained, {skipped} already done, {len(failed)} failed "
        f"in {elapsed:.1f} s; outputs in {out}",
        quiet=args.quiet,
    )
    if failed:
        warn(f"{len(failed)} image(s) could not be read and were skipped:")
        for path, cause in failed.items():
            warn(f"  {path}: {cause}")
        return 1
    return 0
