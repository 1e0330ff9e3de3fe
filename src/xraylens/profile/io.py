"""Lossless ``.npz`` files for :class:`~xraylens.profile.result.NAPResult`.

One file holds the raw state (float64 sums, int64 counts, float64 extremes) and a JSON string
``meta`` (format, version, model, layers, groups, counts, n_images, weighting, shapes). Arrays are
keyed by layer position (``sum_0``, ``min_0``, ...) because layer names may hold any character.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import InputError

FORMAT = "xraylens.NAPResult"
FORMAT_VERSION = 1


def save_result(result, path: str | os.PathLike) -> Path:
    """Write ``result`` to ``path`` (atomic; ``.npz`` is appended when missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": result.model,
        "layers": list(result.layers),
        "groups": list(result.groups),
        "counts": result.counts,
        "n_images": result.n_images,
        "weighting": result.weighting,
        "shapes": {layer: list(result.shape(layer)) for layer in result.layers},
    }
    arrays = {"meta": np.array(json.dumps(meta)), "group_counts": result.group_counts}
    for i, layer in enumerate(result.layers):
        arrays[f"sum_{i}"] = result.sums[layer]
        arrays[f"min_{i}"] = result.minimum[layer]
        arrays[f"max_{i}"] = result.maximum[layer]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_result(path: str | os.PathLike):
    """Read a file written by :func:`save_result`."""
    from xraylens.profile.result import NAPResult

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise InputError(f"{path} is not an xraylens NAPResult file")
            if int(meta.get("version", 0)) > FORMAT_VERSION:
                raise InputError(
                    f"{path} has NAPResult format version {meta['version']}; this xraylens "
                    f"reads up to {FORMAT_VERSION}: upgrade xraylens"
                )
            layers = meta["layers"]
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path} is not a readable xraylens NAPResult file: {exc}") from exc
    try:
        return NAPResult(
            layers,
            meta["groups"],
            {layer: arrays[f"sum_{i}"] for i, layer in enumerate(layers)},
            arrays["group_counts"],
            meta["n_images"],
            {layer: arrays[f"min_{i}"] for i, layer in enumerate(layers)},
            {layer: arrays[f"max_{i}"] for i, layer in enumerate(layers)},
            weighting=meta["weighting"],
            model=meta["model"],
        )
    except KeyError as exc:
        raise InputError(f"{path}: NAPResult file lacks {exc}") from None
