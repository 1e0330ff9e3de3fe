"""Which layer Grad-CAM reads, and how its output becomes a [N, K, h, w] map.

- :func:`layer_probe`: one no-grad forward of one input through the prepared copy *before*
  surgery, with a hook on every module: how often each module runs and its output shape, in
  the order the modules finish. Remembered per classifier module and input shape.
- :func:`default_layer`: the last module to finish with a spatial 4-D output (h * w > 1).
- :func:`resolve_layout`: ``"nchw"``, ``"nhwc"`` (Swin) or ``"tokens"`` ([N, T, K]: prefix
  tokens, then an h x w grid, ViT) from the ``reshape`` option, or inferred (``"auto"``) from
  the shape and the input's aspect ratio. A shape that fits several layouts is an error.
"""

from __future__ import annotations

import math
import weakref

import attrs
import torch
from torch import nn

from xraylens.errors import InputError

#: modules whose 4-D output is NCHW by definition (tie-break of an ambiguous 4-D shape)
_NCHW_TYPES = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


@attrs.frozen
class LayerProbe:
    """Per module name (as in ``inner.named_modules()``): calls and last output shape
    (None: not a tensor); ``order``: names in the order their forwards finished."""

    calls: dict[str, int]
    shapes: dict[str, tuple[int, ...] | None]
    order: tuple[str, ...]


_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, LayerProbe]] = weakref.WeakKeyDictionary()


def layer_probe(key_module: nn.Module, model: nn.Module, inner: nn.Module, x1: torch.Tensor):
    """Probe ``inner``'s modules in one forward of ``model`` on ``x1`` [1, C, H, W]; remembered
    per ``key_module`` (the caller's module) and input shape/dtype/device."""
    key = (tuple(x1.shape[1:]), x1.dtype, x1.device, sum(1 for _ in inner.modules()))
    known = _PROBES.setdefault(key_module, {})
    if key in known:
        return known[key]
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    order: list[str] = []

    def hook_for(name):
        def hook(_m, _args, out):
            calls[name] = calls.get(name, 0) + 1
            shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            order.append(name)

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in inner.named_modules()]
    try:
        with torch.no_grad():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    known[key] = LayerProbe(calls, shapes, tuple(dict.fromkeys(reversed(order)))[::-1])
    return known[key]


