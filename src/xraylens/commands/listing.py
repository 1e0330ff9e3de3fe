"""``xraylens list``: every registered plugin entry (classifiers, attributors, profilers,
metrics, commands) with the plugin that registered it."""

from __future__ import annotations

import argparse
import json


def add_parser(sub, parents=()) -> argparse.ArgumentParser:
    """Register ``list`` on the subparsers ``sub``."""
    from xraylens.plugins import KINDS

    kinds = ", ".join(f"{k}s" for k in KINDS)
    p = sub.add_parser(
        "list",
        help=f"list {kinds}",
        description=f"List the registered {kinds}, with the plugin (and distribution) that "
        "registered each.",
        parents=list(parents),
    )
    p.add_argument("--kind", choices=tuple(KINDS))
    p.add_argument("-l", "--long", action="store_true", help="show parameters and presets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)
    return p


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
