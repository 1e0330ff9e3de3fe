"""``xraylens demo`` (placeholder while the demo is written)."""

from __future__ import annotations

import argparse


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", parents=list(parents), help="run the offline demo")
    p.set_defaults(func=lambda a: 0)
    return p
