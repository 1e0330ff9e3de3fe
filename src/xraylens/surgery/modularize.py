"""Surgery steps that rewrite forward code with torch.fx, one module at a time.

``split_reused`` gives every call site of an activation module its own copy, and
``functional_to_modules`` turns functional non-linearities (``F.relu``, ``torch.sigmoid``,
``F.max_pool2d``, ``x.relu()``, ...) into submodules, so that hooks see every non-linearity.

How: each candidate module's *own* ``forward`` is traced with torch.fx, every submodule kept
as a leaf call (so the trace is local, and control flow elsewhere in the model never matters).
The rewritten graph becomes the module instance's ``forward`` (an instance attribute; the
module keeps its class, its identity and its name); new modules are registered as its
children. ``remove()`` deletes both again.

Candidates are found cheaply from the source of their class (a functional call such as
``F.relu(`` or ``.sigmoid(``; an activation child called as ``self.relu(`` more than once).
Graphs are cached per class and configuration, so the 96 ``BasicConv2d`` of InceptionV3 are
traced once.

Fallback where a module does not trace (data-dependent control flow in its own forward): the
module is left as it is and a warning names it. Whatever is left over is caught at run time:
the DeepLIFT and guided-backprop hooks refuse a module called twice, and the DeepLIFT
reference pass audits every functional non-linearity that runs outside a ruled module
(:mod:`xraylens.attr._rules`), so a missed case is an error, never a silently wrong map.
"""

from __future__ import annotations

import copy
import inspect
import re
import types
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from xraylens.errors import InputError
from xraylens.surgery import taxonomy
from xraylens.surgery.steps import RULED_TYPES, Step, register_step

# functional non-linearity (function or Tensor method name) -> (kind, module factory from the
# call's constant arguments); derived from the taxonomy's activations
_ELEMENTWISE: dict[Any, tuple[str, Callable[..., nn.Module]]] = {}


def _reg(fns, name: str, factory: Callable[..., nn.Module]) -> None:
    for fn in fns:
        _ELEMENTWISE[fn] = (name, factory)


for _act in taxonomy.ACTIVATIONS:
    _reg(_act.functions + _act.methods, _act.functions[0].__name__, _act.factory)


