"""Checkpoint I/O: reading, adapting and writing model weights (used by the Classifier and models).

Local files: ``.pt``/``.pth``/``.bin`` (a bare state_dict, or a checkpoint dict holding it under
``state_dict``, ``model`` or ``module``; DistributedDataParallel's ``module.`` prefix is removed)
and ``.safetensors``. Published weights come from torchvision or timm and need internet.

Greyscale stems: a 3-channel stem kernel loaded into a 1-channel model is summed over its input
channels ("folded"), which is exactly the same as feeding the grey image repeated three times.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from xraylens.core.atomic import atomic_write_bytes
from xraylens.errors import WeightsError

LOCAL_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def is_local_weights(value: str | os.PathLike) -> bool:
    """Whether ``value`` names a local file (an existing path or a weights-file suffix)."""
    text = os.fspath(value)
    return os.path.exists(text) or text.lower().endswith(LOCAL_SUFFIXES)


#: Leading bytes of files people hand over as weights by mistake -> what the file is.
_NOT_WEIGHTS = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def _sniff(path: Path) -> str | None:
    """What ``path`` is when its first bytes say it is not a checkpoint, else None."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    for magic, what in _NOT_WEIGHTS:
        if head.startswith(magic):
            return what
    if head[128:132] == b"DICM":
        return "a DICOM image"
    if head.lstrip()[:1] in (b"{", b"[", b"<") or head.lower().startswith(b"version"):
        return "a text file"
    return None


def _first_line(exc: BaseException) -> str:
    """The cause in one line, without torch's advice to retry with ``weights_only=False``
    (unsafe: it runs code from the file, and it is wrong for a file that is no checkpoint)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "weights_only" in text or "Weights only load failed" in text:
        return "not a PyTorch weights file that can be loaded safely (weights_only=True)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state_dict in ``path`` and its xraylens metadata (None when the file has none)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty")
    meta = None
    what = _sniff(path)
    if what is not None:
        raise WeightsError(f"weights file {path} is {what}, not a .pt/.pth/.safetensors checkpoint")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open
            from safetensors.torch import load_file

            state = load_file(str(path))
            with safe_open(str(path), framework="pt") as fh:
                raw = (fh.metadata() or {}).get("xraylens")
            meta = json.loads(raw) if raw else None
        except Exception as exc:
            raise WeightsError(f"cannot read safetensors file {path}: {_first_line(exc)}") from None
        return _strip_prefix(state), meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)}") from None
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only refuses modules
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    if isinstance(obj.get("xraylens"), Mapping):
        meta = dict(obj["xraylens"])
    for key in ("state_dict", "model", "module", "model_state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{path} holds no tensors (keys: {list(obj)[:10]})")
    return _strip_prefix(state), meta


def save_checkpoint(module: nn.Module, meta: dict, path: str | os.PathLike) -> Path:
    """Write ``module``'s weights and ``meta`` to ``.pt``/``.pth``/``.safetensors``, atomically."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        data = save(
            {k: v.clone() for k, v in state.items()}, metadata={"xraylens": json.dumps(meta)}
        )
    else:
        buf = io.BytesIO()
        torch.save({"state_dict": state, "xraylens": meta}, buf)
        data = buf.getvalue()
    return atomic_write_bytes(path, data)


def fold_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a stem kernel [O, I, kh, kw] to ``in_channels``: sum to 1 channel, or spread 1
    channel over several (divided, so a repeated grey input gives the same output)."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    raise WeightsError(f"cannot adapt a {have}-channel stem to {in_channels} channels")


def load_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    stem: str | None = None,
    head: tuple[str, ...] = (),
    replace_head: bool = False,
) -> None:
    """Load ``state`` into ``module`` strictly, with errors that name the offending keys.

    Args:
        stem: state key of the first conv kernel, folded when its channels differ.
        head: key prefixes of the classifier; with ``replace_head`` (published weights, other
            number of classes) those keys keep the module's fresh initialisation.
    """
    state = dict(state)
    own = module.state_dict()
    if (
        stem is not None
        and stem in state
        and stem in own
        and state[stem].shape[1] != own[stem].shape[1]
    ):
        state[stem] = fold_stem(state[stem], own[stem].shape[1])
    if replace_head:
        for key in list(state):
            if key.startswith(head) and key in own and state[key].shape != own[key].shape:
                state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (
            ("shape mismatch", mismatched),
            ("missing", missing),
            ("unexpected", unexpected),
        ):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{title}: {', '.join(items[:8])}{more}")
        raise WeightsError(f"weights from {source} do not fit the model; " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
