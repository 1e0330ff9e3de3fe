"""Shared pieces of the ``xraylens`` subcommands: usage errors, inputs, models, devices."""

from __future__ import annotations

import ast
import glob
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from xraylens.data.folders import IMAGE_SUFFIXES
from xraylens.errors import XraylensError


class UsageError(XraylensError):
    """A bad command-line argument: printed as one line, exit status 2."""


def plain(doc: str | None) -> str:
    """A docstring as ``--help`` text: without reST markup (double backquotes, roles)."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "")


def add_command(sub, name: str, doc: str | None, help: str, parents=()):
    """A subcommand parser on ``sub`` whose ``--help`` is the module docstring ``doc`` (as
    :func:`plain` text, line breaks kept)."""
    import argparse

    return sub.add_parser(
        name,
        parents=list(parents),
        help=help,
        description=plain(doc),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def say(message: str = "", *, quiet: bool = False) -> None:
    """Print a progress line to stdout (flushed: lines show up live in CI logs)."""
    if not quiet:
        print(message, flush=True)


def warn(message: str) -> None:
    """Print a warning line to stderr."""
    print(f"xraylens: warning: {message}", file=sys.stderr, flush=True)


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def expand_inputs(items: Iterable[str]) -> list[Path]:
    """Image paths from files, folders (searched recursively) and glob patterns, in order,
    without duplicates. A path that does not exist is kept: reading it reports the error."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += _images_in(path)
        elif _has_magic(item) and not path.exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"no file matches {item!r}")
            for match in matches:
                m = Path(match)
                found += _images_in(m) if m.is_dir() else [m]
        else:
            found.append(path)
    unique: dict[str, Path] = {}
    for p in found:
        unique.setdefault(os.path.abspath(p), p)
    return list(unique.values())


def output_keys(paths: Sequence[Path]) -> list[str]:
    """A unique relative output name per input: its path below the inputs' common folder,
    without suffix (the suffix is kept where two inputs would otherwise collide)."""
    if not paths:
        return []
    absolute = [Path(os.path.abspath(p)) for p in paths]
    base = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    keys = [p.relative_to(base).with_suffix("").as_posix() for p in absolute]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return [
        (p.relative_to(base).as_posix().replace(".", "_") if counts[k] > 1 else k)
        for k, p in zip(keys, absolute)
    ]


def resolve_device(device: str | None) -> str | None:
    """Validate ``--device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``); None keeps the CPU."""
    if device in (None, "cpu"):
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        return device
    raise UsageError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")


def factory_kwargs(weights: str | None, device: str | None) -> dict[str, Any]:
    """The keywords the CLI passes to a classifier factory (see :func:`load_classifier`)."""
    kwargs: dict[str, Any] = {}
    if weights is not None:
        kwargs["weights"] = weights
    if device not in (None, "cpu"):
        kwargs["device"] = device
    return kwargs


def load_classifier(model: str, weights: str | None, device: str | None, *, quiet: bool = False):
    """Build ``--model`` with ``--weights`` on ``--device``; random weights get a warning.

    The plugin contract (``docs/plugins.md``): the factory is called with ``weights=`` only
    when ``--weights`` is given and ``device=`` only when a device other than the default CPU
    is chosen, and with nothing else.
    """
    import xraylens as xl
    from xraylens.errors import UnknownPluginError

    kwargs = factory_kwargs(weights, device)
    if weights is None:  # random weights: the same in every run and every torchrun process
        import torch

        torch.manual_seed(0)
    try:
        clf = xl.get_classifier(model, **kwargs)
    except UnknownPluginError as exc:
        raise UsageError(f"--model: {exc}") from exc
    if weights is None and not quiet:
        warn(
            f"no --weights given: {model} has random weights, so its explanations and profiles "
            "show the architecture, not a trained model"
        )
    return clf


def parse_value(text: str) -> Any:
    """A Python literal (``50``, ``0.1``, ``(8, 8)``, ``8,8``, ``True``) or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def memory(text: str | None):
    """Validate ``--max-memory`` early (a usage error, not a failure halfway through)."""
    if text is None:
        return None
    from xraylens.core.engine import parse_memory
    from xraylens.errors import InputError

    try:
        return parse_memory(parse_value(text) if text.replace(".", "", 1).isdigit() else text)
    except InputError as exc:
        raise UsageError(f"--max-memory: {exc}") from exc
