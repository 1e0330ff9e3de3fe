"""Provenance of a report: what produced the numbers (models, weights, settings, versions)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("xraylens", "torch", "torchvision", "numpy", "captum", "timm", "scikit-image")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file (weights), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions(packages=PACKAGES) -> dict[str, str]:
    """Installed versions (``"not installed"`` when absent), plus Python and the platform."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(
    models: dict[str, dict[str, Any]] | None = None,
    *,
    preprocessing: dict[str, Any] | None = None,
    seeds: dict[str, Any] | None = None,
    command: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-able record: ``models`` (name -> details; a ``weights`` path that exists gets its
    ``weights_sha256``), preprocessing, seeds, the command line, package versions."""
    described = {}
    for name, info in (models or {}).items():
        info = dict(info)
        weights = info.get("weights")
        if weights and Path(str(weights)).is_file():
            info.setdefault("weights_sha256", file_sha256(weights))
        described[name] = info
    if command is None:
        command = shlex.join(
            ["xraylens" if sys.argv[0].endswith("cli.py") else sys.argv[0], *sys.argv[1:]]
        )
    return {
        "models": described,
        "preprocessing": preprocessing or {},
        "seeds": seeds or {},
        "command": command,
        "versions": versions(),
        **extra,
    }
