"""The docs cannot drift from the code (datasette's test_docs pattern).

- every hook spec is documented with its exact signature;
- every public name of ``xraylens``, ``xraylens.data`` and ``xraylens.viz`` has an entry in the
  API reference, and every signature written there equals the code's;
- every built-in attributor and profiler has a section, every CLI option is in the CLI page;
- the plugin example is the real distribution in ``tests/plugin_dist``, and the runnable example
  runs; every Python block compiles; every page is in the mkdocs nav; relative links resolve.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import xraylens as xl
from xraylens import hookspecs, plugins, viz
from xraylens.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
API = DOCS / "api.md"
FENCE = re.compile(r"```(\w*)[^\n]*\n(.*?)```", re.S)
MARKED = re.compile(r"<!-- docs-test: (\w+)(?: ([^>]+?))? -->\s*\n```\w*[^\n]*\n(.*?)```", re.S)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _all_docs() -> str:
    return "\n".join(_text(p) for p in PAGES)


def _public():
    for module, prefix in ((xl, "xl"), (xl.data, "xl.data"), (viz, "viz")):
        for name in module.__all__:
            yield prefix, name, getattr(module, name)


def plain_signature(obj, name: str) -> str | None:
    """``name(a, b=1, *, c='x', **kw)``: the call signature as the API page writes it."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    parts, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
        elif p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        else:
            if p.kind is p.KEYWORD_ONLY and not star:
                parts.append("*")
                star = True
            if p.default is p.empty:
                parts.append(p.name)
            else:
                default = "NOTHING" if repr(p.default) == "NOTHING" else repr(p.default)
                parts.append(f"{p.name}={default}")
    return f"{name}({', '.join(parts)})"


def test_docs_exist():
    names = {p.name for p in PAGES}
    for page in ("index.md", "concepts.md", "plugins.md", "methods.md", "naps.md", "engine.md"):
        assert page in names
    assert (DOCS / "img" / "demo.png").stat().st_size > 0


@pytest.mark.parametrize("hook", sorted(n for n in dir(hookspecs) if n.startswith("register_")))
def test_hookspec_documented_with_its_exact_signature(hook):
    signature = f"{hook}{inspect.signature(getattr(hookspecs, hook))}"
    assert f"### `{signature}`" in _text(DOCS / "plugins.md"), (
        f"docs/plugins.md needs a section '### `{signature}`'"
    )


@pytest.mark.parametrize(("prefix", "name", "obj"), list(_public()), ids=lambda v: str(v)[:40])
def test_public_name_in_api_reference(prefix, name, obj):
    assert f"### `{prefix}.{name}`" in _text(API), f"docs/api.md needs '### `{prefix}.{name}`'"


def test_documented_signatures_match_the_code():
    """Each entry's first line, when it is a signature `name(...)`, equals the code's."""
    text = _text(API)
    wrong = []
    for prefix, name, obj in _public():
        entry = text.split(f"### `{prefix}.{name}`", 1)[-1].split("\n### ", 1)[0]
        written = re.search(rf"`({re.escape(name)}\(.*?\))`", entry)
        if written is None:
            continue
        actual = plain_signature(obj, name)
        if actual is not None and written.group(1) != actual:
            wrong.append(f"{prefix}.{name}: docs say `{written.group(1)}`, code is `{actual}`")
    assert not wrong, "docs/api.md is out of date:\n" + "\n".join(wrong)


def _builtin(kind: str) -> list[str]:
    return sorted(n for n, e in plugins.entries(kind).items() if e.plugin.startswith("xraylens."))


@pytest.mark.parametrize("name", _builtin("attributor"))
def test_builtin_attributor_has_a_section(name):
    assert f"## `{name}`" in _text(DOCS / "methods.md")


@pytest.mark.parametrize("name", _builtin("profiler"))
def test_builtin_profiler_is_documented(name):
    assert f'xl.get_profiler("{name}"' in _text(DOCS / "naps.md")


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_cli_subcommand_and_every_option_documented(command):
    text = _text(DOCS / "cli.md")
    assert f"## `xraylens {command}`" in text
    section = text.split(f"## `xraylens {command}`", 1)[1].split("\n## ", 1)[0]
    missing = []
    for action in _subcommands()[command]._actions:
        if action.dest in ("help", "verbose"):
            continue
        flags = [s for s in action.option_strings if s.startswith("--")] or [action.metavar]
        if not any(re.search(rf"`{re.escape(flag)}[ `]", section) for flag in flags):
            missing.append(flags[0])
    assert not missing, f"docs/cli.md, xraylens {command}: undocumented {missing}"


def test_plugin_example_is_the_tested_distribution():
    blocks = [m for m in MARKED.finditer(_text(DOCS / "plugins.md")) if m.group(1) == "file"]
    assert len(blocks) == 2
    for block in blocks:
        path = REPO / block.group(2)
        assert path.is_file(), path
        assert block.group(3).strip() == path.read_text().strip(), f"docs differ from {path}"


def test_runnable_examples_run():
    blocks = [m.group(3) for p in PAGES for m in MARKED.finditer(_text(p)) if m.group(1) == "run"]
    assert blocks
    for code in blocks:
        exec(compile(code, "<docs>", "exec"), {"__name__": "docs_example"})
    assert "centre_prior" not in xl.list_attributors()  # the example cleans up after itself


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_compile(page):
    for lang, code in FENCE.findall(_text(page)):
        if lang == "python":
            compile(code, f"{page.name}", "exec")


def test_every_page_is_in_the_mkdocs_nav():
    nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.M))
    assert nav == {p.name for p in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)):
        if "://" in target or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        assert (page.parent / path).exists(), f"{page.name}: broken link {target}"


def test_contract_names_are_documented():
    """The names the public contract promises appear in the docs (the contract is checked by
    acceptance tests outside the repository; this keeps the docs honest about it)."""
    text = _all_docs()
    for name in (
        "saliency",
        "input_x_gradient",
        "guided_backprop",
        "deconvolution",
        "integrated_gradients",
        "deeplift",
        "deeplift_shap",
        "gradient_shap",
        "grad_cam",
        "guided_grad_cam",
        "occlusion",
        "resnet18",
        "resnet34",
        "inception_v3",
        "inception_resnet_v2",
        "densenet161",
    ):
        assert f"`{name}`" in text, name


@pytest.mark.parametrize("name", _builtin("attributor"))
def test_every_parameter_of_a_builtin_attributor_is_documented(name):
    import attrs

    config = getattr(plugins.entries("attributor")[name].factory, "Config", None)
    if not attrs.has(config):
        pytest.skip(f"{name} has no attrs Config")
    text = _text(DOCS / "methods.md")
    section = text.split(f"## `{name}`", 1)[1].split("\n## `", 1)[0]
    shared = text.split("## SmoothGrad and VarGrad", 1)[1].split("\n## `", 1)[0]
    missing = [
        f.name
        for f in attrs.fields(config)
        if f"| `{f.name}` |" not in section and f"| `{f.name}` |" not in shared
    ]
    assert not missing, f"docs/methods.md, {name}: undocumented parameters {missing}"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python block runs as written (in a scratch folder: it saves a file)."""
    blocks = [code for lang, code in FENCE.findall(_text(REPO / "README.md")) if lang == "python"]
    assert blocks, "README.md has no Python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "maps.npz").stat().st_size > 0
