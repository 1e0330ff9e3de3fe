"""Prove that a model was left untouched: take a snapshot before, compare after.

``snap = snapshot(model)``; ... ; ``snap.assert_unchanged(model)`` raises an AssertionError
listing every difference (``snap.diff(model)`` returns them). Compared: the module tree (the
same module objects under the same names), parameter and buffer values, dtypes, devices and
``requires_grad``, parameter ``.grad``, every module's train/eval flag and ``inplace`` flag, the
instance attributes of every module (e.g. a patched ``forward`` or leftover ``input`` attributes),
and the number of hooks of every kind on every module and globally.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn
from torch.nn.modules import module as _module_globals

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)


def _hook_counts(m: nn.Module) -> tuple[int, ...]:
    return tuple(len(getattr(m, d, None) or {}) for d in _HOOK_DICTS)


def _global_hook_counts() -> tuple[int, ...]:
    return tuple(len(getattr(_module_globals, d, None) or {}) for d in _GLOBAL_HOOKS)


def _tensor_state(t: torch.Tensor | None):
    if t is None:
        return None
    return (t.detach().clone(), t.dtype, t.device, t.requires_grad)


@attrs.frozen(eq=False)
class ModelSnapshot:
    """Everything :func:`snapshot` recorded about a model (see the module docstring)."""

    modules: tuple[tuple[str, nn.Module], ...]
    tensors: dict[str, tuple]
    grads: dict[str, object]
    training: dict[str, bool]
    inplace: dict[str, object]
    attributes: dict[str, frozenset[str]]
    hooks: dict[str, tuple[int, ...]]
    global_hooks: tuple[int, ...]

    def diff(self, model: nn.Module, limit: int = 20) -> list[str]:
        """Human-readable differences between the snapshot and ``model`` now (empty: same)."""
        other = snapshot(model)
        out: list[str] = []
        mine, theirs = dict(self.modules), dict(other.modules)
        if list(mine) != list(theirs):
            out.append(
                f"module names differ: +{sorted(set(theirs) - set(mine))[:5]} "
                f"-{sorted(set(mine) - set(theirs))[:5]}"
            )
        out += [
            f"module {n!r} is a different object"
            for n in mine
            if n in theirs and mine[n] is not theirs[n]
        ]
        for name, (value, dtype, device, req) in self.tensors.items():
            now = other.tensors.get(name)
            if now is None:
                out.append(f"tensor {name!r} is gone")
            elif (now[1], now[2], now[3]) != (dtype, device, req):
                out.append(
                    f"tensor {name!r}: dtype/device/requires_grad {(dtype, device, req)} "
                    f"-> {now[1:]}"
                )
            elif not torch.equal(now[0], value):
                out.append(f"tensor {name!r} changed value")
        out += [f"new tensor {n!r}" for n in other.tensors if n not in self.tensors]
        for label, before, after in (
            ("grad", self.grads, other.grads),
            ("training flag", self.training, other.training),
            ("inplace flag", self.inplace, other.inplace),
            ("instance attributes", self.attributes, other.attributes),
            ("hook count", self.hooks, other.hooks),
        ):
            for name in before.keys() | after.keys():
                b, a = before.get(name), after.get(name)
                same = _same(b, a)
                if not same:
                    out.append(f"{label} of {name!r}: {_show(b)} -> {_show(a)}")
        if self.global_hooks != other.global_hooks:
            out.append(f"global module hooks: {self.global_hooks} -> {other.global_hooks}")
        return out[:limit]

    def assert_unchanged(self, model: nn.Module) -> None:
        """Raise AssertionError naming what changed since the snapshot."""
        problems = self.diff(model)
        if problems:
            raise AssertionError("model changed:\n  " + "\n  ".join(problems))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _show(v) -> str:
    if isinstance(v, frozenset):
        return str(sorted(v))
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    return repr(v)


def snapshot(model: nn.Module) -> ModelSnapshot:
    """Record ``model``'s state (values are cloned; modules are referenced)."""
    modules = tuple(model.named_modules(remove_duplicate=False))
    tensors = {f"param:{n}": _tensor_state(p) for n, p in model.named_parameters()}
    tensors |= {f"buffer:{n}": _tensor_state(b) for n, b in model.named_buffers()}
    grads = {
        n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()
    }
    return ModelSnapshot(
        modules=modules,
        tensors=tensors,
        grads=grads,
        training={n: m.training for n, m in modules},
        inplace={n: m.__dict__.get("inplace") for n, m in modules if "inplace" in m.__dict__},
        attributes={n: frozenset(k for k in vars(m) if not k.startswith("_")) for n, m in modules},
        hooks={n: _hook_counts(m) for n, m in modules},
        global_hooks=_global_hook_counts(),
    )
