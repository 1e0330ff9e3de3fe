"""The built-in subcommands, registered through the ``register_commands`` hook like a plugin's.

Each is a module of :mod:`xraylens.commands` with ``add_parser(sub, parents=())``. A module
that is not part of this installation (an optional command) is left out.
"""

from __future__ import annotations

import importlib

from xraylens.hookspecs import hookimpl

#: Subcommand name -> module, in the order ``xraylens --help`` lists them.
COMMANDS = {
    "list": "xraylens.commands.listing",
    "explain": "xraylens.commands.explain",
    "profile": "xraylens.commands.profile",
    "demo": "xraylens.commands.demo",
    "evaluate": "xraylens.commands.evaluate",
    "report": "xraylens.commands.report",
}


@hookimpl
def register_commands(register):
    """Register the built-in subcommands (modules are imported here; their heavy imports run
    only when the command does)."""
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the module exists but one of its imports is missing
                raise
            continue
        register(name, module.add_parser)
