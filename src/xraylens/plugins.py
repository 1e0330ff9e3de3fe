"""The plugin registry: one pluggy manager, built-in plugins, and entry-point plugins.

Built-in plugins are modules registered by import. Third-party plugins are found through the
entry-point group ``xraylens`` and loaded lazily, once, the first time a registry function is
used. Environment variables:

- ``XRAYLENS_NO_PLUGINS=1``: load no third-party plugin (built-ins only).
- ``XRAYLENS_BLOCK_PLUGINS=a,b``: skip the named entry points.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from xraylens import hookspecs
from xraylens.errors import InputError, PluginConflictError, UnknownPluginError

ENTRY_POINT_GROUP = "xraylens"

#: Modules whose hook implementations are always registered, in this order.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "xraylens.models.backbones",
    "xraylens.attr.occlusion",
    "xraylens.attr.plugin",
    "xraylens.attr.cam_plugin",
    "xraylens.profile.nap",
    "xraylens.evaluate.plugin",
    "xraylens.commands.builtin",
)

#: kind -> (hook name, base class path)
KINDS: dict[str, tuple[str, str]] = {
    "classifier": ("register_classifiers", "xraylens.core.classifier:Classifier"),
    "attributor": ("register_attributors", "xraylens.core.attributor:Attributor"),
    "profiler": ("register_profilers", "xraylens.core.profiler:Profiler"),
    "metric": ("register_metrics", "xraylens.evaluate.metric:Metric"),
    # Subcommands of the command line: the factory adds an argparse subparser (see cli.py).
    "command": ("register_commands", "argparse:ArgumentParser"),
}


@attrs.frozen
class PluginEntry:
    """One registered name: what it is, how to build it and which plugin added it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str | None = None  # "dist-name version" for entry-point plugins


class PluginWarning(UserWarning):
    """A plugin failed to import or to register; the rest of xraylens keeps working."""


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_entries: dict[str, dict[str, PluginEntry]] | None = None
_distributions: dict[str, str] = {}
_extra_plugins: list[tuple[object, str]] = []


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)


def _third_party_disabled() -> bool:
    return os.environ.get("XRAYLENS_NO_PLUGINS", "").strip().lower() not in ("", "0", "false", "no")