def _max_pool(
    kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    if return_indices:
        raise _Unconvertible("max pooling with return_indices")
    return nn.MaxPool2d(
        kernel_size, stride if stride else None, padding, dilation, ceil_mode=ceil_mode
    )


def _adaptive_max_pool(output_size, return_indices=False):
    if return_indices:
        raise _Unconvertible("adaptive max pooling with return_indices")
    return nn.AdaptiveMaxPool2d(output_size)


_reg([F.max_pool2d, torch.max_pool2d], "max_pool2d", _max_pool)
_reg([F.adaptive_max_pool2d], "adaptive_max_pool2d", _adaptive_max_pool)

_TOKENS = {k if isinstance(k, str) else k.__name__ for k in _ELEMENTWISE}
_CALL_TOKEN = re.compile(
    r"(?<!self)\.(" + "|".join(sorted(map(re.escape, _TOKENS), key=len, reverse=True)) + r")\s*\("
)


class _Unconvertible(Exception):
    """A call that cannot become a module (non-constant arguments, unsupported options)."""


class _LocalTracer(fx.Tracer):
    """Traces only the root's own forward: every submodule is a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


_SOURCE: dict[type, str | None] = {}


def _class_source(cls: type) -> str | None:
    """Source of ``cls`` and its non-torch bases, without ``__init__`` bodies (cached)."""
    if cls not in _SOURCE:
        parts = []
        try:
            for base in cls.__mro__:
                if base is nn.Module or base.__module__.startswith("torch."):
                    break
                for name, fn in vars(base).items():
                    if callable(fn) and name != "__init__":
                        try:
                            parts.append(inspect.getsource(fn))
                        except (OSError, TypeError):
                            continue
            _SOURCE[cls] = "\n".join(parts)
        except Exception:  # dynamic classes: no source, trace them
            _SOURCE[cls] = None
    return _SOURCE[cls]


def _is_custom(module: nn.Module) -> bool:
    return not type(module).__module__.startswith("torch.nn.")


def _contains_ruled(module: nn.Module) -> bool:
    return any(type(m) in RULED_TYPES for m in module.modules())


#: Rewritten graphs of modules whose forward a step replaced (so that later steps compose).
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, fx.Graph] = weakref.WeakKeyDictionary()
#: (step, class, configuration) -> rewrite, shared by modules of the same class and layout.
#: per-step results of tracing a module, by :func:`_cache_key` (see :func:`_cached`)
_CACHE: dict[tuple, Any] = {}
_CACHE_LIMIT = 4096

Maker = Callable[[nn.Module], nn.Module]


@attrs.frozen(eq=False)
class _Rewrite:
    """A rewritten local graph, the submodules to add (name, maker) and its compiled forward."""

    graph: fx.Graph
    new: tuple[tuple[str, Maker], ...]
    forward: Callable[..., Any]


def _simple(value) -> bool:
    if isinstance(value, tuple):
        return all(_simple(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _cached(step: str, module: nn.Module, build: Callable[[], Any]) -> Any:
    """``build()``, remembered per step and module structure (:func:`_cache_key`; never for a
    module whose graph was already rewritten); at most ``_CACHE_LIMIT`` entries. A ``build``
    that raises caches nothing."""
    key = None if module in _GRAPHS else _cache_key(step, module)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    value = build()
    if key is not None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = value
    return value


def _cache_key(step: str, module: nn.Module) -> tuple | None:
    """What a local trace can depend on: class, plain attributes, the children's layout."""
    attrs_ = tuple(
        sorted((k, v) for k, v in vars(module).items() if not k.startswith("_") and _simple(v))
    )
    children = tuple((k, type(v)) for k, v in module._modules.items())
    key = (step, type(module), module.training, attrs_, children)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _trace(module: nn.Module) -> fx.Graph:
    """The module's forward as a local fx graph (its rewritten graph when it has one)."""
    prior = _GRAPHS.get(module)
    return copy.deepcopy(prior) if prior is not None else _LocalTracer().trace(module)


def _fresh_name(module: nn.Module, base: str, taken: set[str]) -> str:
    base = base.replace(".", "_")
    k = 1
    while f"{base}_{k}" in taken or hasattr(module, f"{base}_{k}"):
        k += 1
    name = f"{base}_{k}"
    taken.add(name)
    return name


class _GraphRewrite(Step):
    """Shared machinery: find candidates, trace, rewrite, install the new forward."""

    def _wants(self, module: nn.Module, source: str | None) -> bool:
        raise NotImplementedError

    def _rewrite(self, module: nn.Module, graph: fx.Graph) -> list[tuple[str, Maker]]:
        """Edit ``graph`` in place; return the submodules to add (empty when unchanged)."""
        raise NotImplementedError

    def _apply(self, model: nn.Module) -> None:
        for name, module in list(model.named_modules()):
            if not _is_custom(module) or not self._wants(module, _class_source(type(module))):
                continue
            try:
                rewrite = _cached(self.name, module, lambda m=module: self._build(m))
            except _TraceError as exc:
                warnings.warn(
                    f"surgery {self.name}: cannot trace {name or 'the model'} "
                    f"({type(module).__name__}): {exc}; left unchanged",
                    stacklevel=3,
                )
                continue
            if rewrite is not None:
                self._install(module, rewrite)

    def _build(self, module: nn.Module) -> _Rewrite | None:
        try:
            graph = _trace(module)
        except Exception as exc:  # data-dependent control flow in this module's forward
            raise _TraceError(f"{type(exc).__name__}: {exc}") from exc
        new = self._rewrite(module, graph)
        if not new:
            return None
        graph.lint()
        # Compile once with a scratch holder of the module's attributes plus the new children;
        # the generated forward only reads ``self.<name>`` and is bound to each module.
        holder = nn.Module()
        holder.__dict__.update({k: v for k, v in vars(module).items() if k != "forward"})
        holder._modules = dict(module._modules)
        for child_name, make in new:
            holder._modules[child_name] = make(module)
        gm = fx.GraphModule(holder, graph, class_name=type(module).__name__)
        return _Rewrite(graph, tuple(new), type(gm).forward)

    def _install(self, module: nn.Module, rewrite: _Rewrite) -> None:
        for child_name, make in rewrite.new:
            self._add_child(module, child_name, make(module))
        for node in rewrite.graph.nodes:
            if node.op == "get_attr" and not _has_path(module, node.target):
                raise InputError(
                    f"surgery {self.name}: rewritten forward of {type(module).__name__} reads "
                    f"{node.target!r}, which the module lacks"
                )
        self._set_attr(module, "forward", types.MethodType(rewrite.forward, module))
        previous = _GRAPHS.get(module)
        _GRAPHS[module] = rewrite.graph

        def undo():
            if previous is None:
                _GRAPHS.pop(module, None)
            else:
                _GRAPHS[module] = previous

        self._undo(undo)


class _TraceError(Exception):
    """A module's own forward does not trace with torch.fx."""


def _has_path(module: nn.Module, target: str) -> bool:
    obj: Any = module
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


@register_step("split_reused")
class SplitReused(_GraphRewrite):
    """One copy of a non-linear submodule per call site of the forward that reuses it."""

    def _wants(self, module: nn.Module, source: str | None) -> bool:
        if source is None:
            return any(_contains_ruled(c) for c in module.children())
        for child_name, child in module.named_children():
            pattern = rf"self\.{re.escape(child_name)}\s*\("
            if _contains_ruled(child) and len(re.findall(pattern, source)) > 1:
                return True
        # A child called once in the source but in a loop is not found here; the rule hooks
        # refuse a module called twice, so that case is an error, not a wrong map.
        return False

    def _rewrite(self, module: nn.Module, graph: fx.Graph) -> list[tuple[str, Maker]]:
        calls: dict[str, list[fx.Node]] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls.setdefault(node.target, []).append(node)
        new: list[tuple[str, Maker]] = []
        taken: set[str] = set()
        for target, nodes in calls.items():
            if len(nodes) < 2 or not _contains_ruled(module.get_submodule(target)):
                continue
            for node in nodes[1:]:
                name = _fresh_name(module, target, taken)
                new.append((name, lambda m, t=target: copy.deepcopy(m.get_submodule(t))))
                node.target = name
        return new


def _redirect_later_uses(graph: fx.Graph, source: fx.Node, node: fx.Node) -> None:
    """After an in-place call became out-of-place, later readers of its input read its output."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(source.users):
        if user is not node and order[user] > order[node]:
            user.replace_input_with(source, node)


def _constant(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_constant(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@register_step("functional_to_modules")
class FunctionalToModules(_GraphRewrite):
    """Functional non-linearities in a forward become submodules (``relu_fn_1``, ...)."""

    def _wants(self, module: nn.Module, source: str | None) -> bool:
        return source is None or bool(_CALL_TOKEN.search(source))

    def _rewrite(self, module: nn.Module, graph: fx.Graph) -> list[tuple[str, Maker]]:
        new: list[tuple[str, Maker]] = []
        taken: set[str] = set()
        for node in list(graph.nodes):
            if node.op not in ("call_function", "call_method"):
                continue
            key = node.target  # a function, or a tensor method name: "relu", "sigmoid", ...
            if key not in _ELEMENTWISE or not node.args:
                continue
            kind, factory = _ELEMENTWISE[key]
            extra_args, kwargs = node.args[1:], dict(node.kwargs)
            if not (_constant(extra_args) and _constant(list(kwargs.values()))):
                warnings.warn(
                    f"surgery functional_to_modules: {kind} in {type(module).__name__} has "
                    "non-constant arguments; left functional",
                    stacklevel=4,
                )
                continue
            try:
                factory(*extra_args, **kwargs)  # validate once
            except _Unconvertible as exc:
                warnings.warn(
                    f"surgery functional_to_modules: {exc}; left functional", stacklevel=4
                )
                continue
            name = _fresh_name(module, f"{kind}_fn", taken)
            new.append((name, lambda _m, f=factory, a=extra_args, k=kwargs: f(*a, **k)))
            source = node.args[0]
            node.op, node.target = "call_module", name
            node.args, node.kwargs = (source,), {}
            key_name = key if isinstance(key, str) else getattr(key, "__name__", "")
            if kwargs.get("inplace") or key_name.endswith("_"):
                _redirect_later_uses(graph, source, node)
        return new
