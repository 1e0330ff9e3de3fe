"""The :class:`Attribution` result type and its lossless ``.npz`` format."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import InputError

FORMAT_VERSION = 1


def _encode(value: Any) -> Any:
    """JSON-encode params so that tuples, tensors and arrays survive the round trip."""
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return {
            "__tensor__": t.tolist(),
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
        }
    if isinstance(value, np.ndarray):
        return {
            "__ndarray__": value.tolist(),
            "dtype": str(value.dtype),
            "shape": list(value.shape),
        }
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if attrs.has(type(value)):
        return _encode(attrs.asdict(value, recurse=False))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"__repr__": repr(value)}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__tensor__" in value:
            dtype = getattr(torch, value["dtype"])
            return torch.tensor(value["__tensor__"], dtype=dtype).reshape(value["shape"])
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        if "__repr__" in value and len(value) == 1:
            return value["__repr__"]
        return {k: _decode(v) for k, v in value.items()}
    return value


def _values(v: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v)
    if v.dim() != 5:
        raise InputError(f"Attribution.values must be [N, T, C, H, W], got {tuple(v.shape)}")
    return v.detach().to(device="cpu", dtype=torch.float32)


def _cpu(v: torch.Tensor | None) -> torch.Tensor | None:
    return None if v is None else torch.as_tensor(v).detach().cpu()


def _labels(v):
    if isinstance(v, list) and (not v or isinstance(v[0], (tuple, list))):
        return [tuple(str(x) for x in row) for row in v]
    return tuple(str(x) for x in v)


@attrs.define(eq=False)
class Attribution:
    """Attribution maps for N images and T target slots.

    Attributes:
        values: float32 CPU tensor [N, T, C, H, W]; C is the classifier's ``in_channels``.
        labels: the T label names (same for every image), or one tuple per image when targets
            differ between images.
        mask: bool [N, T], True where a slot holds a map (all True for uniform targets).
        delta: [N, T] convergence delta (sum of attribution minus output difference) for
            methods that define one (IG, DeepLIFT, GradientShap), else None.
        method: attributor name; params: its parameters; output: "logits" or "probs";
        model: the classifier's name.
    """

    values: torch.Tensor = attrs.field(converter=_values)
    labels: tuple[str, ...] | list[tuple[str, ...]] = attrs.field(converter=_labels)
    mask: torch.Tensor | None = attrs.field(default=None, converter=_cpu)
    delta: torch.Tensor | None = attrs.field(default=None, converter=_cpu)
    method: str = ""
    params: dict = attrs.field(factory=dict)
    output: str = "logits"
    model: str | None = None

    def __attrs_post_init__(self) -> None:
        n, t = self.values.shape[:2]
        if self.mask is None:
            self.mask = torch.ones(n, t, dtype=torch.bool)
        if tuple(self.mask.shape) != (n, t):
            raise InputError(f"mask must be [N, T] = [{n}, {t}], got {tuple(self.mask.shape)}")
        self.mask = self.mask.to(torch.bool)
        if self.delta is not None and tuple(self.delta.shape) != (n, t):
            raise InputError(f"delta must be [N, T] = [{n}, {t}], got {tuple(self.delta.shape)}")
        if self.per_image:
            if len(self.labels) != n:
                raise InputError(f"per-image labels: {len(self.labels)} rows for {n} images")
        elif len(self.labels) != t:
            raise InputError(f"labels: {len(self.labels)} names for {t} target slots")

    @property
    def per_image(self) -> bool:
        """True when the explained labels differ between images."""
        return isinstance(self.labels, list)

    def labels_of(self, i: int) -> tuple[str, ...]:
        """Label names explained for image ``i`` (one per filled slot)."""
        return self.labels[i] if self.per_image else self.labels

    def map(self, i: int, label: str | int) -> torch.Tensor:
        """The map [C, H, W] of image ``i`` for a label name or slot index."""
        if isinstance(label, str):
            names = self.labels_of(i)
            if label not in names:
                raise InputError(f"image {i} has no map for {label!r}; it has {list(names)}")
            label = names.index(label)
        if not bool(self.mask[i, label]):
            raise InputError(f"slot {label} of image {i} is empty")
        return self.values[i, label]

    def save(self, path: str | os.PathLike) -> Path:
        """Write a lossless ``.npz`` (atomic: a crash never leaves a half-written file)."""
        path = Path(path)
        meta = {
            "format": "xraylens.Attribution",
            "version": FORMAT_VERSION,
            "labels": _encode(self.labels),
            "method": self.method,
            "params": _encode(self.params),
            "output": self.output,
            "model": self.model,
            "delta_dtype": None if self.delta is None else str(self.delta.dtype),
        }
        arrays = {
            "values": self.values.numpy(),
            "mask": self.mask.numpy(),
            "meta": np.array(json.dumps(meta)),
        }
        if self.delta is not None:
            arrays["delta"] = self.delta.numpy()
        return atomic_write_bytes(path, _npz_bytes(arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Attribution:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                values = torch.from_numpy(data["values"].copy())
                mask = torch.from_numpy(data["mask"].copy())
                delta = torch.from_numpy(data["delta"].copy()) if "delta" in data else None
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path} is not an xraylens Attribution file: {exc}") from exc
        if meta.get("format") != "xraylens.Attribution":
            raise InputError(f"{path} is not an xraylens Attribution file")
        return cls(
            values=values,
            labels=_decode(meta["labels"]),
            mask=mask,
            delta=delta,
            method=meta["method"],
            params=_decode(meta["params"]),
            output=meta["output"],
            model=meta["model"],
        )


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
