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


@attrs.define(eq=False, repr=False)
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
        probs: float32 [N, L]: the model's sigmoid probability of every label for each image
            (None when not recorded; :func:`xraylens.pipeline.explain_images` records them).
        classes: the L label names of ``probs`` (the classifier's labels).
    """

    values: torch.Tensor = attrs.field(converter=_values)
    labels: tuple[str, ...] | list[tuple[str, ...]] = attrs.field(converter=_labels)
    mask: torch.Tensor | None = attrs.field(default=None, converter=_cpu)
    delta: torch.Tensor | None = attrs.field(default=None, converter=_cpu)
    method: str = ""
    params: dict = attrs.field(factory=dict)
    output: str = "logits"
    model: str | None = None
    probs: torch.Tensor | None = attrs.field(default=None, converter=_cpu, kw_only=True)
    classes: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_labels), kw_only=True
    )

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
        if self.probs is not None:
            self.probs = self.probs.to(torch.float32)
            if self.probs.dim() != 2 or self.probs.shape[0] != n:
                raise InputError(f"probs must be [N={n}, L], got {tuple(self.probs.shape)}")
            if self.classes is None or len(self.classes) != self.probs.shape[1]:
                raise InputError(
                    f"probs has {self.probs.shape[1]} columns; give classes= with as many names"
                )

    def __repr__(self) -> str:
        n, t, c, h, w = self.values.shape
        labels = (
            f"per-image ({sum(len(r) for r in self.labels)} maps)"
            if self.per_image
            else ", ".join(self.labels[:6]) + (f", ... ({t})" if t > 6 else "")
        )
        extra = [f"delta={list(self.delta.shape)}"] if self.delta is not None else []
        if self.probs is not None:
            extra.append(f"probs={list(self.probs.shape)}")
        return (
            f"Attribution(method={self.method!r}, model={self.model!r}, values=[N={n}, T={t}, "
            f"C={c}, H={h}, W={w}], labels=[{labels}], output={self.output!r}"
            + "".join(f", {e}" for e in extra)
            + ")"
        )

    def prob(self, i: int, label: str) -> float | None:
        """The model's probability of ``label`` for image ``i`` (None when not recorded)."""
        if self.probs is None or self.classes is None or label not in self.classes:
            return None
        return float(self.probs[i, self.classes.index(label)])

    def image(self, i: int) -> Attribution:
        """Image ``i`` alone (N = 1), with its maps, mask, delta and probabilities."""
        if not 0 <= i < self.values.shape[0]:
            raise InputError(f"image index {i} out of range for {self.values.shape[0]} images")
        cut = slice(i, i + 1)
        return Attribution(
            values=self.values[cut],
            labels=[self.labels[i]] if self.per_image else self.labels,
            mask=self.mask[cut],
            delta=None if self.delta is None else self.delta[cut],
            method=self.method,
            params=self.params,
            output=self.output,
            model=self.model,
            probs=None if self.probs is None else self.probs[cut],
            classes=self.classes,
        )

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
            "classes": None if self.classes is None else list(self.classes),
        }
        arrays = {
            "values": self.values.numpy(),
            "mask": self.mask.numpy(),
            "meta": np.array(json.dumps(meta)),
        }
        if self.delta is not None:
            arrays["delta"] = self.delta.numpy()
        if self.probs is not None:
            arrays["probs"] = self.probs.numpy()
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
                probs = torch.from_numpy(data["probs"].copy()) if "probs" in data else None
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
            probs=probs,
            classes=meta.get("classes"),
        )


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
