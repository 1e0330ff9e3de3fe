"""The ``xraylens`` command line.

Subcommands: ``list`` (registered plugins), ``explain`` (attribution maps for image files),
``profile`` (Neuron Activation Profiles of a dataset), ``demo`` (the offline demo) and
``evaluate`` (score explained maps against masks). Exit
status: 0 success, 1 failure or partial failure (e.g. some images unreadable), 2 usage error,
130 interrupted. Errors print as one line; ``-v`` adds the traceback and the library's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from xraylens.commands.common import UsageError, plain


def _cmd_list(args: argparse.Namespace) -> int:
    """Print every plugin kind's entries with the plugin that registered each."""
    from xraylens import plugins

    kinds = [args.kind] if args.kind else list(plugins.KINDS)
    table = {kind: plugins.entries(kind) for kind in kinds}
    if args.json:
        data = {
            f"{kind}s": {
                name: {"plugin": e.plugin, "distribution": e.distribution, **_details(e)}
                for name, e in sorted(entries.items())
            }
            for kind, entries in table.items()
        }
        print(json.dumps(data, indent=2, default=repr))
        return 0
    for kind, entries in table.items():
        print(f"{kind}s:")
        if not entries:
            print("  (none)")
        for name, entry in sorted(entries.items()):
            source = entry.plugin + (f" ({entry.distribution})" if entry.distribution else "")
            print(f"  {name:<22} {source}")
            if args.long:
                for key, value in _details(entry).items():
                    print(f"  {'':<22}   {key}: {value}")
    return 0


def _details(entry) -> dict:
    """Parameters (with defaults) and presets of a plugin whose factory has an attrs Config."""
    import attrs

    config = getattr(entry.factory, "Config", None)
    out: dict = {}
    if attrs.has(config):
        out["parameters"] = (
            ", ".join(f"{f.name}={_default(f)}" for f in attrs.fields(config)) or "(none)"
        )
    presets = getattr(entry.factory, "presets", None)
    if presets:
        out["presets"] = ", ".join(sorted(presets))
    return out


def _default(field) -> str:
    import attrs

    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        return repr(field.default.factory())
    return "(required)" if field.default is attrs.NOTHING else repr(field.default)


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
    """The ``xraylens`` argument parser (subcommands and their options)."""
    from xraylens import __version__
    from xraylens.commands import demo, evaluate, explain, profile

    verbose = _verbosity()
    parser = argparse.ArgumentParser(
        prog="xraylens",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[verbose],
    )
    parser.add_argument("--version", action="version", version=f"xraylens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from xraylens.plugins import KINDS

    kinds = ", ".join(f"{k}s" for k in KINDS)
    p = sub.add_parser(
        "list",
        help=f"list {kinds}",
        description=f"List the registered {kinds}, with the plugin (and distribution) that "
        "registered each.",
        parents=[verbose],
    )
    p.add_argument("--kind", choices=tuple(KINDS))
    p.add_argument("-l", "--long", action="store_true", help="show parameters and presets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)
    for module in (explain, profile, demo, evaluate):
        module.add_parser(sub, parents=[verbose])
    return parser


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