@attrs.frozen
class Layout:
    """How a layer output becomes [N, K, h, w]: ``kind`` in ``nchw``/``nhwc``/``tokens``;
    tokens: ``prefix`` leading tokens dropped, the rest an ``h x w`` grid (row-major)."""

    kind: str
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        h, w = self.grid
        return t[:, self.prefix :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def _fits(h: int, w: int, size: tuple[int, int]) -> bool:
    """Whether an h x w map can be the input's H x W downsampled by one stride (rounded)."""
    if h < 1 or w < 1:
        return False
    sh, sw = size[0] / h, size[1] / w
    return abs(sh - sw) <= 0.34 * max(sh, sw)


def _grid(n: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """The h x w grid with h * w == n and the input's aspect ratio, or None."""
    if n < 1:
        return None
    h = max(1, round(math.sqrt(n * size[0] / size[1])))
    for hh in (h - 1, h, h + 1):
        if hh >= 1 and n % hh == 0 and _fits(hh, n // hh, size):
            return hh, n // hh
    return None


def _last_leaf(module: nn.Module) -> nn.Module:
    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    return leaves[-1] if leaves else module


def resolve_layout(
    shape: tuple[int, ...],
    size: tuple[int, int],
    reshape: str,
    prefix_tokens: int | None,
    *,
    where: str,
    module: nn.Module | None = None,
) -> Layout:
    """The layout of an output of ``shape`` for an input of spatial ``size`` (see module
    docstring); ``where`` names the method and layer in errors."""
    dims = len(shape)
    hint = " (Grad-CAM needs [N, K, h, w], [N, h, w, K] or tokens [N, T, K])"
    if reshape in ("nchw", "nhwc"):
        if dims != 4:
            raise InputError(f"{where}: reshape={reshape!r} needs a 4-D output, got {shape}")
        return Layout(reshape)
    if reshape == "tokens" or (reshape == "auto" and dims == 3):
        if dims != 3:
            raise InputError(f"{where}: reshape='tokens' needs [N, T, K], got {shape}")
        prefixes = (0, 1) if prefix_tokens is None else (prefix_tokens,)
        found = [(p, g) for p in prefixes if (g := _grid(shape[1] - p, size)) is not None]
        if not found:
            raise InputError(
                f"{where}: {shape[1]} tokens are no h x w grid with the input's aspect ratio "
                f"after {' or '.join(map(str, prefixes))} prefix tokens; pass prefix_tokens=..."
            )
        if len(found) > 1:
            raise InputError(
                f"{where}: {shape[1]} tokens fit a grid with 0 and with 1 prefix tokens; "
                "pass prefix_tokens=..."
            )
        return Layout("tokens", *found[0])
    if dims != 4:
        raise InputError(f"{where}: output {shape} has no spatial layout{hint}")
    nchw, nhwc = _fits(shape[2], shape[3], size), _fits(shape[1], shape[2], size)
    if nchw and nhwc and module is not None and isinstance(_last_leaf(module), _NCHW_TYPES):
        nhwc = False  # a convolution / batch norm / pooling output is NCHW
    if nchw != nhwc:
        return Layout("nchw" if nchw else "nhwc")
    if nchw:
        raise InputError(
            f"{where}: output {shape} could be [N, K, h, w] or [N, h, w, K]; "
            "pass reshape='nchw' or reshape='nhwc'"
        )
    raise InputError(
        f"{where}: output {shape} matches no layout with the input's aspect ratio {size}{hint}; "
        "pass reshape=..."
    )


def default_layer(probe: LayerProbe, inner: nn.Module, size: tuple[int, int]) -> str | None:
    """The last module to finish with a spatial 4-D output (NCHW or NHWC, h * w > 1), not
    inside a module with another output (e.g. an attention's [N, heads, T, d] inside a token
    block, or a ViT's patch-embedding convolution)."""
    for name in reversed(probe.order):
        shape = probe.shapes.get(name)
        if not name or shape is None or len(shape) != 4 or probe.calls.get(name) != 1:
            continue
        parts = name.split(".")
        outer = (probe.shapes.get(".".join(parts[:i])) for i in range(1, len(parts)))
        if any(s is not None and len(s) != 4 for s in outer):
            continue
        try:
            layout = resolve_layout(shape, size, "auto", None, where="",
                                    module=inner.get_submodule(name))  # fmt: skip
        except InputError:
            continue
        h, w = shape[2:] if layout.kind == "nchw" else shape[1:3]
        if h * w > 1:
            return name
    return None


def member_layers(clf, layer, what: str) -> tuple[tuple[int, str], ...] | None:
    """The layers of an :class:`~xraylens.core.ensemble.Ensemble` that a CAM method sums, as
    (member index, module path ``members.i.<layer>``) pairs, from ``layer``:

    - None: every member's default CAM layer (``clf.member_cam_layers``; each needs one);
    - a mapping member index -> layer name (the member's own name or the module path);
    - a list / tuple in member order (None skips a member), or of module paths
      ``members.i.<layer>`` in any order.

    None (one layer, the single-layer path) for a str ``layer`` or a classifier that is not an
    ensemble; per-member ``layer`` on such a classifier is an error."""
    members = getattr(clf, "member_cam_layers", None)
    if isinstance(layer, str):
        return None
    if members is None:
        if layer is None:
            return None
        raise InputError(
            f"{what}: layer={layer!r} names a layer per member, but {clf.name!r} is not an "
            "xl.Ensemble; pass one module name"
        )
    names = [m.name for m in clf.members]
    if layer is None:
        missing = [f"member {i} ({names[i]})" for i, m in enumerate(members) if not m]
        if missing:
            raise InputError(
                f"{what}: the ensemble {clf.name!r} has no default CAM layer for "
                f"{', '.join(missing)}; pass layer= a layer per member, e.g. "
                "{0: 'layer4', 1: 'features'}, or one member's layer ('members.0.layer4')"
            )
        return tuple(enumerate(members))
    if isinstance(layer, dict):
        items = []
        for key, value in layer.items():
            try:
                i = int(key)
            except (TypeError, ValueError):
                i = -1
            if isinstance(key, bool) or not 0 <= i < len(members):
                raise InputError(
                    f"{what}: layer key {key!r} is no member index of the ensemble "
                    f"{clf.name!r} (0 to {len(members) - 1})"
                )
            items.append((i, value))
    elif isinstance(layer, (list, tuple)):
        items = []
        for pos, value in enumerate(layer):
            i = _path_member(value)
            items.append((pos if i is None else i, value))
        positional = [v for v in layer if _path_member(v) is None]
        if positional and len(layer) != len(members):
            raise InputError(
                f"{what}: layer has {len(layer)} entries for the ensemble's {len(members)} "
                "members; give one per member (None skips one) or module paths members.i.<layer>"
            )
    else:
        raise InputError(
            f"{what}: layer must be a module name, a mapping member index -> layer or a list "
            f"in member order, got {type(layer).__name__}"
        )
    out: dict[int, str] = {}
    for i, value in items:
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise InputError(
                f"{what}: the layer of member {i} ({names[i]}) must be a module name, got {value!r}"
            )
        owner = _path_member(value)
        if owner is not None and owner != i:
            raise InputError(
                f"{what}: layer {value!r} is in member {owner}, given for member {i} ({names[i]})"
            )
        if i in out:
            raise InputError(f"{what}: member {i} ({names[i]}) has two layers")
        out[i] = value if owner is not None else f"members.{i}.{value}"
    if not out:
        raise InputError(f"{what}: layer={layer!r} names no member's layer")
    return tuple(sorted(out.items()))


def _path_member(value) -> int | None:
    """The member index of a module path ``members.i.<layer>``, else None."""
    if not isinstance(value, str):
        return None
    parts = value.split(".", 2)
    if len(parts) == 3 and parts[0] == "members" and parts[1].isdigit():
        return int(parts[1])
    return None
