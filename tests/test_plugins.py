"""The pluggy registry: built-ins, entry-point plugins, errors and switches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import xraylens as xl
from xraylens import plugins

PLUGIN_DIST = Path(__file__).parent / "plugin_dist"


@pytest.fixture
def fresh_registry():
    """A registry reloaded before and after the test."""
    plugins.reset()
    yield
    plugins.reset()


def _install_as_dist_info(target: Path) -> Path:
    """Make ``tests/plugin_dist`` importable from ``target`` with a real ``.dist-info`` folder
    whose METADATA and entry_points.txt are generated from the distribution's pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((PLUGIN_DIST / "pyproject.toml").read_text())["project"]
    shutil.copytree(PLUGIN_DIST / "src" / "xraylens_hello", target / "xraylens_hello")
    dist_name = project["name"].replace("-", "_")
    info = target / f"{dist_name}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture
def hello_on_path(tmp_path, monkeypatch, fresh_registry):
    site = _install_as_dist_info(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("xraylens_hello", None)


def test_builtin_classifiers_registered():
    builtin = [n for n, e in plugins.entries("classifier").items() if e.plugin != "xrv"]
    assert sorted(builtin) == sorted(  # "xrv": xraylens' own entry point (extra xrv)
        ["resnet18", "resnet34", "inception_v3", "inception_resnet_v2", "densenet161"]
    )
    assert xl.list_classifiers() == sorted(xl.list_classifiers())


@pytest.mark.parametrize("kind", ["classifier", "attributor", "profiler"])
def test_unknown_name_lists_close_matches(kind):
    getter = getattr(xl, f"get_{kind}")
    known = plugins.names(kind)
    if not known:
        pytest.skip(f"no {kind} registered yet")
    typo = known[0][:-1] + "x"
    with pytest.raises(xl.UnknownPluginError) as info:
        getter(typo)
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert repr(typo) in message and repr(known[0]) in message
    assert not message.startswith('"'), "printed as text, not as a quoted KeyError"


def test_name_variants_are_accepted():
    assert xl.get_classifier("ResNet18").name == "resnet18"
    assert xl.get_classifier("Inception-V3").name == "inception_v3"


def test_bad_factory_arguments_are_a_clear_error():
    with pytest.raises(xl.InputError, match="resnet18.*num_clases"):
        xl.get_classifier("resnet18", num_clases=3)


def test_third_party_attributor_through_entry_point(hello_on_path):
    assert "gradient_sign" in xl.list_attributors()
    entry = plugins.entries("attributor")["gradient_sign"]
    assert entry.plugin == "hello" and entry.distribution == "xraylens-hello 0.1.0"
    att = xl.get_attributor("gradient_sign", scale=2.0)
    assert isinstance(att, xl.Attributor)
    clf = xl.get_classifier("resnet18", num_classes=3)
    x = torch.rand(2, 1, 32, 32)
    res = att.attribute(clf, x, targets=["class_0", "class_2"])
    assert res.values.shape == (2, 2, 1, 32, 32)
    assert set(res.values.unique().tolist()) <= {-2.0, 0.0, 2.0}
    # the plugin explains what it says: the sign of the gradient of each label's logit
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(clf.module(xg)[:, 2].sum(), xg)
    assert torch.equal(res.values[:, 1], 2.0 * grad.sign())


def test_third_party_loading_can_be_switched_off(hello_on_path, monkeypatch):
    monkeypatch.setenv("XRAYLENS_NO_PLUGINS", "1")
    plugins.reset()
    assert "gradient_sign" not in xl.list_attributors()
    monkeypatch.delenv("XRAYLENS_NO_PLUGINS")
    monkeypatch.setenv("XRAYLENS_BLOCK_PLUGINS", "other, hello")
    plugins.reset()
    assert "gradient_sign" not in xl.list_attributors()
    monkeypatch.delenv("XRAYLENS_BLOCK_PLUGINS")
    plugins.reset()
    assert "gradient_sign" in xl.list_attributors()


def test_entry_point_found_in_a_fresh_process(tmp_path):
    site = _install_as_dist_info(tmp_path / "site")
    code = "import xraylens as xl; print(xl.list_attributors())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "gradient_sign" in out.stdout
    env["XRAYLENS_NO_PLUGINS"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "gradient_sign" not in out.stdout


def test_entry_points_load_lazily_and_once(hello_on_path, monkeypatch):
    calls = []
    real = plugins._build_manager
    monkeypatch.setattr(plugins, "_build_manager", lambda: calls.append(1) or real())
    assert "xraylens_hello" not in sys.modules, "nothing loads before the registry is used"
    xl.list_attributors()
    xl.list_classifiers()
    xl.get_attributor("gradient_sign")
    assert len(calls) == 1
    assert "xraylens_hello" in sys.modules


def test_plugin_that_fails_to_import_is_a_warning(tmp_path, monkeypatch, fresh_registry):
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("import does_not_exist_anywhere\n")
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[xraylens]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(plugins.PluginWarning, match=r"'broken'.*does_not_exist_anywhere"):
        names = xl.list_classifiers()
    assert "resnet18" in names  # the rest keep working


def test_plugin_that_fails_while_registering_is_a_warning(fresh_registry):
    bad = types.SimpleNamespace()

    @xl.hookimpl
    def register_attributors(register):
        register("half_done", lambda **kw: None)
        raise RuntimeError("boom")

    bad.register_attributors = register_attributors
    try:
        with pytest.warns(plugins.PluginWarning, match="'bad'.*boom"):
            xl.register_plugin(bad, name="bad")
        assert "half_done" not in xl.list_attributors()
        assert "resnet18" in xl.list_classifiers()
    finally:
        xl.unregister_plugin("bad")


def test_two_plugins_with_one_name_is_an_error_naming_both(fresh_registry):
    dup = types.SimpleNamespace()

    @xl.hookimpl
    def register_classifiers(register):
        register("resnet18", lambda **kw: None)

    dup.register_classifiers = register_classifiers
    with pytest.raises(xl.PluginConflictError) as info:
        xl.register_plugin(dup, name="my-dup")
    message = str(info.value)
    assert "'resnet18'" in message
    assert "'xraylens.models.backbones'" in message and "'my-dup'" in message
    assert "resnet18" in xl.list_classifiers()  # the failed registration was rolled back


def test_factory_must_return_the_right_base_class(fresh_registry):
    odd = types.SimpleNamespace()

    @xl.hookimpl
    def register_profilers(register):
        register("not_a_profiler", lambda **kw: object())

    odd.register_profilers = register_profilers
    xl.register_plugin(odd, name="odd")
    try:
        with pytest.raises(TypeError, match="'odd'.*not a Profiler"):
            xl.get_profiler("not_a_profiler")
    finally:
        xl.unregister_plugin("odd")


def test_hookspecs_have_register_callback_signature():
    from xraylens import hookspecs

    for name in ("register_classifiers", "register_attributors", "register_profilers"):
        spec = getattr(hookspecs, name)
        assert spec.__code__.co_varnames[: spec.__code__.co_argcount] == ("register",)
        assert spec.__doc__


def test_no_warnings_from_builtins(fresh_registry):
    with warnings.catch_warnings():
        warnings.simplefilter("error", plugins.PluginWarning)
        xl.list_classifiers()
