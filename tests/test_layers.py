"""The package's layers, checked on the source (ast) so they cannot drift: no module imports
from a layer above its own (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xraylens"

#: core <- data / models / attr / profile / evaluate <- viz / report <- commands / demo.
#: The package root (``import xraylens as xl``: the registry functions) and ``plugins`` sit with
#: viz / report: they only load the layers below; ``pipeline`` serves the commands and recipes.
LAYERS = {
    "errors": 0,
    "hookspecs": 0,
    "core": 1,
    "surgery": 2,
    "data": 2,
    "models": 2,
    "attr": 2,
    "profile": 2,
    "evaluate": 2,
    "audit": 3,
    "viz": 3,
    "report": 3,
    "plugins": 3,
    "<root>": 3,
    "pipeline": 4,
    "demo": 5,
    "commands": 6,  # the command line runs the demo; the demo never needs the command line
    "cli": 7,
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    if rel == ("__init__.py",):
        return "<root>"
    return rel[0].removesuffix(".py")


def _targets(node: ast.AST) -> list[str]:
    """The package parts an import statement reaches (``xraylens.x.y`` -> ``x``)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "xraylens":  # from xraylens import viz, Classifier
            return [a.name if a.name in LAYERS else "<root>" for a in node.names]
        names = [node.module]
    elif isinstance(node, ast.ImportFrom) and node.level:
        raise AssertionError(f"relative import at line {node.lineno}: use absolute imports")
    out = []
    for name in names:
        parts = name.split(".")
        if parts[0] == "xraylens":
            out.append(parts[1] if len(parts) > 1 else "<root>")
    return out


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        assert part in LAYERS, f"{path.relative_to(PACKAGE)}: add {part!r} to LAYERS"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node):
                assert target in LAYERS, f"{path}: imports unknown part {target!r}"
                if LAYERS[target] > LAYERS[part]:
                    rel = path.relative_to(PACKAGE).as_posix()
                    found.append(f"{rel}:{node.lineno} ({part}) imports {target}")
    return found


def test_no_module_imports_upward():
    assert _violations() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import xraylens.viz.overlay", ["viz"]),
        ("from xraylens.models.weights import read_checkpoint", ["models"]),
        ("from xraylens import viz, Classifier", ["viz", "<root>"]),
        ("import xraylens as xl", ["<root>"]),
        ("import torch", []),
    ],
)
def test_the_checker_sees_every_import_form(source, expected):
    (node,) = ast.parse(source).body
    assert _targets(node) == expected