def _blocked() -> set[str]:
    raw = os.environ.get("XRAYLENS_BLOCK_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _build_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("xraylens")
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        try:
            pm.register(importlib.import_module(module_name), name=module_name)
        except Exception as exc:  # a broken optional dependency must not take the rest down
            _warn(f"built-in plugin {module_name} failed to import: {exc!r}")
    if not _third_party_disabled():
        blocked = _blocked()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:
                where = f" from {dist}" if dist else ""
                _warn(f"plugin {ep.name!r} ({ep.value}{where}) failed to load: {exc!r}")
                continue
            if dist:
                _distributions[ep.name] = dist
    for obj, name in _extra_plugins:
        pm.register(obj, name=name)
    return pm


def _collect(pm: pluggy.PluginManager) -> dict[str, dict[str, PluginEntry]]:
    entries: dict[str, dict[str, PluginEntry]] = {kind: {} for kind in KINDS}
    for kind, (hook_name, _) in KINDS.items():
        table = entries[kind]
        # Call each implementation alone, so that one failing plugin cannot hide the others and
        # every name is traced back to the plugin that registered it.
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            added: dict[str, PluginEntry] = {}

            def register(
                name: str,
                factory: Callable[..., Any],
                _added=added,
                _plugin=plugin,
                _kind=kind,
                _table=table,
            ):
                if not isinstance(name, str) or not name:
                    raise InputError(f"plugin {_plugin!r}: {_kind} name must be a non-empty str")
                if not callable(factory):
                    raise InputError(f"plugin {_plugin!r}: factory for {name!r} is not callable")
                previous = _table.get(name) or _added.get(name)
                if previous is not None:
                    raise PluginConflictError(
                        f"{_kind} {name!r} is registered by two plugins: {previous.plugin!r} and "
                        f"{_plugin!r}; uninstall or block one (XRAYLENS_BLOCK_PLUGINS)"
                    )
                _added[name] = PluginEntry(
                    _kind, name, factory, _plugin, _distributions.get(_plugin)
                )

            try:
                impl.function(register=register)
            except PluginConflictError:
                raise
            except Exception as exc:
                _warn(f"plugin {plugin!r} failed in {hook_name}: {exc!r}")
                continue
            table.update(added)
    return entries


def _load() -> dict[str, dict[str, PluginEntry]]:
    global _pm, _entries
    with _lock:
        if _entries is None:
            pm = _build_manager()
            _entries = _collect(pm)
            _pm = pm
        return _entries


def reset() -> None:
    """Forget loaded plugins; the next registry call loads them again (tests, notebooks)."""
    global _pm, _entries
    with _lock:
        _pm = None
        _entries = None
        _distributions.clear()


def get_plugin_manager() -> pluggy.PluginManager:
    """The loaded :class:`pluggy.PluginManager` (plugins load on first use)."""
    _load()
    assert _pm is not None
    return _pm


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a module or object with hook implementations at run time; returns its name.

    Useful in notebooks and tests where an entry point would be overkill.
    """
    name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin):x}"
    with _lock:
        if any(n == name for _, n in _extra_plugins):
            raise PluginConflictError(f"a plugin named {name!r} is already registered")
        _extra_plugins.append((plugin, name))
        try:
            if _entries is not None:
                reset()
            _load()
        except Exception:
            _extra_plugins.pop()
            reset()
            raise
    return name


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with :func:`register_plugin`."""
    with _lock:
        before = len(_extra_plugins)
        _extra_plugins[:] = [(obj, n) for obj, n in _extra_plugins if n != name]
        if len(_extra_plugins) == before:
            raise UnknownPluginError(f"no plugin named {name!r} was registered at run time")
        reset()


def entries(kind: str) -> dict[str, PluginEntry]:
    """All entries of one kind (a key of :data:`KINDS`: ``"classifier"``, ``"attributor"``,
    ``"profiler"``, ``"metric"``)."""
    if kind not in KINDS:
        raise InputError(f"unknown plugin kind {kind!r}; expected one of {sorted(KINDS)}")
    return dict(_load()[kind])


def names(kind: str) -> list[str]:
    """Sorted registered names of one kind."""
    return sorted(entries(kind))


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def lookup(kind: str, name: str) -> PluginEntry:
    """The entry for ``name`` (case and ``-``/``_`` variants accepted); else UnknownPluginError."""
    table = entries(kind)
    if not isinstance(name, str):
        raise InputError(f"{kind} name must be a str, got {type(name).__name__}")
    if name in table:
        return table[name]
    by_norm = {_normalise(n): n for n in table}
    if _normalise(name) in by_norm:
        return table[by_norm[_normalise(name)]]
    close = difflib.get_close_matches(_normalise(name), list(by_norm), n=5, cutoff=0.5)
    hint = (
        f"; did you mean {', '.join(repr(by_norm[c]) for c in close)}?"
        if close
        else f"; known: {', '.join(sorted(table)) or '(none)'}"
    )
    raise UnknownPluginError(f"unknown {kind} {name!r}{hint}")


def create(kind: str, name: str, kwargs: dict[str, Any]) -> Any:
    """Build the named plugin object, checking that the factory returned the right base class."""
    entry = lookup(kind, name)
    try:
        obj = entry.factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"{kind} {entry.name!r} (plugin {entry.plugin!r}): {exc}") from exc
    module_name, class_name = KINDS[kind][1].split(":")
    base = getattr(importlib.import_module(module_name), class_name)
    if not isinstance(obj, base):
        raise TypeError(
            f"plugin {entry.plugin!r}: factory for {kind} {entry.name!r} returned "
            f"{type(obj).__name__}, not a {class_name}"
        )
    return obj
