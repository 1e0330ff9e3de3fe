"""The ``xraylens`` command line.

Subcommands: ``list`` (registered plugins), ``explain`` (attribution maps for image files),
``profile`` (Neuron Activation Profiles of a dataset), ``demo`` (the offline demo),
``evaluate`` (score explained maps against masks), ``report`` (one HTML/Markdown page from
explain, evaluate and profile outputs) and any a plugin registers through the
``register_commands`` hook. Exit
status: 0 success, 1 failure or partial failure (e.g. some images unreadable), 2 usage error,
130 interrupted. Errors print as one line; ``-v`` adds the traceback and the library's log.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings

from xraylens.commands.common import UsageError, plain


def _verbosity() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the flag may come before or after the subcommand without one hiding the other.
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="show tracebacks and the library's log (-vv: debug)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``xraylens`` argument parser: every subcommand registered through the
    ``register_commands`` hook (the built-ins in :mod:`xraylens.commands.builtin`, then plugins)."""
    from xraylens import __version__, plugins

    verbose = _verbosity()
    parser = argparse.ArgumentParser(
        prog="xraylens",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[verbose],
    )
    parser.add_argument("--version", action="version", version=f"xraylens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in plugins.entries("command").items():  # registration order
        _add_command(sub, name, entry, verbose)
    return parser


def _add_command(sub, name: str, entry, verbose: argparse.ArgumentParser) -> None:
    """Let one registered command add its subparser; a broken plugin warns and is left out, so
    that it cannot take the other commands down."""
    from xraylens.plugins import PluginWarning

    try:
        entry.factory(sub, parents=[verbose])
        if name not in sub.choices:
            raise ValueError(f"add_parser did not add a subcommand named {name!r}")
        if sub.choices[name].get_default("func") is None:
            raise ValueError(f"subcommand {name!r} sets no func (p.set_defaults(func=...))")
    except Exception as exc:
        if entry.plugin.startswith("xraylens."):
            raise  # a built-in command is never broken silently
        sub.choices.pop(name, None)
        warnings.warn(
            f"plugin {entry.plugin!r}: command {name!r} failed to register: {exc!r}",
            PluginWarning,
            stacklevel=3,
        )


def _error(command: str | None, message: str) -> None:
    where = f"xraylens {command}" if command else "xraylens"
    print(f"{where}: error: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    verbose = getattr(args, "verbose", 0) or 0
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(name)s: %(message)s",
        )
    from xraylens.errors import UnknownPluginError, XraylensError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _error(args.command, "interrupted (outputs written so far are complete)")
        return 130
    except (UsageError, UnknownPluginError) as exc:
        if verbose:
            traceback.print_exc()
        _error(args.command, str(exc))
        return 2
    except (XraylensError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        _error(args.command, str(exc))
        return 1
    except Exception as exc:  # a bug or an unexpected library error: still one line
        if verbose:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        _error(
            args.command,
            f"{type(exc).__name__}: {text[0] if text else ''}"
            + ("" if verbose else " (run with -v for the traceback)"),
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
