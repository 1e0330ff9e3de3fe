"""``xraylens report``: one page from explain, evaluate and profile outputs.

Reads ``xraylens explain`` folders (``--explain``, one per model), ``xraylens evaluate``
outputs (``--evaluate``: a folder with results and summary tables, or one results file) and
``xraylens profile`` folders (``--profile``), runs the shortcut audit on the saved maps (share
of attribution in the lungs, border band, corners and burnt-in markers found in the images,
each against its area; lungs only with ``--masks``), and writes OUT/report.html (one
self-contained file: open it from disk, no network) and OUT/report.md (figures beside it).
Nothing is recomputed but the audit, and, with ``--predict``, the panel images'
probabilities (one forward pass per model).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from xraylens.commands.common import UsageError, add_command, say, split_list


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    """Register ``report`` on the subparsers ``sub``."""
    p = add_command(
        sub,
        "report",
        __doc__,
        "one HTML/Markdown report from explain, evaluate and profile outputs",
        parents,
    )
    p.add_argument(
        "--explain", type=Path, action="append", default=[], help="an explain output (repeat)"
    )
    p.add_argument(
        "--evaluate", type=Path, action="append", default=[], help="an evaluate output (repeat)"
    )
    p.add_argument(
        "--profile", type=Path, action="append", default=[], help="a profile output (repeat)"
    )
    p.add_argument("--masks", type=Path, help="lung masks named like the images (the audit)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("xraylens-report"),
        help="folder (default ./xraylens-report)",
    )
    p.add_argument("--format", default="html,md", help="html, md or both (default html,md)")
    p.add_argument("--title", default="xraylens report", help="the page title")
    p.add_argument("--max-images", type=int, default=8, help="images in the panels (default 8)")
    p.add_argument("--panel-size", type=int, default=128, help="panel side in px (default 128)")
    p.add_argument("--predict", action="store_true", help="compute the panel images' probabilities")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the written paths")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build and write the report; 0 on success."""
    from xraylens.report import FORMATS, write_report
    from xraylens.report.outputs import build

    formats = split_list(args.format)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--format: {', '.join(bad) or '(empty)'}; choose from {FORMATS}")
    if not (args.explain or args.evaluate or args.profile):
        raise UsageError("give at least one of --explain, --evaluate, --profile")
    for flag, paths in (("--explain", args.explain), ("--profile", args.profile)):
        for path in paths:
            if not path.exists():
                raise UsageError(f"{flag} {path}: no such folder")
    if args.max_images < 0 or args.panel_size < 16:
        raise UsageError("--max-images must be >= 0 and --panel-size >= 16")
    started = time.perf_counter()
    doc = build(
        args.explain,
        args.evaluate,
        args.profile,
        masks=args.masks,
        max_images=args.max_images,
        panel_size=args.panel_size,
        predict=args.predict,
        title=args.title,
        command=shlex.join(["xraylens", *sys.argv[1:]]),
    )
    written = write_report(doc, args.out, formats=formats)
    say(f"report: built in {time.perf_counter() - started:.1f} s", quiet=args.quiet)
    for path in written.values():
        print(path, flush=True)
    return 0
