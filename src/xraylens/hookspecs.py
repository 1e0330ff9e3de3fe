"""Hook specifications: what a plugin can add to xraylens.

Each hook is called once, when the registry is first used, with a ``register(name, factory)``
callback. ``factory(**kwargs)`` must return an instance of the matching base class
(:class:`xraylens.Classifier`, :class:`xraylens.Attributor`, :class:`xraylens.Profiler`,
:class:`xraylens.evaluate.Metric`).
``register_commands`` adds subcommands to the ``xraylens`` command line instead: its factory is
``add_parser(sub, parents=...)``, which adds one subparser to ``sub`` and returns it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("xraylens")
hookimpl = pluggy.HookimplMarker("xraylens")


@hookspec
def register_classifiers(register):
    """Register classifiers: ``register("name", factory)``, ``factory(**kw) -> Classifier``."""


@hookspec
def register_attributors(register):
    """Register attributors: ``register("name", factory)``, ``factory(**kw) -> Attributor``."""


@hookspec
def register_profilers(register):
    """Register profilers: ``register("name", factory)``, ``factory(**kw) -> Profiler``."""


@hookspec
def register_metrics(register):
    """Register evaluation metrics: ``register("name", factory)``, ``factory(**kw) -> Metric``."""


@hookspec
def register_commands(register):
    """Register subcommands: ``register("name", add_parser)``, ``add_parser(sub, parents=())``
    adds the ``name`` subparser to ``sub`` (argparse subparsers) and sets its ``func``."""
