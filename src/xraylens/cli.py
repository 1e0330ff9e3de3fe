"""The ``xraylens`` command line (stub: ``list`` and a placeholder ``demo``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_list(args: argparse.Namespace) -> int:
    from xraylens import plugins

    for kind in ("classifier", "attributor", "profiler"):
        print(f"{kind}s:")
        for name, entry in sorted(plugins.entries(kind).items()):
            source = entry.distribution or entry.plugin
            print(f"  {name:<24} {source}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    import xraylens as xl

    clf = xl.get_classifier("resnet18")
    logits = clf(torch.rand(1, 1, 128, 128))
    print(f"demo placeholder: resnet18 forward ok, logits {tuple(logits.shape)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xraylens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list classifiers, attributors and profilers")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("demo", help="run the offline demo")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
